//! OpenAI's conversation items over the management API (contract section 11): list,
//! create, retrieve, and creating a conversation from items; on both backends.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::*;
use crate::support::server::{assistant, user};
use crate::support::turns::message_count;

fn call(id: &str, name: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": "{}"}})
}

/// A conversation of user text, an assistant that calls two tools, their results, and
/// the answer: seven items from six messages.
async fn tool_conversation(client: &Client) -> String {
    client
        .create(json!({"messages": [
            user("What time and weather?"),
            {"role": "assistant", "content": null, "tool_calls": [call("c1", "clock"), call("c2", "weather")]},
            {"role": "tool", "tool_call_id": "c1", "content": "09:30"},
            {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
            assistant("09:30 and sunny."),
            user("Thanks"),
        ]}))
        .await
}

const ALL_ITEMS: [&str; 7] = [
    "msg_0", "fc_1_0", "fc_1_1", "fco_2", "fco_3", "msg_4", "msg_5",
];

/// Follows `after = last_id` until `has_more` is false, as the SDKs' auto-pagination does.
async fn walk(client: &Client, id: &str, order: &str, limit: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..50 {
        let reply = client
            .get(&format!("/{id}/items?order={order}&limit={limit}{after}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        let page = reply.json;
        assert_eq!(page["object"], "list");
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(ids.len() <= limit as usize);
        assert_eq!(
            page["first_id"],
            ids.first().map_or(Value::Null, |id| json!(id))
        );
        assert_eq!(
            page["last_id"],
            ids.last().map_or(Value::Null, |id| json!(id))
        );
        seen.extend(ids);
        if page["has_more"] == false {
            return seen;
        }
        after = format!("&after={}", page["last_id"].as_str().unwrap());
    }
    panic!("the pages never ended: {seen:?}");
}

backend_tests! {
    async fn item_pages_walk_every_item_exactly_once_in_both_orders(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let expected: Vec<String> = ALL_ITEMS.iter().map(|id| id.to_string()).collect();
        let reversed: Vec<String> = expected.iter().rev().cloned().collect();
        for limit in [1, 2, 3, 7, 100] {
            assert_eq!(walk(&client, &id, "asc", limit).await, expected, "asc by {limit}");
            assert_eq!(walk(&client, &id, "desc", limit).await, reversed, "desc by {limit}");
        }
        let default = client.get(&format!("/{id}/items")).await.json;
        let ids: Vec<&str> = default["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids.first(), Some(&"msg_5"), "newest first by default");
        assert_eq!((ids.len(), default["has_more"].clone()), (7, json!(false)));
    }

    async fn items_show_messages_tool_calls_and_tool_results_in_openais_shapes(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let page = client.get(&format!("/{id}/items?order=asc&limit=5")).await.json;
        assert_eq!(page["data"][0], json!({
            "type": "message", "id": "msg_0", "status": "completed", "role": "user",
            "content": [{"type": "input_text", "text": "What time and weather?"}]
        }));
        assert_eq!(page["data"][2], json!({
            "type": "function_call", "id": "fc_1_1", "status": "completed",
            "call_id": "c2", "name": "weather", "arguments": "{}"
        }));
        assert_eq!(page["data"][3], json!({
            "type": "function_call_output", "id": "fco_2", "status": "completed",
            "call_id": "c1", "output": "09:30"
        }));
    }

    async fn an_item_is_retrieved_by_its_id_and_any_other_id_is_404(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let listed = client.get(&format!("/{id}/items?order=asc&limit=100")).await.json;
        for item in listed["data"].as_array().unwrap() {
            let reply = client.get(&format!("/{id}/items/{}", item["id"].as_str().unwrap())).await;
            assert_eq!((reply.status, &reply.json), (StatusCode::OK, item));
        }
        for missing in ["msg_1", "fc_1_2", "fc_0_0", "fco_4", "msg_6", "msg_01", "item_1", "msg_-1"] {
            let reply = client.get(&format!("/{id}/items/{missing}")).await;
            assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "item_not_found"), "{missing}");
        }
    }

    async fn created_items_are_appended_at_once_with_consecutive_numbers_and_answered_as_stored(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"messages": [user("m0"), assistant("m1")]})).await;
        let reply = client.post(&format!("/{id}/items"), json!({"items": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "clock?"}]},
            {"type": "function_call", "call_id": "c9", "name": "clock", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c9", "output": "10:00"},
        ]})).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        let ids: Vec<&str> = reply.json["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["msg_2", "fc_3_0", "fco_4"]);
        assert_eq!((reply.json["first_id"].clone(), reply.json["last_id"].clone()), (json!("msg_2"), json!("fco_4")));
        let detail = client.detail(&id).await;
        assert_eq!(detail["message_count"], 5);
        assert_eq!(detail["messages"][2]["content"], "clock?");
        assert_eq!(detail["messages"][3]["tool_calls"][0]["id"], "c9");
        assert_eq!(detail["messages"][4]["tool_call_id"], "c9");
        let listed = client.get(&format!("/{id}/items?order=asc&after=msg_1")).await.json;
        assert_eq!(listed["data"], reply.json["data"], "the list shows what the create answered");
    }

    async fn bad_item_batches_are_400_naming_the_field_and_store_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"messages": [user("m0")]})).await;
        let many: Vec<Value> = (0..21).map(|n| json!({"role": "user", "content": format!("u{n}")})).collect();
        let cases = [
            (json!({"items": many}), "items"),
            (json!({"items": []}), "items"),
            (json!({}), "items"),
            (json!({"items": "hi"}), "items"),
            (json!({"items": [{"role": "user", "content": "ok"}, {"type": "reasoning", "summary": []}]}), "items[1].type"),
            (json!({"items": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}), "items[0].content[0].image_url"),
            (json!({"items": [{"role": "user", "content": "ok"}], "extra": 1}), "extra"),
        ];
        for (body, param) in cases {
            let reply = client.post(&format!("/{id}/items"), body.clone()).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", Some(param)), "{body}");
        }
        assert_eq!(message_count(&db).await, 1, "nothing stored");
    }

    async fn a_conversation_created_from_items_and_metadata_holds_them_as_chat_messages(db: TestDb) {
        let client = Client::axum(&db).await;
        let reply = client.post("", json!({
            "metadata": {"topic": "demo"},
            "items": [
                {"type": "message", "role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello!"}
            ]
        })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json);
        assert_eq!((reply.json["object"].clone(), reply.json["metadata"].clone()), (json!("conversation"), json!({"topic": "demo"})));
        let id = reply.json["id"].as_str().unwrap();
        let detail = client.detail(id).await;
        assert_eq!(contents(&detail["messages"]), ["Be brief.", "Hello!"]);
        assert_eq!(detail["title"], "Hello!", "titled from the first user message, as a turn is");
        let both = client.post("", json!({"items": [{"role": "user", "content": "a"}], "messages": [user("b")]})).await;
        assert_eq!((both.status, both.error_param()), (StatusCode::BAD_REQUEST, Some("items")));
        let too_many: Vec<Value> = (0..21).map(|_| json!({"role": "user", "content": "x"})).collect();
        let over = client.post("", json!({"items": too_many})).await;
        assert_eq!((over.status, over.error_param()), (StatusCode::BAD_REQUEST, Some("items")));
        assert_eq!(message_count(&db).await, 2, "nothing more stored");
    }

    async fn item_ids_are_never_reused_after_a_truncation(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"messages": [user("m0"), assistant("m1"), user("m2")]})).await;
        let cut = client.delete(&format!("/{id}/messages?from_sequence=1")).await;
        assert_eq!(cut.json["deleted_messages"], 2);
        let added = client.post(&format!("/{id}/items"), json!({"items": [{"role": "user", "content": "again"}]})).await;
        assert_eq!(added.json["data"][0]["id"], "msg_3", "msg_1 and msg_2 named other messages");
        let gone = client.get(&format!("/{id}/items/msg_1")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }

    async fn another_owners_conversation_has_no_items(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let mallory = client.as_owner("mallory");
        let list = mallory.get(&format!("/{id}/items")).await;
        let item = mallory.get(&format!("/{id}/items/msg_0")).await;
        let malformed_item = mallory.get(&format!("/{id}/items/nonsense")).await;
        let add = mallory.post(&format!("/{id}/items"), json!({"items": [{"role": "user", "content": "x"}]})).await;
        for reply in [list, item, malformed_item, add] {
            assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "conversation_not_found"));
        }
        assert_eq!(message_count(&db).await, 6, "nothing added");
    }
}

/// The ids of every item of a conversation, oldest first.
async fn item_ids(client: &Client, id: &str) -> Vec<String> {
    walk(client, id, "asc", 100).await
}

backend_tests! {
    async fn deleting_a_function_call_deletes_its_output_and_the_other_call_keeps_its_id(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let reply = client.delete(&format!("/{id}/items/fc_1_0")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        assert_eq!((reply.json["object"].clone(), reply.json["id"].clone()), (json!("conversation"), json!(id)));
        assert_eq!(reply.json["message_count"], 5, "the call's output went with it");
        assert_eq!(item_ids(&client, &id).await, ["msg_0", "fc_1_1", "fco_3", "msg_4", "msg_5"]);
        let kept = client.get(&format!("/{id}/items/fc_1_1")).await;
        assert_eq!((kept.status, kept.json["call_id"].clone()), (StatusCode::OK, json!("c2")));
        let gone = client.get(&format!("/{id}/items/fc_1_0")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "never the id of the call left");
        let detail = client.detail(&id).await;
        assert_eq!(detail["messages"][1]["tool_calls"], json!([call("c2", "weather")]));
        assert_eq!(detail["messages"][2]["tool_call_id"], "c2");
        assert_eq!(message_count(&db).await, 5);
    }

    async fn deleting_a_function_call_output_deletes_its_call_too(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let reply = client.delete(&format!("/{id}/items/fco_3")).await;
        assert_eq!((reply.status, reply.json["message_count"].clone()), (StatusCode::OK, json!(5)));
        assert_eq!(item_ids(&client, &id).await, ["msg_0", "fc_1_0", "fco_2", "msg_4", "msg_5"]);
        let detail = client.detail(&id).await;
        assert_eq!(detail["messages"][1]["tool_calls"], json!([call("c1", "clock")]));
    }

    async fn deleting_the_last_call_of_a_message_without_text_deletes_the_message(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        client.delete(&format!("/{id}/items/fc_1_0")).await;
        let reply = client.delete(&format!("/{id}/items/fc_1_1")).await;
        assert_eq!((reply.status, reply.json["message_count"].clone()), (StatusCode::OK, json!(3)));
        assert_eq!(item_ids(&client, &id).await, ["msg_0", "msg_4", "msg_5"]);
        let detail = client.detail(&id).await;
        assert_eq!(contents(&detail["messages"]), ["What time and weather?", "09:30 and sunny.", "Thanks"]);
    }

    async fn deleting_the_text_of_a_message_that_calls_tools_keeps_its_calls(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"messages": [
            user("Time?"),
            {"role": "assistant", "content": "Let me look.", "tool_calls": [call("c1", "clock")]},
            {"role": "tool", "tool_call_id": "c1", "content": "09:30"},
        ]})).await;
        assert_eq!(item_ids(&client, &id).await, ["msg_0", "msg_1", "fc_1_0", "fco_2"]);
        let reply = client.delete(&format!("/{id}/items/msg_1")).await;
        assert_eq!((reply.status, reply.json["message_count"].clone()), (StatusCode::OK, json!(3)));
        assert_eq!(item_ids(&client, &id).await, ["msg_0", "fc_1_0", "fco_2"]);
        // Now the message only calls a tool: its last call takes it along.
        client.delete(&format!("/{id}/items/fco_2")).await;
        assert_eq!(item_ids(&client, &id).await, ["msg_0"]);
    }

    async fn a_deleted_messages_id_is_never_handed_out_again(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let reply = client.delete(&format!("/{id}/items/msg_5")).await;
        assert_eq!((reply.status, reply.json["message_count"].clone()), (StatusCode::OK, json!(5)));
        let added = client.post(&format!("/{id}/items"), json!({"items": [{"role": "user", "content": "again"}]})).await;
        assert_eq!(added.json["data"][0]["id"], "msg_6", "msg_5 named the deleted message");
        assert_eq!(client.get(&format!("/{id}/items/msg_5")).await.status, StatusCode::NOT_FOUND);
    }

    async fn deleting_an_unknown_item_is_404_and_changes_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        for missing in ["msg_1", "fc_1_2", "fc_0_0", "fco_4", "msg_6", "msg_01", "nonsense"] {
            let reply = client.delete(&format!("/{id}/items/{missing}")).await;
            assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "item_not_found"), "{missing}");
            assert_eq!(reply.json["error"]["type"], "invalid_request_error");
        }
        let mallory = client.as_owner("mallory");
        for item in ["msg_0", "fc_1_0", "nonsense"] {
            let reply = mallory.delete(&format!("/{id}/items/{item}")).await;
            assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "conversation_not_found"), "{item}");
        }
        let unknown = client.delete("/0190b6a4-6f1e-7cc3-9d5e-2f1f6a0b4c11/items/msg_0").await;
        assert_eq!((unknown.status, unknown.error_code()), (StatusCode::NOT_FOUND, "conversation_not_found"));
        assert_eq!(message_count(&db).await, 6, "nothing deleted");
        assert_eq!(client.detail(&id).await["message_count"], 6);
    }
}

backend_tests! {
    async fn a_cursor_with_any_call_index_pages_on_from_where_that_call_would_stand(db: TestDb) {
        // The largest index a call id can spell once overflowed the cursor's arithmetic:
        // the request got no answer at all.
        let client = Client::axum(&db).await;
        let id = tool_conversation(&client).await;
        let past_every_call = format!("fc_1_{}", usize::MAX);
        for (order, expected) in [
            ("asc", vec!["fco_2", "fco_3", "msg_4", "msg_5"]),
            ("desc", vec!["fc_1_1", "fc_1_0", "msg_0"]),
        ] {
            let reply = client
                .get(&format!("/{id}/items?order={order}&after={past_every_call}"))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{order}: {:?}", reply.json);
            let ids: Vec<&str> = reply.json["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, expected, "{order}");
        }
    }
}
