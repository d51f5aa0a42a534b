//! OpenAI's Responses API over the chat-completions service (contract section 12): the
//! translation each way, state (`store`, `previous_response_id`, `conversation`), the
//! stored responses' endpoints and owners, on both backends, through an axum app.
//! Streaming is in `responses_stream`, the example proxy in `responses_proxy`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tower_conversations::ConversationLayer;

use crate::support::api::{OWNER_HEADER, owners};
use crate::support::db::TestDb;
use crate::support::server::{Answer, TestServer, send};
use crate::support::upstream::{MODEL, Reply, TestModel, completion, completion_with_message};

/// The test model behind the layer, with the management API beside it.
pub async fn app(
    db: &TestDb,
    layer: impl FnOnce(ConversationLayer) -> ConversationLayer,
) -> (TestServer, TestModel) {
    let model = TestModel::new();
    let layer = layer(ConversationLayer::new(db.store()).owner_resolver(owners()));
    let router = model
        .router()
        .layer(layer.clone())
        .nest_service("/v1/conversations", layer.api());
    (TestServer::start(router).await, model)
}

/// `POST /v1/responses` as `owner`.
pub async fn create_as(server: &TestServer, owner: &str, body: Value) -> Answer {
    let headers = [("content-type", "application/json"), (OWNER_HEADER, owner)];
    send(
        server,
        Method::POST,
        "/v1/responses",
        &headers,
        body.to_string(),
    )
    .await
}

/// `POST /v1/responses` as alice; the answer must be `200`.
pub async fn create(server: &TestServer, body: Value) -> Value {
    let answer = create_as(server, "alice", body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json()
}

/// Any request as `owner`.
pub async fn call(server: &TestServer, method: Method, path: &str, owner: &str) -> Answer {
    send(server, method, path, &[(OWNER_HEADER, owner)], "").await
}

/// The `content` of each message the upstream was sent last.
fn sent_contents(model: &TestModel) -> Vec<Value> {
    model
        .last_request()
        .messages()
        .iter()
        .map(|m| m["content"].clone())
        .collect()
}

backend_tests! {
    async fn a_response_is_the_chat_completion_translated(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let response = create(&server, json!({"model": MODEL, "input": "Hello"})).await;
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "completed");
        assert!(response["id"].as_str().unwrap().starts_with("resp_"));
        assert!(response["created_at"].is_i64());
        assert_eq!(response["model"], MODEL);
        assert_eq!(response["output_text"], "You said: Hello");
        let output = response["output"].as_array().unwrap();
        assert_eq!(output.len(), 1);
        assert_eq!(output[0]["type"], "message");
        assert_eq!(output[0]["role"], "assistant");
        assert_eq!(output[0]["status"], "completed");
        assert_eq!(output[0]["content"], json!([{"type": "output_text", "text": "You said: Hello", "annotations": []}]));
        assert_eq!(response["usage"], json!({
            "input_tokens": 9, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 12
        }));
        for (field, value) in [("tools", json!([])), ("tool_choice", json!("auto")), ("parallel_tool_calls", json!(true)),
                               ("store", json!(true)), ("previous_response_id", Value::Null), ("error", Value::Null),
                               ("incomplete_details", Value::Null), ("truncation", json!("disabled"))] {
            assert_eq!(response[field], value, "{field}");
        }
        let sent = model.last_request();
        assert!(sent.path.ends_with("/v1/chat/completions"), "{}", sent.path);
        let body = sent.json.unwrap();
        assert_eq!(body["stream"], false);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "Hello"}]));
    }

    async fn every_supported_field_reaches_the_upstream_translated(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let response = create(&server, json!({
            "model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
            "instructions": "Be brief.", "temperature": 0.2, "top_p": 0.5, "max_output_tokens": 50,
            "tools": [{"type": "function", "name": "clock", "description": "The time.", "parameters": {"type": "object", "properties": {}}}],
            "tool_choice": "required", "parallel_tool_calls": false, "user": "u1",
            "metadata": {"topic": "time"}, "text": {"format": {"type": "json_object"}},
            "reasoning": {"effort": "low"},
        })).await;
        let body = model.last_request().json.unwrap();
        assert_eq!(body["messages"], json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ]));
        assert_eq!(body["tools"], json!([{"type": "function", "function": {
            "name": "clock", "description": "The time.", "parameters": {"type": "object", "properties": {}}}}]));
        for (field, value) in [("temperature", json!(0.2)), ("top_p", json!(0.5)), ("max_completion_tokens", json!(50)),
                               ("tool_choice", json!("required")), ("parallel_tool_calls", json!(false)), ("user", json!("u1")),
                               ("response_format", json!({"type": "json_object"})), ("reasoning_effort", json!("low"))] {
            assert_eq!(body[field], value, "{field}");
        }
        assert!(body.get("metadata").is_none(), "metadata stays with the response");
        assert_eq!(response["metadata"], json!({"topic": "time"}));
        assert_eq!(response["instructions"], "Be brief.");
        assert_eq!(response["temperature"], 0.2);
        assert_eq!(response["max_output_tokens"], 50);
        assert_eq!(response["tools"][0]["name"], "clock");
    }

    async fn max_output_tokens_becomes_max_tokens_when_the_layer_says_so(db: TestDb) {
        let (server, model) = app(&db, |l| l.max_tokens_field(tower_conversations::MaxTokensField::MaxTokens)).await;
        create(&server, json!({"model": MODEL, "input": "Hi", "max_output_tokens": 7})).await;
        let body = model.last_request().json.unwrap();
        assert_eq!(body["max_tokens"], 7);
        assert!(body.get("max_completion_tokens").is_none());
    }

    async fn features_chat_completions_cannot_express_are_refused_by_name(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        for (body, param) in [
            (json!({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}), "tools[0].type"),
            (json!({"model": MODEL, "input": "x", "background": true}), "background"),
            (json!({"model": MODEL, "input": "x", "include": ["file_search_call.results"]}), "include"),
            (json!({"model": MODEL, "input": [{"type": "item_reference", "id": "msg_1"}]}), "input[0].type"),
            (json!({"input": "x"}), "model"),
        ] {
            let answer = create_as(&server, "alice", body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
            assert_eq!(answer.json()["error"]["param"], param, "{}", answer.text());
            assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
        }
        assert!(model.chat_requests().is_empty(), "nothing reached the upstream");
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 0, "nothing stored");
    }

    async fn upstream_errors_pass_through_in_the_openai_envelope(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        model.push(Reply::error(StatusCode::TOO_MANY_REQUESTS, "Slow down."));
        let answer = create_as(&server, "alice", json!({"model": MODEL, "input": "Hi"})).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.json()["error"]["message"], "Slow down.");
        assert_eq!(db.scalar("SELECT count(*) FROM responses").await, 0);
    }

    async fn a_length_finish_is_an_incomplete_response(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let mut reply = completion("cut sho");
        reply["choices"][0]["finish_reason"] = json!("length");
        model.push(Reply::json(reply));
        let response = create(&server, json!({"model": MODEL, "input": "Hi", "max_output_tokens": 3})).await;
        assert_eq!(response["status"], "incomplete");
        assert_eq!(response["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(response["output"][0]["status"], "incomplete");
    }

    async fn a_tool_call_is_a_function_call_item_and_its_output_goes_back(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        model.push(Reply::json(completion_with_message(json!({
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{\"tz\":\"UTC\"}"}}],
        }))));
        let tools = json!([{"type": "function", "name": "clock", "parameters": {"type": "object"}}]);
        let first = create(&server, json!({"model": MODEL, "input": "Time?", "tools": tools})).await;
        let call = &first["output"][0];
        assert_eq!(call["type"], "function_call");
        assert_eq!(call["call_id"], "call_1");
        assert_eq!(call["name"], "clock");
        assert_eq!(call["arguments"], "{\"tz\":\"UTC\"}");
        assert_eq!(first["output_text"], "");
        let second = create(&server, json!({
            "model": MODEL, "previous_response_id": first["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": "call_1", "output": "09:30"}],
        })).await;
        assert_eq!(second["status"], "completed");
        let sent = model.last_request().messages();
        assert_eq!(sent[1]["tool_calls"][0]["id"], "call_1");
        assert_eq!(sent[2], json!({"role": "tool", "tool_call_id": "call_1", "content": "09:30"}));
    }

    async fn previous_response_id_chains_turns_and_instructions_stay_with_their_request(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let one = create(&server, json!({"model": MODEL, "input": "one", "instructions": "First rules."})).await;
        let two = create(&server, json!({"model": MODEL, "input": "two", "previous_response_id": one["id"]})).await;
        assert_eq!(two["previous_response_id"], one["id"]);
        assert_eq!(sent_contents(&model), [json!("one"), json!("You said: one"), json!("two")]);
        let three = create(&server, json!({"model": MODEL, "input": "three", "previous_response_id": two["id"],
                                           "instructions": "Third rules."})).await;
        assert_eq!(sent_contents(&model), [json!("Third rules."), json!("one"), json!("You said: one"),
                                           json!("two"), json!("You said: two"), json!("three")]);
        assert_eq!(three["output_text"], "You said: three");
        // A chain from its last response costs a turn: one conversation holds it all.
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 6);
    }

    async fn two_responses_from_the_same_previous_response_are_independent_branches(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let root = create(&server, json!({"model": MODEL, "input": "root"})).await;
        let left = create(&server, json!({"model": MODEL, "input": "left", "previous_response_id": root["id"]})).await;
        let right = create(&server, json!({"model": MODEL, "input": "right", "previous_response_id": root["id"]})).await;
        assert_eq!(sent_contents(&model), [json!("root"), json!("You said: root"), json!("right")]);
        create(&server, json!({"model": MODEL, "input": "left 2", "previous_response_id": left["id"]})).await;
        assert_eq!(sent_contents(&model), [json!("root"), json!("You said: root"), json!("left"),
                                           json!("You said: left"), json!("left 2")]);
        create(&server, json!({"model": MODEL, "input": "right 2", "previous_response_id": right["id"]})).await;
        assert_eq!(sent_contents(&model), [json!("root"), json!("You said: root"), json!("right"),
                                           json!("You said: right"), json!("right 2")]);
        // The branch forked once, and went on in its fork.
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 2);
    }

    async fn concurrent_branches_from_one_response_never_see_each_other(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let root = create(&server, json!({"model": MODEL, "input": "root"})).await;
        let branches = futures_util::future::join_all((0..6).map(|n| {
            let body = json!({"model": MODEL, "input": format!("branch {n}"), "previous_response_id": root["id"]});
            create(&server, body)
        })).await;
        for (n, branch) in branches.iter().enumerate() {
            assert!(branch["metadata"].get("storage_failed").is_none(), "{branch}");
            create(&server, json!({"model": MODEL, "input": "next", "previous_response_id": branch["id"]})).await;
            assert_eq!(sent_contents(&model), [json!("root"), json!("You said: root"), json!(format!("branch {n}")),
                                               json!(format!("You said: branch {n}")), json!("next")]);
        }
    }

    async fn store_false_stores_nothing_and_cannot_be_continued(db: TestDb) {
        let (server, _model) = app(&db, |l| l).await;
        let response = create(&server, json!({"model": MODEL, "input": "secret", "store": false})).await;
        assert_eq!(response["store"], false);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 0);
        let id = response["id"].as_str().unwrap();
        let got = call(&server, Method::GET, &format!("/v1/responses/{id}"), "alice").await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
        let next = create_as(&server, "alice", json!({"model": MODEL, "input": "x", "previous_response_id": id})).await;
        assert_eq!(next.status, StatusCode::NOT_FOUND);
        assert_eq!(next.error_code(), "previous_response_not_found");
        assert_eq!(next.json()["error"]["param"], "previous_response_id");
    }

    async fn a_conversation_is_shared_with_chat_completions_and_its_items(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let chat = send(&server, Method::POST, "/v1/chat/completions",
            &[("content-type", "application/json"), (OWNER_HEADER, "alice")],
            json!({"model": MODEL, "stream": false, "messages": [{"role": "user", "content": "from chat"}]}).to_string()).await;
        assert_eq!(chat.status, StatusCode::OK);
        let id = chat.id().to_string();
        let response = create(&server, json!({"model": MODEL, "input": "from responses", "conversation": id})).await;
        assert_eq!(response["conversation"], json!({"id": id}));
        assert_eq!(sent_contents(&model), [json!("from chat"), json!("You said: from chat"), json!("from responses")]);
        let response = create(&server, json!({"model": MODEL, "input": "again", "conversation": {"id": id}})).await;
        assert_eq!(response["output"][0]["id"], "msg_5");
        let items = call(&server, Method::GET, &format!("/v1/conversations/{id}/items?order=asc"), "alice").await.json();
        let ids: Vec<&str> = items["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["msg_0", "msg_1", "msg_2", "msg_3", "msg_4", "msg_5"]);
        // And chat completions continue after the Responses turns.
        let chat = send(&server, Method::POST, "/v1/chat/completions",
            &[("content-type", "application/json"), (OWNER_HEADER, "alice"), ("x-conversation-id", &id)],
            json!({"model": MODEL, "stream": false, "messages": [{"role": "user", "content": "chat again"}]}).to_string()).await;
        assert_eq!(chat.status, StatusCode::OK);
        assert_eq!(model.last_request().messages().len(), 7);
    }

    async fn previous_response_id_with_conversation_is_refused(db: TestDb) {
        let (server, _model) = app(&db, |l| l).await;
        let first = create(&server, json!({"model": MODEL, "input": "x"})).await;
        let answer = create_as(&server, "alice", json!({"model": MODEL, "input": "y", "previous_response_id": first["id"],
                                                      "conversation": uuid::Uuid::now_v7().to_string()})).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"]["param"], "previous_response_id");
        let unknown = create_as(&server, "alice", json!({"model": MODEL, "input": "y",
                                                       "conversation": uuid::Uuid::now_v7().to_string()})).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.error_code(), "conversation_not_found");
    }

    async fn retrieve_input_items_and_delete(db: TestDb) {
        let (server, _model) = app(&db, |l| l).await;
        let first = create(&server, json!({"model": MODEL, "input": "first"})).await;
        let second = create(&server, json!({"model": MODEL, "previous_response_id": first["id"], "input": [
            {"role": "developer", "content": "Use French."},
            {"role": "user", "content": "second"},
        ]})).await;
        let id = second["id"].as_str().unwrap();
        let got = call(&server, Method::GET, &format!("/v1/responses/{id}"), "alice").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.json(), second);
        let items = call(&server, Method::GET, &format!("/v1/responses/{id}/input_items"), "alice").await.json();
        assert_eq!(items["object"], "list");
        assert_eq!(items["has_more"], false);
        let roles: Vec<&str> = items["data"].as_array().unwrap().iter().map(|i| i["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "developer"], "newest first, this response's input only");
        assert_eq!(items["first_id"], items["data"][0]["id"]);
        let asc = call(&server, Method::GET, &format!("/v1/responses/{id}/input_items?order=asc&limit=1"), "alice").await.json();
        assert_eq!(asc["data"][0]["role"], "developer");
        assert_eq!(asc["has_more"], true);
        let after = asc["last_id"].as_str().unwrap();
        let rest = call(&server, Method::GET, &format!("/v1/responses/{id}/input_items?order=asc&after={after}"), "alice").await.json();
        assert_eq!(rest["data"][0]["role"], "user");
        assert_eq!(rest["has_more"], false);

        let deleted = call(&server, Method::DELETE, &format!("/v1/responses/{id}"), "alice").await;
        assert_eq!(deleted.status, StatusCode::OK);
        assert_eq!(deleted.json(), json!({"id": id, "object": "response.deleted", "deleted": true}));
        for method in [Method::GET, Method::DELETE] {
            let gone = call(&server, method, &format!("/v1/responses/{id}"), "alice").await;
            assert_eq!(gone.status, StatusCode::NOT_FOUND);
            assert_eq!(gone.error_code(), "response_not_found");
        }
        let next = create_as(&server, "alice", json!({"model": MODEL, "input": "x", "previous_response_id": id})).await;
        assert_eq!(next.status, StatusCode::NOT_FOUND);
    }

    async fn another_owners_response_is_not_found_everywhere(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let mine = create(&server, json!({"model": MODEL, "input": "mine"})).await;
        let id = mine["id"].as_str().unwrap();
        for (method, path) in [(Method::GET, format!("/v1/responses/{id}")),
                               (Method::GET, format!("/v1/responses/{id}/input_items")),
                               (Method::DELETE, format!("/v1/responses/{id}")),
                               (Method::GET, "/v1/responses/resp_unknown".to_owned())] {
            let answer = call(&server, method, &path, "mallory").await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(answer.error_code(), "response_not_found");
        }
        let requests = model.chat_requests().len();
        let next = create_as(&server, "mallory", json!({"model": MODEL, "input": "x", "previous_response_id": id})).await;
        assert_eq!(next.status, StatusCode::NOT_FOUND);
        let conversation = id[5..37].to_owned();
        let conversation = uuid::Uuid::try_parse(&conversation).unwrap().to_string();
        let next = create_as(&server, "mallory", json!({"model": MODEL, "input": "x", "conversation": conversation})).await;
        assert_eq!(next.status, StatusCode::NOT_FOUND);
        assert_eq!(model.chat_requests().len(), requests, "nothing reached the upstream");
        assert_eq!(call(&server, Method::GET, &format!("/v1/responses/{id}"), "alice").await.status, StatusCode::OK);
    }

    async fn a_storage_failure_is_told_in_the_response_and_leaves_nothing_stored(db: TestDb) {
        let (server, _model) = app(&db, |l| l).await;
        db.execute("DROP TABLE responses").await;
        let response = create(&server, json!({"model": MODEL, "input": "lost", "metadata": {"k": "v"}})).await;
        assert_eq!(response["metadata"], json!({"k": "v", "storage_failed": "true"}));
        assert_eq!(response["output_text"], "You said: lost");
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 0, "the turn went with the response");
    }

    async fn truncation_auto_sends_only_the_history_window(db: TestDb) {
        let (server, model) = app(&db, |l| l.history_window(2)).await;
        let one = create(&server, json!({"model": MODEL, "input": "one"})).await;
        let two = create(&server, json!({"model": MODEL, "input": "two", "previous_response_id": one["id"]})).await;
        create(&server, json!({"model": MODEL, "input": "three", "previous_response_id": two["id"]})).await;
        assert_eq!(model.last_request().messages().len(), 5, "disabled (the default) sends everything");
        create(&server, json!({"model": MODEL, "input": "three", "previous_response_id": two["id"], "truncation": "auto"})).await;
        assert_eq!(sent_contents(&model), [json!("two"), json!("You said: two"), json!("three")]);
    }
}
