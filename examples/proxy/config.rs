//! What the proxy is told to do: flags, then environment variables, then defaults.
//!
//! Parsed by hand so that the example needs nothing beyond the crate's own dependencies.

use std::path::PathBuf;

use crate::forward::UpstreamBase;

/// What `--help` prints.
pub const USAGE: &str = "\
An OpenAI-compatible proxy with server-side conversation memory.

Usage: proxy [OPTIONS]

Options (a flag wins over its environment variable):
  --listen ADDR         address to listen on [env LISTEN_ADDR] [default: 127.0.0.1:8080]
  --upstream URL        base URL of the OpenAI-compatible service, e.g. https://api.openai.com;
                        the request's path and query are appended [env UPSTREAM_URL]
                        [default: none, a built-in demo model answers]
  --database-url URL    sqlite://FILE (created if missing) or postgres://USER:PASS@HOST/DB
                        [env DATABASE_URL] [default: sqlite://conversations.db]
  --migration-database-url URL
                        a direct connection (not through a transaction pooler) to run the
                        migrations on at start [env MIGRATION_DATABASE_URL]
                        [default: the database URL]
  --passthrough         forward everything with the conversation layer off and no database:
                        the baseline for measuring the layer's overhead
  --api-keys FILE       the keys clients may use, one a line: the key itself, or the SHA-256
                        of it in hex (64 hex digits) so that the file holds no secret; blank
                        lines and # comments are ignored; reread on SIGHUP. Any other bearer
                        token, or none, gets 401 [env API_KEYS_FILE]
                        [default: none, every bearer token is an owner of its own]
  --allow-anonymous     without --api-keys, let requests without a bearer token in, all in
                        one shared space [env ALLOW_ANONYMOUS=1] [default: refused with 401,
                        unless the built-in demo model answers]
  --metrics-listen ADDR serve Prometheus metrics at http://ADDR/metrics, with no key
                        [env METRICS_LISTEN] [default: /metrics on --listen, behind the same
                        key rules as every other path]
  --retention-days N    delete conversations not updated for N days, at start and then every
                        hour [env RETENTION_DAYS] [default: none, conversations are kept]
  --history-cache-mib N keep at most N MiB of conversation histories in memory, checked
                        against the database at every turn; 0 keeps none
                        [env HISTORY_CACHE_MIB] [default: 16]
  --healthcheck URL     request URL (or a path such as /readyz on the --listen address) and
                        exit 0 if it answers 2xx, 1 otherwise: a health check for images
                        without curl
  -h, --help            print this help

Answered by the proxy itself, never forwarded, with no key:
  GET /healthz          200 while the proxy serves
  GET /readyz           200 when the database answers, 503 when it does not

Environment only:
  UPSTREAM_API_KEY      replaces the client's Authorization header upstream (Bearer KEY);
                        owners are still told apart by the client's own token
  RUST_LOG              log filter [default: info]

Signals: SIGTERM or Ctrl-C stops the proxy once the requests in flight finish (up to 30 s);
SIGHUP rereads the --api-keys file.
";

/// Where conversations go when no database is named.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://conversations.db";
/// Where the proxy listens when no address is named.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";

/// A complete configuration for one run of the proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` to bind.
    pub listen: String,
    /// The real service to forward to; `None` serves the demo model.
    pub upstream: Option<UpstreamBase>,
    /// The conversation database.
    pub database_url: String,
    /// Where the migrations run, when not on [`database_url`](Self::database_url):
    /// behind a transaction pooler they need a connection of their own.
    pub migration_database_url: Option<String>,
    /// The credential sent upstream in place of the client's.
    pub upstream_api_key: Option<String>,
    /// The layer is off: forward only.
    pub passthrough: bool,
    /// The file listing the keys clients may use; `None` lets every bearer token in.
    pub api_keys: Option<PathBuf>,
    /// Without a key file, requests without a bearer token are let in.
    pub allow_anonymous: bool,
    /// Where to serve `/metrics` with no key; `None` serves it on [`listen`](Self::listen)
    /// behind the key rules.
    pub metrics_listen: Option<String>,
    /// Conversations idle for this many days are purged; `None` keeps them.
    pub retention_days: Option<u32>,
    /// How many MiB of histories the store keeps in process; `None` leaves the crate's
    /// default.
    pub history_cache_mib: Option<usize>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the proxy (boxed: a configuration is far larger than the other commands).
    Run(Box<Config>),
    /// Request this URL and exit by its answer.
    Healthcheck(String),
    /// Print [`USAGE`] and exit.
    Help,
}

/// Reads the command line (`args`, without the program name) and the environment
/// (`env`, which answers `None` for unset variables). An empty variable counts as unset,
/// so that a compose file can leave one blank.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    let mut listen = None;
    let mut upstream = None;
    let mut database_url = None;
    let mut migration_database_url = None;
    let mut passthrough = false;
    let mut api_keys = None;
    let mut allow_anonymous = false;
    let mut metrics_listen = None;
    let mut retention_days = None;
    let mut history_cache_mib = None;
    let mut healthcheck = None;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value` are accepted.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => listen = Some(value("--listen")?),
            "--upstream" => upstream = Some(value("--upstream")?),
            "--database-url" => database_url = Some(value("--database-url")?),
            "--migration-database-url" => {
                migration_database_url = Some(value("--migration-database-url")?)
            }
            "--passthrough" if inline.is_none() => passthrough = true,
            "--passthrough" => return Err("--passthrough takes no value".to_owned()),
            "--api-keys" => api_keys = Some(value("--api-keys")?),
            "--allow-anonymous" if inline.is_none() => allow_anonymous = true,
            "--allow-anonymous" => return Err("--allow-anonymous takes no value".to_owned()),
            "--metrics-listen" => metrics_listen = Some(value("--metrics-listen")?),
            "--retention-days" => retention_days = Some(value("--retention-days")?),
            "--history-cache-mib" => history_cache_mib = Some(value("--history-cache-mib")?),
            "--healthcheck" => healthcheck = Some(value("--healthcheck")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }

    let listen = listen
        .or_else(|| env("LISTEN_ADDR"))
        .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
    if let Some(target) = healthcheck {
        return Ok(Command::Healthcheck(healthcheck_url(&target, &listen)));
    }
    let upstream = match upstream.or_else(|| env("UPSTREAM_URL")) {
        Some(url) => Some(UpstreamBase::parse(&url)?),
        None => None,
    };
    let api_keys = api_keys.or_else(|| env("API_KEYS_FILE")).map(PathBuf::from);
    let allow_anonymous =
        allow_anonymous || flag_variable("ALLOW_ANONYMOUS", env("ALLOW_ANONYMOUS"))?;
    if allow_anonymous && let Some(file) = &api_keys {
        return Err(format!(
            "--allow-anonymous (ALLOW_ANONYMOUS) and --api-keys {} (API_KEYS_FILE) contradict \
             each other: with a key file, every request needs one of its keys",
            file.display()
        ));
    }
    let retention_days = match retention_days.or_else(|| env("RETENTION_DAYS")) {
        None => None,
        Some(days) => match days.parse::<u32>() {
            Ok(days) if days > 0 => Some(days),
            _ => {
                return Err(format!(
                    "--retention-days (RETENTION_DAYS) {days:?}: expected a whole number of days, 1 or more"
                ));
            }
        },
    };
    let history_cache_mib = match history_cache_mib.or_else(|| env("HISTORY_CACHE_MIB")) {
        None => None,
        Some(mib) => match mib.parse::<usize>() {
            Ok(mib) => Some(mib),
            Err(_) => {
                return Err(format!(
                    "--history-cache-mib (HISTORY_CACHE_MIB) {mib:?}: expected a whole number of MiB, 0 or more"
                ));
            }
        },
    };
    Ok(Command::Run(Box::new(Config {
        listen,
        upstream,
        database_url: database_url
            .or_else(|| env("DATABASE_URL"))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
        migration_database_url: migration_database_url.or_else(|| env("MIGRATION_DATABASE_URL")),
        upstream_api_key: env("UPSTREAM_API_KEY"),
        passthrough,
        api_keys,
        allow_anonymous,
        metrics_listen: metrics_listen.or_else(|| env("METRICS_LISTEN")),
        retention_days,
        history_cache_mib,
    })))
}

/// A yes-or-no environment variable: `1`/`true`/`yes` or `0`/`false`/`no`.
fn flag_variable(name: &str, value: Option<String>) -> Result<bool, String> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(format!("{name}={other:?}: expected 1 or 0")),
    }
}

/// The URL a health check requests: `target` itself, or a path on the address the
/// proxy listens on, reached over loopback when it listens on every interface.
fn healthcheck_url(target: &str, listen: &str) -> String {
    if !target.starts_with('/') {
        return target.to_owned();
    }
    let host = match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_owned(),
    };
    format!("http://{host}{target}")
}
