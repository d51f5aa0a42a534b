//! What the layer costs a streaming reply under load: the example proxy, as a child
//! process, in front of a fast in-process upstream, driven by K concurrent streaming
//! clients over loopback, against the same proxy with the layer off (`--passthrough`).
//!
//! ```text
//! cargo build --release --example proxy
//! cargo run --release -p load                      # every configuration
//! cargo run --release -p load -- sqlite            # passthrough and the configurations naming sqlite
//! cargo run --release -p load -- --out load.md --csv load.csv
//! ```
//!
//! Configurations: passthrough; stateless through the layer (a system message); new
//! conversations; continued conversations with 20 and with 100 stored messages (seeded
//! through the management API, cut back to that length every few turns); the stateful
//! ones on SQLite (a fresh file) and on PostgreSQL (`DATABASE_URL`, default the local
//! server, in a database created for the run and dropped after it; skipped when no server
//! answers). Each runs at every concurrency for a fixed time.
//!
//! The results, in markdown on stdout (or in the file `--out` names): one table
//! (requests/s, time to first byte and to `data: [DONE]` p50 and p99, how long `[DONE]`
//! was held back while the turn was stored, the CPU each request cost the proxy, the
//! database server and the load generator, the proxy's peak RSS, and each row against
//! passthrough at the same K), and the memory each in-flight stream costs: K slow
//! streams of a known size (deltas 1 ms apart, the end held back) open at once, (RSS
//! during − RSS idle) / K, on a freshly started proxy. `--csv FILE` writes the first
//! table's rows as CSV as well. Progress goes to stderr.
//!
//! Settings (environment): `LOAD_SECONDS` measured per run (6), `LOAD_WARMUP` seconds
//! (1), `LOAD_CONCURRENCY` (`1,8,32,64`), `LOAD_CHUNKS` deltas per reply (256),
//! `LOAD_HELD` streams held open for the memory figure (256), `PROXY_BIN`.
//!
//! `--instructions` measures something else: the instructions the proxy executes per
//! request, per chunk and per turn, under callgrind, one request at a time (see
//! [`instructions`]; `scripts/instructions.sh` builds and runs it).

mod client;
mod cpu;
mod instructions;
mod proxy;
mod report;
mod upstream;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::client::{Clients, Requests, chat_body};
use crate::proxy::Proxy;
use crate::report::{Memory, PASSTHROUGH, Row};
use crate::upstream::{DELTA, Upstream};

/// Everything a run is told.
struct Settings {
    warmup: Duration,
    measure: Duration,
    levels: Vec<usize>,
    chunks: usize,
    held: usize,
    database_url: String,
    /// Only configurations whose name contains this (passthrough always runs).
    filter: Option<String>,
    binary: PathBuf,
}

/// What the command line says: the filter, and where the results go.
struct Arguments {
    filter: Option<String>,
    /// The markdown's file; stdout when `None`.
    out: Option<PathBuf>,
    csv: Option<PathBuf>,
    /// Count instructions under callgrind instead of measuring load.
    instructions: bool,
}

const USAGE: &str = "\
usage: load [FILTER] [--out FILE] [--csv FILE]
       load --instructions [FILTER] [--out FILE]

  FILTER      measure only the configurations whose name contains it
              (passthrough always runs: the other rows are read against it)
  --out FILE  write the markdown tables to FILE instead of stdout
  --csv FILE  write the load table's rows to FILE as CSV as well
  --instructions
              count the proxy's instructions per request, chunk and turn under
              valgrind's callgrind, one request at a time, instead of measuring load

Build the proxy first: cargo build --release --example proxy
Environment: LOAD_SECONDS (6), LOAD_WARMUP (1), LOAD_CONCURRENCY (1,8,32,64),
LOAD_CHUNKS (256), LOAD_HELD (256), DATABASE_URL, PROXY_BIN.";

impl Arguments {
    /// `Err` carries what to print: the usage alone when asked for, else after the
    /// mistake.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self {
            filter: None,
            out: None,
            csv: None,
            instructions: false,
        };
        while let Some(arg) = args.next() {
            let (option, inline) = match arg.split_once('=') {
                Some((option, value)) if option.starts_with("--") => (option, Some(value)),
                _ => (arg.as_str(), None),
            };
            let slot = match option {
                "-h" | "--help" => return Err(USAGE.to_owned()),
                "--instructions" if inline.is_none() => {
                    parsed.instructions = true;
                    continue;
                }
                "--out" => &mut parsed.out,
                "--csv" => &mut parsed.csv,
                _ if option.starts_with('-') => {
                    return Err(format!("unknown option {option}\n\n{USAGE}"));
                }
                _ if parsed.filter.is_none() => {
                    parsed.filter = Some(arg);
                    continue;
                }
                _ => return Err(format!("one filter at most, not also {arg}\n\n{USAGE}")),
            };
            let value = inline
                .map(str::to_owned)
                .or_else(|| args.next())
                .filter(|value| !value.is_empty())
                .ok_or_else(|| format!("{option} needs a file\n\n{USAGE}"))?;
            *slot = Some(PathBuf::from(value));
        }
        Ok(parsed)
    }
}

impl Settings {
    fn from_env(filter: Option<String>) -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let levels = std::env::var("LOAD_CONCURRENCY")
            .unwrap_or_else(|_| "1,8,32,64".to_owned())
            .split(',')
            .filter_map(|k| k.trim().parse().ok())
            .filter(|&k| k > 0)
            .collect();
        Self {
            warmup: Duration::from_secs(number("LOAD_WARMUP", 1)),
            measure: Duration::from_secs(number("LOAD_SECONDS", 6)),
            levels,
            chunks: number("LOAD_CHUNKS", 256) as usize,
            held: number("LOAD_HELD", 256) as usize,
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
            filter,
            binary: proxy::binary(),
        }
    }

    fn wants(&self, configuration: &str) -> bool {
        configuration == PASSTHROUGH
            || self
                .filter
                .as_deref()
                .is_none_or(|filter| configuration.contains(filter))
    }
}

/// What one configuration sends.
enum Workload {
    Plain { system: bool },
    Continue { seeded: usize },
}

/// A proxy process and the configurations measured on it.
struct Stack<'a> {
    name: &'a str,
    args: Vec<String>,
    configurations: Vec<(String, Workload)>,
}

fn main() -> ExitCode {
    let arguments = match Arguments::parse(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(usage) if usage == USAGE => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("a debug build: the load generator costs more than it should (use --release)");
    }
    let settings = Settings::from_env(arguments.filter);
    if !settings.binary.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release --example proxy` first (or set PROXY_BIN)",
            settings.binary.display()
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The files are made before the run, so that a path that cannot be written fails
    // now and not after minutes of load.
    let create = |path: &Option<PathBuf>| {
        path.as_ref()
            .map(|path| {
                File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
            })
            .transpose()
    };
    let (out, csv) = match (create(&arguments.out), create(&arguments.csv)) {
        (Ok(out), Ok(csv)) => (out, csv),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("load: {error}");
            return ExitCode::FAILURE;
        }
    };
    if arguments.instructions {
        let counted = runtime.block_on(instructions::run(
            &settings.binary,
            &settings.database_url,
            settings.filter.as_deref(),
        ));
        let table = match counted {
            Ok(table) => table,
            Err(error) => {
                eprintln!("load: {error}");
                return ExitCode::FAILURE;
            }
        };
        return match out {
            Some(mut file) => match file.write_all(table.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("load: cannot write the table ({error}); here it is:");
                    print!("{table}");
                    ExitCode::FAILURE
                }
            },
            None => {
                print!("{table}");
                ExitCode::SUCCESS
            }
        };
    }
    let setup = format!(
        "proxy {}; replies of {} deltas of {} bytes ({} bytes); K = {:?}; {:?} warm-up + {:?} per run",
        settings.binary.display(),
        settings.chunks,
        DELTA.len(),
        settings.chunks * DELTA.len(),
        settings.levels,
        settings.warmup,
        settings.measure,
    );
    eprintln!("{setup}");
    let results = match runtime.block_on(run(&settings)) {
        Ok(results) => results,
        Err(error) => {
            eprintln!("load: {error}");
            return ExitCode::FAILURE;
        }
    };
    let markdown = report::markdown(
        &setup,
        &results.rows,
        &results.memory,
        settings.held,
        settings.chunks * DELTA.len(),
    );
    let mut status = ExitCode::SUCCESS;
    match out {
        Some(mut file) => {
            if let Err(error) = file.write_all(markdown.as_bytes()) {
                // Minutes of load are not thrown away for a full disk.
                eprintln!("load: cannot write the tables ({error}); here they are:");
                print!("{markdown}");
                status = ExitCode::FAILURE;
            }
        }
        None => print!("{markdown}"),
    }
    if let Some(mut file) = csv
        && let Err(error) = file.write_all(report::csv(&results.rows).as_bytes())
    {
        eprintln!("load: cannot write the CSV: {error}");
        status = ExitCode::FAILURE;
    }
    status
}

/// What a run measured.
struct Results {
    rows: Vec<Row>,
    memory: Vec<Memory>,
}

async fn run(settings: &Settings) -> Result<Results, String> {
    let upstream = Upstream::start(settings.chunks)
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    let reply_bytes = settings.chunks * DELTA.len();

    let sqlite_file = std::env::temp_dir().join(format!("tc_load_{}.db", Uuid::now_v7().simple()));
    let postgres = postgres_database(&settings.database_url).await;

    let mut stacks = vec![
        Stack {
            name: PASSTHROUGH,
            args: vec!["--passthrough".into()],
            configurations: vec![(PASSTHROUGH.into(), Workload::Plain { system: false })],
        },
        stateful_stack(
            "sqlite",
            format!("sqlite://{}", sqlite_file.display()),
            true,
        ),
    ];
    match &postgres {
        Ok((_, url, _)) => stacks.push(stateful_stack("postgres", url.clone(), false)),
        Err(error) => eprintln!("postgres rows skipped: {error}"),
    }

    let mut rows = Vec::new();
    let mut memory = Vec::new();
    for stack in &stacks {
        let wanted: Vec<&(String, Workload)> = stack
            .configurations
            .iter()
            .filter(|(name, _)| settings.wants(name))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let args: Vec<&str> = stack.args.iter().map(String::as_str).collect();
        let proxy = Proxy::start(&settings.binary, upstream.addr, &args)?;
        // Memory first, on a fresh process, so freed memory from earlier runs that the
        // allocator kept cannot hide what the held streams take.
        let clients = Clients::new(proxy.addr);
        for _ in 0..8 {
            clients.chat(None, chat_body(false)).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = proxy.rss();
        upstream.hold(true);
        let during = Clients::new(proxy.addr)
            .hold_streams(
                settings.held,
                reply_bytes,
                || proxy.rss(),
                || upstream.hold(false),
            )
            .await;
        upstream.hold(false);
        let during = during?;
        memory.push(Memory {
            proxy: stack.name.to_owned(),
            idle,
            during,
        });

        for (name, workload) in wanted {
            let requests = match workload {
                Workload::Plain { system } => Requests::Plain(chat_body(*system)),
                Workload::Continue { seeded } => {
                    let count = settings.levels.iter().copied().max().unwrap_or(1);
                    let ids = clients.seed(count, *seeded).await?;
                    Requests::Continue {
                        ids: Arc::new(ids),
                        seeded: *seeded,
                        body: chat_body(false),
                    }
                }
            };
            for &k in &settings.levels {
                proxy.reset_peak();
                let pid = proxy.pid();
                let figures = clients
                    .run(k, &requests, settings.warmup, settings.measure, || {
                        cpu::Sample::take(pid)
                    })
                    .await;
                let row = Row::new(name, k, &figures, proxy.peak_rss());
                eprintln!(
                    "{name:<24} K={k:<3} {:>7.0} req/s  TTFB p50 {:.3} ms  [DONE] p50 {:.3} ms  held {:.0} µs  CPU µs/req proxy {:.0} db {:.0} bench {:.0}  failed {}",
                    row.requests_per_second,
                    row.first_byte_p50,
                    row.done_p50,
                    row.held_p50 * 1000.0,
                    row.cpu[0],
                    row.cpu[1],
                    row.cpu[2],
                    row.failures
                );
                rows.push(row);
            }
        }
        drop(proxy);
    }

    if let Ok((admin, _, database)) = postgres {
        let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await {
            eprintln!("could not drop {database}: {error}");
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_file.display()));
    }

    Ok(Results { rows, memory })
}

/// The proxy with the layer on `database_url`, and the configurations measured on it;
/// the stateless one only once (it touches no database).
fn stateful_stack(backend: &str, database_url: String, with_stateless: bool) -> Stack<'_> {
    let mut configurations = Vec::new();
    if with_stateless {
        configurations.push(("stateless".to_owned(), Workload::Plain { system: true }));
    }
    configurations.push((
        format!("new · {backend}"),
        Workload::Plain { system: false },
    ));
    for seeded in [20, 100] {
        configurations.push((
            format!("continued {seeded} · {backend}"),
            Workload::Continue { seeded },
        ));
    }
    Stack {
        name: backend,
        args: vec!["--database-url".into(), database_url],
        configurations,
    }
}

/// A database of its own on the server `url` names: the admin pool, the database's URL
/// and its name. The tc_test_ prefix lets the test tooling clean up after an interrupted
/// run.
async fn postgres_database(url: &str) -> Result<(sqlx::PgPool, String, String), String> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|error| format!("{url} is unreachable ({error})"))?;
    let database = format!("tc_test_bench_load_{}", Uuid::now_v7().simple());
    // The name is made from a uuid, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .map_err(|error| format!("cannot create a database: {error}"))?;
    let (server, query) = url.split_once('?').unwrap_or((url, ""));
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    let separator = if query.is_empty() { "" } else { "?" };
    Ok((
        admin,
        format!("{base}/{database}{separator}{query}"),
        database,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Arguments, String> {
        Arguments::parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn a_filter_and_the_files_in_either_form() {
        let parsed = parse(&["--out", "load.md", "sqlite", "--csv=load.csv"]).unwrap();
        assert_eq!(parsed.filter.as_deref(), Some("sqlite"));
        assert_eq!(parsed.out, Some(PathBuf::from("load.md")));
        assert_eq!(parsed.csv, Some(PathBuf::from("load.csv")));

        let none = parse(&[]).unwrap();
        assert!(none.filter.is_none() && none.out.is_none() && none.csv.is_none());
    }

    #[test]
    fn instructions_are_counted_when_asked_with_the_same_filter() {
        let parsed = parse(&["--instructions", "stateless"]).unwrap();
        assert!(parsed.instructions);
        assert_eq!(parsed.filter.as_deref(), Some("stateless"));
        assert!(!parse(&[]).unwrap().instructions);
        assert!(parse(&["--instructions=yes"]).is_err());
    }

    #[test]
    fn a_mistake_is_named_before_the_usage() {
        for (args, named) in [
            (&["--svg", "x"][..], "unknown option --svg"),
            (&["--out"][..], "--out needs a file"),
            (&["--csv="][..], "--csv needs a file"),
            (&["sqlite", "postgres"][..], "one filter at most"),
        ] {
            let message = parse(args).err().unwrap();
            assert!(message.starts_with(named), "{args:?}: {message}");
            assert!(message.ends_with(USAGE));
        }
        assert_eq!(parse(&["--help"]).err().as_deref(), Some(USAGE));
    }
}
