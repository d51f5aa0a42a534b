//! What the layer costs a streamed reply, in process: an inner service yields N typical
//! `chat.completion.chunk` events from memory and each stream is read to its end
//! through the bare service, the layer on a stateless request, a new conversation, and
//! a continued conversation with 100 stored messages.
//!
//! `cargo bench --bench sse_overhead` (SQLite always; Postgres too when `DATABASE_URL`
//! is set). The capture cost per chunk is the slope of the layer's time over N minus
//! the bare service's.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::{Layer, Service, ServiceExt};
use tower_conversations::store::NewMessage;
use tower_conversations::{ConversationLayer, ConversationStore};

/// Sizes of reply, in chunks.
const SIZES: [usize; 3] = [16, 256, 2048];

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
fn delta() -> Bytes {
    Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n",
    )
}

fn reply(chunks: usize) -> VecDeque<Bytes> {
    let mut frames: VecDeque<Bytes> = (0..chunks).map(|_| delta()).collect();
    frames.push_back(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
    ));
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

async fn drain<B: Body<Data = Bytes>>(body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame.expect("frame").data_ref().map_or(0, Bytes::len);
    }
    total
}

async fn seed_conversation(store: &dyn ConversationStore) -> String {
    let id = uuid::Uuid::now_v7();
    for turn in 0..50 {
        let messages = [
            NewMessage::new(json!({"role": "user", "content": format!("question {turn}")})),
            NewMessage::new(
                json!({"role": "assistant", "content": format!("answer {turn} with some words")}),
            ),
        ];
        store
            .append_turn("", id, turn == 0, &messages)
            .await
            .expect("seed");
    }
    id.to_string()
}

fn bench_backend<S: ConversationStore + Clone>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: S,
) {
    let continued = rt.block_on(seed_conversation(&store));
    let mut group = c.benchmark_group(format!("sse_overhead/{name}"));
    for &n in &SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("bare", n), &n, |b, &n| {
            b.to_async(rt).iter(|| async move {
                let response = Model(n)
                    .oneshot(chat_request(false, None))
                    .await
                    .expect("response");
                drain(response.into_body()).await
            });
        });
        let layer = ConversationLayer::new(store.clone()).history_window(100);
        for (label, system, header) in [
            ("stateless", true, None),
            ("new", false, None),
            ("continued_100", false, Some(continued.as_str())),
        ] {
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
    }
    group.finish();
}

fn sse_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let path = std::env::temp_dir().join(format!("sse_overhead_{}.db", std::process::id()));
    let sqlite = rt
        .block_on(sqlx::SqlitePool::connect(&format!(
            "sqlite://{}?mode=rwc",
            path.display()
        )))
        .expect("sqlite");
    rt.block_on(tower_conversations::migrate(&sqlite))
        .expect("migrate sqlite");
    bench_backend(c, &rt, "sqlite", sqlite);
    if let Ok(url) = std::env::var("DATABASE_URL") {
        match rt.block_on(sqlx::PgPool::connect(&url)) {
            Ok(pool) => {
                rt.block_on(tower_conversations::migrate(&pool))
                    .expect("migrate postgres");
                bench_backend(c, &rt, "postgres", pool);
            }
            Err(error) => eprintln!("postgres skipped: {error}"),
        }
    }
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, sse_overhead);
criterion_main!(benches);
