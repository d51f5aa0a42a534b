//! A PostgreSQL cluster of one test's own, made with Debian's `pg_createcluster` on a
//! spare port, so that restarting it cuts no other test's connections.

use std::process::Command;

/// A running cluster, dropped (stopped and deleted) with this value.
pub struct OwnCluster {
    version: String,
    name: String,
    port: u16,
}

impl OwnCluster {
    /// Creates and starts a cluster that trusts loopback connections. `None` (with one
    /// line saying so) when this machine cannot make one (no `pg_createcluster`, not
    /// root), unless `REQUIRE_POSTGRES=1`: then it panics.
    pub fn create() -> Option<Self> {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|entries| entries.flatten().next())
            .map(|entry| entry.file_name().to_string_lossy().into_owned());
        let Some(version) = version.filter(|_| is_root()) else {
            if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("REQUIRE_POSTGRES=1 but no PostgreSQL cluster can be created here");
            }
            eprintln!("skipped: pg_createcluster needs Debian's postgresql-common and root");
            return None;
        };
        let port = free_port();
        let name = format!("tc_test_{port}");
        run(Command::new("pg_createcluster")
            .args([&version, &name, "--port", &port.to_string(), "--start"])
            .args(["--", "--auth=trust"]));
        Some(Self {
            version,
            name,
            port,
        })
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the server: every connection to it is cut, as in a failover or an
    /// upgrade, and it accepts new ones once it is back.
    pub fn restart(&self) {
        run(Command::new("pg_ctlcluster").args([&self.version, &self.name, "restart"]));
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args([&self.version, &self.name, "--stop"])
            .status();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL cluster command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loopback port nothing listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Whether the tests run as root, as CI does.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}
