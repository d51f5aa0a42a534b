//! A PgBouncer in transaction mode in front of the test server, on a loopback port of its
//! own, for one test: what many production deployments put between the layer and
//! PostgreSQL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::cluster::{free_port, is_root};
use super::db::postgres_server_url;

/// A running PgBouncer, stopped when dropped.
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer with `pool_mode = transaction` and fewer server connections
    /// (`default_pool_size`) than the test's clients, so that consecutive transactions of
    /// one client land on different server connections. `None` (with one line saying
    /// so) when PgBouncer is not installed, unless `REQUIRE_POSTGRES=1`: then it panics.
    pub async fn start(server_connections: u32) -> Option<Self> {
        let Some(binary) = find_pgbouncer() else {
            if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("REQUIRE_POSTGRES=1 but pgbouncer is not installed");
            }
            eprintln!("skipped: pgbouncer is not installed");
            return None;
        };
        let server: PgConnectOptions = postgres_server_url().parse().expect("DATABASE_URL");
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("tc_pgbouncer_{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let users = dir.join("users.txt");
        std::fs::write(&users, format!("\"{}\" \"\"\n", server.get_username())).expect("auth file");
        let config = dir.join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
                 default_pool_size = {server_connections}\nmax_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\npidfile = {pid}\n",
                host = server.get_host(),
                server_port = server.get_port(),
                users = users.display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .expect("pgbouncer.ini");
        make_readable_by_all(&dir);
        // PgBouncer refuses to run as root; the server's own account runs it then.
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let child = command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = PgBouncer { child, dir, port };
        bouncer.wait_until_listening().await;
        Some(bouncer)
    }

    /// The URL of `database` through PgBouncer, with `query` appended (`a=b&c=d`).
    pub fn url(&self, database: &str, query: &str) -> String {
        let server: PgConnectOptions = postgres_server_url().parse().expect("DATABASE_URL");
        format!(
            "postgres://{}@127.0.0.1:{}/{database}?{query}",
            server.get_username(),
            self.port
        )
    }

    /// What PgBouncer logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    async fn wait_until_listening(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "pgbouncer did not listen on {} within 5 s: {}",
            self.port,
            self.log()
        );
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // The process started may be `runuser`, which a kill does not pass on: PgBouncer
        // itself is stopped through its pid file.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_pgbouncer() -> Option<PathBuf> {
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

fn make_readable_by_all(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o666));
    }
}
