//! Limits (contract sections 3 and 5): replies beyond the capture limit, request bodies
//! beyond the request limit, and JSON nested deeper than any parser should follow.

use crate::support::db::TestDb;
use crate::support::server::*;
use crate::support::turns::{ends_with_done, storage_failed};
use crate::support::upstream::*;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer, ConversationStore};
use uuid::Uuid;

const CAPTURE_LIMIT: usize = 4 * 1024;

/// Content pieces that make a streamed reply of well over `CAPTURE_LIMIT` bytes.
fn long_pieces() -> Vec<String> {
    (0..100).map(|i| format!("{i:03} 0123456789 ")).collect()
}

async fn messages(db: &TestDb, id: Uuid) -> Vec<Value> {
    let detail = db.store().get("", id).await.expect("the conversation");
    assert_eq!(
        detail.conversation.message_count as usize,
        detail.messages.len()
    );
    detail.messages.into_iter().map(|m| m.message).collect()
}

/// `[[[ ... 1 ... ]]]`, `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

backend_tests! {
    async fn a_streamed_reply_over_the_capture_limit_reaches_the_client_whole_and_stores_nothing(
        db: TestDb
    ) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).capture_limit(CAPTURE_LIMIT);
        let app = serve_layered(&model, layer).await;
        let id = send_chat(&app, None, &chat_body(json!([user("short")]))).await.id();
        let before = messages(&db, id).await;

        for conversation in [None, Some(id)] {
            let frames = text_stream(&long_pieces());
            let sent = concat(&frames[..frames.len() - 1]);
            assert!(sent.len() > 2 * CAPTURE_LIMIT);
            model.push(Reply::sse(frames));
            let answer = send_chat(&app, conversation, &chat_body(json!([user("long")]))).await;

            assert_eq!(answer.status, StatusCode::OK);
            assert!(answer.body.starts_with(&sent), "every byte as the upstream sent it");
            assert!(storage_failed(&answer), "{:?}", answer.events().last());
            assert!(ends_with_done(&answer));
            if conversation.is_none() {
                let unknown = db.store().get("", answer.id()).await;
                assert!(unknown.is_err(), "no row for the new conversation");
            }
        }
        // The continued conversation did not get half a turn.
        assert_eq!(messages(&db, id).await, before);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    }

    async fn a_json_reply_over_the_capture_limit_reaches_the_client_whole_and_stores_nothing(
        db: TestDb
    ) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).capture_limit(CAPTURE_LIMIT);
        let app = serve_layered(&model, layer).await;
        let reply = completion(&long_pieces().concat().repeat(4));
        assert!(reply.to_string().len() > CAPTURE_LIMIT);
        // In one frame, and cut into many (the mark may have to go into any of them).
        let text = reply.to_string().into_bytes();
        let pieces: Vec<Bytes> = text.chunks(333).map(Bytes::copy_from_slice).collect();
        model.push(Reply::json(reply.clone()));
        model.push(Reply::sse(pieces).header("content-type", "application/json"));
        let body = json!({"model": MODEL, "stream": false, "messages": [user("long")]});

        for _ in 0..2 {
            let answer = send_chat(&app, None, &body).await;

            assert_eq!(answer.status, StatusCode::OK);
            let mut received = answer.json();
            assert_eq!(
                received["metadata"]["storage_failed"], true,
                "the client hears the turn was not stored"
            );
            received.as_object_mut().unwrap().remove("metadata");
            assert_eq!(received, reply, "the reply whole");
            if let Some(length) = answer.headers.get("content-length") {
                assert_eq!(length.to_str().unwrap(), answer.body.len().to_string());
            }
        }
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 0);
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 0);
    }

    async fn a_chat_body_over_the_request_limit_is_413_however_it_is_sent(db: TestDb) {
        let model = TestModel::new();
        let limit = 64 * 1024;
        let layer = ConversationLayer::new(db.store()).request_body_limit(limit);
        let app = serve_layered(&model, layer).await;
        let text = "x".repeat(limit);
        let body = chat_body(json!([user(&text)])).to_string();

        // With Content-Length: refused before the body is read.
        let declared = send(
            &app,
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            body.clone(),
        )
        .await;
        // Chunked, with no length given: refused once the limit is passed.
        let pieces: Vec<Result<Bytes, std::io::Error>> = body
            .into_bytes()
            .chunks(4096)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        let chunked = send(
            &app,
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)),
        )
        .await;

        for answer in [declared, chunked] {
            assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(answer.error_code(), "request_too_large");
        }
        assert!(model.requests().is_empty(), "nothing reaches the upstream");
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 0);
    }

    async fn deeply_nested_json_gets_a_clean_400_and_stores_nothing(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = send_chat(&app, None, &chat_body(json!([user("hi")]))).await.id();
        let deep = nested(100_000);
        let bodies = [
            // Too deep to read as a chat request at all.
            deep.clone(),
            format!(r#"{{"messages":{deep}}}"#),
            format!(r#"{{"messages":[{{"role":"user","content":{deep}}}]}}"#),
            format!(r#"{{"messages":[{{"role":"user","content":{}}}]}}"#, nested(200)),
        ];
        for body in &bodies {
            // Continuing a conversation needs a chat request: the layer says so.
            let header = id.to_string();
            let answer = send(
                &app,
                Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json"), (CONVERSATION_ID_HEADER, &header)],
                body.clone(),
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", &body[..40]);
            assert_eq!(answer.error_code(), "invalid_request");

            // Without a header it is not the layer's request: the upstream answers.
            let answer = send(
                &app,
                Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", &body[..40]);
            assert_eq!(answer.conversation_id(), None);
            assert_eq!(&model.last_request().body[..], body.as_bytes(), "untouched");
        }
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    }

    async fn deep_nesting_outside_messages_is_forwarded_as_it_came(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = send_chat(&app, None, &chat_body(json!([user("hi")]))).await.id();
        // serde_json skips an unread field without recursing, so the layer can splice
        // this body; the upstream then refuses it, and a refusal stores nothing.
        let body = format!(
            r#"{{"model":"m","stream":true,"tools":{},"messages":[{{"role":"user","content":"deep"}}]}}"#,
            nested(100_000)
        );
        let header = id.to_string();
        let answer = send(
            &app,
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json"), (CONVERSATION_ID_HEADER, &header)],
            body.clone(),
        )
        .await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "the upstream's answer");
        let forwarded = model.last_request().body;
        let tools = nested(100_000);
        assert!(
            forwarded.windows(tools.len()).any(|w| w == tools.as_bytes()),
            "the deep field reaches the upstream byte for byte"
        );
        assert_eq!(messages(&db, id).await.len(), 2, "nothing stored");
    }

    async fn deeply_nested_reply_fields_lose_their_chunk_not_the_turn(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let deep = nested(100_000);
        let odd = format!(
            r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":"lost"}}}}],"usage":{deep}}}"#
        );
        model.push(Reply::sse([
            content_chunk("kept "),
            Bytes::from(format!("data: {odd}\n\n")),
            content_chunk("too"),
            stop_chunk(),
            done(),
        ]));
        let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;

        assert_eq!(answer.status, StatusCode::OK);
        assert!(!storage_failed(&answer));
        let stored = messages(&db, answer.id()).await;
        assert_eq!(stored[1], json!({"role": "assistant", "content": "kept too"}));

        // A JSON reply too deep to read is not stored, and says so.
        let reply = format!(
            r#"{{"object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":{deep}}}}}]}}"#
        );
        let frames = vec![Bytes::from(reply)];
        model.push(Reply::sse(frames).header("content-type", "application/json"));
        let body = json!({"model": MODEL, "stream": false, "messages": [user("deep")]});
        let answer = send_chat(&app, None, &body).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.text().ends_with(r#","metadata":{"storage_failed":true}}"#));
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
    }
}

/// Sends only a request's head over a raw connection and reads the answer: a client
/// that waits for the server before sending its body, as `Expect: 100-continue` does.
async fn answer_to_head(app: &TestServer, head: &str) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr())
        .await
        .expect("connect");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    );
    // The server closes the connection after refusing the body it did not read.
    read.await
        .expect("answered in time")
        .expect("read the answer");
    let answer = String::from_utf8(answer).expect("UTF-8");
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok());
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        StatusCode::from_u16(status.expect("a status line")).expect("a status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_body_declared_over_the_default_32_mib_limit_is_413_before_it_is_sent() {
    let db = TestDb::sqlite().await;
    let model = TestModel::new();
    let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
    let length = tower_conversations::DEFAULT_REQUEST_BODY_LIMIT + 1;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    );

    let (status, body) = answer_to_head(&app, &head).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(model.requests().is_empty());
}
