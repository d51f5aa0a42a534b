//! The example proxy as a child process, and what the kernel says of its memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the proxy may take to open its database and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running proxy; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
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
    /// `--database-url URL`) on a free loopback port.
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
        let mut child = command
            // The load clients send no key: let them in as the anonymous owner.
            .args(["--allow-anonymous", "--listen", "127.0.0.1:0", "--upstream"])
            .arg(format!("http://{upstream}"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("UPSTREAM_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (found, address) = mpsc::channel();
        // Reads the log for the address, then keeps draining it so the proxy never
        // blocks on a full pipe; warnings and errors are shown.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(sender) = found.take()
                {
                    let _ = sender.send(rest.trim().to_owned());
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("proxy: {line}");
                }
            }
        });
        match address.recv_timeout(START_TIMEOUT) {
            Ok(address) => {
                let addr = address
                    .parse()
                    .map_err(|_| format!("unreadable listen address {address:?}"))?;
                Ok(Self { child, addr })
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(format!("the proxy did not start listening ({status:?})"))
            }
        }
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
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.stop(Duration::from_secs(5));
    }
}
