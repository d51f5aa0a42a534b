//! What the layer costs a streamed reply, in process: an inner service yields N typical
//! `chat.completion.chunk` events from memory and each stream is read to its end
//! through the bare service, and through the layer on a stateless request, a new
//! conversation, and a continued conversation with 100 stored messages.
//!
//! ```text
//! cargo bench --bench sse_overhead
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench sse_overhead
//! ```
//!
//! Three groups:
//! - `sse_overhead/no_database`: the layer over a store that keeps nothing and answers at
//!   once, so the figures are the layer's own work (reading and splicing the request,
//!   parsing and assembling the reply, the spawned storage task). The capture cost per
//!   chunk is the slope of `new` over N minus the slope of `bare`. `responses` is the same
//!   reply asked for through the Responses API (`POST /v1/responses`, streamed): the
//!   request translated, every chunk translated into Responses events; its slope minus
//!   `bare`'s is the translation's cost per chunk (that store keeps no responses, so the
//!   write is skipped and the response says `storage_failed`).
//! - `sse_overhead/first_frame`: the time from the request to the first frame of the
//!   reply, through the bare service and the layer's three modes over the same store: the
//!   time to first byte the layer adds, without the network and the machine's scheduling
//!   around it. The rest of each stream is read outside the timed part.
//!   `sse_overhead/first_frame_postgres` is the same over PostgreSQL (with `DATABASE_URL`;
//!   over TLS when the server offers it): `continued_100` minus `bare` is what loading and
//!   splicing 100 stored messages adds to the first byte.
//! - `sse_overhead/sqlite` and `sse_overhead/postgres` (with `DATABASE_URL`, in a database
//!   of its own, dropped at the end): the same with a real store, whose write the stream
//!   waits for before `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tower::{Layer, Service, ServiceExt};
use tower_conversations::store::{
    Conversation, ConversationDetail, ConversationList, ConversationUpdate, HistoryMessage,
    ListQuery, MessagePage, MessageQuery, NewConversation, NewMessage,
};
use tower_conversations::{
    ConversationLayer, ConversationStore, StoreError, TurnStore, TurnTarget,
};
use uuid::Uuid;

/// Sizes of reply, in chunks.
const SIZES: [usize; 3] = [16, 256, 2048];
/// Stored messages of the continued conversation.
const HISTORY_LEN: usize = 100;

/// An SSE reply served from memory: every frame is a clone of a prepared `Bytes`.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A typical content delta, about 120 bytes on the wire.
const DELTA: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n";
/// The last chunk and the end of the stream.
const END: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

fn reply(chunks: usize) -> VecDeque<Bytes> {
    let mut frames: VecDeque<Bytes> = (0..chunks).map(|_| Bytes::from_static(DELTA)).collect();
    frames.push_back(Bytes::from_static(END));
    frames
}

/// The inner chat service: answers every request with an N-chunk stream.
#[derive(Clone)]
struct Model(usize);

impl<B: Send + 'static> Service<Request<B>> for Model {
    type Response = Response<Chunks>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Chunks>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(Chunks(reply(self.0)))
            .expect("static response");
        std::future::ready(Ok(response))
    }
}

fn chat_request(system: bool, conversation: Option<&str>) -> Request<Full<Bytes>> {
    let mut messages = vec![json!({"role": "user", "content": "Tell me something."})];
    if system {
        messages.insert(0, json!({"role": "system", "content": "Be brief."}));
    }
    let body = json!({"model": "m", "stream": true, "messages": messages}).to_string();
    let mut request =
        Request::post("/v1/chat/completions").header("content-type", "application/json");
    if let Some(id) = conversation {
        request = request.header("x-conversation-id", id);
    }
    request
        .body(Full::new(Bytes::from(body)))
        .expect("static request")
}

/// A streamed Responses request for a new chain.
fn responses_request() -> Request<Full<Bytes>> {
    let body = json!({"model": "m", "stream": true, "input": "Tell me something."}).to_string();
    Request::post("/v1/responses")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static request")
}

async fn drain<B: Body<Data = Bytes>>(body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame.expect("frame").data_ref().map_or(0, Bytes::len);
    }
    assert!(total > 0, "the stream carried data");
    total
}

/// One stored turn of the seeded history.
fn history_turn(turn: usize) -> [NewMessage; 2] {
    [
        NewMessage::new(json!({"role": "user", "content": format!("question {turn}")})),
        NewMessage::new(
            json!({"role": "assistant", "content": format!("answer {turn} with some words")}),
        ),
    ]
}

/// The turn that starts a conversation creates it.
fn target(first: bool) -> TurnTarget {
    if first {
        TurnTarget::NewConversation
    } else {
        TurnTarget::Existing
    }
}

async fn seed_conversation(store: &dyn ConversationStore) -> String {
    let id = Uuid::now_v7();
    for turn in 0..HISTORY_LEN / 2 {
        store
            .append_turn("", id, target(turn == 0), &history_turn(turn))
            .await
            .expect("seed");
    }
    id.to_string()
}

/// A store that keeps nothing: every write succeeds at once and every conversation
/// holds the same 100 messages. With it the figures are the layer's own work.
#[derive(Clone)]
struct NoDatabase {
    history: Arc<Vec<HistoryMessage>>,
}

impl NoDatabase {
    fn new() -> Self {
        let history = (0..HISTORY_LEN / 2)
            .flat_map(history_turn)
            .filter_map(|m| HistoryMessage::new(m.role(), m.json().to_owned()))
            .collect();
        Self {
            history: Arc::new(history),
        }
    }
}

#[async_trait]
impl TurnStore for NoDatabase {
    async fn load_history(
        &self,
        _owner: &str,
        _id: Uuid,
        last: Option<u32>,
    ) -> Result<Vec<HistoryMessage>, StoreError> {
        let keep = last.map_or(self.history.len(), |n| n as usize);
        let skip = self.history.len().saturating_sub(keep);
        Ok(self.history[skip..].to_vec())
    }
    async fn append_turn(
        &self,
        _owner: &str,
        _id: Uuid,
        _target: TurnTarget,
        _messages: &[NewMessage],
    ) -> Result<i64, StoreError> {
        Ok(0)
    }
}

/// The management API is not measured here: the layer only needs a store that has one.
#[async_trait]
impl ConversationStore for NoDatabase {
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn create(&self, _: &str, _: &NewConversation) -> Result<Conversation, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn list(&self, _: &str, _: &ListQuery) -> Result<ConversationList, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn get(&self, _: &str, _: Uuid) -> Result<ConversationDetail, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn messages(
        &self,
        _: &str,
        _: Uuid,
        _: &MessageQuery,
    ) -> Result<MessagePage, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn update(
        &self,
        _: &str,
        _: Uuid,
        _: &ConversationUpdate,
    ) -> Result<Conversation, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn delete(&self, _: &str, _: Uuid) -> Result<(), StoreError> {
        Err(StoreError::NotFound)
    }
    async fn fork(&self, _: &str, _: Uuid, _: i64) -> Result<Conversation, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn truncate(&self, _: &str, _: Uuid, _: i64) -> Result<u64, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn delete_item(
        &self,
        _: &str,
        _: Uuid,
        _: tower_conversations::items::ItemId,
    ) -> Result<Conversation, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn list_by_id(
        &self,
        _: &str,
        _: &tower_conversations::store::CursorQuery,
    ) -> Result<tower_conversations::store::ConversationPage, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn erase_owner(&self, _: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn purge_idle(&self, _: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Which requests a group measures.
#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// The bare service, and the layer's three modes.
    All,
    /// Only the two modes that touch the database.
    Stateful,
}

fn bench_store<S: ConversationStore + Clone>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: S,
    rows: Rows,
) {
    let continued = rt.block_on(seed_conversation(&store));
    // The continued conversation gains a turn per iteration: the window keeps what is
    // loaded and spliced at 100 messages however long the run.
    let layer = ConversationLayer::new(store).history_window(HISTORY_LEN as u32);
    let mut group = c.benchmark_group(format!("sse_overhead/{name}"));
    if rows == Rows::Stateful {
        // Every iteration waits for a database write: fewer, longer samples.
        group.sample_size(30);
        group.measurement_time(Duration::from_secs(4));
    }
    for &n in &SIZES {
        group.throughput(Throughput::Elements(n as u64));
        if rows == Rows::All {
            group.bench_with_input(BenchmarkId::new("bare", n), &n, |b, &n| {
                b.to_async(rt).iter(|| async move {
                    let response = Model(n)
                        .oneshot(chat_request(false, None))
                        .await
                        .expect("response");
                    drain(response.into_body()).await
                });
            });
        }
        let modes = [
            ("stateless", true, None),
            ("new", false, None),
            ("continued_100", false, Some(continued.as_str())),
        ];
        for (label, system, header) in modes {
            if rows == Rows::Stateful && system {
                continue;
            }
            let service = layer.layer(Model(n));
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.to_async(rt).iter(|| {
                    let service = service.clone();
                    async move {
                        let response = service
                            .oneshot(chat_request(system, header))
                            .await
                            .expect("response");
                        drain(response.into_body()).await
                    }
                });
            });
        }
        let service = layer.layer(Model(n));
        group.bench_with_input(BenchmarkId::new("responses", n), &n, |b, _| {
            b.to_async(rt).iter(|| {
                let service = service.clone();
                async move {
                    let response = service
                        .oneshot(responses_request())
                        .await
                        .expect("response");
                    drain(response.into_body()).await
                }
            });
        });
    }
    group.finish();
}

/// Time to the first frame of a 16-chunk reply: the bare service, then the layer's three
/// modes over `store` (named `name` in the group, after `first_frame`). Only the wait for
/// the first frame is timed; the rest of the stream is read after, so each turn is stored
/// (and its task done) before the next request.
fn bench_first_frame<S: ConversationStore + Clone>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: S,
) {
    let continued = rt.block_on(seed_conversation(&store));
    let layer = ConversationLayer::new(store).history_window(HISTORY_LEN as u32);
    let mut group = c.benchmark_group(format!("sse_overhead/first_frame{name}"));
    group.bench_function("bare", |b| {
        b.to_async(rt)
            .iter_custom(|iterations| first_frame_wait(Model(16), false, None, iterations));
    });
    let modes = [
        ("stateless", true, None),
        ("new", false, None),
        ("continued_100", false, Some(continued.as_str())),
    ];
    for (label, system, header) in modes {
        let service = layer.layer(Model(16));
        group.bench_function(label, |b| {
            b.to_async(rt).iter_custom(|iterations| {
                first_frame_wait(service.clone(), system, header, iterations)
            });
        });
    }
    group.finish();
}

/// Sends `iterations` chat requests one after another and adds up the waits from each
/// request to its reply's first frame; each stream is read to its end untimed.
async fn first_frame_wait<S, B>(
    service: S,
    system: bool,
    header: Option<&str>,
    iterations: u64,
) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut waited = Duration::ZERO;
    for _ in 0..iterations {
        let start = Instant::now();
        let response = service
            .clone()
            .oneshot(chat_request(system, header))
            .await
            .expect("response");
        let mut body = std::pin::pin!(response.into_body());
        let first = body.frame().await;
        waited += start.elapsed();
        assert!(first.is_some(), "a first frame");
        drain(body).await;
    }
    waited
}

async fn sqlite_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("sqlite");
    tower_conversations::migrate(&pool)
        .await
        .expect("migrate sqlite");
    pool
}

/// A database of its own on the server `url` names; the tc_test_ prefix lets the test
/// tooling clean up after an interrupted run.
async fn postgres_pool(url: &str) -> Option<(sqlx::PgPool, sqlx::PgPool, String)> {
    let admin = match PgPoolOptions::new().max_connections(1).connect(url).await {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("postgres skipped: {error}");
            return None;
        }
    };
    let database = format!("tc_test_bench_sse_{}", Uuid::now_v7().simple());
    // The name is made from a uuid, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .expect("create bench database");
    let (server, query) = url.split_once('?').unwrap_or((url, ""));
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    let separator = if query.is_empty() { "" } else { "?" };
    let pool = sqlx::PgPool::connect(&format!("{base}/{database}{separator}{query}"))
        .await
        .expect("connect bench database");
    tower_conversations::migrate(&pool)
        .await
        .expect("migrate postgres");
    Some((pool, admin, database))
}

fn sse_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    bench_store(c, &rt, "no_database", NoDatabase::new(), Rows::All);
    bench_first_frame(c, &rt, "", NoDatabase::new());

    let path = std::env::temp_dir().join(format!("sse_overhead_{}.db", Uuid::now_v7().simple()));
    let sqlite = rt.block_on(sqlite_pool(&path));
    bench_store(c, &rt, "sqlite", sqlite.clone(), Rows::Stateful);
    rt.block_on(sqlite.close());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    if let Ok(url) = std::env::var("DATABASE_URL")
        && let Some((pool, admin, database)) = rt.block_on(postgres_pool(&url))
    {
        bench_store(c, &rt, "postgres", pool.clone(), Rows::Stateful);
        // DATABASE_URL's own sslmode: sqlx's default, `prefer`, is TLS on a server that
        // offers it, as a hosted one does.
        bench_first_frame(c, &rt, "_postgres", pool.clone());
        rt.block_on(async {
            pool.close().await;
            let drop = format!("DROP DATABASE IF EXISTS {database}");
            if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await {
                eprintln!("could not drop {database}: {error}");
            }
        });
    }
}

criterion_group!(benches, sse_overhead);
criterion_main!(benches);
