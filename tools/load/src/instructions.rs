//! The layer's cost in instructions, counted by callgrind: the example proxy (debug info
//! stripped, which valgrind 3.19 needs) runs under `valgrind --tool=callgrind` in front of
//! the tool's own model, and one client sends it requests one after another over a
//! keep-alive connection. Each figure is the difference of two runs, of [`FEW`] and
//! [`MANY`] requests, divided by the difference in requests, counted from after a few
//! warm-up requests to the last one (see [`total`]). Instruction counts repeat
//! to a fraction of a percent run after run, where CPU time on a shared machine does not.
//! Beside the proxy, a floor for each backend: the same rows inserted by the `floor`
//! program on a held connection (see [`floor_per_turn`]).
//!
//! Replies are [`SHORT`] or [`LONG`] typical chunks; the cost per chunk is the slope
//! between the two, and a fixed cost the rest. The model sends a reply either whole (the
//! proxy reads it in one or a few frames, as from a file server) or a chunk a frame (as a
//! model emits tokens). A stateless request is also counted with a system prompt of
//! about 4 KiB beside the bench's short one, against passthrough of the same body: the
//! layer reads and scans a request whole. A conversation continued with [`HISTORY`]
//! stored messages is counted on each backend against a new one, every request on a
//! conversation of its own seeded before counting starts, twice: with its history read
//! whole (seeded through the management API, which the history cache does not see, as
//! after a turn through another instance), and held in process (each conversation
//! continued once before counting, as when its turns go through one proxy, so each
//! counted request continues 102 messages); held, once more through the Responses API
//! (the conversation named in the body), against the chat path. On SQLite the search
//! index is merged into one segment and the write-ahead log emptied before counting (see
//! [`compact`]), so that no run inherits a merge another left half done. The proxy runs
//! as a user runs it, with a key file and metrics (see [`Proxy::start`]): every count
//! includes the key check, passthrough's too.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::client::{Clients, chat_body, long_prompt_body, responses_body};
use crate::proxy::Proxy;
use crate::upstream::{DELTA, Framing, Upstream};

/// Requests in the shorter run of each pair.
pub const FEW: usize = 40;
/// Requests in the longer run of each pair.
pub const MANY: usize = 160;
/// Chunks in a short reply.
pub const SHORT: usize = 68;
/// Chunks in a long reply.
pub const LONG: usize = 532;
/// Stored messages of a continued conversation.
pub const HISTORY: usize = 100;

/// Requests sent before the counts are zeroed, see [`total`].
const WARM_UP: usize = 3;

/// The pause before each request, see [`sequentially`].
const SETTLE: Duration = Duration::from_millis(20);

/// How long a proxy under valgrind may take to write its counts and exit.
const STOP_PATIENCE: Duration = Duration::from_secs(120);

/// Which proxy a measurement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stack {
    Passthrough,
    Sqlite,
    Postgres,
}

/// One pair of runs: a proxy, a request, a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Case {
    stack: Stack,
    /// With a system message: stateless under the layer.
    system: bool,
    framing: Framing,
    chunks: usize,
    prompt: Prompt,
    /// Messages stored before each request: 0 starts a conversation (or is stateless),
    /// [`HISTORY`] continues one of its own (see [`total`]).
    stored: usize,
    /// Whether each conversation was continued once before counting, so that the proxy
    /// holds its history in process, as it does when a conversation's turns go through
    /// one process; otherwise the history is read whole, as after a turn elsewhere.
    held: bool,
    api: Api,
}

/// Which of the layer's APIs a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Api {
    /// `POST /v1/chat/completions`, a continued conversation named by `X-Conversation-ID`.
    Chat,
    /// `POST /v1/responses`, a continued conversation named by the body's `conversation`.
    Responses,
}

/// How long the request's system message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Prompt {
    /// A few words, or none without a system message: the bench's own request.
    Short,
    /// About 4 KiB, as applications send (see [`long_prompt_body`]).
    Long,
}

impl Case {
    /// A request of `chunks` chunks on `stack`, through the chat path: the bench's short
    /// prompt, nothing stored before it. Other cases change fields of it.
    fn new(stack: Stack, system: bool, framing: Framing, chunks: usize) -> Self {
        Self {
            stack,
            system,
            framing,
            chunks,
            prompt: Prompt::Short,
            stored: 0,
            held: false,
            api: Api::Chat,
        }
    }

    fn name(&self) -> String {
        let path = match (self.stack, self.system, self.stored) {
            (Stack::Passthrough, _, _) => "passthrough".to_owned(),
            (_, true, _) => "stateless".to_owned(),
            (Stack::Sqlite, false, 0) => "new · sqlite".to_owned(),
            (Stack::Postgres, false, 0) => "new · postgres".to_owned(),
            (Stack::Sqlite, false, stored) => format!("continued {stored}{} · sqlite", self.held()),
            (Stack::Postgres, false, stored) => {
                format!("continued {stored}{} · postgres", self.held())
            }
        };
        let framing = match self.framing {
            Framing::Whole => "whole reply",
            Framing::PerChunk => "a chunk a frame",
        };
        let prompt = match self.prompt {
            Prompt::Short => "",
            Prompt::Long => ", 4 KiB system prompt",
        };
        let api = match self.api {
            Api::Chat => "",
            Api::Responses => "responses · ",
        };
        format!("{api}{path}, {} chunks, {framing}{prompt}", self.chunks)
    }

    /// How the name says the history was held in process.
    fn held(&self) -> &'static str {
        if self.held { " held" } else { "" }
    }

    /// The body the client sends, continuing `conversation` when given.
    fn body(&self, conversation: Option<&str>) -> Bytes {
        match (self.api, self.prompt) {
            (Api::Responses, _) => responses_body(conversation),
            (Api::Chat, Prompt::Short) => chat_body(self.system),
            (Api::Chat, Prompt::Long) => long_prompt_body(),
        }
    }

    /// The path the client sends its requests to.
    fn path(&self) -> &'static str {
        match self.api {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
        }
    }
}

/// Every case the table needs.
fn cases() -> Vec<Case> {
    let case = Case::new;
    let mut cases = Vec::new();
    for framing in [Framing::Whole, Framing::PerChunk] {
        for chunks in [SHORT, LONG] {
            cases.push(case(Stack::Passthrough, false, framing, chunks));
            cases.push(case(Stack::Postgres, false, framing, chunks));
        }
    }
    for chunks in [SHORT, LONG] {
        cases.push(case(Stack::Sqlite, false, Framing::Whole, chunks));
    }
    cases.push(case(Stack::Sqlite, true, Framing::Whole, SHORT));
    // A stateless request's cost grows with its body, which the layer reads whole.
    for stack in [Stack::Passthrough, Stack::Sqlite] {
        cases.push(Case {
            prompt: Prompt::Long,
            ..case(stack, true, Framing::Whole, SHORT)
        });
    }
    // A continued turn loads and splices its history: read against a new turn, read
    // whole and held in process.
    for stack in [Stack::Sqlite, Stack::Postgres] {
        for held in [false, true] {
            cases.push(Case {
                stored: HISTORY,
                held,
                ..case(stack, false, Framing::Whole, SHORT)
            });
        }
        // The Responses API continues a conversation too: against the chat path's held
        // turn, what its own way of loading and sending a history costs.
        cases.push(Case {
            stored: HISTORY,
            held: true,
            api: Api::Responses,
            ..case(stack, false, Framing::Whole, SHORT)
        });
    }
    cases
}

/// Runs the cases whose name contains `filter` (passthrough's always: every other row is
/// read against them) and returns the table, in markdown.
pub async fn run(
    binary: &Path,
    database_url: &str,
    filter: Option<&str>,
) -> Result<String, String> {
    let work = std::env::temp_dir().join(format!("tc_instructions_{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let stripped = strip(binary, &work)?;
    let postgres = crate::postgres_database(database_url).await;

    let wanted: Vec<Case> = cases()
        .into_iter()
        .filter(|case| {
            case.stack == Stack::Passthrough
                || filter.is_none_or(|filter| case.name().contains(filter))
        })
        .collect();
    let mut counts = BTreeMap::new();
    let mut failure = None;
    for case in wanted {
        let args = match (case.stack, &postgres) {
            (Stack::Passthrough, _) => vec!["--passthrough".to_owned()],
            (Stack::Sqlite, _) => vec![
                "--database-url".to_owned(),
                // A file of its own for each case: the runs of a case leave work behind
                // (a write-ahead log to check point at exit) that the next case's runs would
                // otherwise count, once in one run of the pair and not in the other.
                format!(
                    "sqlite://{}",
                    work.join(format!("{}.db", slug(&case.name()))).display()
                ),
            ],
            (Stack::Postgres, Ok((_, url, _))) => vec!["--database-url".to_owned(), url.clone()],
            (Stack::Postgres, Err(error)) => {
                eprintln!("{}: skipped, {error}", case.name());
                continue;
            }
        };
        match per_request(&stripped, &work, case, &args).await {
            Ok(count) => {
                eprintln!("{:<48} {count:>12.0} instructions/request", case.name());
                counts.insert(case, count);
            }
            Err(error) => {
                failure = Some(format!("{}: {error}", case.name()));
                break;
            }
        }
    }

    // The floor of each backend whose turns were counted, unless a case failed.
    let mut floors = BTreeMap::new();
    for stack in [Stack::Sqlite, Stack::Postgres] {
        let counted = counts
            .keys()
            .any(|case| case.stack == stack && !case.system);
        if failure.is_some() || !counted {
            continue;
        }
        let url = match (stack, &postgres) {
            (Stack::Postgres, Ok((_, url, _))) => url.clone(),
            _ => format!("sqlite://{}", work.join("floor.db").display()),
        };
        match floor_per_turn(&stripped, &work, stack, &url).await {
            Ok(count) => {
                eprintln!("{:<48} {count:>12.0} instructions/turn", floor_name(stack));
                floors.insert(stack, count);
            }
            Err(error) => failure = Some(format!("{}: {error}", floor_name(stack))),
        }
    }

    if let Ok((admin, _, database)) = &postgres {
        let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(admin).await {
            eprintln!("could not drop {database}: {error}");
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(table(&counts, &floors))
}

/// A copy of `binary` without debug info, which valgrind 3.19 cannot read.
fn strip(binary: &Path, work: &Path) -> Result<PathBuf, String> {
    let name = binary.file_name().unwrap_or("proxy".as_ref());
    let stripped = work.join(name);
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&stripped)
        .status()
        .map_err(|error| format!("cannot run objcopy: {error}"))?;
    if !status.success() {
        return Err(format!("objcopy --strip-debug failed ({status})"));
    }
    Ok(stripped)
}

/// The instructions one request of `case` costs the proxy.
async fn per_request(
    binary: &Path,
    work: &Path,
    case: Case,
    args: &[String],
) -> Result<f64, String> {
    let upstream = Upstream::framed(case.chunks, case.framing)
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A first start outside valgrind runs the migrations, so that both counted runs find
    // the database as it stays.
    let mut proxy = Proxy::start(binary, upstream.addr, &args)?;
    // A chat request: the Responses case's own body is not one.
    let first = match case.api {
        Api::Chat => case.body(None),
        Api::Responses => chat_body(false),
    };
    Clients::new(&proxy).chat(None, first).await?;
    proxy.stop(STOP_PATIENCE);
    let few = total(binary, work, &upstream, case, &args, FEW).await?;
    let many = total(binary, work, &upstream, case, &args, MANY).await?;
    Ok((many as f64 - few as f64) / (MANY - FEW) as f64)
}

/// The instructions a proxy under callgrind executed from start to exit, serving
/// `requests` requests of `case`.
async fn total(
    binary: &Path,
    work: &Path,
    upstream: &Upstream,
    case: Case,
    args: &[&str],
    requests: usize,
) -> Result<u64, String> {
    let sqlite = args.iter().find(|arg| arg.starts_with("sqlite:"));
    if let Some(url) = sqlite {
        checkpoint(url).await?;
    }
    let out = work.join(format!("callgrind.{}.out", Uuid::now_v7().simple()));
    let launcher = callgrind(&out);
    let mut proxy = Proxy::start_under(&launcher, binary, upstream.addr, args)?;
    // A continued case gets a conversation of its own for each request, seeded before
    // anything is counted (on SQLite indexed for search too, as a search would), so that
    // every counted turn finds the same history. Both runs seed as many as the longer
    // one needs: seeded in proportion to the requests, the longer run's file and search
    // index were four times as large, and the difference of the two runs counted part of
    // the larger file's cost as the requests' own (15,000 to 30,000 instructions a
    // request in SQLite's read-whole row).
    let conversations = match case.stored {
        0 => Ok(Vec::new()),
        stored => seed(&proxy, case, WARM_UP + MANY, stored).await,
    };
    let conversations = match conversations {
        Ok(ids) if case.held => hold(&proxy, case, ids).await,
        other => other,
    };
    let conversations = match (conversations, sqlite) {
        (Ok(ids), Some(url)) => compact(url).await.map(|()| ids),
        (other, _) => other,
    };
    // Start-up is not counted: how many connections a PostgreSQL pool opened while the
    // migrations ran depended on timing, and each TLS handshake is some 1.5 million
    // instructions (±13,000 a request in the difference of two runs). A few requests
    // first, so that whatever the first ones open is open in both runs.
    let (warm_up, counted) = match &conversations {
        Ok(ids) => ids.split_at(ids.len().min(WARM_UP)),
        Err(_) => (&[][..], &[][..]),
    };
    let warmed = match &conversations {
        Ok(_) => sequentially(&proxy, case, WARM_UP, warm_up).await,
        Err(error) => Err(error.clone()),
    };
    let zeroed = warmed.and_then(|()| callgrind_control(&proxy, "--zero"));
    let connections = upstream.connections();
    let sent = match zeroed {
        Ok(()) => sequentially(&proxy, case, requests, counted).await,
        Err(error) => Err(error),
    };
    // Shutdown is not counted either: whether the pool's SQLite connections were closed
    // before the process ended depended on timing (some 90,000 instructions, ±750 a
    // request). Work the turns leave for later still is: on SQLite, a search indexes
    // what the last turns left pending, as the next index batch would have.
    let sent = match sent {
        Ok(()) if case.stack == Stack::Sqlite && !case.system => search(&proxy).await,
        other => other,
    };
    let sent = sent.and_then(|()| callgrind_control(&proxy, "--instr=off"));
    let upstream_connections = upstream.connections() - connections;
    if !proxy.stop(STOP_PATIENCE) {
        return Err("the proxy under valgrind did not exit in time".to_owned());
    }
    sent?;
    // A request that found no idle connection to the model opened one: that costs the
    // proxy far more than the request and would count as noise. (The warm-up opened the
    // one all counted requests should share.)
    if upstream_connections != 0 {
        eprintln!(
            "{}: the proxy opened {upstream_connections} connections to the model for {requests} requests",
            case.name()
        );
    }
    let text = std::fs::read_to_string(&out)
        .map_err(|error| format!("no callgrind output {}: {error}", out.display()))?;
    keep_or_remove(&out, &case.name(), requests);
    totals(&text).ok_or_else(|| format!("no totals in {}", out.display()))
}

/// Runs `callgrind_control ARGUMENT` on a proxy under callgrind: `--zero` sets its counts
/// back to zero, `--instr=off` stops counting.
fn callgrind_control(proxy: &Proxy, argument: &str) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .arg(argument)
        .arg(proxy.pid().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|error| format!("cannot run callgrind_control: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {argument} failed ({status})"))
    }
}

/// Empties the write-ahead log of the SQLite file at `url` into the file, so that each
/// counted run starts from the same state. Whether the proxy before had check-pointed it
/// at exit depends on timing, and a log left behind was read back at the next start:
/// up to 1,600 instructions a request either way in the stateless row, which writes
/// nothing itself.
async fn checkpoint(url: &str) -> Result<(), String> {
    on_file(url, &[CHECKPOINT]).await
}

/// Merges the search index of the SQLite file at `url` into one segment and empties the
/// write-ahead log, with the proxy running and idle, so that both counted runs start
/// from the same index and log. FTS5 merges its segments a little at each write while
/// some level holds several of them: left as seeding and earlier runs left it, whether
/// the counted requests found such a level depended on how many indexings came before,
/// and SQLite's held row took one of two values, some 80,000 instructions a request
/// apart.
async fn compact(url: &str) -> Result<(), String> {
    const OPTIMIZE: &str = "INSERT INTO messages_search (messages_search) VALUES ('optimize')";
    on_file(url, &[OPTIMIZE, CHECKPOINT]).await
}

/// Moves every page of the write-ahead log into the file and empties the log.
const CHECKPOINT: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// Runs `statements` one after another on a connection of its own to the SQLite file
/// at `url`.
async fn on_file(url: &str, statements: &[&'static str]) -> Result<(), String> {
    use sqlx::{Connection, Executor};
    let failed = |error: sqlx::Error| format!("{url}: {error}");
    let mut connection = sqlx::SqliteConnection::connect(url).await.map_err(failed)?;
    for statement in statements {
        connection
            .execute(*statement)
            .await
            .map_err(|error| format!("{statement} on {url}: {error}"))?;
    }
    connection.close().await.map_err(failed)
}

/// `valgrind --tool=callgrind`, writing to `out`, as every count here runs it.
fn callgrind(out: &Path) -> Vec<String> {
    // One worker thread: how often idle workers of a multi-threaded runtime wake, spin
    // and park depends on timing, and moved the count of a passthrough request by ~10 %
    // from run to run with two. Under valgrind the threads take turns on one core anyway.
    vec![
        "env".to_owned(),
        "TOKIO_WORKER_THREADS=1".to_owned(),
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--quiet".to_owned(),
        // The metrics clock (quanta) calibrates itself once per process by reading the
        // clock for a fixed time: its count followed the machine's speed and moved the
        // difference of two runs by ±600,000. Counting stops inside it. (Naming a
        // function to toggle turns counting off at start: turned on again after it.)
        "--toggle-collect=quanta::Clock::new".to_owned(),
        "--collect-atstart=yes".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

fn floor_name(stack: Stack) -> &'static str {
    match stack {
        Stack::Postgres => "floor · postgres, the same rows, held connection",
        _ => "floor · sqlite, the same rows, held connection",
    }
}

/// The instructions the `floor` program (beside this one) needs per turn on `url`: the
/// same rows a new conversation's turn stores, inserted on a connection held for the
/// run (see `src/bin/floor.rs`). The proxy migrates the database first.
async fn floor_per_turn(proxy: &Path, work: &Path, stack: Stack, url: &str) -> Result<f64, String> {
    let floor = std::env::current_exe()
        .map_err(|error| format!("where is this program? {error}"))?
        .with_file_name("floor");
    let floor = strip(&floor, work)?;
    let upstream = Upstream::framed(SHORT, Framing::Whole)
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    let mut migrating = Proxy::start(proxy, upstream.addr, &["--database-url", url])?;
    Clients::new(&migrating)
        .chat(None, chat_body(false))
        .await?;
    migrating.stop(STOP_PATIENCE);
    let run = |turns: usize| {
        let out = work.join(format!("callgrind.{}.out", Uuid::now_v7().simple()));
        let launcher = callgrind(&out);
        let status = Command::new(&launcher[0])
            .args(&launcher[1..])
            .arg(&floor)
            .arg(url)
            .arg(turns.to_string())
            .status()
            .map_err(|error| format!("cannot run valgrind: {error}"))?;
        if !status.success() {
            return Err(format!("floor {turns} turns failed ({status})"));
        }
        let text = std::fs::read_to_string(&out)
            .map_err(|error| format!("no callgrind output {}: {error}", out.display()))?;
        keep_or_remove(&out, floor_name(stack), turns);
        totals(&text).ok_or_else(|| format!("no totals in {}", out.display()))
    };
    let few = run(FEW)?;
    let many = run(MANY)?;
    Ok((many as f64 - few as f64) / (MANY - FEW) as f64)
}

/// Creates `count` conversations of `stored` messages for `case`'s requests to continue,
/// through the proxy's management API, and returns their ids.
async fn seed(
    proxy: &Proxy,
    case: Case,
    count: usize,
    stored: usize,
) -> Result<Vec<String>, String> {
    let ids = Clients::new(proxy).seed(count, stored).await?;
    if case.stack == Stack::Sqlite {
        search(proxy).await?;
    }
    Ok(ids)
}

/// Continues each of `conversations` once, uncounted, so that the proxy holds their
/// histories; on SQLite then indexes those turns for search, as [`seed`] does.
async fn hold(
    proxy: &Proxy,
    case: Case,
    conversations: Vec<String>,
) -> Result<Vec<String>, String> {
    sequentially(proxy, case, conversations.len(), &conversations).await?;
    if case.stack == Stack::Sqlite {
        search(proxy).await?;
    }
    Ok(conversations)
}

/// Sends `requests` streaming requests of `case` one after another on one HTTP/1.1
/// connection, each read to its end, which must be the stream's own (`data: [DONE]`, or
/// the Responses API's `response.completed`) with its turn stored; the n-th continues
/// the n-th of `conversations` when there is one. One connection, not a pool: a pooled
/// client may open a second one when the first is not back in the pool yet, and the
/// proxy would count that accept and its connection task.
async fn sequentially(
    proxy: &Proxy,
    case: Case,
    requests: usize,
    conversations: &[String],
) -> Result<(), String> {
    let authorization = format!("Bearer {}", proxy.key);
    let proxy = proxy.addr;
    let (mut sender, connection) = connect(proxy).await?;
    for n in 0..requests {
        // Between requests the proxy settles: its connection to the model goes back to
        // its pool (else the next request may open another), and a stored turn's last
        // work ends. Waiting costs no instructions.
        tokio::time::sleep(SETTLE).await;
        sender
            .ready()
            .await
            .map_err(|e| format!("the connection closed: {e}"))?;
        let conversation = conversations.get(n).map(String::as_str);
        let mut request = Request::post(format!("http://{proxy}{}", case.path()))
            .header("host", proxy.to_string())
            .header("authorization", &authorization)
            .header("content-type", "application/json");
        if let (Api::Chat, Some(id)) = (case.api, conversation) {
            request = request.header("x-conversation-id", id);
        }
        let request = request
            .body(Full::new(case.body(conversation)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("chat answered {}", response.status()));
        }
        let reply = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("stream broke: {e}"))?
            .to_bytes();
        let ended = match case.api {
            Api::Chat => reply.ends_with(b"data: [DONE]\n\n"),
            Api::Responses => reply.windows(25).any(|w| w == b"event: response.completed"),
        };
        if !ended || reply.windows(14).any(|w| w == b"storage_failed") {
            return Err(
                "a reply did not end as its stream does, or its turn was not stored".to_owned(),
            );
        }
    }
    drop(sender);
    let _ = connection.await;
    Ok(())
}

/// A keep-alive HTTP/1 connection to the proxy at `addr`, its driver spawned.
async fn connect(
    addr: std::net::SocketAddr,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ),
    String,
> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to the proxy: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((sender, tokio::spawn(connection)))
}

/// One search of the stored conversations, which indexes every message still pending.
async fn search(proxy: &Proxy) -> Result<(), String> {
    let authorization = format!("Bearer {}", proxy.key);
    let proxy = proxy.addr;
    let (mut sender, connection) = connect(proxy).await?;
    let request = Request::get(format!("http://{proxy}/v1/conversations?q=index"))
        .header("host", proxy.to_string())
        .header("authorization", &authorization)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("search failed: {e}"))?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    drop(sender);
    let _ = connection.await;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("search answered {status}"))
    }
}

/// Moves a run's callgrind output to the directory `INSTRUCTIONS_KEEP` names, for
/// `callgrind_annotate`, or removes it.
fn keep_or_remove(out: &Path, name: &str, requests: usize) {
    if let Some(keep) = std::env::var_os("INSTRUCTIONS_KEEP") {
        let kept = Path::new(&keep).join(format!("{}.{requests}.callgrind", slug(name)));
        if std::fs::create_dir_all(&keep).is_ok() && std::fs::copy(out, &kept).is_ok() {
            eprintln!("kept {}", kept.display());
        }
    }
    let _ = std::fs::remove_file(out);
}

/// `name` with every character but ASCII letters and digits made a `-`, for a file name.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The `totals:` (or, in older files, `summary:`) line of a callgrind output file.
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or_else(|| line.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
}

/// The figures, from the per-request counts of the cases that ran.
fn table(counts: &BTreeMap<Case, f64>, floors: &BTreeMap<Stack, f64>) -> String {
    let get_case = |case: Case| counts.get(&case).copied();
    let get = |stack, system, framing, chunks| get_case(Case::new(stack, system, framing, chunks));
    let spread = (LONG - SHORT) as f64;
    let slope = |stack, framing| {
        Some((get(stack, false, framing, LONG)? - get(stack, false, framing, SHORT)?) / spread)
    };
    // The layer's cost per chunk, and per request at zero chunks, over passthrough's.
    let per_chunk =
        |stack, framing| Some(slope(stack, framing)? - slope(Stack::Passthrough, framing)?);
    let fixed = |stack, framing| {
        let layer = get(stack, false, framing, SHORT)? - SHORT as f64 * slope(stack, framing)?;
        let passthrough = get(Stack::Passthrough, false, framing, SHORT)?
            - SHORT as f64 * slope(Stack::Passthrough, framing)?;
        Some(layer - passthrough)
    };
    let stateless = get(Stack::Sqlite, true, Framing::Whole, SHORT)
        .zip(get(Stack::Passthrough, false, Framing::Whole, SHORT))
        .map(|(stateless, passthrough)| stateless / passthrough);
    let long_prompt = |stack| {
        get_case(Case {
            prompt: Prompt::Long,
            ..Case::new(stack, true, Framing::Whole, SHORT)
        })
    };
    let stateless_long = long_prompt(Stack::Sqlite)
        .zip(long_prompt(Stack::Passthrough))
        .map(|(stateless, passthrough)| stateless / passthrough);

    // What a continued turn costs over a new one: loading and splicing its history.
    let continued_by = |stack, held, api| {
        get_case(Case {
            stored: HISTORY,
            held,
            api,
            ..Case::new(stack, false, Framing::Whole, SHORT)
        })
    };
    let continued = |stack, held| {
        Some(continued_by(stack, held, Api::Chat)? - get(stack, false, Framing::Whole, SHORT)?)
    };
    // The Responses API's held turn over the chat path's: the same history, loaded and
    // sent its own way.
    let responses = |stack| {
        Some(continued_by(stack, true, Api::Responses)? - continued_by(stack, true, Api::Chat)?)
    };

    let floor = |stack| floors.get(&stack).copied();
    let over_floor = |stack| Some(fixed(stack, Framing::Whole)? / floor(stack)?);

    let rows: [(String, Option<f64>, &str); 20] = [
        (
            format!("passthrough, {SHORT}-chunk reply, whole"),
            get(Stack::Passthrough, false, Framing::Whole, SHORT),
            "instructions/request",
        ),
        (
            "capture per chunk, Postgres (slope, layer − passthrough)".to_owned(),
            per_chunk(Stack::Postgres, Framing::Whole),
            "instructions/chunk",
        ),
        (
            "capture and SQLite indexing per chunk".to_owned(),
            per_chunk(Stack::Sqlite, Framing::Whole),
            "instructions/chunk",
        ),
        (
            "fixed cost of a new turn, SQLite".to_owned(),
            fixed(Stack::Sqlite, Framing::Whole),
            "instructions/turn",
        ),
        (
            "fixed cost of a new turn, Postgres".to_owned(),
            fixed(Stack::Postgres, Framing::Whole),
            "instructions/turn",
        ),
        (
            "floor: the same rows on a held connection, SQLite, no search index".to_owned(),
            floor(Stack::Sqlite),
            "instructions/turn",
        ),
        (
            "fixed cost of a new turn / floor, SQLite".to_owned(),
            over_floor(Stack::Sqlite),
            "ratio",
        ),
        (
            "floor: the same rows on a held connection, Postgres".to_owned(),
            floor(Stack::Postgres),
            "instructions/turn",
        ),
        (
            "fixed cost of a new turn / floor, Postgres".to_owned(),
            over_floor(Stack::Postgres),
            "ratio",
        ),
        (
            format!("stateless through the layer / passthrough, {SHORT} chunks"),
            stateless,
            "ratio",
        ),
        (
            "stateless through the layer / passthrough, 4 KiB system prompt".to_owned(),
            stateless_long,
            "ratio",
        ),
        (
            "passthrough per chunk, a chunk a frame".to_owned(),
            slope(Stack::Passthrough, Framing::PerChunk),
            "instructions/chunk",
        ),
        (
            "layer per chunk, a chunk a frame, Postgres".to_owned(),
            per_chunk(Stack::Postgres, Framing::PerChunk),
            "instructions/chunk",
        ),
        (
            "fixed cost of a new turn, a chunk a frame, Postgres".to_owned(),
            fixed(Stack::Postgres, Framing::PerChunk),
            "instructions/turn",
        ),
        (
            format!("continued with {HISTORY} stored messages over a new turn, SQLite"),
            continued(Stack::Sqlite, false),
            "instructions/turn",
        ),
        (
            format!("continued with {HISTORY} stored messages over a new turn, Postgres"),
            continued(Stack::Postgres, false),
            "instructions/turn",
        ),
        (
            "the same, history held in process, SQLite".to_owned(),
            continued(Stack::Sqlite, true),
            "instructions/turn",
        ),
        (
            "the same, history held in process, Postgres".to_owned(),
            continued(Stack::Postgres, true),
            "instructions/turn",
        ),
        (
            "the same through the Responses API, over the chat path's, SQLite".to_owned(),
            responses(Stack::Sqlite),
            "instructions/turn",
        ),
        (
            "the same through the Responses API, over the chat path's, Postgres".to_owned(),
            responses(Stack::Postgres),
            "instructions/turn",
        ),
    ];

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Instructions the proxy executes, callgrind, per request = (run of {MANY} − run of {FEW}) / {}; \
         replies of {SHORT} and {LONG} chunks of {} bytes.\n",
        MANY - FEW,
        DELTA.len()
    );
    let _ = writeln!(out, "| figure | value | unit |\n|---|--:|---|");
    for (figure, value, unit) in rows {
        let value = match value {
            Some(value) if unit == "ratio" => format!("{value:.3}"),
            Some(value) => format!("{value:.0}"),
            None => "not run".to_owned(),
        };
        let _ = writeln!(out, "| {figure} | {value} | {unit} |");
    }
    let _ = writeln!(out, "\n| case | instructions/request |\n|---|--:|");
    for (case, count) in counts {
        let _ = writeln!(out, "| {} | {count:.0} |", case.name());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_totals_line_is_read_and_the_summary_line_in_older_files() {
        assert_eq!(
            totals("events: Ir\nfl=x\n0 3\ntotals: 12345\n"),
            Some(12345)
        );
        assert_eq!(totals("events: Ir\nsummary: 678\n"), Some(678));
        assert_eq!(totals("events: Ir\n"), None);
    }

    #[test]
    fn the_long_prompt_ratio_reads_the_two_long_prompt_cases() {
        let case = |stack, prompt| Case {
            prompt,
            ..Case::new(stack, true, Framing::Whole, SHORT)
        };
        let counts = BTreeMap::from([
            (case(Stack::Passthrough, Prompt::Long), 80_000.0),
            (case(Stack::Sqlite, Prompt::Long), 84_000.0),
            (case(Stack::Sqlite, Prompt::Short), 99_000.0),
        ]);
        let table = table(&counts, &BTreeMap::new());
        assert!(
            table.contains(
                "| stateless through the layer / passthrough, 4 KiB system prompt | 1.050 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| passthrough, 68 chunks, whole reply, 4 KiB system prompt | 80000 |"),
            "{table}"
        );
    }

    #[test]
    fn a_continued_turn_is_read_against_a_new_one_of_the_same_reply() {
        let case = |stored| Case {
            stored,
            ..Case::new(Stack::Sqlite, false, Framing::Whole, SHORT)
        };
        assert_eq!(
            case(HISTORY).name(),
            "continued 100 · sqlite, 68 chunks, whole reply"
        );
        let counts = BTreeMap::from([(case(0), 300_000.0), (case(HISTORY), 340_000.0)]);
        let table = table(&counts, &BTreeMap::new());
        assert!(
            table
                .contains("| continued with 100 stored messages over a new turn, SQLite | 40000 |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| continued with 100 stored messages over a new turn, Postgres | not run |"
            ),
            "{table}"
        );
        assert!(cases().contains(&case(HISTORY)), "the bench counts it");
        let held = Case {
            held: true,
            ..case(HISTORY)
        };
        assert_eq!(
            held.name(),
            "continued 100 held · sqlite, 68 chunks, whole reply"
        );
        assert!(cases().contains(&held), "the bench counts it held too");
    }

    #[test]
    fn a_turn_through_the_responses_api_is_read_against_the_chat_path_s_held_turn() {
        let case = |api| Case {
            stored: HISTORY,
            held: true,
            api,
            ..Case::new(Stack::Postgres, false, Framing::Whole, SHORT)
        };
        assert_eq!(
            case(Api::Responses).name(),
            "responses · continued 100 held · postgres, 68 chunks, whole reply"
        );
        let counts = BTreeMap::from([
            (case(Api::Chat), 300_000.0),
            (case(Api::Responses), 750_000.0),
        ]);
        let table = table(&counts, &BTreeMap::new());
        assert!(
            table.contains(
                "| the same through the Responses API, over the chat path's, Postgres | 450000 |"
            ),
            "{table}"
        );
        assert!(
            cases().contains(&case(Api::Responses)),
            "the bench counts it"
        );
    }

    #[test]
    fn the_per_chunk_and_fixed_figures_come_from_the_two_reply_lengths() {
        let mut counts = BTreeMap::new();
        let mut put = |stack, chunks: usize, fixed: f64, per_chunk: f64| {
            let case = Case::new(stack, false, Framing::Whole, chunks);
            counts.insert(case, fixed + per_chunk * chunks as f64);
        };
        for chunks in [SHORT, LONG] {
            put(Stack::Passthrough, chunks, 50_000.0, 100.0);
            put(Stack::Postgres, chunks, 200_000.0, 1_100.0);
        }
        let floors = BTreeMap::from([(Stack::Postgres, 100_000.0)]);
        let table = table(&counts, &floors);
        assert!(
            table.contains("| capture per chunk, Postgres (slope, layer − passthrough) | 1000 |"),
            "{table}"
        );
        assert!(
            table.contains("| fixed cost of a new turn, Postgres | 150000 |"),
            "{table}"
        );
        assert!(
            table.contains("| fixed cost of a new turn / floor, Postgres | 1.500 |"),
            "{table}"
        );
        assert!(
            table.contains("| fixed cost of a new turn, SQLite | not run |"),
            "{table}"
        );
        assert!(
            table.contains("| fixed cost of a new turn / floor, SQLite | not run |"),
            "{table}"
        );
    }
}
