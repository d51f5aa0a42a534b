//! What the layer costs a streaming reply under load: the example proxy, as a child
//! process, in front of a fast in-process upstream, driven by K concurrent streaming
//! clients over loopback, against the same proxy with the layer off (`--passthrough`).
//!
//! ```text
//! cargo build --release --example proxy
//! cargo run --release -p load                      # every configuration
//! cargo run --release -p load -- sqlite            # passthrough and the configurations naming sqlite
//! cargo run --release -p load -- --out load.md --csv load.csv
//! cargo run --release -p load -- --paced           # at a model's pace: CPU per request
//! ```
//!
//! The proxy runs as a user runs it: with a key file holding one fresh key
//! (`--api-keys`; `--passthrough` checks it too), which every client request carries as
//! `Authorization: Bearer <key>`, and with Prometheus metrics on an address of their
//! own (`--metrics-listen`), read once per proxy to know they are served.
//!
//! Configurations: passthrough; stateless through the layer (a system message); new
//! conversations; continued conversations with 20 and with 100 stored messages (seeded
//! through the management API, cut back to that length every few turns); the stateful
//! ones on SQLite (a fresh file) and on PostgreSQL (`DATABASE_URL`, default the local
//! server, in a database created for the run and dropped after it; skipped when no server
//! answers). For each continued length, passthrough once more with the clients sending
//! the conversation's whole history, as they do without the layer: what a continued
//! conversation costs the proxy without it. Each runs at every concurrency for a fixed
//! time.
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
//! `--paced` measures the layer at a model's pace, where the proxy mostly waits: the
//! model spreads each reply's `LOAD_PACED_CHUNKS` deltas (66), a frame each, over
//! `LOAD_PACED_SECONDS` (4), and `LOAD_PACED_STREAMS` clients (500) each send one
//! request after another, started evenly over one reply's time so that their requests
//! do not end in waves; `LOAD_SECONDS` (20 here) are measured after `LOAD_WARMUP`
//! (`LOAD_PACED_SECONDS` + 1). Configurations: passthrough, stateless, new and continued
//! with 20 stored messages on SQLite and on PostgreSQL, and passthrough with the 20
//! messages sent whole; no memory table. A continued conversation is cut back to its
//! seeded length only while warming up, so that no management call's CPU counts against
//! the chat requests; each measured turn adds two messages (20 s at 4 s a reply: from
//! about 22 to about 32). Its table:
//! requests ended in the measured time, the proxy's CPU per request (user + system,
//! from `/proc`) and that against passthrough's, the database's and the load
//! generator's, latencies, the proxy's peak RSS, failures. With `LOAD_PACED_ROUNDS` = R
//! above 1, a second passthrough proxy runs beside the others, and each configuration is
//! measured R times, each time just after a window of that passthrough, and read against
//! it: on a shared machine passthrough's own figure drifts by a tenth from minute to
//! minute, more than the layer's share. A last table gives each configuration's R
//! ratios and their median, and one more each continued row's median against its
//! history sent whole. Its progress lines on stderr also split the proxy's CPU into
//! user and system time, count its threads' context switches per request, and give the
//! part of its CPU spent on sqlx's SQLite worker threads, where SQLite itself runs each
//! statement. Each stream holds two sockets in the tool and two in the proxy: the tool
//! stops at once when the limit on open files is too low for that.
//!
//! `--instructions` measures something else: the instructions the proxy executes per
//! request, per chunk and per turn, under callgrind, one request at a time (see
//! [`instructions`]; `scripts/instructions.sh` builds and runs it).

mod client;
mod cpu;
mod instructions;
mod limits;
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

use crate::client::{Clients, Requests, RunFigures, chat_body, sent_whole_body};
use crate::proxy::Proxy;
use crate::report::{Memory, PASSTHROUGH, Row, sent_whole};
use crate::upstream::{DELTA, Upstream};

/// Everything a run is told.
struct Settings {
    warmup: Duration,
    measure: Duration,
    levels: Vec<usize>,
    chunks: usize,
    held: usize,
    /// How long the model takes over each reply, in the paced mode; `None`: as fast as
    /// the proxy takes it.
    pace: Option<Duration>,
    /// Paced, how many times each configuration is measured, each time just after a
    /// window of passthrough that it is read against (1: once, against the passthrough
    /// row).
    rounds: usize,
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
    /// Replies at a model's pace, many streams at once, CPU per request.
    paced: bool,
}

const USAGE: &str = "\
usage: load [FILTER] [--out FILE] [--csv FILE]
       load --paced [FILTER] [--out FILE] [--csv FILE]
       load --instructions [FILTER] [--out FILE]

  FILTER      measure only the configurations whose name contains it
              (passthrough always runs: the other rows are read against it)
  --out FILE  write the markdown tables to FILE instead of stdout
  --csv FILE  write the load table's rows to FILE as CSV as well
  --paced     replies at a model's pace: LOAD_PACED_STREAMS streams at once, each
              reply LOAD_PACED_CHUNKS deltas a frame each over LOAD_PACED_SECONDS;
              reports the proxy's CPU per request against passthrough
  --instructions
              count the proxy's instructions per request, chunk and turn under
              valgrind's callgrind, one request at a time, instead of measuring load

The proxy runs with a key file of one key (the clients send it) and metrics on.
Build the proxy first: cargo build --release --example proxy
Environment: LOAD_SECONDS (6; paced 20), LOAD_WARMUP (1; paced LOAD_PACED_SECONDS + 1),
LOAD_CONCURRENCY (1,8,32,64), LOAD_CHUNKS (256), LOAD_HELD (256),
LOAD_PACED_STREAMS (500), LOAD_PACED_CHUNKS (66), LOAD_PACED_SECONDS (4),
LOAD_PACED_ROUNDS (1), DATABASE_URL, PROXY_BIN.";

impl Arguments {
    /// `Err` carries what to print: the usage alone when asked for, else after the
    /// mistake.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self {
            filter: None,
            out: None,
            csv: None,
            instructions: false,
            paced: false,
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
                "--paced" if inline.is_none() => {
                    parsed.paced = true;
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
        if parsed.paced && parsed.instructions {
            return Err(format!(
                "--paced and --instructions are two different measurements: one at a time\n\n{USAGE}"
            ));
        }
        Ok(parsed)
    }
}

impl Settings {
    /// The settings `variable` gives (the environment, in `main`), in the paced mode
    /// when `paced`.
    fn new(filter: Option<String>, paced: bool, variable: impl Fn(&str) -> Option<String>) -> Self {
        let number = |name: &str, default: u64| {
            variable(name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        let pace = paced.then(|| Duration::from_secs(number("LOAD_PACED_SECONDS", 4).max(1)));
        let levels = match pace {
            Some(_) => vec![number("LOAD_PACED_STREAMS", 500).max(1) as usize],
            None => variable("LOAD_CONCURRENCY")
                .unwrap_or_else(|| "1,8,32,64".to_owned())
                .split(',')
                .filter_map(|k| k.trim().parse().ok())
                .filter(|&k| k > 0)
                .collect(),
        };
        // Paced, the warm-up lets every staggered client start and the measured time
        // holds several replies of each.
        let (warmup, measure, chunks) = match pace {
            Some(over) => (
                over.as_secs() + 1,
                20,
                number("LOAD_PACED_CHUNKS", 66).max(1),
            ),
            None => (1, 6, number("LOAD_CHUNKS", 256)),
        };
        Self {
            warmup: Duration::from_secs(number("LOAD_WARMUP", warmup)),
            measure: Duration::from_secs(number("LOAD_SECONDS", measure)),
            levels,
            chunks: chunks as usize,
            held: number("LOAD_HELD", 256) as usize,
            pace,
            rounds: match pace {
                Some(_) => number("LOAD_PACED_ROUNDS", 1).max(1) as usize,
                None => 1,
            },
            database_url: variable("DATABASE_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
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
    Plain {
        system: bool,
    },
    Continue {
        seeded: usize,
    },
    /// A continued conversation's whole history in each request, as a client sends it
    /// without the layer (to a passthrough proxy).
    SentWhole {
        seeded: usize,
    },
}

/// The turns of its own a [`Workload::SentWhole`] request carries after the seeded
/// messages: about what a continued conversation holds on average while measured at a
/// model's pace (a turn every 4 s, 15 s measured: 20 + 3.2 messages).
const TURNS_SENT_WHOLE: usize = 2;

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
    let settings = Settings::new(arguments.filter, arguments.paced, |name| {
        std::env::var(name).ok()
    });
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
    let streams = settings.levels.iter().copied().max().unwrap_or(1);
    if let Err(error) = limits::enough_files(streams) {
        eprintln!("load: {error}");
        return ExitCode::FAILURE;
    }
    let pace = match settings.pace {
        Some(over) => format!(
            "at a model's pace: {streams} streams at once, each reply spread over {over:?} (a delta every {:?}); ",
            over / u32::try_from(settings.chunks).unwrap_or(u32::MAX)
        ),
        None => String::new(),
    };
    let setup = format!(
        "proxy {} with a key file and metrics on; {pace}replies of {} deltas of {} bytes ({} bytes); K = {:?}; {:?} warm-up + {:?} per run",
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
    let markdown = match settings.pace {
        Some(_) => report::paced_markdown(&setup, &results.rows, settings.measure),
        None => report::markdown(
            &setup,
            &results.rows,
            &results.memory,
            settings.held,
            settings.chunks * DELTA.len(),
        ),
    };
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
    let upstream = match settings.pace {
        Some(over) => Upstream::paced(settings.chunks, over).await,
        None => Upstream::start(settings.chunks).await,
    }
    .map_err(|e| format!("upstream: {e}"))?;
    // Paced, one continued length keeps the run short: seeding is one conversation per
    // stream, and 100 stored messages add nothing the fast mode does not show.
    let continued: &[usize] = match settings.pace {
        Some(_) => &[20],
        None => &[20, 100],
    };
    let reply_bytes = settings.chunks * DELTA.len();

    let sqlite_file = std::env::temp_dir().join(format!("tc_load_{}.db", Uuid::now_v7().simple()));
    let postgres = postgres_database(&settings.database_url).await;

    let mut stacks = vec![
        Stack {
            name: PASSTHROUGH,
            args: vec!["--passthrough".into()],
            configurations: std::iter::once((
                PASSTHROUGH.into(),
                Workload::Plain { system: false },
            ))
            .chain(
                continued
                    .iter()
                    .map(|&seeded| (sent_whole(seeded), Workload::SentWhole { seeded })),
            )
            .collect(),
        },
        stateful_stack(
            "sqlite",
            format!("sqlite://{}", sqlite_file.display()),
            true,
            continued,
        ),
    ];
    match &postgres {
        Ok((_, url, _)) => stacks.push(stateful_stack("postgres", url.clone(), false, continued)),
        Err(error) => eprintln!("postgres rows skipped: {error}"),
    }

    // Paced rounds: a passthrough proxy kept for the whole run, whose windows pair with
    // each configuration's.
    let paired = match settings.rounds {
        1 => None,
        _ => {
            let proxy = Proxy::start(&settings.binary, upstream.addr, &["--passthrough"])?;
            let clients = Clients::new(&proxy);
            Some((proxy, clients))
        }
    };

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
        let clients = Clients::new(&proxy);
        clients.metrics().await?;
        // Memory first, on a fresh process, so freed memory from earlier runs that the
        // allocator kept cannot hide what the held streams take. Paced runs skip it:
        // they are about CPU, and their replies take seconds.
        if settings.pace.is_none() {
            for _ in 0..8 {
                clients.chat(None, chat_body(false)).await?;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let idle = proxy.rss();
            upstream.hold(true);
            let during = Clients::new(&proxy)
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
        }

        for (name, workload) in wanted {
            let requests = match workload {
                Workload::Plain { system } => Requests::Plain(chat_body(*system)),
                Workload::SentWhole { seeded } => {
                    Requests::Plain(sent_whole_body(*seeded, TURNS_SENT_WHOLE, settings.chunks))
                }
                Workload::Continue { seeded } => {
                    let count = settings.levels.iter().copied().max().unwrap_or(1);
                    let ids = clients.seed(count, *seeded).await?;
                    Requests::Continue {
                        ids: Arc::new(ids),
                        seeded: *seeded,
                        body: chat_body(false),
                        cut_while_measured: settings.pace.is_none(),
                    }
                }
            };
            let rounds = paired.as_ref().filter(|_| name != PASSTHROUGH);
            let round_count = rounds.map_or(1, |_| settings.rounds);
            for (&k, round) in settings
                .levels
                .iter()
                .flat_map(|k| (0..round_count).map(move |round| (k, round)))
            {
                // The passthrough window this round's is read against, just before it.
                let paired_passthrough = match rounds {
                    Some((paired, paired_clients)) => {
                        let plain = Requests::Plain(chat_body(false));
                        let figures = window(settings, paired_clients, paired, k, &plain).await;
                        eprintln!(
                            "{PASSTHROUGH:<24} K={k:<3} round {} of {}: CPU µs/req proxy {:.0}",
                            round + 1,
                            settings.rounds,
                            figures.cpu[0]
                        );
                        Some(figures.cpu[0])
                    }
                    None => None,
                };
                proxy.reset_peak();
                let figures = window(settings, &clients, &proxy, k, &requests).await;
                let mut row = Row::new(name, k, &figures, proxy.peak_rss());
                row.paired_passthrough = paired_passthrough;
                eprintln!(
                    "{name:<24} K={k:<3} {:>6} ended {:>7.0} req/s  TTFB p50 {:.3} ms  [DONE] p50 {:.3} ms  held {:.0} µs  CPU µs/req proxy {:.0} (user {:.0} sys {:.0}, {:.1} switches, SQLite's threads {:.0}) db {:.0} bench {:.0}  failed {}",
                    row.completed,
                    row.requests_per_second,
                    row.first_byte_p50,
                    row.done_p50,
                    row.held_p50 * 1000.0,
                    row.cpu[0],
                    figures.proxy_split[0],
                    figures.proxy_split[1],
                    figures.proxy_split[2],
                    figures.proxy_split[3],
                    row.cpu[1],
                    row.cpu[2],
                    row.failures
                );
                rows.push(row);
            }
        }
        drop(proxy);
    }
    drop(paired);

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

/// One measured run of `requests` from `k` clients at once, with the CPU of `proxy`'s
/// process sampled over it.
async fn window(
    settings: &Settings,
    clients: &Clients,
    proxy: &Proxy,
    k: usize,
    requests: &Requests,
) -> RunFigures {
    let pid = proxy.pid();
    let stagger = settings.pace.unwrap_or_default();
    clients
        .run(
            k,
            requests,
            settings.warmup,
            settings.measure,
            stagger,
            || cpu::Sample::take(pid),
        )
        .await
}

/// The proxy with the layer on `database_url`, and the configurations measured on it;
/// the stateless one only once (it touches no database), a continued one per length in
/// `continued`.
fn stateful_stack<'a>(
    backend: &'a str,
    database_url: String,
    with_stateless: bool,
    continued: &[usize],
) -> Stack<'a> {
    let mut configurations = Vec::new();
    if with_stateless {
        configurations.push(("stateless".to_owned(), Workload::Plain { system: true }));
    }
    configurations.push((
        format!("new · {backend}"),
        Workload::Plain { system: false },
    ));
    for &seeded in continued {
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
    fn paced_is_a_flag_with_the_same_filter_and_files() {
        let parsed = parse(&["--paced", "sqlite", "--out=paced.md"]).unwrap();
        assert!(parsed.paced && !parsed.instructions);
        assert_eq!(parsed.filter.as_deref(), Some("sqlite"));
        assert_eq!(parsed.out, Some(PathBuf::from("paced.md")));
        assert!(parse(&["sqlite", "--paced"]).unwrap().paced);
        assert!(!parse(&["sqlite"]).unwrap().paced);
        assert!(parse(&["--paced=yes"]).is_err());
        let both = parse(&["--paced", "--instructions"]).err().unwrap();
        assert!(both.starts_with("--paced and --instructions"), "{both}");
    }

    fn settings(paced: bool, variables: &[(&str, &str)]) -> Settings {
        Settings::new(None, paced, |name| {
            variables
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn paced_runs_have_their_own_defaults_and_variables() {
        let paced = settings(true, &[]);
        assert_eq!(paced.pace, Some(Duration::from_secs(4)));
        assert_eq!(paced.chunks, 66);
        assert_eq!(paced.levels, [500]);
        assert_eq!(paced.measure, Duration::from_secs(20));
        assert_eq!(paced.warmup, Duration::from_secs(5));
        assert_eq!(paced.rounds, 1);

        let told = settings(
            true,
            &[
                ("LOAD_PACED_STREAMS", "200"),
                ("LOAD_PACED_CHUNKS", "33"),
                ("LOAD_PACED_SECONDS", "2"),
                ("LOAD_SECONDS", "10"),
                ("LOAD_PACED_ROUNDS", "3"),
                // The fast mode's own settings do not reach a paced run.
                ("LOAD_CONCURRENCY", "1,8"),
                ("LOAD_CHUNKS", "256"),
            ],
        );
        assert_eq!(told.pace, Some(Duration::from_secs(2)));
        assert_eq!((told.chunks, told.levels.as_slice()), (33, &[200][..]));
        assert_eq!(told.measure, Duration::from_secs(10));
        assert_eq!(told.warmup, Duration::from_secs(3));
        assert_eq!(told.rounds, 3);

        let fast = settings(
            false,
            &[("LOAD_PACED_STREAMS", "200"), ("LOAD_PACED_ROUNDS", "3")],
        );
        assert_eq!(fast.rounds, 1);
        assert_eq!(fast.pace, None);
        assert_eq!(
            (fast.chunks, fast.levels.as_slice()),
            (256, &[1, 8, 32, 64][..])
        );
        assert_eq!(fast.measure, Duration::from_secs(6));
        assert_eq!(fast.warmup, Duration::from_secs(1));
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
