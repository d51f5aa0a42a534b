//! What the proxy is told to do: flags, then environment variables, then defaults.
//!
//! Parsed by hand so that the example needs nothing beyond the crate's own dependencies.

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
  -h, --help            print this help

Environment only:
  UPSTREAM_API_KEY      replaces the client's Authorization header upstream (Bearer KEY);
                        owners are still told apart by the client's own token
  RUST_LOG              log filter [default: info]
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
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the proxy.
    Run(Config),
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
            other => return Err(format!("unknown argument {other:?}")),
        }
    }

    let upstream = match upstream.or_else(|| env("UPSTREAM_URL")) {
        Some(url) => Some(UpstreamBase::parse(&url)?),
        None => None,
    };
    Ok(Command::Run(Config {
        listen: listen
            .or_else(|| env("LISTEN_ADDR"))
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned()),
        upstream,
        database_url: database_url
            .or_else(|| env("DATABASE_URL"))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
        migration_database_url: migration_database_url.or_else(|| env("MIGRATION_DATABASE_URL")),
        upstream_api_key: env("UPSTREAM_API_KEY"),
        passthrough,
    }))
}
