//! The example proxy as a child process, run as a user runs it (a key file of one key,
//! Prometheus metrics on an address of their own), and what the kernel says of its
//! memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use uuid::Uuid;

/// How long the proxy may take to open its database and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running proxy; stopped (SIGTERM, then SIGKILL) when dropped, its key file removed.
pub struct Proxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics: SocketAddr,
    /// The one key its key file holds: clients send `Authorization: Bearer <key>`.
    pub key: String,
    keys_file: PathBuf,
}

/// The release build of the example, where `cargo build --release --example proxy` puts
/// it: the workspace's target directory, two levels above this crate (or `PROXY_BIN`).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PROXY_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release").join("examples").join("proxy")
}

/// The repository's root, where the workspace's manifest is.
fn workspace_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().nth(2).unwrap_or(manifest)
}

impl Proxy {
    /// Starts `binary` in front of `upstream` with `args` (`--passthrough`, or
    /// `--database-url URL`) on a free loopback port, with a key file of one fresh key
    /// (`--api-keys`; the key check runs with `--passthrough` too) and metrics on a free
    /// loopback port of their own (`--metrics-listen`): as a user runs it.
    pub fn start(binary: &Path, upstream: SocketAddr, args: &[&str]) -> Result<Self, String> {
        Self::start_under(&[], binary, upstream, args)
    }

    /// As [`start`](Self::start), run by `launcher` (a command and its options, such
    /// as `valgrind --tool=callgrind`) when it is not empty.
    pub fn start_under(
        launcher: &[String],
        binary: &Path,
        upstream: SocketAddr,
        args: &[&str],
    ) -> Result<Self, String> {
        let mut command = match launcher.split_first() {
            Some((program, options)) => {
                let mut command = Command::new(program);
                command.args(options).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let key = format!("load-{}", Uuid::now_v7().simple());
        let keys_file = std::env::temp_dir().join(format!("tc_load_keys_{key}"));
        std::fs::write(&keys_file, format!("# the load tool's clients\n{key}\n"))
            .map_err(|error| format!("cannot write {}: {error}", keys_file.display()))?;
        let spawned = command
            .arg("--api-keys")
            .arg(&keys_file)
            .args(["--metrics-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
            .arg("--upstream")
            .arg(format!("http://{upstream}"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("UPSTREAM_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_file(&keys_file);
                return Err(format!("cannot start {}: {error}", binary.display()));
            }
        };
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (found, addresses) = mpsc::channel();
        // Reads the log for the addresses (metrics are served before the proxy listens),
        // then keeps draining it so the proxy never blocks on a full pipe; warnings and
        // errors are shown.
        std::thread::spawn(move || {
            let mut found = Some(found);
            let mut metrics = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("metrics at http://").nth(1) {
                    metrics = rest.trim().strip_suffix("/metrics").map(str::to_owned);
                } else if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(sender) = found.take()
                {
                    let _ = sender.send((rest.trim().to_owned(), metrics.take()));
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("proxy: {line}");
                }
            }
        });
        let started = match addresses.recv_timeout(START_TIMEOUT) {
            Ok((address, metrics)) => {
                let metrics = metrics.unwrap_or_default();
                address
                    .parse()
                    .map_err(|_| format!("unreadable listen address {address:?}"))
                    .and_then(|addr| {
                        let metrics = metrics
                            .parse()
                            .map_err(|_| format!("unreadable metrics address {metrics:?}"))?;
                        Ok((addr, metrics))
                    })
            }
            Err(_) => Err("the proxy did not start listening".to_owned()),
        };
        let unknown = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut proxy = Self {
            child,
            addr: unknown,
            metrics: unknown,
            key,
            keys_file,
        };
        // On a failure `proxy` is dropped: that stops the child and removes the key file.
        (proxy.addr, proxy.metrics) = started?;
        Ok(proxy)
    }

    /// The process id, for reading its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// Peak resident memory since the last [`reset_peak`](Self::reset_peak), in bytes
    /// (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// Starts a new peak: writing 5 to `clear_refs` resets `VmHWM` to the current RSS.
    pub fn reset_peak(&self) {
        let path = format!("/proc/{}/clear_refs", self.child.id());
        if let Err(error) = std::fs::write(&path, "5") {
            eprintln!("cannot reset the peak RSS ({path}: {error}); peaks span runs");
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }
}

impl Proxy {
    /// Asks the proxy to stop (SIGTERM lets it finish storing turns; the `kill` command
    /// saves a dependency) and waits up to `patience` for it to exit; `false` when it
    /// had to be killed.
    pub fn stop(&mut self, patience: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + patience;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.keys_file);
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.stop(Duration::from_secs(5));
    }
}
