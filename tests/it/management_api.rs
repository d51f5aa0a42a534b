//! The management endpoints (contract section 8), over loopback with a real HTTP client,
//! on SQLite and PostgreSQL.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tower_conversations::CONVERSATION_ID_HEADER;
use tower_conversations::store::{NewMessage, TurnTarget};
use uuid::Uuid;

use crate::support::api::*;
use crate::support::db::{TestDb, TestPool};
use crate::support::server::{TestServer, assistant, chat_body, send, user};
use crate::support::store::values;
use crate::support::turns::{conversation_count, message_count};
use crate::support::upstream::TestModel;

/// The API served by hyper alone, with no router: it sees full paths.
async fn serve_by_hyper(db: &TestDb) -> String {
    use tower::Service;
    let api = api_for(db).served_at("/v1/conversations");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let api = api.clone();
            let service = hyper::service::service_fn(move |request| {
                let mut api = api.clone();
                async move { api.call(request).await }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    format!("http://{address}/v1/conversations")
}

/// One chat turn through the layer, continuing conversation `id` for `owner`.
async fn chat_turn(app: &TestServer, owner: &str, id: &str, text: &str) {
    let headers = [
        ("content-type", "application/json"),
        (CONVERSATION_ID_HEADER, id),
        (OWNER_HEADER, owner),
    ];
    let body = chat_body(json!([user(text)])).to_string();
    let answer = send(app, Method::POST, "/v1/chat/completions", &headers, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(
        !answer.text().contains("storage_failed"),
        "the turn was stored before [DONE]"
    );
}

/// Lets the clock move on, so that `updated_at` orders the conversations made around it.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(15)).await;
}

/// Appends one turn through the store, as the layer does.
async fn append(db: &TestDb, owner: &str, id: &str, target: TurnTarget, messages: &[Value]) -> i64 {
    let turn: Vec<NewMessage> = messages.iter().cloned().map(NewMessage::new).collect();
    db.store()
        .append_turn(owner, Uuid::parse_str(id).unwrap(), target, &turn)
        .await
        .unwrap()
}

/// A conversation of `count` alternating user and assistant messages, `m0`, `m1`, ...
async fn conversation_of(client: &Client, count: usize) -> String {
    let messages: Vec<Value> = (0..count)
        .map(|i| match i % 2 {
            0 => user(&format!("m{i}")),
            _ => assistant(&format!("m{i}")),
        })
        .collect();
    client.create(json!({"messages": messages})).await
}

fn titles(list: &Value) -> Vec<&str> {
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap_or(""))
        .collect()
}

fn sequence_numbers(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sequence_number"].as_i64().unwrap())
        .collect()
}

/// A time in unix seconds, within a minute of now.
fn assert_unix_seconds_now(value: &Value) {
    let seconds = value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"));
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - 60..=now + 60).contains(&seconds),
        "{seconds} is not now ({now})"
    );
}

/// Walks every page of a conversation's messages in `order`; the sequence numbers seen
/// and the `has_more` of each page.
async fn walk_pages(client: &Client, id: &str, order: &str, limit: u32) -> (Vec<i64>, Vec<bool>) {
    let mut seen = Vec::new();
    let mut has_more = Vec::new();
    let mut after: Option<i64> = None;
    for _ in 0..100 {
        let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let reply = client
            .get(&format!(
                "/{id}/messages?order={order}&limit={limit}{cursor}"
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        let page = sequence_numbers(&reply.json["data"]);
        assert!(page.len() <= limit as usize);
        seen.extend(&page);
        has_more.push(reply.json["has_more"].as_bool().unwrap());
        if !reply.json["has_more"].as_bool().unwrap() {
            return (seen, has_more);
        }
        after = page.last().copied();
    }
    panic!("paging never ended");
}

backend_tests! {
    async fn list_is_newest_updated_first_and_pages_by_limit_and_offset(db: TestDb) {
        let client = Client::axum(&db).await;
        for i in 0..5 {
            client.create(json!({"title": format!("c{i}")})).await;
            tick().await;
        }
        let first = client.list("?limit=2").await;
        assert_eq!(titles(&first), ["c4", "c3"]);
        assert_eq!((first["total"].clone(), first["limit"].clone(), first["offset"].clone()), (json!(5), json!(2), json!(0)));
        let middle = client.list("?limit=2&offset=2").await;
        assert_eq!(titles(&middle), ["c2", "c1"]);
        let last = client.list("?limit=2&offset=4").await;
        assert_eq!(titles(&last), ["c0"], "the last page is partial");
        assert_eq!(last["offset"], 4);
        for offset in [5, 1000] {
            let past = client.list(&format!("?limit=2&offset={offset}")).await;
            assert_eq!(past["conversations"], json!([]), "offset {offset} is past the end");
            assert_eq!(past["total"], 5);
        }
    }

    async fn list_defaults_to_the_first_50(db: TestDb) {
        let client = Client::axum(&db).await;
        let store = db.store();
        for _ in 0..51 {
            store.create("alice", &Default::default()).await.unwrap();
        }
        let list = client.list("").await;
        assert_eq!(list["conversations"].as_array().unwrap().len(), 50);
        assert_eq!((list["total"].clone(), list["limit"].clone(), list["offset"].clone()), (json!(51), json!(50), json!(0)));
        let all = client.list("?limit=100").await;
        assert_eq!(all["conversations"].as_array().unwrap().len(), 51);
    }

    async fn list_total_stays_right_while_conversations_are_added(db: TestDb) {
        let client = Client::axum(&db).await;
        for expected in 1..=4 {
            client.create(json!({"title": format!("c{expected}")})).await;
            let page = client.list("?limit=1").await;
            assert_eq!(page["total"], expected);
            assert_eq!(titles(&page), [format!("c{expected}")], "the newest comes first");
            tick().await;
        }
    }

    async fn a_new_turn_moves_its_conversation_to_the_front(db: TestDb) {
        let client = Client::axum(&db).await;
        let oldest = client.create(json!({"title": "old"})).await;
        tick().await;
        client.create(json!({"title": "new"})).await;
        tick().await;
        append(&db, "alice", &oldest, TurnTarget::Existing, &[user("again"), assistant("yes")]).await;
        let list = client.list("").await;
        assert_eq!(titles(&list), ["old", "new"]);
        assert_eq!(list["conversations"][0]["message_count"], 2);
    }

    async fn summary_is_openais_conversation_object_with_our_fields_and_unix_seconds(db: TestDb) {
        let client = Client::axum(&db).await;
        let reply = client
            .post("", json!({"title": "Trip", "metadata": {"project": "alps"}, "messages": [user("hi")]}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
        let summary = &reply.json;
        let mut keys: Vec<&str> = summary.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created_at", "id", "message_count", "metadata", "object", "title", "updated_at"]);
        assert_eq!(summary["object"], "conversation");
        assert!(Uuid::parse_str(summary["id"].as_str().unwrap()).is_ok());
        assert_unix_seconds_now(&summary["created_at"]);
        assert_unix_seconds_now(&summary["updated_at"]);
        assert_eq!(summary["message_count"], 1);
        assert_eq!(summary["metadata"], json!({"project": "alps"}));
        let listed = &client.list("").await["conversations"][0];
        assert_eq!(listed, summary, "the listing shows the same summary");
    }

    async fn search_finds_the_conversations_whose_messages_hold_every_word(db: TestDb) {
        let client = Client::axum(&db).await;
        client.create(json!({"title": "fox", "messages": [user("The quick brown fox jumps"), assistant("Over the dog")]})).await;
        tick().await;
        client.create(json!({"title": "dog", "messages": [user("A lazy dog sleeps all day")]})).await;
        tick().await;
        client.create(json!({"title": "bread", "messages": [user("Any recipe?"), assistant("Brown bread with seeds")]})).await;
        let search = |q: &'static str| {
            let client = client.clone();
            async move { client.list(&format!("?q={q}")).await }
        };
        assert_eq!(titles(&search("fox").await), ["fox"]);
        assert_eq!(titles(&search("brown").await), ["bread", "fox"], "assistant text is searched too");
        assert_eq!(titles(&search("quick+fox").await), ["fox"]);
        assert_eq!(titles(&search("lazy%20sleeps").await), ["dog"]);
        let miss = search("quick+sleeps").await;
        assert_eq!((titles(&miss).len(), miss["total"].clone()), (0, json!(0)), "every word must match");
        let miss = search("elephant").await;
        assert_eq!((titles(&miss).len(), miss["total"].clone()), (0, json!(0)));
        let paged = client.list("?q=brown&limit=1&offset=1").await;
        assert_eq!((titles(&paged), paged["total"].clone()), (vec!["fox"], json!(2)));
    }

    async fn search_treats_punctuation_and_sql_metacharacters_as_text(db: TestDb) {
        let client = Client::axum(&db).await;
        client.create(json!({"title": "hello", "messages": [user("hello world")]})).await;
        for q in ["hello!", "(hello)", "hello,", "%22hello%22", "hello%3A", "%27hello%27"] {
            let list = client.list(&format!("?q={q}")).await;
            assert_eq!(titles(&list), ["hello"], "q={q}");
        }
        for q in [
            "%25", "_", "*", "%22", "%27", "%5C", "-", "%2B", "%3B",
            "%27%3B+DROP+TABLE+messages%3B+--", "%25hello%25", "NEAR(hello)", "hello+OR", "AND", "^hello",
            "%7B%7D", "%5B%5D", "hello:*", "!!!", "%26%7C",
        ] {
            let reply = client.get(&format!("?q={q}")).await;
            assert_eq!(reply.status, StatusCode::OK, "q={q}: {:?}", reply.json);
        }
        for q in ["%25", "_", "*", "%22", "%5C", "%27%3B+DROP+TABLE+messages%3B+--"] {
            let list = client.list(&format!("?q={q}")).await;
            assert_eq!(list["total"], 0, "q={q} is text, not a pattern");
        }
        assert_eq!(message_count(&db).await, 1, "the table is still there");
    }

    async fn a_blank_search_lists_everything(db: TestDb) {
        let client = Client::axum(&db).await;
        client.create(json!({"messages": [user("one")]})).await;
        client.create(json!({})).await;
        for q in ["", "+++", "%20"] {
            assert_eq!(client.list(&format!("?q={q}")).await["total"], 2, "q={q}");
        }
    }

    async fn create_with_seed_messages_stores_them_in_order(db: TestDb) {
        let client = Client::axum(&db).await;
        let seed = json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":2}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
            {"role": "assistant", "content": "4", "name": "calc"}
        ]);
        let reply = client.post("", json!({"title": "Sums", "metadata": {"k": "v"}, "messages": seed})).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.json["message_count"], 5);
        assert_eq!(reply.json["title"], "Sums");
        let detail = client.detail(reply.json["id"].as_str().unwrap()).await;
        assert_eq!(sequence_numbers(&detail["messages"]), [0, 1, 2, 3, 4]);
        for (shown, seeded) in detail["messages"].as_array().unwrap().iter().zip(seed.as_array().unwrap()) {
            for (key, value) in seeded.as_object().unwrap() {
                assert_eq!(&shown[key], value, "{key} is stored exactly");
            }
        }
        assert_eq!(message_count(&db).await, 5);
    }

    async fn create_without_a_title_takes_the_first_user_message(db: TestDb) {
        let client = Client::axum(&db).await;
        let reply = client.post("", json!({"messages": [assistant("Hello"), user("  Plan a trip to Lisbon  ")]})).await;
        assert_eq!(reply.json["title"], "Plan a trip to Lisbon");
        let empty = client.send(Method::POST, "", None).await;
        assert_eq!(empty.status, StatusCode::CREATED, "an empty body creates an empty conversation");
        assert_eq!((empty.json["title"].clone(), empty.json["message_count"].clone()), (Value::Null, json!(0)));
        assert_eq!(empty.json["metadata"], json!({}));
    }

    async fn get_returns_messages_in_order_with_sequence_numbers_metadata_and_reasoning(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = Uuid::now_v7();
        let mut metadata = Map::new();
        metadata.insert("model".into(), json!("test-model"));
        metadata.insert("finish_reason".into(), json!("stop"));
        let mut answer = NewMessage::new(assistant("Four."));
        answer.reasoning = Some("Two and two make four.".into());
        answer.reasoning_events = vec![json!({"type": "thinking", "text": "adding"}), json!({"type": "done"})];
        answer.set_metadata(metadata.clone());
        let store = db.store();
        store.append_turn("alice", id, TurnTarget::NewConversation, &[NewMessage::new(user("2+2?")), answer]).await.unwrap();
        store.append_turn("alice", id, TurnTarget::Existing, &[NewMessage::new(user("thanks")), NewMessage::new(assistant("welcome"))]).await.unwrap();

        let detail = client.detail(&id.to_string()).await;
        assert_eq!(detail["id"], id.to_string());
        assert_eq!(detail["message_count"], 4);
        assert_eq!(detail["title"], "2+2?");
        let messages = &detail["messages"];
        assert_eq!(sequence_numbers(messages), [0, 1, 2, 3]);
        assert_eq!(contents(messages), ["2+2?", "Four.", "thanks", "welcome"]);
        let reasoned = &messages[1];
        assert_eq!(reasoned["role"], "assistant");
        assert_eq!(reasoned["reasoning"], "Two and two make four.");
        assert_eq!(reasoned["reasoning_events"], json!([{"type": "thinking", "text": "adding"}, {"type": "done"}]));
        assert_eq!(reasoned["metadata"], Value::Object(metadata));
        for plain in [&messages[0], &messages[2], &messages[3]] {
            let fields = plain.as_object().unwrap();
            assert!(!fields.contains_key("reasoning") && !fields.contains_key("reasoning_events"), "{plain}");
            assert_eq!(plain["metadata"], json!({}));
        }
        for message in messages.as_array().unwrap() {
            assert_unix_seconds_now(&message["created_at"]);
        }
    }

    async fn an_exported_conversation_imports_unchanged(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = Uuid::now_v7();
        let mut answer = NewMessage::new(assistant("Four."));
        answer.reasoning = Some("adding".into());
        answer.reasoning_events = vec![json!({"type": "done"})];
        answer.set_metadata([("model".to_owned(), json!("m"))].into_iter().collect());
        db.store().append_turn("alice", id, TurnTarget::NewConversation, &[NewMessage::new(user("2+2?")), answer]).await.unwrap();
        let exported = client.detail(&id.to_string()).await;
        let imported = client.create(json!({"title": exported["title"], "messages": exported["messages"]})).await;
        let copy = client.detail(&imported).await;
        let without_times = |messages: &Value| -> Vec<Value> {
            messages.as_array().unwrap().iter().map(|m| {
                let mut m = m.clone();
                m.as_object_mut().unwrap().remove("created_at");
                m
            }).collect()
        };
        assert_eq!(without_times(&copy["messages"]), without_times(&exported["messages"]));
        let history = values(db.store().load_history("alice", Uuid::parse_str(&imported).unwrap(), None).await.unwrap());
        assert_eq!(history, [user("2+2?"), assistant("Four.")], "what goes upstream is the message alone");
    }

    async fn message_pages_walk_the_whole_conversation_in_both_orders(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = conversation_of(&client, 7).await;
        let (seen, has_more) = walk_pages(&client, &id, "asc", 3).await;
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6], "no repeat, no gap");
        assert_eq!(has_more, [true, true, false]);
        let (seen, has_more) = walk_pages(&client, &id, "desc", 3).await;
        assert_eq!(seen, [6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(has_more, [true, true, false]);
        let (seen, has_more) = walk_pages(&client, &id, "asc", 7).await;
        assert_eq!((seen.len(), has_more), (7, vec![false]), "a page ending exactly at the end has no more");
        let page = client.get(&format!("/{id}/messages")).await.json;
        assert_eq!(contents(&page["data"]), ["m0", "m1", "m2", "m3", "m4", "m5", "m6"], "ascending by default");
        assert_eq!(page["has_more"], false);
        assert_eq!(page["data"][1]["role"], "assistant");
        let page = client.get(&format!("/{id}/messages?after=6")).await.json;
        assert_eq!((page["data"].clone(), page["has_more"].clone()), (json!([]), json!(false)));
    }

    async fn message_pages_hold_20_by_default(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = conversation_of(&client, 25).await;
        let page = client.get(&format!("/{id}/messages")).await.json;
        assert_eq!(sequence_numbers(&page["data"]), (0..20).collect::<Vec<_>>());
        assert_eq!(page["has_more"], true);
        let page = client.get(&format!("/{id}/messages?order=desc&after=5")).await.json;
        assert_eq!(sequence_numbers(&page["data"]), [4, 3, 2, 1, 0]);
    }

    async fn patched_metadata_comes_back_in_list_and_get(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"title": "t", "metadata": {"a": "1", "b": "2"}})).await;
        let reply = client.patch(&format!("/{id}"), json!({"metadata": {"c": "3"}})).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        assert_eq!(reply.json["metadata"], json!({"c": "3"}), "metadata is replaced whole");
        assert_eq!(reply.json["title"], "t", "the title stays");
        assert_eq!(client.detail(&id).await["metadata"], json!({"c": "3"}));
        assert_eq!(client.list("").await["conversations"][0]["metadata"], json!({"c": "3"}));
        let cleared = client.patch(&format!("/{id}"), json!({"metadata": {}})).await;
        assert_eq!(cleared.json["metadata"], json!({}));
    }

    async fn post_to_a_conversation_updates_its_metadata_as_openai_does_and_null_clears_it(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"title": "t", "metadata": {"a": "1"}})).await;
        let reply = client.post(&format!("/{id}"), json!({"metadata": {"topic": "demo"}})).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        assert_eq!((reply.json["object"].clone(), reply.json["metadata"].clone()), (json!("conversation"), json!({"topic": "demo"})));
        assert_eq!(client.detail(&id).await["metadata"], json!({"topic": "demo"}));
        let cleared = client.post(&format!("/{id}"), json!({"metadata": null})).await;
        assert_eq!((cleared.status, cleared.json["metadata"].clone()), (StatusCode::OK, json!({})));
        assert_eq!(client.detail(&id).await["title"], "t", "the title stays");
        let too_many: serde_json::Map<String, Value> = (0..17).map(|n| (format!("k{n}"), json!("v"))).collect();
        for bad in [json!({"metadata": too_many}), json!({"metadata": {"k".repeat(65): "v"}}), json!({"metadata": {"k": "v".repeat(513)}})] {
            let reply = client.post(&format!("/{id}"), bad).await;
            assert_eq!((reply.status, reply.error_param()), (StatusCode::BAD_REQUEST, Some("metadata")));
        }
        assert_eq!(client.detail(&id).await["metadata"], json!({}), "nothing changed");
        let elsewhere = Client { owner: "mallory", ..client.clone() };
        assert_eq!(elsewhere.post(&format!("/{id}"), json!({"metadata": {}})).await.status, StatusCode::NOT_FOUND);
    }

    async fn rename_then_list_shows_the_new_title(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"metadata": {"k": "v"}, "messages": [user("first words")]})).await;
        assert_eq!(client.list("").await["conversations"][0]["title"], "first words");
        let reply = client.patch(&format!("/{id}"), json!({"title": "Renamed"})).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json["title"], "Renamed");
        assert_eq!(reply.json["metadata"], json!({"k": "v"}), "metadata stays");
        assert_eq!(client.list("").await["conversations"][0]["title"], "Renamed");
        assert_eq!(client.detail(&id).await["title"], "Renamed");
        append(&db, "alice", &id, TurnTarget::Existing, &[user("more words"), assistant("ok")]).await;
        assert_eq!(client.detail(&id).await["title"], "Renamed", "later turns keep the new title");
    }

    async fn delete_then_get_is_404_and_its_messages_are_gone(db: TestDb) {
        let client = Client::axum(&db).await;
        let doomed = conversation_of(&client, 4).await;
        let kept = conversation_of(&client, 3).await;
        let reply = client.delete(&format!("/{doomed}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json, json!({"id": doomed, "object": "conversation.deleted", "deleted": true}));
        let gone = client.get(&format!("/{doomed}")).await;
        assert_eq!((gone.status, gone.error_code()), (StatusCode::NOT_FOUND, "conversation_not_found"));
        assert_eq!(message_count(&db).await, 3, "only the other conversation's messages remain");
        assert_eq!(conversation_count(&db).await, 1);
        assert_eq!(client.detail(&kept).await["message_count"], 3);
        let again = client.delete(&format!("/{doomed}")).await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
    }

    async fn fork_at_n_copies_messages_0_to_n_and_leaves_the_source_alone(db: TestDb) {
        let client = Client::axum(&db).await;
        let source = client.create(json!({"title": "source", "metadata": {"k": "v"}, "messages": [
            user("m0"), assistant("m1"), user("m2"), assistant("m3"), user("m4")
        ]})).await;
        let reply = client.post(&format!("/{source}/fork"), json!({"at_sequence": 2})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json);
        let fork = reply.json["id"].as_str().unwrap().to_owned();
        assert_ne!(fork, source);
        assert_eq!(reply.json["message_count"], 3);
        let copy = client.detail(&fork).await;
        assert_eq!(contents(&copy["messages"]), ["m0", "m1", "m2"]);
        assert_eq!(sequence_numbers(&copy["messages"]), [0, 1, 2]);

        append(&db, "alice", &fork, TurnTarget::Existing, &[user("fork only"), assistant("yes")]).await;
        client.patch(&format!("/{fork}"), json!({"title": "the fork", "metadata": {"k": "fork"}})).await;
        let reply = client.delete(&format!("/{fork}/messages?from_sequence=1")).await;
        assert_eq!(reply.status, StatusCode::OK);
        let original = client.detail(&source).await;
        assert_eq!(contents(&original["messages"]), ["m0", "m1", "m2", "m3", "m4"]);
        assert_eq!((original["title"].clone(), original["metadata"].clone()), (json!("source"), json!({"k": "v"})));

        let whole = client.post(&format!("/{source}/fork"), json!({"at_sequence": 4})).await;
        assert_eq!(whole.json["message_count"], 5, "forking at the last message copies it all");
        let first = client.post(&format!("/{source}/fork"), json!({"at_sequence": 0})).await;
        assert_eq!(first.json["message_count"], 1);
    }

    async fn fork_past_the_last_message_is_400_and_creates_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let source = conversation_of(&client, 3).await;
        for at in [3, 1000] {
            let reply = client.post(&format!("/{source}/fork"), json!({"at_sequence": at})).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "at {at}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", Some("at_sequence")));
        }
        let empty = client.create(json!({})).await;
        let reply = client.post(&format!("/{empty}/fork"), json!({"at_sequence": 0})).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "an empty conversation has no message 0");
        assert_eq!(conversation_count(&db).await, 2);
        assert_eq!(message_count(&db).await, 3);
    }

    async fn truncate_drops_messages_from_n_and_the_next_turn_never_reuses_their_numbers(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = conversation_of(&client, 5).await;
        let reply = client.delete(&format!("/{id}/messages?from_sequence=3")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        assert_eq!(reply.json, json!({"id": id, "deleted_messages": 2}));
        let detail = client.detail(&id).await;
        assert_eq!(contents(&detail["messages"]), ["m0", "m1", "m2"]);
        assert_eq!(detail["message_count"], 3);
        assert_eq!(message_count(&db).await, 3);
        let past = client.delete(&format!("/{id}/messages?from_sequence=3")).await;
        assert_eq!(past.json["deleted_messages"], 0, "cutting at or past the end deletes nothing");
        assert_eq!(client.detail(&id).await["message_count"], 3);
        let first = append(&db, "alice", &id, TurnTarget::Existing, &[user("again"), assistant("sure")]).await;
        assert_eq!(first, 5, "the next turn starts past every number handed out");
        let detail = client.detail(&id).await;
        assert_eq!(sequence_numbers(&detail["messages"]), [0, 1, 2, 5, 6]);
        assert_eq!(detail["message_count"], 5, "the count is the rows");
        let all = client.delete(&format!("/{id}/messages?from_sequence=0")).await;
        assert_eq!(all.json["deleted_messages"], 5);
        assert_eq!(client.detail(&id).await["message_count"], 0);
    }

    async fn bad_list_queries_are_400_naming_the_parameter(db: TestDb) {
        let client = Client::axum(&db).await;
        let cases = [
            ("limit zero", "?limit=0", "limit"),
            ("limit over 100", "?limit=101", "limit"),
            ("limit negative", "?limit=-1", "limit"),
            ("limit not a number", "?limit=ten", "limit"),
            ("limit empty", "?limit=", "limit"),
            ("limit twice", "?limit=1&limit=2", "limit"),
            ("offset negative", "?offset=-1", "offset"),
            ("offset fractional", "?offset=1.5", "offset"),
            ("offset beyond 64 bits", "?offset=99999999999999999999", "offset"),
            ("q twice", "?q=a&q=b", "q"),
        ];
        for (case, query, param) in cases {
            let reply = client.get(query).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", Some(param)), "{case}");
            assert_eq!(reply.json["error"]["type"], "invalid_request_error", "{case}");
        }
        assert_eq!(client.get("?limit=100&offset=0&unknown=1").await.status, StatusCode::OK, "the edges are allowed");
    }

    async fn bad_create_bodies_are_400_naming_the_field_and_store_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let seventeen: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("not JSON", "{\"title\": ".into(), None),
            ("an array", "[]".into(), None),
            ("a string", "\"hi\"".into(), None),
            ("empty title", json!({"title": ""}).to_string(), Some("title")),
            ("blank title", json!({"title": "  "}).to_string(), Some("title")),
            ("title of 201 chars", json!({"title": "x".repeat(201)}).to_string(), Some("title")),
            ("title a number", json!({"title": 7}).to_string(), Some("title")),
            ("metadata an array", json!({"metadata": ["a"]}).to_string(), Some("metadata")),
            ("17 metadata pairs", json!({"metadata": seventeen}).to_string(), Some("metadata")),
            ("metadata key of 65 chars", json!({"metadata": {"k".repeat(65): "v"}}).to_string(), Some("metadata")),
            ("metadata value of 513 chars", json!({"metadata": {"k": "v".repeat(513)}}).to_string(), Some("metadata")),
            ("metadata value a number", json!({"metadata": {"k": 1}}).to_string(), Some("metadata")),
            ("messages an object", json!({"messages": {"role": "user"}}).to_string(), Some("messages")),
            ("101 messages", json!({"messages": vec![user("x"); 101]}).to_string(), Some("messages")),
            ("a message a string", json!({"messages": [user("x"), "hi"]}).to_string(), Some("messages[1]")),
            ("a message without role", json!({"messages": [{"content": "x"}]}).to_string(), Some("messages[0].role")),
            ("a role a number", json!({"messages": [{"role": 3, "content": "x"}]}).to_string(), Some("messages[0].role")),
            ("an unknown field", json!({"titel": "x"}).to_string(), Some("titel")),
        ];
        for (case, body, param) in cases {
            let reply = client.send(Method::POST, "", Some(body.into())).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", param), "{case}");
        }
        assert_eq!(conversation_count(&db).await, 0);
        assert_eq!(message_count(&db).await, 0);
        let edges = json!({
            "title": "é".repeat(200),
            "metadata": (0..16).map(|i| (format!("{i:0>64}"), json!("v".repeat(512)))).collect::<Map<String, Value>>(),
            "messages": vec![user("x"); 100],
        });
        let reply = client.post("", edges).await;
        assert_eq!(reply.status, StatusCode::CREATED, "every limit is inclusive: {:?}", reply.json);
    }

    async fn malformed_ids_are_400_and_unknown_ids_404_on_every_endpoint(db: TestDb) {
        let client = Client::axum(&db).await;
        let unknown = Uuid::now_v7();
        for id in ["not-a-uuid", "123", "0190b6a4-6f1e-7cc3-9d5e-2f1f6a0b4c1"] {
            let replies = [
                client.get(&format!("/{id}")).await,
                client.get(&format!("/{id}/messages")).await,
                client.patch(&format!("/{id}"), json!({"title": "x"})).await,
                client.delete(&format!("/{id}")).await,
                client.post(&format!("/{id}/fork"), json!({"at_sequence": 0})).await,
                client.delete(&format!("/{id}/messages?from_sequence=0")).await,
            ];
            for reply in replies {
                assert_eq!((reply.status, reply.error_code()), (StatusCode::BAD_REQUEST, "invalid_conversation_id"), "{id}");
            }
        }
        let replies = [
            client.get(&format!("/{unknown}")).await,
            client.get(&format!("/{unknown}/messages")).await,
            client.patch(&format!("/{unknown}"), json!({"title": "x"})).await,
            client.delete(&format!("/{unknown}")).await,
            client.post(&format!("/{unknown}/fork"), json!({"at_sequence": 0})).await,
            client.delete(&format!("/{unknown}/messages?from_sequence=0")).await,
        ];
        for reply in replies {
            assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "conversation_not_found"));
            assert_eq!(reply.json["error"]["type"], "invalid_request_error");
        }
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn bad_message_page_queries_are_400_naming_the_parameter(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = conversation_of(&client, 2).await;
        let cases = [
            ("limit zero", "limit=0", "limit"),
            ("limit over 100", "limit=101", "limit"),
            ("limit not a number", "limit=x", "limit"),
            ("after not a number", "after=two", "after"),
            ("after fractional", "after=1.5", "after"),
            ("order unknown", "order=random", "order"),
            ("order upper case", "order=ASC", "order"),
            ("order twice", "order=asc&order=desc", "order"),
        ];
        for (case, query, param) in cases {
            let reply = client.get(&format!("/{id}/messages?{query}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", Some(param)), "{case}");
        }
        assert_eq!(client.get(&format!("/{id}/messages?limit=100&after=-1&order=desc")).await.status, StatusCode::OK);
    }

    async fn bad_patches_are_400_naming_the_field_and_change_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"title": "kept", "metadata": {"k": "v"}})).await;
        let before = client.detail(&id).await;
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("empty body", String::new(), None),
            ("empty object", "{}".into(), None),
            ("only a null title", json!({"title": null}).to_string(), None),
            ("not JSON", "title=x".into(), None),
            ("empty title", json!({"title": ""}).to_string(), Some("title")),
            ("title of 201 chars", json!({"title": "x".repeat(201)}).to_string(), Some("title")),
            ("title a list", json!({"title": ["x"]}).to_string(), Some("title")),
            ("metadata a string", json!({"metadata": "k=v"}).to_string(), Some("metadata")),
            ("metadata value null", json!({"metadata": {"k": null}}).to_string(), Some("metadata")),
            ("valid title, bad metadata", json!({"title": "new", "metadata": {"k": 1}}).to_string(), Some("metadata")),
            ("messages are not patched", json!({"title": "new", "messages": []}).to_string(), Some("messages")),
        ];
        for (case, body, param) in cases {
            let reply = client.send(Method::PATCH, &format!("/{id}"), Some(body.into())).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", param), "{case}");
        }
        assert_eq!(client.detail(&id).await, before, "nothing changed");
    }

    async fn bad_fork_points_are_400_and_create_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = conversation_of(&client, 3).await;
        let cases: Vec<(&str, String)> = vec![
            ("empty body", String::new()),
            ("no at_sequence", "{}".into()),
            ("negative", json!({"at_sequence": -1}).to_string()),
            ("fractional", json!({"at_sequence": 1.5}).to_string()),
            ("a string", json!({"at_sequence": "1"}).to_string()),
            ("beyond 64 bits", r#"{"at_sequence": 18446744073709551615}"#.into()),
        ];
        for (case, body) in cases {
            let reply = client.send(Method::POST, &format!("/{id}/fork"), Some(body.into())).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", Some("at_sequence")), "{case}");
        }
        let reply = client.send(Method::POST, &format!("/{id}/fork"), Some("[1]".into())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a body that is not an object");
        assert_eq!(conversation_count(&db).await, 1);
    }

    async fn bad_truncation_points_are_400_and_delete_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = conversation_of(&client, 3).await;
        let cases = [
            ("missing", ""),
            ("empty", "?from_sequence="),
            ("negative", "?from_sequence=-1"),
            ("not a number", "?from_sequence=last"),
            ("twice", "?from_sequence=1&from_sequence=2"),
        ];
        for (case, query) in cases {
            let reply = client.delete(&format!("/{id}/messages{query}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
            assert_eq!((reply.error_code(), reply.error_param()), ("invalid_request", Some("from_sequence")), "{case}");
        }
        assert_eq!(message_count(&db).await, 3);
    }

    async fn unknown_paths_are_404_not_found(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = Uuid::now_v7();
        for path in [format!("/{id}/other"), format!("/{id}/messages/1"), format!("/{id}/fork/x")] {
            let reply = client.get(&path).await;
            assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{path}");
        }
    }

    async fn wrong_methods_are_405_with_allow(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = Uuid::now_v7();
        let cases = [
            (Method::PUT, String::new(), "GET, POST, DELETE"),
            (Method::PUT, format!("/{id}"), "GET, POST, PATCH, DELETE"),
            (Method::POST, format!("/{id}/messages"), "GET, DELETE"),
            (Method::GET, format!("/{id}/fork"), "POST"),
        ];
        for (method, path, allow) in cases {
            let reply = client.send(method.clone(), &path, None).await;
            assert_eq!((reply.status, reply.error_code()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"), "{method} {path}");
            assert_eq!(reply.headers["allow"], allow, "{method} {path}");
        }
    }

    async fn bodies_over_8_mib_are_413(db: TestDb) {
        let client = Client::axum(&db).await;
        let big = format!("{{\"title\": \"{}\"}}", "x".repeat(8 * 1024 * 1024));
        let reply = client.send(Method::POST, "", Some(big.into())).await;
        assert_eq!((reply.status, reply.error_code()), (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"));
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn a_store_outage_is_503_without_its_cause(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = conversation_of(&client, 2).await;
        match &db.pool {
            TestPool::Sqlite(pool) => pool.close().await,
            TestPool::Postgres(pool) => pool.close().await,
        }
        let replies = [
            client.get("").await,
            client.post("", json!({"title": "x"})).await,
            client.get(&format!("/{id}")).await,
            client.get(&format!("/{id}/messages")).await,
            client.delete(&format!("/{id}")).await,
        ];
        for reply in replies {
            assert_eq!((reply.status, reply.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "conversation_store_unavailable"));
            assert_eq!(reply.json["error"]["type"], "server_error");
            let text = reply.json.to_string().to_lowercase();
            for leak in ["pool", "closed", "sqlx", "sqlite", "postgres", "select", "connection"] {
                assert!(!text.contains(leak), "{leak} leaked: {text}");
            }
        }
    }

    async fn served_by_hyper_alone_it_answers_full_paths(db: TestDb) {
        let client = Client { base: serve_by_hyper(&db).await, http: reqwest::Client::new(), owner: "alice" };
        let id = client.create(json!({"title": "direct", "messages": [user("a"), assistant("b")]})).await;
        assert_eq!(titles(&client.list("?limit=1").await), ["direct"]);
        assert_eq!(client.list("/").await["total"], 1);
        assert_eq!(client.detail(&id).await["message_count"], 2);
        let page = client.get(&format!("/{id}/messages?order=desc&limit=1")).await.json;
        assert_eq!((contents(&page["data"]), page["has_more"].clone()), (vec!["b"], json!(true)));
        let fork = client.post(&format!("/{id}/fork"), json!({"at_sequence": 0})).await;
        assert_eq!(fork.status, StatusCode::CREATED);
        let cut = client.delete(&format!("/{id}/messages?from_sequence=1")).await;
        assert_eq!(cut.json["deleted_messages"], 1);
        assert_eq!(client.patch(&format!("/{id}"), json!({"title": "renamed"})).await.json["title"], "renamed");
        assert_eq!(client.delete(&format!("/{id}")).await.json["deleted"], true);
        let wrong = client.send(Method::PUT, &format!("/{id}"), None).await;
        assert_eq!(wrong.headers["allow"], "GET, POST, PATCH, DELETE");
        let elsewhere = Client { base: client.base.replace("/v1/conversations", "/v1/conversationsX"), ..client.clone() };
        assert_eq!(elsewhere.get("").await.status, StatusCode::NOT_FOUND, "only the whole mount segment is stripped");
    }

    async fn nested_in_axum_the_mount_path_is_not_stripped_a_second_time(db: TestDb) {
        let client = Client::axum(&db).await;
        client.create(json!({"title": "listed"})).await;
        let doubled = client.get("/v1/conversations").await;
        assert_eq!(doubled.status, StatusCode::NOT_FOUND, "{:?}", doubled.json);
        assert_eq!(doubled.error_code(), "not_found");
    }

    async fn nested_in_axum_it_answers_with_and_without_a_trailing_slash(db: TestDb) {
        let client = Client::axum(&db).await;
        let id = client.create(json!({"title": "slash"})).await;
        assert_eq!(client.list("").await["total"], 1);
        assert_eq!(client.list("/").await["total"], 1);
        assert_eq!(client.list("/?limit=1").await["limit"], 1);
        assert_eq!(client.detail(&format!("{id}/")).await["title"], "slash");
        let created = client.post("/", json!({})).await;
        assert_eq!(created.status, StatusCode::CREATED);
    }

    async fn a_turn_through_the_layer_continues_after_the_seed_messages(db: TestDb) {
        let model = TestModel::new();
        let (app, client) = serve_with_layer(&db, &model).await;
        let seed = [
            json!({"role": "system", "content": "You are terse."}),
            user("My name is Ada."),
            assistant("Hello, Ada."),
        ];
        let id = client.create(json!({"title": "prepared", "messages": seed})).await;

        chat_turn(&app, "alice", &id, "What is my name?").await;

        let mut expected = seed.to_vec();
        expected.push(user("What is my name?"));
        assert_eq!(model.last_request().messages(), expected, "the seed is spliced in front");
        let detail = client.detail(&id).await;
        assert_eq!(sequence_numbers(&detail["messages"]), [0, 1, 2, 3, 4]);
        assert_eq!(
            contents(&detail["messages"]),
            ["You are terse.", "My name is Ada.", "Hello, Ada.", "What is my name?", "You said: What is my name?"]
        );
        assert_eq!(detail["title"], "prepared");
    }

    async fn a_turn_through_the_layer_after_truncation_follows_the_cut_with_fresh_numbers(db: TestDb) {
        let model = TestModel::new();
        let (app, client) = serve_with_layer(&db, &model).await;
        let id = conversation_of(&client, 4).await;
        let cut = client.delete(&format!("/{id}/messages?from_sequence=2")).await;
        assert_eq!(cut.json["deleted_messages"], 2);

        chat_turn(&app, "alice", &id, "instead").await;

        assert_eq!(
            model.last_request().messages(),
            [user("m0"), assistant("m1"), user("instead")],
            "the dropped messages are no longer history"
        );
        let detail = client.detail(&id).await;
        assert_eq!(sequence_numbers(&detail["messages"]), [0, 1, 4, 5]);
        assert_eq!(contents(&detail["messages"]), ["m0", "m1", "instead", "You said: instead"]);
        assert_eq!(detail["message_count"], 4);
    }
}

backend_tests! {
    async fn nul_anywhere_in_a_seed_message_is_stored_as_sent(db: TestDb) {
        // PostgreSQL text and jsonb cannot hold U+0000: a NUL in a role, a field name, or
        // any field beside the content once answered 503 there and stored nothing.
        let client = Client::axum(&db).await;
        let messages = json!([
            {"role": "us\u{0}er", "content": "a"},
            {"role": "user", "content": "b", "name": "n\u{0}", "\u{0}": ["\u{0}"]},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "c\u{0}", "type": "function",
                "function": {"name": "f\u{0}", "arguments": "{\"a\": \"\\u0000\"}"}
            }]},
        ]);
        let id = client.create(json!({"messages": messages})).await;

        let detail = client.detail(&id).await;
        let stored: Vec<Value> = detail["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| {
                let mut message = message.clone();
                for added in ["sequence_number", "created_at", "metadata"] {
                    message.as_object_mut().unwrap().remove(added);
                }
                message
            })
            .collect();
        assert_eq!(Value::Array(stored), messages);
        assert_eq!(detail["message_count"], 3);
        let found = client.list("?q=b").await;
        assert_eq!(found["total"], 1, "the message's words are still searchable");
    }
}
