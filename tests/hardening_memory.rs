//! Memory under load (contract sections 5 and 9): an SSE line longer than the capture
//! limit is not buffered whole, and 20,000 turns through the example proxy leave its
//! resident memory where warm-up left it.
//!
//! Both tests measure the whole process, so they take turns.

mod common;
#[allow(dead_code)]
#[path = "proxy/process.rs"]
mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use common::db::TestDb;
use common::echo::terse_echo_model;
use common::memory::{PeakResident, resident_kib, resident_kib_of};
use common::server::*;
use http::{HeaderValue, header};
use process::Proxy;
use serde_json::json;
use tokio::sync::Mutex;
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer};
use uuid::Uuid;

/// Held by a test while it measures.
static MEASURING: Mutex<()> = Mutex::const_new(());

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

/// Turns in the soak; `SOAK_TURNS` in the environment runs a longer (or shorter) one.
fn soak_turns() -> usize {
    std::env::var("SOAK_TURNS")
        .ok()
        .and_then(|turns| turns.parse().ok())
        .unwrap_or(20_000)
}

const SOAK_CLIENTS: usize = 8;
/// Turns per conversation: the first starts it, the others continue it.
const TURNS_PER_CONVERSATION: usize = 10;

/// One turn through the proxy, checked on the bytes: parsing every event would cost
/// more than the turn.
async fn soak_turn(http: &reqwest::Client, proxy: &Proxy, id: Option<Uuid>, text: &str) -> Uuid {
    let mut request = http
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .bearer_auth("soak")
        .body(chat_body(json!([user(text)])).to_string());
    if let Some(id) = id {
        request = request.header(CONVERSATION_ID_HEADER, id.to_string());
    }
    let response = request.send().await.expect("answered");
    let id = response.headers()[CONVERSATION_ID_HEADER]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("a UUID");
    let body = response.bytes().await.expect("the whole body");
    let text = String::from_utf8_lossy(&body);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains(r#""storage_failed":true"#), "{text}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_turns_through_the_proxy_leave_its_memory_where_warm_up_left_it() {
    let _measuring = MEASURING.lock().await;
    let (turns, warm_up_turns) = (soak_turns(), soak_turns() / 10);
    let path = std::env::temp_dir().join(format!("tc_test_soak_{}.db", Uuid::now_v7().simple()));
    let database = format!("sqlite://{}", path.display());
    let upstream = TestServer::start(terse_echo_model()).await;
    let proxy = Arc::new(
        Proxy::start(
            &["--upstream", &upstream.url(""), "--database-url", &database],
            &[],
        )
        .await,
    );

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let warmed_up = Arc::new(std::sync::Mutex::new(None));
    let mut clients = Vec::new();
    for client in 0..SOAK_CLIENTS {
        let (proxy, done, warmed_up) = (proxy.clone(), done.clone(), warmed_up.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut id = None;
            for turn in 0..turns / SOAK_CLIENTS {
                if turn % TURNS_PER_CONVERSATION == 0 {
                    id = None;
                }
                let text = format!("client {client} turn {turn}");
                id = Some(soak_turn(&http, &proxy, id, &text).await);
                if done.fetch_add(1, Ordering::SeqCst) + 1 == warm_up_turns {
                    *warmed_up.lock().unwrap() = Some(resident_kib_of(proxy.pid()));
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("a client");
    }
    let took = started.elapsed();
    let after = resident_kib_of(proxy.pid());
    let warm = warmed_up.lock().unwrap().expect("warmed up");
    let growth = (after as f64 - warm as f64) / warm as f64;
    eprintln!(
        "{turns} turns through the proxy in {took:?}: resident {warm} KiB after \
         {warm_up_turns} turns, {after} KiB at the end ({:+.1} %)",
        growth * 100.0
    );

    let listed = reqwest::Client::new()
        .get(proxy.url("/v1/conversations?limit=1"))
        .bearer_auth("soak")
        .send()
        .await
        .expect("answered")
        .json::<serde_json::Value>()
        .await
        .expect("JSON");
    let conversations = turns / TURNS_PER_CONVERSATION;
    assert_eq!(listed["total"], conversations as u64, "{listed}");
    assert_eq!(
        listed["conversations"][0]["message_count"],
        2 * TURNS_PER_CONVERSATION as u64
    );
    drop(proxy);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    assert!(
        growth < 0.10,
        "resident memory grew {:.1} %",
        growth * 100.0
    );
}
