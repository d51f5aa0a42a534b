//! Clients that vanish (contract section 5): 500 streams dropped at points spread over
//! the whole reply, with nothing panicking, every turn stored (incomplete when cut
//! short), and no storage task outliving `wait_for_pending_writes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::db::TestDb;
use crate::support::dropped::DropCount;
use crate::support::echo::{echo_model, echo_of};
use crate::support::server::*;
use crate::support::turns::{ends_with_done, storage_failed};
use serde_json::json;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer, ConversationStore};
use uuid::Uuid;

const STREAMS: usize = 500;
const AT_ONCE: usize = 50;

/// What one client saw before it went away.
struct Vanished {
    id: Uuid,
    text: String,
    /// Whether it read the reply to its end (`[DONE]` included).
    whole: bool,
}

/// Counts panics on any thread of this test binary, server tasks included: tokio
/// catches a panicking task, so only a hook sees it.
fn count_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    panics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_mid_stream_leave_their_turns_stored_and_no_task_behind() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let panics = count_panics();
    let layer = ConversationLayer::new(db.store());
    let dropped = DropCount::default();
    let service = ServiceBuilder::new()
        .map_response({
            let dropped = dropped.clone();
            move |response| dropped.count(response)
        })
        .layer(layer.clone())
        .service(echo_model(Duration::from_millis(3)));
    let app = Arc::new(TestServer::start_service(service).await);

    // The length of a whole answer, to spread the points where clients go away over it
    // and a little past its end (those clients read it all).
    let whole = send_chat(&app, None, &chat_body(json!([user("drop 000")]))).await;
    assert!(ends_with_done(&whole) && !storage_failed(&whole));
    let length = whole.body.len();

    let slots = Arc::new(Semaphore::new(AT_ONCE));
    let mut clients = Vec::new();
    for stream in 0..STREAMS {
        let (app, slots) = (app.clone(), slots.clone());
        // A deterministic spread over 0..length + 64 bytes, in no particular order.
        let leave_after = (stream * 7919) % (length + 64);
        clients.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("a slot");
            let text = format!("drop {stream:03}");
            let http = reqwest::Client::new();
            let mut response = http
                .post(app.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(chat_body(json!([user(&text)])).to_string())
                .send()
                .await
                .expect("the request is answered");
            let id: Uuid = response.headers()[CONVERSATION_ID_HEADER]
                .to_str()
                .expect("ASCII")
                .parse()
                .expect("a UUID");
            let mut received = 0;
            let mut whole = false;
            while received < leave_after {
                match response.chunk().await.expect("the stream goes on") {
                    Some(chunk) => received += chunk.len(),
                    None => {
                        whole = true;
                        break;
                    }
                }
            }
            // Gone: the response and its connection with it.
            drop(response);
            drop(http);
            Vanished { id, text, whole }
        }));
    }
    let mut vanished = Vec::new();
    for client in clients {
        vanished.push(client.await.expect("a client"));
    }

    // Once the server has let go of every body, every turn's write has started; once
    // the layer says none is pending, every turn is in the database.
    eventually(Duration::from_secs(10), "every body dropped", || async {
        (dropped.get() > STREAMS).then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), layer.wait_for_pending_writes())
        .await
        .expect("no storage task outlives its write");

    let store = db.store();
    let (mut cut, mut complete) = (0, 0);
    for client in &vanished {
        let messages = store
            .get("", client.id)
            .await
            .unwrap_or_else(|e| panic!("{}: not stored ({e})", client.text))
            .messages;
        assert_eq!(messages.len(), 2, "{}", client.text);
        assert_eq!(messages[0].message, user(&client.text));
        let answer = &messages[1];
        let content = answer.message["content"].as_str().expect("text content");
        let full = echo_of(&client.text);
        assert!(full.starts_with(content), "{}: {content:?}", client.text);
        if answer.metadata.get("incomplete") == Some(&json!(true)) {
            cut += 1;
            assert!(!client.whole, "{}: read whole, stored cut", client.text);
        } else {
            complete += 1;
            assert_eq!(content, full, "{}: complete means whole", client.text);
        }
    }
    eprintln!("{cut} turns stored incomplete, {complete} complete");
    assert!(cut > STREAMS / 2, "most clients left early");
    assert!(complete > 0, "some clients stayed to the end");
    assert_eq!(panics.load(Ordering::SeqCst), 0, "something panicked");
}
