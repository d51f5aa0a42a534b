//! The Responses API through the example proxy (contract sections 9 and 12): the demo
//! model answers it with no upstream, a function-calling round trip included, and a real
//! upstream is reached through chat completions; on both backends.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::process::Proxy;
use crate::support::server::{Answer, send_to, serve_model};
use crate::support::upstream::{MODEL, TestModel};

const TOKEN: (&str, &str) = ("authorization", "Bearer token-a");

async fn post(proxy: &Proxy, body: Value) -> Answer {
    let headers = [("content-type", "application/json"), TOKEN];
    send_to(
        proxy.url("/v1/responses"),
        Method::POST,
        &headers,
        body.to_string(),
    )
    .await
}

async fn create(proxy: &Proxy, body: Value) -> Value {
    let answer = post(proxy, body).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}\n{}",
        answer.text(),
        proxy.log()
    );
    answer.json()
}

backend_tests! {
    async fn the_demo_model_answers_responses_and_their_chains(db: TestDb) {
        let proxy = Proxy::start(&["--database-url", &db.url], &[]).await;
        let first = create(&proxy, json!({"model": "demo", "input": "Hello"})).await;
        assert_eq!(first["status"], "completed");
        assert!(first["output_text"].as_str().unwrap().contains("You sent 1 message"), "{first}");
        let second = create(&proxy, json!({"model": "demo", "input": "Again", "previous_response_id": first["id"]})).await;
        assert!(second["output_text"].as_str().unwrap().contains("You sent 3 messages"), "{second}");
        let streamed = post(&proxy, json!({"model": "demo", "input": "Once more", "stream": true,
                                           "previous_response_id": second["id"]})).await;
        assert_eq!(streamed.status, StatusCode::OK);
        let last = streamed.events().last().cloned().unwrap();
        let completed: Value = serde_json::from_str(&last).unwrap();
        assert_eq!(completed["type"], "response.completed");
        assert!(completed["response"]["output_text"].as_str().unwrap().contains("You sent 5 messages"));
        let id = completed["response"]["id"].as_str().unwrap();
        let got = send_to(proxy.url(&format!("/v1/responses/{id}")), Method::GET, &[TOKEN], "").await;
        assert_eq!(got.status, StatusCode::OK);
        let theirs = send_to(proxy.url(&format!("/v1/responses/{id}")), Method::GET,
                             &[("authorization", "Bearer token-b")], "").await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    }

    async fn the_demo_model_runs_a_function_calling_round_trip(db: TestDb) {
        let proxy = Proxy::start(&["--database-url", &db.url], &[]).await;
        let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
        let call = create(&proxy, json!({"model": "demo", "input": "Weather?", "tools": tools})).await;
        let item = &call["output"][0];
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["name"], "get_weather");
        assert_eq!(item["arguments"], r#"{"demo":true}"#);
        let answer = create(&proxy, json!({"model": "demo", "tools": tools, "previous_response_id": call["id"],
            "input": [{"type": "function_call_output", "call_id": item["call_id"], "output": "sunny"}]})).await;
        assert_eq!(answer["output"][0]["type"], "message");
        assert!(answer["output_text"].as_str().unwrap().contains("sunny"), "{answer}");
    }

    async fn the_proxy_answers_responses_through_the_upstreams_chat_completions(db: TestDb) {
        let model = TestModel::new();
        let upstream = serve_model(&model).await;
        let proxy = Proxy::start(&["--database-url", &db.url, "--upstream", &upstream.url("")], &[]).await;
        let response = create(&proxy, json!({"model": MODEL, "input": "Hi"})).await;
        assert_eq!(response["output_text"], "You said: Hi");
        let sent = model.last_request();
        assert!(sent.path.ends_with("/v1/chat/completions"));
        assert_eq!(sent.headers["authorization"], "Bearer token-a");
        assert!(model.requests().iter().all(|r| !r.path.contains("responses")));
    }
}
