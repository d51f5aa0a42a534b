//! Splicing the stored history into each request (contract section 4), over loopback
//! with a real client against a real database.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tower_conversations::ConversationLayer;

use crate::support::server::*;
use crate::support::turns::{stored, stored_messages};
use crate::support::upstream::*;

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
    async fn continuing_sends_the_stored_history_then_the_new_messages_in_order(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        // History is spliced exactly as stored: parts arrays and names included.
        let first = json!({"role": "user", "name": "ada",
            "content": [{"type": "text", "text": "What is 6 x 7?"}]});
        model.push(Reply::text(["4", "2"]));
        let id = send_chat(&app, None, &chat_body(json!([first]))).await.id();

        let second = json!({
            "model": MODEL,
            "stream": true,
            "temperature": 0.5,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "calc", "parameters": {}}}],
            "messages": [user("And 7 x 8?")],
        });
        model.push(Reply::text(["5", "6"]));
        let answer = send_chat(&app, Some(id), &second).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.id(), id);

        let seen = model.last_request();
        let seen_body = seen.json.clone().expect("the upstream got JSON");
        assert_eq!(
            seen.messages(),
            vec![first.clone(), assistant("42"), user("And 7 x 8?")]
        );
        let mut rest_seen = seen_body.as_object().unwrap().clone();
        let mut rest_sent = second.as_object().unwrap().clone();
        rest_seen.remove("messages");
        rest_sent.remove("messages");
        assert_eq!(
            rest_seen, rest_sent,
            "every other field reaches the upstream unchanged"
        );
        let length: usize = seen.headers["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, seen.body.len(), "Content-Length is corrected");

        assert_eq!(
            stored_messages(&db, "", id).await,
            vec![first, assistant("42"), user("And 7 x 8?"), assistant("56")]
        );
    }

    async fn a_message_is_spliced_back_as_the_client_wrote_it(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        // Spaces, a line break, escapes, a number serde would write otherwise, members out
        // of key order: none of it is the stored text's business to change.
        let written = "{ \"role\" : \"user\",\n  \"content\" : \"caf\\u00e9 \\/ ok\", \"n\": 1.50 }";
        let body = format!(r#"{{"model":"{MODEL}","stream":true,"messages":[ {written} ]}}"#);
        model.push(Reply::text(["fine"]));
        let headers = [("content-type", "application/json")];
        let first = send(&app, Method::POST, "/v1/chat/completions", &headers, body).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text());

        model.push(Reply::text(["again"]));
        let next = send_chat(&app, Some(first.id()), &chat_body(json!([user("next")]))).await;
        assert_eq!(next.status, StatusCode::OK, "{}", next.text());
        let seen = String::from_utf8(model.last_request().body.to_vec()).expect("UTF-8");
        assert!(
            seen.contains(&format!("[{written},")),
            "the stored message went upstream as it was written: {seen}"
        );
        let stored = stored_messages(&db, "", first.id()).await;
        assert_eq!(stored[0], json!({"role": "user", "content": "café / ok", "n": 1.5}));
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
        let history = stored_messages(&db, "", id).await;
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
                stored_messages(&db, "", copy).await.len(),
                8,
                "the window limits splicing only"
            );
        }
    }
}
