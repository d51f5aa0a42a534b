//! Which requests the layer touches (contract section 2) and in which mode (section 3),
//! over loopback with a real client against a real database.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer, ModePolicy};
use uuid::Uuid;

use crate::support::db::TestDb;
use crate::support::server::*;
use crate::support::turns::{conversation_count, message_count, stored_messages};
use crate::support::upstream::*;

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

backend_tests! {
    async fn every_other_request_and_its_response_pass_through_byte_identical(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let direct_model = TestModel::new();
        let baseline = serve_model(&direct_model).await;
        let chat = chat_body(json!([user("hi")])).to_string();
        let cases = [
            (Method::GET, "/v1/models", String::new()),
            (
                Method::POST,
                "/v1/embeddings",
                r#"{"model":"e","input":"hi"}"#.to_owned(),
            ),
            (Method::GET, "/v1/chat/completions", String::new()),
            (Method::PUT, "/v1/chat/completions", chat.clone()),
            (Method::POST, "/v1/chat", chat),
            (Method::DELETE, "/v1/files/abc?purge=1", String::new()),
        ];
        // A malformed conversation id on a request the layer does not touch is not its
        // business either.
        let headers = [
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-test"),
            ("x-custom", "kept"),
            (CONVERSATION_ID_HEADER, "not-a-uuid"),
        ];
        for (method, path, body) in cases {
            let answer = send(&app, method.clone(), path, &headers, body.clone()).await;
            let direct = send(&baseline, method.clone(), path, &headers, body).await;

            let (seen, seen_directly) = (model.last_request(), direct_model.last_request());
            assert_eq!(seen.method, seen_directly.method, "{method} {path}");
            assert_eq!(seen.path, seen_directly.path, "{method} {path}");
            assert_eq!(
                seen.headers_without_host(),
                seen_directly.headers_without_host(),
                "{method} {path}"
            );
            assert_eq!(seen.body, seen_directly.body, "{method} {path}");

            let mut headers = answer.headers.clone();
            let mut direct_headers = direct.headers.clone();
            headers.remove("date");
            direct_headers.remove("date");
            assert_eq!(answer.status, direct.status, "{method} {path}");
            assert_eq!(headers, direct_headers, "{method} {path}");
            assert_eq!(answer.body, direct.body, "{method} {path}");
        }
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn every_configured_chat_path_is_intercepted_and_no_other(db: TestDb) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store())
            .chat_paths(["/v1/chat/completions", "/openai/v1/chat/completions"]);
        let app = serve_layered(&model, layer).await;
        let only_custom =
            ConversationLayer::new(db.store()).chat_paths(["/openai/v1/chat/completions"]);
        let custom_app = serve_layered(&model, only_custom).await;
        let body = chat_body(json!([user("hi")])).to_string();
        let headers = [("content-type", "application/json")];

        for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
            let answer = send(&app, Method::POST, path, &headers, body.clone()).await;
            assert_eq!(
                stored_messages(&db, "", answer.id()).await.len(),
                2,
                "{path}"
            );
        }
        let passed = send(
            &custom_app,
            Method::POST,
            "/v1/chat/completions",
            &headers,
            body,
        )
        .await;
        assert_eq!(passed.status, StatusCode::OK);
        assert_eq!(passed.conversation_id(), None);
        assert_eq!(conversation_count(&db).await, 2);
    }

    async fn a_system_or_developer_message_without_the_header_is_stateless(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        for role in ["system", "developer"] {
            let body = format!(
                r#"{{"model":"test-model",  "messages":[{{"role":"{role}","content":"Be brief."}},
                {{"role":"user","content":"hi"}}], "stream": true}}"#
            );
            let headers = [("content-type", "application/json")];
            let answer = send(
                &app,
                Method::POST,
                "/v1/chat/completions",
                &headers,
                body.clone(),
            )
            .await;

            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(
                answer.conversation_id(),
                None,
                "{role}: no X-Conversation-ID"
            );
            assert_eq!(
                model.last_request().body,
                body.as_bytes(),
                "{role}: original bytes"
            );
            assert_eq!(answer.body, concat(&text_stream(&["You ", "said: ", "hi"])));
        }
        assert_eq!(conversation_count(&db).await, 0);
        assert_eq!(message_count(&db).await, 0);
    }

    async fn a_system_message_with_a_conversation_id_is_rejected(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = start_conversation(&app, "hi").await;
        let upstream_calls = model.requests().len();

        for role in ["system", "developer"] {
            let body = chat_body(json!([{"role": role, "content": "Be brief."}, user("again")]));
            let answer = send_chat(&app, Some(id), &body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST);
            assert_eq!(answer.error_code(), "conversation_id_with_system_message");
        }
        assert_eq!(
            model.requests().len(),
            upstream_calls,
            "the upstream is not called"
        );
        assert_eq!(message_count(&db).await, 2);
    }

    async fn a_new_conversation_gets_a_uuid_v7_and_the_upstream_sees_only_the_request_messages(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        // Unusual spacing: the body must reach the upstream as sent, not re-encoded.
        let body = r#"{ "model" : "test-model", "messages": [ {"role": "user", "content": "hello"} ],
            "stream": true, "temperature": 0.25 }"#;
        let headers = [("content-type", "application/json")];
        let answer = send(&app, Method::POST, "/v1/chat/completions", &headers, body).await;

        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.id().get_version_num(), 7);
        let seen = model.last_request();
        assert_eq!(seen.body, body.as_bytes());
        assert_eq!(seen.messages(), vec![user("hello")]);
        assert_eq!(
            stored_messages(&db, "", answer.id()).await,
            vec![user("hello"), assistant("You said: hello")]
        );
    }

    async fn an_empty_conversation_id_header_starts_a_new_conversation(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let answer = send_chat_with(
            &app,
            &[(CONVERSATION_ID_HEADER, "")],
            &chat_body(json!([user("hi")])),
        )
        .await;

        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.id().get_version_num(), 7);
        assert_eq!(stored_messages(&db, "", answer.id()).await.len(), 2);
    }

    async fn a_malformed_conversation_id_is_rejected(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        for value in [
            "not-a-uuid",
            "1234",
            "0192f0c1-0000-7000-8000-00000000000g",
            "{id}",
        ] {
            let answer = send_chat_with(
                &app,
                &[(CONVERSATION_ID_HEADER, value)],
                &chat_body(json!([user("hi")])),
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{value}");
            assert_eq!(answer.error_code(), "invalid_conversation_id", "{value}");
            assert_eq!(answer.headers["content-type"], "application/json");
        }
        assert!(model.requests().is_empty());
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn an_unknown_conversation_id_is_not_found(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let answer = send_chat(&app, Some(Uuid::now_v7()), &chat_body(json!([user("hi")]))).await;

        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.error_code(), "conversation_not_found");
        assert!(model.requests().is_empty());
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn an_unparsable_body_without_the_header_passes_through_untouched(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let baseline = serve_model(&TestModel::new()).await;
        let headers = [("content-type", "application/json")];
        for body in [
            "not json {",
            r#"{"model":"test-model"}"#,
            r#"{"messages":"hi"}"#,
            "[1,2]",
            "",
            // Read only up to the first system message: what is wrong after it is the
            // upstream's to answer.
            r#"{"messages":[{"role":"system","content":"x"}],"model":tru}"#,
            r#"{"messages":[{"role":"system","content":"x"},{"role":1}]}"#,
        ] {
            let answer = send(&app, Method::POST, "/v1/chat/completions", &headers, body).await;
            let direct = send(
                &baseline,
                Method::POST,
                "/v1/chat/completions",
                &headers,
                body,
            )
            .await;

            assert_eq!(model.last_request().body, body.as_bytes(), "{body}");
            assert_eq!(answer.status, direct.status, "{body}");
            assert_eq!(answer.body, direct.body, "{body}: the upstream answers");
            assert_eq!(answer.conversation_id(), None, "{body}");
        }
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn an_unparsable_body_with_the_header_is_an_invalid_request(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = start_conversation(&app, "hi").await.to_string();
        let upstream_calls = model.requests().len();
        let headers = [
            ("content-type", "application/json"),
            (CONVERSATION_ID_HEADER, id.as_str()),
        ];
        for body in [
            "not json {",
            r#"{"model":"test-model"}"#,
            r#"{"messages":"hi"}"#,
        ] {
            let answer = send(&app, Method::POST, "/v1/chat/completions", &headers, body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(answer.error_code(), "invalid_request", "{body}");
        }
        assert_eq!(model.requests().len(), upstream_calls);
        assert_eq!(message_count(&db).await, 2);
    }

    async fn a_chat_body_over_the_request_limit_is_413_however_it_is_sent(db: TestDb) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).request_body_limit(1024);
        let app = serve_layered(&model, layer).await;
        let large = chat_body(json!([user(&"x".repeat(4096))])).to_string();
        let headers = [("content-type", "application/json")];

        let with_length = send(
            &app,
            Method::POST,
            "/v1/chat/completions",
            &headers,
            large.clone(),
        )
        .await;
        // Without Content-Length the limit must hold while reading, too.
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = large
            .as_bytes()
            .chunks(512)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
        let without_length = send(
            &app,
            Method::POST,
            "/v1/chat/completions",
            &headers,
            chunked,
        )
        .await;

        for answer in [with_length, without_length] {
            assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(answer.error_code(), "request_too_large");
        }
        assert!(model.requests().is_empty());
        assert_eq!(conversation_count(&db).await, 0);

        let small = send_chat(&app, None, &chat_body(json!([user("short")]))).await;
        assert_eq!(small.status, StatusCode::OK);
    }

    async fn with_the_header_policy_a_request_without_the_header_is_stateless(db: TestDb) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).policy(ModePolicy::Header);
        let app = serve_layered(&model, layer).await;
        let body = chat_body(json!([user("hi")])).to_string();
        let headers = [("content-type", "application/json")];
        let answer = send(
            &app,
            Method::POST,
            "/v1/chat/completions",
            &headers,
            body.clone(),
        )
        .await;

        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.conversation_id(), None);
        assert_eq!(model.last_request().body, body.as_bytes());
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn with_the_header_policy_system_messages_go_first_and_are_never_stored(db: TestDb) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).policy(ModePolicy::Header);
        let app = serve_layered(&model, layer).await;
        let system = json!({"role": "system", "content": "Be brief."});
        for start in ["", "new"] {
            let body = chat_body(json!([system.clone(), user("one")]));
            let id = send_chat_with(&app, &[(CONVERSATION_ID_HEADER, start)], &body)
                .await
                .id();
            assert_eq!(
                model.last_request().messages(),
                vec![system.clone(), user("one")]
            );

            let other_system = json!({"role": "developer", "content": "Be briefer."});
            let body = chat_body(json!([other_system.clone(), user("two")]));
            let answer = send_chat(&app, Some(id), &body).await;
            assert_eq!(answer.status, StatusCode::OK, "{start:?}");
            assert_eq!(
                model.last_request().messages(),
                vec![
                    other_system,
                    user("one"),
                    assistant("You said: one"),
                    user("two")
                ]
            );
            assert_eq!(
                stored_messages(&db, "", id).await,
                vec![
                    user("one"),
                    assistant("You said: one"),
                    user("two"),
                    assistant("You said: two")
                ]
            );
        }
    }
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
