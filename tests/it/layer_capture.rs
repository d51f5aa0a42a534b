//! Splicing history and capturing the reply (contract sections 4 and 5), driven over
//! loopback with a real client against a real database.

use std::time::Duration;

use crate::support::db::TestDb;
use crate::support::server::*;
use crate::support::upstream::*;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use tower_conversations::store::StoredMessage;
use tower_conversations::{ConversationLayer, ConversationStore};
use uuid::Uuid;

async fn stored(db: &TestDb, id: Uuid) -> Vec<StoredMessage> {
    db.store()
        .get("", id)
        .await
        .expect("the conversation is stored")
        .messages
}

async fn stored_messages(db: &TestDb, id: Uuid) -> Vec<Value> {
    stored(db, id)
        .await
        .into_iter()
        .map(|m| m.message)
        .collect()
}

/// Waits until the conversation holds `count` messages (for turns whose end the client
/// cannot observe) and returns them.
async fn eventually_stored(db: &TestDb, id: Uuid, count: usize) -> Vec<StoredMessage> {
    eventually(Duration::from_secs(5), "the turn to be stored", || async {
        let messages = db.store().get("", id).await.ok()?.messages;
        (messages.len() >= count).then_some(messages)
    })
    .await
}

fn assistant(content: &str) -> Value {
    json!({"role": "assistant", "content": content})
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

/// Checks the window the upstream saw against the stored history it was cut from.
fn assert_window(window: usize, stored: &[Value], seen: &[Value]) {
    assert!(
        seen.len() <= window,
        "window {window}: {} messages spliced",
        seen.len()
    );
    assert_eq!(
        seen,
        &stored[stored.len() - seen.len()..],
        "window {window}: a tail"
    );
    for (at, message) in seen.iter().enumerate() {
        if message["role"] == "tool" {
            let call = &message["tool_call_id"];
            let answered = seen[..at].iter().any(|earlier| {
                earlier["tool_calls"]
                    .as_array()
                    .is_some_and(|calls| calls.iter().any(|c| &c["id"] == call))
            });
            assert!(
                answered,
                "window {window}: tool message {call} lost its call"
            );
        }
    }
}

backend_tests! {
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
                    stored_messages(&db, answer.id()).await[1],
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
        assert_eq!(stored_messages(&db, id).await, expected);
    }

    async fn reasoning_is_stored_beside_the_message_and_never_spliced(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        model.push(Reply::sse([
            role_chunk(),
            reasoning_chunk("Six times "),
            reasoning_chunk("seven."),
            content_chunk("4"),
            content_chunk("2"),
            stop_chunk(),
            done(),
        ]));
        let id = send_chat(&app, None, &chat_body(json!([user("6 x 7?")])))
            .await
            .id();

        let events = [
            json!({"type": "summary", "text": "square it"}),
            json!({"type": "summary", "text": "done"}),
        ];
        model.push(Reply::sse([
            role_chunk(),
            delta_chunk(json!({"reasoning": "Eight "}), None),
            delta_chunk(json!({"reasoning_event": events[0]}), None),
            delta_chunk(json!({"reasoning": "squared."}), None),
            delta_chunk(json!({"reasoning_event": events[1]}), None),
            content_chunk("64"),
            stop_chunk(),
            done(),
        ]));
        send_chat(&app, Some(id), &chat_body(json!([user("8 x 8?")]))).await;
        send_chat(&app, Some(id), &chat_body(json!([user("Thanks")]))).await;

        let messages = stored(&db, id).await;
        assert_eq!(messages[1].message, assistant("42"));
        assert_eq!(messages[1].reasoning.as_deref(), Some("Six times seven."));
        assert_eq!(messages[3].message, assistant("64"));
        assert_eq!(messages[3].reasoning.as_deref(), Some("Eight squared."));
        assert_eq!(messages[3].reasoning_events, events);
        assert_eq!(
            model.last_request().messages(),
            vec![
                user("6 x 7?"),
                assistant("42"),
                user("8 x 8?"),
                assistant("64"),
                user("Thanks")
            ]
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
            stored_messages(&db, id).await,
            vec![user("hi"), assistant("You said: hi")]
        );

        let body = json!({"model": MODEL, "stream": false, "messages": [user("more")]});
        let answer = send_chat(&app, Some(id), &body).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            model.last_request().messages(),
            vec![user("hi"), assistant("You said: hi"), user("more")]
        );
        assert_eq!(stored_messages(&db, id).await.len(), 4);
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

    async fn the_history_window_keeps_tool_messages_with_their_calls(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        model.push(Reply::sse([
            tool_call_chunk(0, Some("call_1"), Some("get_weather"), "{}"),
            finish_chunk("tool_calls"),
            done(),
        ]));
        let id = send_chat(&app, None, &chat_body(json!([user("Weather?")])))
            .await
            .id();
        let tool = json!({"role": "tool", "tool_call_id": "call_1", "content": "Sunny"});
        send_chat(&app, Some(id), &chat_body(json!([tool]))).await;
        send_chat(&app, Some(id), &chat_body(json!([user("Thanks")]))).await;
        let history = stored_messages(&db, id).await;
        assert_eq!(history.len(), 6);

        for window in 1..=7 {
            // A fresh copy of the same six messages for each window size.
            let copy = db.store().fork("", id, 5).await.expect("fork").id;
            let layer = ConversationLayer::new(db.store()).history_window(window as u32);
            let windowed = serve_layered(&model, layer).await;
            let answer = send_chat(&windowed, Some(copy), &chat_body(json!([user("Bye")]))).await;
            assert_eq!(answer.status, StatusCode::OK, "window {window}");

            let mut seen = model.last_request().messages();
            assert_eq!(seen.pop(), Some(user("Bye")));
            assert_window(window, &history, &seen);
            if window >= 2 {
                assert!(
                    seen.ends_with(&history[4..]),
                    "window {window}: the last turn is kept"
                );
            }
            if window >= history.len() {
                assert_eq!(seen, history, "window {window}: everything fits");
            }
            assert_eq!(
                stored_messages(&db, copy).await.len(),
                8,
                "the window limits splicing only"
            );
        }
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
        assert_eq!(stored_messages(&db, readable.id()).await.len(), 2);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM messages").await, 2);
    }
}
