//! Capturing the reply (contract section 5): a reply beyond the capture limit reaches the
//! client whole while the capture holds no more than the limit, even when the reply is
//! one SSE line longer than the limit.
//!
//! Measured on this process's resident memory, so it has a test binary to itself: in
//! `tests/it`, the tests running beside it would count against it.

#[path = "it/support/memory.rs"]
mod memory;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, header};
use serde_json::json;
use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;
use tower_conversations::ConversationLayer;

const MIB: usize = 1024 * 1024;
static FRAME: [u8; 64 * 1024] = [b'a'; 64 * 1024];

/// A new SQLite database in a temporary file, migrated.
async fn sqlite_database() -> SqlitePool {
    let path = std::env::temp_dir().join(format!(
        "tc_test_memory_{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("open a SQLite database");
    tower_conversations::migrate(&pool).await.expect("migrate");
    pool
}

/// Serves `router` on loopback and answers the URL of its chat path.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    format!("http://{address}/v1/chat/completions")
}

/// Resident memory of this process in KiB.
fn resident_kib() -> u64 {
    memory::resident_kib_of(std::process::id())
}

/// Samples resident memory every few milliseconds on a thread of its own, keeping the
/// highest value seen, until stopped.
struct PeakResident {
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl PeakResident {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(resident_kib()));
        let running = Arc::new(AtomicBool::new(true));
        let sampler = std::thread::spawn({
            let (peak, running) = (peak.clone(), running.clone());
            move || {
                while running.load(Ordering::SeqCst) {
                    peak.fetch_max(resident_kib(), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Self {
            peak,
            running,
            sampler: Some(sampler),
        }
    }

    /// Stops sampling and answers the highest resident memory seen, in KiB.
    fn stop(mut self) -> u64 {
        self.running.store(false, Ordering::SeqCst);
        if let Some(sampler) = self.sampler.take() {
            sampler.join().expect("the sampler thread");
        }
        self.peak.fetch_max(resident_kib(), Ordering::SeqCst);
        self.peak.load(Ordering::SeqCst)
    }
}

/// An upstream whose reply is one `data:` line of `length` bytes, sent in 64 KiB
/// frames of the same static bytes (so the upstream itself holds nothing), then `[DONE]`.
fn one_long_line(length: usize) -> Router {
    Router::new().fallback(move || async move {
        let frames = length / FRAME.len();
        let line = std::iter::once(Bytes::from_static(b"data: "))
            .chain(std::iter::repeat_n(Bytes::from_static(&FRAME), frames))
            .chain([Bytes::from_static(b"\n\ndata: [DONE]\n\n")]);
        let stream = futures_util::stream::iter(line.map(Ok::<_, std::io::Error>));
        let mut response = Response::new(Body::from_stream(stream));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        response
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_line_longer_than_the_capture_limit_is_not_buffered_whole() {
    let pool = sqlite_database().await;
    let limit = MIB;
    let line = 128 * MIB;
    let layer = ConversationLayer::new(pool).capture_limit(limit);
    let url = serve(one_long_line(line).layer(layer)).await;

    let before = resident_kib();
    let peak = PeakResident::start();
    let mut response = reqwest::Client::new()
        .post(url)
        .json(&json!({"model": "test-model", "stream": true, "messages": [
            {"role": "user", "content": "a long line, please"}
        ]}))
        .send()
        .await
        .expect("answered");
    let mut received = 0;
    let mut tail = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("the stream goes on") {
        received += chunk.len();
        tail.extend_from_slice(&chunk);
        let keep = tail.len().saturating_sub(512);
        tail.drain(..keep);
    }
    let grown_kib = peak.stop().saturating_sub(before);

    eprintln!(
        "a {} MiB line through a {} MiB capture limit: resident memory grew {} KiB",
        line / MIB,
        limit / MIB,
        grown_kib
    );
    assert!(
        grown_kib < 32 * 1024,
        "resident memory grew {grown_kib} KiB for a {} MiB line",
        line / MIB
    );
    assert!(received > line, "the whole line reached the client");
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains(r#""storage_failed":true"#), "{tail}");
    assert!(tail.ends_with("data: [DONE]\n\n"), "{tail}");
}
