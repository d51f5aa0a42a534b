//! The layer as a plain tower component (contract section 1): composed with
//! `ServiceBuilder` under a bare hyper server.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_conversations::{ConversationLayer, ConversationStore, RequestBody};

use crate::support::db::{TestDb, TestPool};
use crate::support::server::*;
use crate::support::upstream::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tower_service_gets_conversation_memory_through_service_builder() {
    let db = TestDb::sqlite().await;
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let upstream = {
        let received = received.clone();
        service_fn(move |request: Request<RequestBody<Incoming>>| {
            let received = received.clone();
            async move {
                let body = request.into_body().collect().await?.to_bytes();
                received.lock().unwrap().push(body);
                let reply = Bytes::from(concat(&text_stream(&["Hi", "!"])));
                Ok::<_, hyper::Error>(sse_response(Full::new(reply)))
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(ConversationLayer::new(db.store()))
        .service(upstream);
    let server = TestServer::start_service(service).await;

    let first = send_chat(&server, None, &chat_body(json!([user("hello")]))).await;
    assert_eq!(first.status, StatusCode::OK);
    let id = first.id();
    let second = send_chat(&server, Some(id), &chat_body(json!([user("again")]))).await;
    assert_eq!(second.status, StatusCode::OK);

    let last: Value = serde_json::from_slice(received.lock().unwrap().last().unwrap()).unwrap();
    let hi = json!({"role": "assistant", "content": "Hi!"});
    assert_eq!(last["messages"], json!([user("hello"), hi, user("again")]));
    let stored = db.store().get("", id).await.unwrap().messages;
    assert_eq!(stored.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_pending_writes_covers_a_reply_whose_body_is_not_dropped_yet() {
    let db = TestDb::sqlite().await;
    // A stream that sends its first chunk, then nothing until the client goes away.
    let upstream = service_fn(|_request: Request<RequestBody<Full<Bytes>>>| async {
        let first = Bytes::from(concat(&text_stream(&["Hi"])[..1]));
        let frames = stream::iter([Ok::<_, Infallible>(Frame::data(first))]);
        let body = StreamBody::new(frames.chain(stream::pending()));
        Ok::<_, Infallible>(sse_response(body))
    });
    let layer = ConversationLayer::new(db.store());
    let mut service = ServiceBuilder::new().layer(layer.clone()).service(upstream);
    let request = hello_request();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let mut body = response.into_body();
    body.frame().await.expect("the first frame").expect("data");

    // The reply is still arriving: its turn is pending, though no write has started.
    let waiting = tokio::spawn({
        let layer = layer.clone();
        async move { layer.wait_for_pending_writes().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "shutdown would not wait for the reply in flight"
    );

    // The client goes away: the partial turn is stored, then the wait ends.
    drop(body);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the wait ends once the turn is stored")
        .expect("the waiter");
    assert_eq!(
        db.scalar("SELECT count(*) FROM messages").await,
        2,
        "the partial turn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_dropped_while_its_turn_is_stored_still_stores_the_whole_turn() {
    let db = TestDb::sqlite().await;
    let TestPool::Sqlite(pool) = &db.pool else {
        unreachable!("a SQLite test database")
    };
    let upstream = service_fn(|_request: Request<RequestBody<Full<Bytes>>>| async {
        let reply = Bytes::from(concat(&text_stream(&["Hi", "!"])));
        Ok::<_, Infallible>(sse_response(Full::new(reply)))
    });
    let layer = ConversationLayer::new(db.store());
    let mut service = ServiceBuilder::new().layer(layer.clone()).service(upstream);
    let request = hello_request();

    // Another connection holds the file's write lock: the turn's write waits for it.
    let mut blocker = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let mut body = response.into_body();
    let mut forwarded = Vec::new();
    let held = loop {
        match tokio::time::timeout(std::time::Duration::from_millis(300), body.frame()).await {
            Ok(Some(Ok(frame))) => forwarded.extend_from_slice(frame.data_ref().unwrap()),
            Ok(other) => panic!("the stream ended before its turn was stored: {other:?}"),
            Err(_) => break forwarded,
        }
    };
    let held = String::from_utf8(held).unwrap();
    assert!(
        held.contains("\"!\""),
        "the whole reply went through: {held}"
    );
    assert!(
        !held.contains("[DONE]"),
        "[DONE] waits for the write: {held}"
    );

    // The client goes away while the write waits; then the lock is let go.
    drop(body);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    sqlx::query("COMMIT").execute(&mut *blocker).await.unwrap();
    drop(blocker);
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        layer.wait_for_pending_writes(),
    )
    .await
    .expect("the write ends");

    let conversations = db.store().list("", &Default::default()).await.unwrap();
    let [conversation] = &conversations.conversations[..] else {
        panic!("one conversation: {conversations:?}")
    };
    let messages = db.store().get("", conversation.id).await.unwrap().messages;
    assert_eq!(messages.len(), 2, "the whole turn");
    assert_eq!(messages[1].message["content"], "Hi!");
    assert_eq!(
        messages[1].metadata.get("incomplete"),
        None,
        "a complete reply"
    );
}

/// A new conversation's first request, "hello", for a service called in process.
fn hello_request() -> Request<Full<Bytes>> {
    Request::post(tower_conversations::DEFAULT_CHAT_PATH)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            chat_body(json!([user("hello")])).to_string(),
        )))
        .unwrap()
}
