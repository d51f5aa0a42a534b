//! What the layer costs a streaming reply under load: the example proxy, as a child
//! process, in front of a fast in-process upstream, driven by K concurrent streaming
//! clients over loopback, against the same proxy with the layer off (`--passthrough`).
//!
//! ```text
//! cargo build --release --example proxy
//! cargo run --release -p load               # every configuration
//! cargo run --release -p load -- sqlite     # passthrough and the configurations naming sqlite
//! ```
//!
//! Configurations: passthrough; stateless through the layer (a system message); new
//! conversations; continued conversations with 20 and with 100 stored messages (seeded
//! through the management API, cut back to that length every few turns); the stateful
//! ones on SQLite (a fresh file) and on PostgreSQL (`DATABASE_URL`, default the local
//! server, in a database created for the run and dropped after it; skipped when no server
//! answers). Each runs at every concurrency for a fixed time.
//!
//! Printed: one markdown table (requests/s, time to first byte and to `data: [DONE]` p50
//! and p99, how long `[DONE]` was held back while the turn was stored, the CPU each
//! request cost the proxy, the database server and the load generator, the proxy's peak
//! RSS, and each row against passthrough at the same K), and
//! the memory each in-flight stream costs: K slow streams of a known size (deltas 1 ms
//! apart, the end held back) open at once, (RSS during − RSS idle) / K, on a freshly
//! started proxy. Written: `docs/latency.svg`,
//! time to `[DONE]` p50 against K.
//!
//! Settings (environment): `LOAD_SECONDS` measured per run (6), `LOAD_WARMUP` seconds
//! (1), `LOAD_CONCURRENCY` (`1,8,32,64`), `LOAD_CHUNKS` deltas per reply (256),
//! `LOAD_HELD` streams held open for the memory figure (256), `PROXY_BIN`,
//! `LOAD_SVG` (where the plot goes).

mod client;
mod cpu;
mod proxy;
mod report;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::client::{Clients, Requests, chat_body};
use crate::proxy::Proxy;
use crate::report::{PASSTHROUGH, Row};
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

impl Settings {
    fn from_env() -> Self {
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
        // The first argument that is not an option filters.
        let filter = std::env::args().skip(1).find(|arg| !arg.starts_with("--"));
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
    let settings = Settings::from_env();
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
    match runtime.block_on(run(&settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings) -> Result<(), String> {
    let upstream = Upstream::start(settings.chunks)
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    let reply_bytes = settings.chunks * DELTA.len();
    println!(
        "proxy {}; replies of {} deltas of {} bytes ({} bytes); K = {:?}; {:?} warm-up + {:?} per run\n",
        settings.binary.display(),
        settings.chunks,
        DELTA.len(),
        reply_bytes,
        settings.levels,
        settings.warmup,
        settings.measure,
    );

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
        memory.push((stack.name, idle, during));

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

    println!("{}", report::table(&rows));
    println!(
        "Memory per in-flight stream: {} slow streams of {reply_bytes} bytes open at once, (RSS during − RSS idle) / K\n",
        settings.held
    );
    println!(
        "| proxy | RSS idle MiB | RSS during MiB | per stream KiB | over passthrough KiB | target KiB (2 × reply + 16) |\n|---|--:|--:|--:|--:|--:|"
    );
    let per_stream =
        |idle: u64, during: u64| during.saturating_sub(idle) as f64 / settings.held as f64 / 1024.0;
    let baseline = memory
        .iter()
        .find(|(name, _, _)| *name == PASSTHROUGH)
        .map(|(_, idle, during)| per_stream(*idle, *during));
    for (name, idle, during) in &memory {
        let stream = per_stream(*idle, *during);
        println!(
            "| {name} | {:.1} | {:.1} | {stream:.1} | {} | {:.1} |",
            *idle as f64 / 1048576.0,
            *during as f64 / 1048576.0,
            baseline.map_or("–".to_owned(), |base| format!("{:+.1}", stream - base)),
            (2 * reply_bytes) as f64 / 1024.0 + 16.0
        );
    }

    let svg_path = std::env::var_os("LOAD_SVG")
        .map(PathBuf::from)
        .unwrap_or_else(|| proxy::workspace_root().join("docs/latency.svg"));
    let title = format!(
        "Time to [DONE] through the proxy, {} × {}-byte chunks",
        settings.chunks,
        DELTA.len()
    );
    if let Some(parent) = svg_path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&svg_path, report::latency_svg(&rows, &title))
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    println!("\nplot: {}", svg_path.display());
    Ok(())
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
