//! Scaling out (contract section 10): the layer keeps no state between requests, so
//! instances on one database share every conversation, and a process that serves turn
//! after turn holds no more memory for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer};
use uuid::Uuid;

use crate::support::db::TestDb;
use crate::support::echo::{echo_model, terse_echo_model};
use crate::support::faults::layer_pool;
use crate::support::memory::resident_kib_of;
use crate::support::process::Proxy;
use crate::support::server::*;
use crate::support::turns::{echo_turns, ends_with_done, storage_failed};

const INSTANCES: usize = 4;
const CLIENTS: usize = 64;
const CONVERSATIONS: usize = 8;
const TURNS: usize = 2_000;

/// The text of turn `turn`, unique so that it can be found again.
fn text_of(turn: usize) -> String {
    format!("turn {turn} of conversation {}", turn % CONVERSATIONS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 2,000 turns from 64 clients through 4 instances, about 30 s"]
async fn four_instances_on_one_database_lose_no_message_and_keep_every_turn_contiguous() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        let layer = ConversationLayer::new(layer_pool(&db, 4).await);
        instances.push(TestServer::start(echo_model(Duration::ZERO).layer(layer)).await);
    }
    let instances = Arc::new(instances);

    // The first turn of each conversation starts it; every later turn continues it.
    let mut ids = Vec::new();
    for turn in 0..CONVERSATIONS {
        let app = &instances[turn % INSTANCES];
        let answer = send_chat(app, None, &chat_body(json!([user(&text_of(turn))]))).await;
        assert!(!storage_failed(&answer), "{}", answer.text());
        ids.push(answer.id());
    }
    let ids = Arc::new(ids);

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(CONVERSATIONS));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (instances, ids, next) = (instances.clone(), ids.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let turn = next.fetch_add(1, Ordering::SeqCst);
                if turn >= TURNS {
                    return;
                }
                // Each client moves between instances from turn to turn.
                let app = &instances[(client + turn) % INSTANCES];
                let id = ids[turn % CONVERSATIONS];
                let answer = send_with(&http, app, id, &text_of(turn)).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                assert_eq!(answer.id(), id);
                assert!(ends_with_done(&answer), "turn {turn}: {}", answer.text());
                assert!(!storage_failed(&answer), "turn {turn}: {}", answer.text());
            }
        }));
    }
    for client in clients {
        client.await.expect("a client");
    }
    eprintln!("{TURNS} turns in {:?}", started.elapsed());

    let store = db.store();
    let mut seen: BTreeMap<String, Uuid> = BTreeMap::new();
    let mut messages = 0;
    for &id in ids.iter() {
        // Sequence numbers 0..n, no gaps or repeats, each question followed at once by
        // its answer, message_count equal to the rows.
        let texts = echo_turns(&store, id).await.expect("the conversation");
        messages += 2 * texts.len();
        for text in texts {
            assert_eq!(seen.insert(text.clone(), id), None, "{text} stored twice");
        }
    }
    assert_eq!(messages, 2 * TURNS, "two messages a turn");
    for turn in 0..TURNS {
        let id = seen.get(&text_of(turn)).expect("every turn stored");
        assert_eq!(
            *id,
            ids[turn % CONVERSATIONS],
            "turn {turn} in its conversation"
        );
    }
    assert_eq!(
        db.scalar("SELECT count(*) FROM messages").await,
        2 * TURNS as i64
    );
    assert_eq!(
        db.scalar("SELECT sum(message_count)::bigint FROM conversations")
            .await,
        2 * TURNS as i64
    );
}

/// One continued turn through a client that keeps its connections.
async fn send_with(http: &reqwest::Client, app: &TestServer, id: Uuid, text: &str) -> Answer {
    let response = http
        .post(app.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header(tower_conversations::CONVERSATION_ID_HEADER, id.to_string())
        .body(chat_body(json!([user(text)])).to_string())
        .send()
        .await
        .expect("the request is answered");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("the whole body");
    Answer {
        status,
        headers,
        body,
    }
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
#[ignore = "soak: 20,000 turns through the proxy, about a minute"]
async fn twenty_thousand_turns_through_the_proxy_leave_its_memory_where_warm_up_left_it() {
    // Warm-up ends once every bounded part of the proxy is full, its history cache (set to
    // 1 MiB below) included: some 3,500 turns of 20-message conversations fill it.
    let (turns, warm_up_turns) = (soak_turns(), soak_turns() / 5);
    let path = std::env::temp_dir().join(format!("tc_test_soak_{}.db", Uuid::now_v7().simple()));
    let database = format!("sqlite://{}", path.display());
    let upstream = TestServer::start(terse_echo_model()).await;
    let proxy = Arc::new(
        Proxy::start(
            // A history cache of 1 MiB, full by the end of warm-up: at the default (16 MiB)
            // the cache would still be filling at the end, by over half this proxy's
            // memory, which is growth up to a bound rather than a leak.
            &[
                "--upstream",
                &upstream.url(""),
                "--database-url",
                &database,
                "--history-cache-mib",
                "1",
            ],
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
