//! The layer as a plain tower component (contract section 1): composed with
//! `ServiceBuilder` under a bare hyper server.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tower::{ServiceBuilder, service_fn};
use tower_conversations::{ConversationLayer, ConversationStore, RequestBody};

use crate::support::db::TestDb;
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
