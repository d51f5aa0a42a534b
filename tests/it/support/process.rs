//! The example proxy as a child process: started from the binary cargo built, on a port
//! of its own, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The variables the proxy reads: cleared for every child, so that the environment the
/// tests run in (`DATABASE_URL` above all) never leaks into a proxy under test.
const PROXY_VARIABLES: [&str; 11] = [
    "LISTEN_ADDR",
    "UPSTREAM_URL",
    "DATABASE_URL",
    "MIGRATION_DATABASE_URL",
    "UPSTREAM_API_KEY",
    "API_KEYS_FILE",
    "ALLOW_ANONYMOUS",
    "METRICS_LISTEN",
    "RETENTION_DAYS",
    "RUST_LOG",
    "SSL_CERT_FILE",
];

/// How long a proxy may take to migrate its database and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `target/<profile>/examples/proxy`, beside the directory of this test binary. Panics
/// with the command to run when it is missing or older than the sources it is built
/// from (`cargo test` builds examples; `cargo test --test it` alone does not).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test binary>");
    let binary = profile_dir
        .join("examples")
        .join(format!("proxy{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --example proxy` (plain `cargo test` builds it)",
                binary.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sources in ["src", "examples/proxy"] {
        if let Some(newer) = newest_file(&root.join(sources)).filter(|(time, _)| *time > built) {
            panic!(
                "{} is older than {}: run `cargo build --example proxy`",
                binary.display(),
                newer.1.display()
            );
        }
    }
    binary
}

fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(candidate) = candidate
            && newest.as_ref().is_none_or(|(time, _)| candidate.0 > *time)
        {
            newest = Some(candidate);
        }
    }
    newest
}

/// A `Command` for the proxy binary with a clean environment for its variables.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command.args(args);
    for name in PROXY_VARIABLES {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command
}

/// Runs the proxy with `args` and `env`, a command line it must refuse: asserts that it
/// exits with the usage error's code, 2, and returns what it wrote to stderr.
pub fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = command(args, env).output().expect("run the proxy");
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running proxy. Killed (SIGKILL) when dropped, unless it already exited.
pub struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Proxy {
    /// Starts the proxy on a free port (`--listen 127.0.0.1:0` unless `args` names an
    /// address) and waits until it says where it listens and accepts a connection.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut all_args = args.to_vec();
        let listens = args.contains(&"--listen") || env.iter().any(|(k, _)| *k == "LISTEN_ADDR");
        if !listens {
            all_args.extend(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command(&all_args, env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the proxy");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let collected = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = collected.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });

        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(addr) = proxy.listening_address()
                && tokio::net::TcpStream::connect(addr).await.is_ok()
            {
                proxy.addr = addr;
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!(
                    "the proxy exited with {status} before listening:\n{}",
                    proxy.log()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the proxy did not listen within {START_TIMEOUT:?}:\n{}",
                    proxy.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address from the `listening on http://ADDR` log line.
    fn listening_address(&self) -> Option<SocketAddr> {
        let log = self.log();
        let rest = log.split("listening on http://").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id, to read the proxy's `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends SIGTERM, as `docker stop` and Kubernetes do.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit, for at most `limit`.
    pub async fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the proxy") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("the proxy did not exit within {limit:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
