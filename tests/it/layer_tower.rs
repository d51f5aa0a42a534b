//! The layer as a plain tower component: composed with `ServiceBuilder` under a bare
//! hyper server, and forwarding the inner body's own frames without copying them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::support::db::TestDb;
use crate::support::server::*;
use crate::support::upstream::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};
use tower_conversations::{
    CONVERSATION_ID_HEADER, ConversationLayer, ConversationStore, RequestBody,
};

fn sse_response<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_serves_plain_hyper_through_tower_service_builder() {
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

/// A streamed body that notes the address of every frame it yields.
struct RecordingBody {
    frames: VecDeque<Bytes>,
    yielded: Arc<Mutex<Vec<(usize, Bytes)>>>,
}

impl Body for RecordingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = self.frames.pop_front();
        if let Some(frame) = &frame {
            let address = frame.as_ptr() as usize;
            self.yielded.lock().unwrap().push((address, frame.clone()));
        }
        Poll::Ready(frame.map(|f| Ok(Frame::data(f))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_sse_frame_is_the_very_allocation_the_inner_body_produced() {
    let db = TestDb::sqlite().await;
    let yielded: Arc<Mutex<Vec<(usize, Bytes)>>> = Arc::default();
    let inner = {
        let yielded = yielded.clone();
        service_fn(move |_request: Request<RequestBody<Full<Bytes>>>| {
            let body = RecordingBody {
                frames: text_stream(&["Hel", "lo"]).into(),
                yielded: yielded.clone(),
            };
            async move { Ok::<_, Infallible>(sse_response(body)) }
        })
    };
    let service = ConversationLayer::new(db.store()).layer(inner);
    let request = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            chat_body(json!([user("hi")])).to_string(),
        )))
        .unwrap();

    let response = service.oneshot(request).await.unwrap();
    assert!(response.headers().contains_key(CONVERSATION_ID_HEADER));
    let mut body = response.into_body();
    let mut polled = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            polled.push((data.as_ptr() as usize, data));
        }
    }

    // `[DONE]` is held back and may be sent again from elsewhere; every other frame
    // must be the inner body's own bytes, not a copy.
    let not_done = |(_, data): &(usize, Bytes)| data != &done();
    let yielded: Vec<_> = yielded
        .lock()
        .unwrap()
        .iter()
        .filter(|f| not_done(f))
        .cloned()
        .collect();
    let polled: Vec<_> = polled.into_iter().filter(not_done).collect();
    assert_eq!(yielded.len(), 5, "role, two pieces, stop and usage");
    assert_eq!(polled, yielded);
}
