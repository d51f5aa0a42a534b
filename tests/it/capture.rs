//! Capturing the reply (contract section 5): what reaches the client, and what is stored
//! as the turn, over loopback with a real client against a real database.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};
use tower_conversations::store::StoredMessage;
use tower_conversations::{
    CONVERSATION_ID_HEADER, ConversationLayer, ConversationStore, RequestBody,
};
use uuid::Uuid;

use crate::support::db::TestDb;
use crate::support::dropped::DropCount;
use crate::support::echo::{echo_model, echo_of};
use crate::support::server::*;
use crate::support::turns::*;
use crate::support::upstream::*;

/// Waits until the conversation holds `count` messages (for turns whose end the client
/// cannot observe) and returns them.
async fn eventually_stored(db: &TestDb, id: Uuid, count: usize) -> Vec<StoredMessage> {
    eventually(Duration::from_secs(5), "the turn to be stored", || async {
        let messages = db.store().get("", id).await.ok()?.messages;
        (messages.len() >= count).then_some(messages)
    })
    .await
}

/// A short stream in the shape providers send, with multi-byte characters so that cuts
/// land inside them too.
fn compact_stream() -> (Vec<u8>, &'static str) {
    let events = [
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Grü"}}]}"#,
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"ße, 世界"}}]}"#,
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":" 🌍!"}}]}"#,
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ];
    let stream: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    (stream.into_bytes(), "Grüße, 世界 🌍!")
}

fn frames_of(bytes: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([bytes.len()].iter()) {
        frames.push(Bytes::copy_from_slice(&bytes[start..cut]));
        start = cut;
    }
    frames
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

fn one_byte_frames(bytes: &[u8]) -> Vec<Bytes> {
    bytes
        .iter()
        .map(|b| Bytes::copy_from_slice(&[*b]))
        .collect()
}

const CAPTURE_LIMIT: usize = 4 * 1024;

/// Content pieces that make a streamed reply of well over `CAPTURE_LIMIT` bytes.
fn long_pieces() -> Vec<String> {
    (0..100).map(|i| format!("{i:03} 0123456789 ")).collect()
}

backend_tests! {
    async fn a_reply_that_is_not_2xx_passes_through_untouched_and_stores_nothing(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = start_conversation(&app, "hi").await;
        let statuses = [
            StatusCode::BAD_REQUEST,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ];
        for status in statuses {
            for conversation in [None, Some(id)] {
                model.push(Reply::error(status, "upstream trouble"));
                let answer =
                    send_chat(&app, conversation, &chat_body(json!([user("again")]))).await;
                let kind = if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request_error"
                };
                let expected = json!({"error": {"message": "upstream trouble", "type": kind,
                    "param": null, "code": null}});

                assert_eq!(answer.status, status);
                assert_eq!(
                    answer.body,
                    expected.to_string().as_bytes(),
                    "{status}: untouched"
                );
                assert_eq!(answer.conversation_id(), None, "{status}: no header");
            }
        }
        assert_eq!(conversation_count(&db).await, 1);
        assert_eq!(message_count(&db).await, 2);
    }

    async fn the_reply_assembled_from_deltas_cut_at_every_byte_equals_the_full_text(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let (stream, text) = compact_stream();
        let mut cuts: Vec<Vec<Bytes>> = (1..stream.len())
            .map(|at| frames_of(&stream, &[at]))
            .collect();
        cuts.push(one_byte_frames(&stream));

        for frames in cuts {
            let first = frames[0].len();
            model.push(Reply::sse(frames));
            let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;

            assert_eq!(
                answer.body, stream,
                "cut at {first}: the client gets the same bytes"
            );
            let messages = stored(&db, answer.id()).await;
            assert_eq!(messages[1].message, assistant(text), "cut at {first}");
            assert!(
                !messages[1].metadata.contains_key("incomplete"),
                "cut at {first}"
            );
        }
    }

    async fn sse_line_endings_comments_fields_and_multi_line_data_are_understood(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        // One event's JSON over two data lines, which join with "\n" into valid JSON.
        let lf = concat!(
            ": keep-alive\n\n",
            "event: message\nid: 1\nretry: 1000\ndata: {\"id\":\"c1\",\"model\":\"m\",\n",
            "data: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n",
            ":comment\ndata:{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", world\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let crlf = lf.replace('\n', "\r\n");
        let cr = lf.replace('\n', "\r");
        for (name, stream) in [("LF", lf.to_owned()), ("CRLF", crlf), ("CR", cr)] {
            let stream = stream.into_bytes();
            let mut variants = vec![vec![Bytes::from(stream.clone())], one_byte_frames(&stream)];
            // A CRLF split between two frames is one line ending, not two.
            if let Some(at) = stream.windows(2).position(|w| w == b"\r\n") {
                variants.push(frames_of(&stream, &[at + 1]));
            }
            for frames in variants {
                let count = frames.len();
                model.push(Reply::sse(frames));
                let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;
                // Every byte up to `[DONE]` as sent; `[DONE]` itself is held back until
                // the turn is stored and then sent by the layer.
                let done_at = find(&stream, b"data: [DONE]");
                assert_eq!(
                    answer.body[..done_at],
                    stream[..done_at],
                    "{name} in {count} frames"
                );
                let tail = std::str::from_utf8(&answer.body[done_at..]).unwrap();
                assert_eq!(tail.trim_end(), "data: [DONE]", "{name} in {count} frames");
                assert_eq!(
                    stored_messages(&db, "", answer.id()).await[1],
                    assistant("Hello, world"),
                    "{name} in {count} frames"
                );
            }
        }
    }

    async fn tool_call_deltas_assemble_into_tool_calls_and_the_tool_turn_continues(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        model.push(Reply::sse([
            delta_chunk(json!({"role": "assistant", "content": null}), None),
            tool_call_chunk(0, Some("call_a"), Some("get_weather"), ""),
            tool_call_chunk(0, None, None, "{\"city\":"),
            tool_call_chunk(1, Some("call_b"), Some("get_time"), ""),
            tool_call_chunk(0, None, None, "\"Paris\"}"),
            tool_call_chunk(1, None, None, "{\"tz\":\"CET\"}"),
            finish_chunk("tool_calls"),
            done(),
        ]));
        let question = user("Weather and time in Paris?");
        let id = send_chat(&app, None, &chat_body(json!([question])))
            .await
            .id();

        let calls = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}},
        ]});
        let first_turn = stored(&db, id).await;
        assert_eq!(first_turn[1].message, calls);
        assert_eq!(first_turn[1].metadata["finish_reason"], "tool_calls");

        let results = json!([
            {"role": "tool", "tool_call_id": "call_a", "content": "Sunny, 21 °C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
        ]);
        model.push(Reply::text(["Sunny, ", "and it is 14:05."]));
        let answer = send_chat(&app, Some(id), &chat_body(results.clone())).await;

        assert_eq!(answer.status, StatusCode::OK);
        let mut expected = vec![question, calls];
        expected.extend(results.as_array().unwrap().iter().cloned());
        assert_eq!(model.last_request().messages(), expected);
        expected.push(assistant("Sunny, and it is 14:05."));
        assert_eq!(stored_messages(&db, "", id).await, expected);
    }

    async fn a_refusal_is_stored_with_the_message(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        model.push(Reply::sse([
            delta_chunk(
                json!({"role": "assistant", "content": null, "refusal": ""}),
                None,
            ),
            refusal_chunk("I can't "),
            refusal_chunk("help with that."),
            stop_chunk(),
            done(),
        ]));
        let id = send_chat(&app, None, &chat_body(json!([user("something bad")])))
            .await
            .id();

        let message = &stored(&db, id).await[1].message;
        assert_eq!(message["role"], "assistant");
        assert_eq!(message["refusal"], "I can't help with that.");
        assert!(
            message["content"].is_null() || message["content"] == "",
            "{message}"
        );
    }

    async fn the_reply_metadata_is_stored_beside_the_message(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        model.push(Reply::text(["Hel", "lo"]));
        let id = send_chat(&app, None, &chat_body(json!([user("hi")])))
            .await
            .id();

        let metadata = &stored(&db, id).await[1].metadata;
        assert_eq!(metadata["model"], MODEL);
        assert_eq!(metadata["id"], RESPONSE_ID);
        assert_eq!(metadata["finish_reason"], "stop");
        assert_eq!(metadata["system_fingerprint"], "fp_test");
        assert_eq!(
            metadata["usage"],
            json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
        );
    }

    async fn after_done_the_very_next_request_sees_the_whole_turn(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let mut id = None;
        let mut history = Vec::new();
        for turn in 0..8 {
            let said = format!("turn {turn}");
            // No pause between reading [DONE] and the next request.
            let answer = send_chat(&app, id, &chat_body(json!([user(&said)]))).await;
            assert_eq!(answer.events().last().map(String::as_str), Some("[DONE]"));
            history.push(user(&said));
            assert_eq!(model.last_request().messages(), history, "turn {turn}");
            history.push(assistant(&format!("You said: {said}")));
            id = Some(answer.id());
        }
    }

    async fn a_streamed_reply_over_the_capture_limit_reaches_the_client_whole_and_stores_nothing(
        db: TestDb
    ) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).capture_limit(CAPTURE_LIMIT);
        let app = serve_layered(&model, layer).await;
        let id = send_chat(&app, None, &chat_body(json!([user("short")]))).await.id();
        let before = stored_messages(&db, "", id).await;

        for conversation in [None, Some(id)] {
            let frames = text_stream(&long_pieces());
            let sent = concat(&frames[..frames.len() - 1]);
            assert!(sent.len() > 2 * CAPTURE_LIMIT);
            model.push(Reply::sse(frames.clone()));
            let answer = send_chat(&app, conversation, &chat_body(json!([user("long")]))).await;

            assert_eq!(answer.status, StatusCode::OK);
            // Every byte as the upstream sent it, then the storage_failed chunk, [DONE].
            assert_ends_with_storage_failed(&answer, &frames);
            if conversation.is_none() {
                let unknown = db.store().get("", answer.id()).await;
                assert!(unknown.is_err(), "no row for the new conversation");
            }
        }
        // The continued conversation did not get half a turn.
        assert_eq!(stored_messages(&db, "", id).await, before);
        assert_eq!(message_count(&db).await, 2);
        assert_eq!(conversation_count(&db).await, 1);
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

    async fn a_client_gone_mid_stream_leaves_the_partial_turn_stored_as_incomplete(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let pieces: Vec<String> = (0..20).map(|i| format!("piece{i} ")).collect();
        model.push(Reply::text(pieces.clone()).delay(Duration::from_millis(100)));

        let client = reqwest::Client::new();
        let mut response = client
            .post(app.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body(json!([user("Count slowly")])).to_string())
            .send()
            .await
            .unwrap();
        let id: Uuid = response.headers()[CONVERSATION_ID_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut received = String::new();
        while received.matches("piece").count() < 2 {
            let chunk = response.chunk().await.unwrap().expect("the stream goes on");
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        drop(response);
        drop(client);

        let messages = eventually(Duration::from_secs(5), "the partial turn", || async {
            let messages = db.store().get("", id).await.ok()?.messages;
            (messages.len() == 2).then_some(messages)
        })
        .await;
        let content = messages[1].message["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content.starts_with("piece0 piece1 "), "{content:?}");
        assert_ne!(content, pieces.concat(), "the reply was cut short");
        assert_eq!(messages[1].metadata["incomplete"], true);
        eventually(
            Duration::from_secs(5),
            "the upstream call to be cancelled",
            || async {
                model
                    .stream_ends()
                    .contains(&StreamEnd::Cancelled)
                    .then_some(())
            },
        )
        .await;
    }

    async fn an_upstream_error_event_inside_a_stream_stores_an_incomplete_turn(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let frames = vec![
            role_chunk(),
            content_chunk("Par"),
            error_event("The model is overloaded."),
        ];
        model.push(Reply::sse(frames.clone()));
        let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;

        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.body.starts_with(&concat(&frames)),
            "the client sees the error event"
        );
        let messages = eventually_stored(&db, answer.id(), 2).await;
        assert_eq!(messages[1].message, assistant("Par"));
        assert_eq!(messages[1].metadata["incomplete"], true);
        let error = &messages[1].metadata["error"];
        assert!(
            error.to_string().contains("The model is overloaded."),
            "{error}"
        );
    }

    async fn a_stream_that_ends_without_done_is_still_stored(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let mut frames = text_stream(&["No ", "done ", "here."]);
        frames.pop();
        model.push(Reply::sse(frames.clone()));
        let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;

        assert!(answer.body.starts_with(&concat(&frames)));
        let messages = eventually_stored(&db, answer.id(), 2).await;
        assert_eq!(messages[1].message, assistant("No done here."));
        assert!(!messages[1].metadata.contains_key("incomplete"));
    }

    async fn a_non_streaming_json_turn_is_stored_and_continued(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let body = json!({"model": MODEL, "stream": false, "messages": [user("hi")]});
        let answer = send_chat(&app, None, &body).await;

        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.body,
            completion("You said: hi").to_string().as_bytes()
        );
        let length: usize = answer.headers["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, answer.body.len());
        let id = answer.id();
        // `refusal: null` and `annotations` are response-only: never sent back upstream.
        assert_eq!(
            stored_messages(&db, "", id).await,
            vec![user("hi"), assistant("You said: hi")]
        );

        let body = json!({"model": MODEL, "stream": false, "messages": [user("more")]});
        let answer = send_chat(&app, Some(id), &body).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            model.last_request().messages(),
            vec![user("hi"), assistant("You said: hi"), user("more")]
        );
        assert_eq!(stored_messages(&db, "", id).await.len(), 4);
    }

    async fn a_reply_in_an_encoding_the_layer_cannot_read_passes_through_unstored(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let compressed = Bytes::from_static(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\x00");
        model.push(Reply::sse([compressed.clone()]).header("content-encoding", "gzip"));
        let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;

        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["content-encoding"], "gzip");
        assert_eq!(answer.body, compressed);
        // A readable turn afterwards is stored; the unreadable one never is.
        let readable = send_chat(&app, None, &chat_body(json!([user("plain")]))).await;
        assert_eq!(stored_messages(&db, "", readable.id()).await.len(), 2);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM messages").await, 2);
    }
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
#[ignore = "soak: 500 streams, each dropped at a different point of its reply"]
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
