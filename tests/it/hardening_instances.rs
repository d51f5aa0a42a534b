//! Many instances of the layer on one database (contract sections 6 and 10): four
//! servers with pools of their own, 64 clients and eight shared conversations, every
//! turn going to whichever instance its client picks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::db::TestDb;
use crate::support::echo::echo_model;
use crate::support::faults::layer_pool;
use crate::support::server::*;
use crate::support::turns::{echo_turns, ends_with_done, storage_failed};
use http::StatusCode;
use serde_json::json;
use tower_conversations::ConversationLayer;
use uuid::Uuid;

const INSTANCES: usize = 4;
const CLIENTS: usize = 64;
const CONVERSATIONS: usize = 8;
const TURNS: usize = 2_000;

/// The text of turn `turn`, unique so that it can be found again.
fn text_of(turn: usize) -> String {
    format!("turn {turn} of conversation {}", turn % CONVERSATIONS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
