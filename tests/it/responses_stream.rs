//! Streamed responses (contract section 12): the Responses event sequence translated from
//! a chat-completions stream, and `response.completed` sent only once the turn is
//! stored; on both backends.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::responses::{app, call, create, create_as};
use crate::support::api::OWNER_HEADER;
use crate::support::server::{Answer, eventually};
use crate::support::upstream::{
    MODEL, Reply, StreamEnd, content_chunk, done, error_event, finish_chunk, reasoning_chunk,
    role_chunk, stop_chunk, tool_call_chunk, usage_chunk,
};

/// The events of a streamed answer, parsed.
fn events(answer: &Answer) -> Vec<Value> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    answer
        .events()
        .iter()
        .map(|data| serde_json::from_str(data).expect("every event is JSON"))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Every event names itself on its `event:` line too, and they are numbered from 0.
fn check_numbering(answer: &Answer, events: &[Value]) {
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n, "{event}");
        let line = format!("event: {}\n", event["type"].as_str().unwrap());
        assert!(answer.text().contains(&line), "{line}");
    }
}

async fn stream(server: &crate::support::server::TestServer, body: Value) -> (Answer, Vec<Value>) {
    let mut body = body;
    body["stream"] = json!(true);
    let answer = create_as(server, "alice", body).await;
    let events = events(&answer);
    check_numbering(&answer, &events);
    (answer, events)
}

backend_tests! {
    async fn a_streamed_response_sends_the_event_sequence_the_sdk_reads(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let (_, events) = stream(&server, json!({"model": MODEL, "input": "Hello there"})).await;
        let kinds = types(&events);
        let deltas = kinds.iter().filter(|k| **k == "response.output_text.delta").count();
        assert_eq!(deltas, 4, "one delta per upstream chunk: {kinds:?}");
        let mut expected = vec!["response.created", "response.in_progress", "response.output_item.added",
                                "response.content_part.added"];
        expected.extend(std::iter::repeat_n("response.output_text.delta", 4));
        expected.extend(["response.output_text.done", "response.content_part.done",
                         "response.output_item.done", "response.completed"]);
        assert_eq!(kinds, expected);
        assert_eq!(events[0]["response"]["status"], "in_progress");
        let text: String = events.iter().filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap()).collect();
        assert_eq!(text, "You said: Hello there");
        let done = &events[events.len() - 4];
        assert_eq!(done["text"], "You said: Hello there");
        let completed = &events.last().unwrap()["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["output_text"], "You said: Hello there");
        assert_eq!(completed["id"], events[0]["response"]["id"]);
        assert_eq!(completed["output"][0]["id"], events[2]["item"]["id"]);
        assert_eq!(completed["usage"]["input_tokens"], 9);
        assert_eq!(completed["usage"]["output_tokens"], 4);
        let sent = model.last_request().json.unwrap();
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    }

    async fn a_streamed_delta_carries_the_model_s_text_whatever_its_characters(db: TestDb) {
        let (server, _) = app(&db, |l| l).await;
        let input = "a \"quote\", a \\ backslash,\na line\tand a tab, \u{1} \u{7f} é 🦀 </script>";
        let (_, events) = stream(&server, json!({"model": MODEL, "input": input})).await;
        let said = format!("You said: {input}");
        let deltas: Vec<&Value> =
            events.iter().filter(|e| e["type"] == "response.output_text.delta").collect();
        let text: String = deltas.iter().map(|e| e["delta"].as_str().unwrap()).collect();
        assert_eq!(text, said);
        let item = &events[2]["item"]["id"];
        for delta in deltas {
            assert_eq!(&delta["item_id"], item, "{delta}");
            assert_eq!(delta["output_index"], 0, "{delta}");
            assert_eq!(delta["content_index"], 0, "{delta}");
            assert_eq!(delta["logprobs"], json!([]), "{delta}");
        }
        assert_eq!(events.last().unwrap()["response"]["output_text"], said.as_str());
    }

    async fn a_stream_whose_finishing_chunk_ends_it_unterminated_is_complete(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let finish = stop_chunk();
        let unterminated = finish.slice(..finish.len() - 2);
        model.push(Reply::sse([
            role_chunk(), content_chunk("Cut "), content_chunk("short."), unterminated,
        ]));
        let (_, events) = stream(&server, json!({"model": MODEL, "input": "hi"})).await;
        let completed = events.last().unwrap();
        assert_eq!(completed["type"], "response.completed", "{completed}");
        assert_eq!(completed["response"]["status"], "completed");
        assert_eq!(completed["response"]["output_text"], "Cut short.");
    }

    async fn response_completed_comes_only_after_the_turn_is_stored(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        for n in 0..5 {
            let (_, events) = stream(&server, json!({"model": MODEL, "input": format!("turn {n}")})).await;
            let completed = &events.last().unwrap()["response"];
            let id = completed["id"].as_str().unwrap();
            let got = call(&server, Method::GET, &format!("/v1/responses/{id}"), "alice").await;
            assert_eq!(got.status, StatusCode::OK, "stored before response.completed was sent");
            assert_eq!(&got.json(), completed);
            create(&server, json!({"model": MODEL, "input": "next", "previous_response_id": id})).await;
            assert_eq!(model.last_request().messages().len(), 3);
        }
    }

    async fn a_streamed_tool_call_sends_function_call_argument_events(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        model.push(Reply::sse([
            role_chunk(),
            tool_call_chunk(0, Some("call_9"), Some("clock"), ""),
            tool_call_chunk(0, None, None, "{\"tz\":"),
            tool_call_chunk(0, None, None, "\"UTC\"}"),
            finish_chunk("tool_calls"),
            usage_chunk(5, 2),
            done(),
        ]));
        let tools = json!([{"type": "function", "name": "clock"}]);
        let (_, events) = stream(&server, json!({"model": MODEL, "input": "Time?", "tools": tools})).await;
        assert_eq!(types(&events), ["response.created", "response.in_progress", "response.output_item.added",
            "response.function_call_arguments.delta", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done", "response.completed"]);
        assert_eq!(events[2]["item"]["type"], "function_call");
        assert_eq!(events[2]["item"]["call_id"], "call_9");
        assert_eq!(events[5]["arguments"], "{\"tz\":\"UTC\"}");
        assert_eq!(events[6]["item"]["arguments"], "{\"tz\":\"UTC\"}");
        let completed = &events[7]["response"];
        assert_eq!(completed["output"][0]["name"], "clock");
        assert_eq!(completed["output"][0]["id"], events[2]["item"]["id"]);
        let next = create(&server, json!({"model": MODEL, "previous_response_id": completed["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": "call_9", "output": "12:00"}]})).await;
        assert_eq!(next["status"], "completed");
        assert_eq!(model.last_request().messages()[2]["tool_call_id"], "call_9");
    }

    async fn an_error_inside_the_stream_is_an_error_event_then_response_failed(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        model.push(Reply::sse([role_chunk(), content_chunk("par"), error_event("The model crashed.")]));
        let (_, events) = stream(&server, json!({"model": MODEL, "input": "Hi"})).await;
        let kinds = types(&events);
        assert_eq!(&kinds[kinds.len() - 2..], ["error", "response.failed"]);
        assert_eq!(events[events.len() - 2]["message"], "The model crashed.");
        let failed = &events.last().unwrap()["response"];
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"]["message"], "The model crashed.");
        assert_eq!(failed["output"][0]["status"], "incomplete");
    }

    async fn reasoning_is_a_reasoning_item_and_is_never_sent_back(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        model.push(Reply::sse([role_chunk(), reasoning_chunk("Think"), reasoning_chunk("ing."),
                               content_chunk("Done."), stop_chunk(), done()]));
        let (_, events) = stream(&server, json!({"model": MODEL, "input": "Hi"})).await;
        let kinds = types(&events);
        assert_eq!(&kinds[2..6], ["response.output_item.added", "response.reasoning_text.delta",
                                  "response.reasoning_text.delta", "response.reasoning_text.done"]);
        let completed = &events.last().unwrap()["response"];
        assert_eq!(completed["output"][0]["type"], "reasoning");
        assert_eq!(completed["output"][0]["content"][0]["text"], "Thinking.");
        assert_eq!(completed["output"][1]["type"], "message");
        assert_eq!(completed["output"][1]["id"], events[7]["item"]["id"]);
        create(&server, json!({"model": MODEL, "input": "next", "previous_response_id": completed["id"]})).await;
        let sent = model.last_request().messages();
        assert_eq!(sent[1], json!({"role": "assistant", "content": "Done."}));
    }

    async fn a_storage_failure_is_told_in_response_completed(db: TestDb) {
        let (server, _model) = app(&db, |l| l).await;
        db.execute("DROP TABLE responses").await;
        let (_, events) = stream(&server, json!({"model": MODEL, "input": "lost"})).await;
        let completed = &events.last().unwrap()["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["metadata"]["storage_failed"], "true");
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 0);
    }

    async fn a_client_gone_mid_stream_cancels_the_upstream_and_stores_the_partial_turn(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        let pieces: Vec<String> = (0..20).map(|i| format!("piece{i} ")).collect();
        model.push(Reply::text(pieces.clone()).delay(Duration::from_millis(100)));
        let client = reqwest::Client::new();
        let mut response = client
            .post(server.url("/v1/responses"))
            .header("content-type", "application/json")
            .header(OWNER_HEADER, "alice")
            .body(json!({"model": MODEL, "input": "Count slowly", "stream": true}).to_string())
            .send()
            .await
            .unwrap();
        let mut received = String::new();
        while received.matches("piece").count() < 2 {
            let chunk = response.chunk().await.unwrap().expect("the stream goes on");
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        drop(response);
        drop(client);
        eventually(Duration::from_secs(5), "the upstream call to be cancelled", || async {
            model.stream_ends().contains(&StreamEnd::Cancelled).then_some(())
        })
        .await;
        let created: Value = serde_json::from_str(&crate::support::upstream::sse_data(&received)[0]).unwrap();
        let id = created["response"]["id"].as_str().unwrap().to_owned();
        let stored = eventually(Duration::from_secs(5), "the partial turn", || async {
            let got = call(&server, Method::GET, &format!("/v1/responses/{id}"), "alice").await;
            (got.status == StatusCode::OK).then(|| got.json())
        })
        .await;
        assert_eq!(stored["status"], "incomplete");
        let text = stored["output_text"].as_str().unwrap();
        assert!(text.starts_with("piece0 piece1 ") && text != pieces.concat(), "{text}");
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    }

    async fn an_upstream_that_answers_a_stream_whole_still_gives_the_event_sequence(db: TestDb) {
        let (server, model) = app(&db, |l| l).await;
        model.push(Reply::json(crate::support::upstream::completion("All at once.")));
        let (_, events) = stream(&server, json!({"model": MODEL, "input": "Hi"})).await;
        assert_eq!(types(&events), ["response.created", "response.in_progress", "response.output_item.added",
            "response.content_part.added", "response.output_text.delta", "response.output_text.done",
            "response.content_part.done", "response.output_item.done", "response.completed"]);
        assert_eq!(events[4]["delta"], "All at once.");
        let completed = &events[8]["response"];
        assert_eq!(completed["output_text"], "All at once.");
        let id = completed["id"].as_str().unwrap();
        assert_eq!(call(&server, Method::GET, &format!("/v1/responses/{id}"), "alice").await.status, StatusCode::OK);
    }
}
