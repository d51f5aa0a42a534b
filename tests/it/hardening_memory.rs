//! Memory under load (contract section 5): an SSE line longer than the capture limit is
//! not buffered whole.
//!
//! It and the proxy soak (`scaling`) measure memory, so they take turns.

use crate::support::db::TestDb;
use crate::support::memory::{PeakResident, resident_kib};
use crate::support::server::*;
use axum::Router;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::json;
use tokio::sync::Mutex;
use tower_conversations::ConversationLayer;

/// Held by a test while it measures.
pub(crate) static MEASURING: Mutex<()> = Mutex::const_new(());

const MIB: usize = 1024 * 1024;
static FRAME: [u8; 64 * 1024] = [b'a'; 64 * 1024];

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
    let _measuring = MEASURING.lock().await;
    let db = TestDb::sqlite().await;
    let limit = MIB;
    let line = 128 * MIB;
    let layer = ConversationLayer::new(db.store()).capture_limit(limit);
    let app = TestServer::start(one_long_line(line).layer(layer)).await;

    let before = resident_kib();
    let peak = PeakResident::start();
    let mut response = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body(json!([user("a long line, please")])).to_string())
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
