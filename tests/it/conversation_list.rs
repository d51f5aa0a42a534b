//! The cursor listing of conversations (contract section 11): OpenAI's list shape,
//! ordered by id, beside the offset listing on the same path; on both backends.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tower_conversations::TurnTarget;
use uuid::Uuid;

use crate::support::api::*;
use crate::support::db::TestDb;
use crate::support::store::turn;

/// Follows `after = last_id` until `has_more` is false; appends a turn to the first
/// conversation seen after the first page, which moves it to the front of the offset
/// listing but must not move it in this one.
async fn walk(client: &Client, db: &TestDb, order: &str, limit: u32) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut after = String::new();
    for page_number in 0..50 {
        let reply = client
            .get(&format!("?order={order}&limit={limit}{after}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        let page = reply.json;
        let mut keys: Vec<&str> = page
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["data", "first_id", "has_more", "last_id", "object"],
            "no total on cursor pages"
        );
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            page["first_id"],
            ids.first().map_or(Value::Null, |id| json!(id))
        );
        assert_eq!(
            page["last_id"],
            ids.last().map_or(Value::Null, |id| json!(id))
        );
        seen.extend(ids);
        if page_number == 0 {
            let id = Uuid::parse_str(&seen[0]).unwrap();
            db.store()
                .append_turn("alice", id, TurnTarget::Existing, &turn("again", "a"))
                .await
                .unwrap();
        }
        if page["has_more"] == false {
            return seen;
        }
        after = format!("&after={}", page["last_id"].as_str().unwrap());
    }
    panic!("the pages never ended: {seen:?}");
}

backend_tests! {
    async fn cursor_pages_walk_every_conversation_once_by_id_in_both_orders_while_turns_go_on(db: TestDb) {
        let client = Client::axum(&db).await;
        let mut created = Vec::new();
        for n in 0..7 {
            created.push(client.create(json!({"title": format!("c{n}")})).await);
        }
        client.as_owner("bob").create(json!({"title": "bob's"})).await;
        let mut by_id = created.clone();
        by_id.sort();
        assert_eq!(by_id, created, "ids are UUIDv7: creation order");
        for limit in [1, 3, 7, 20] {
            assert_eq!(walk(&client, &db, "asc", limit).await, by_id, "asc by {limit}");
            let newest_first: Vec<String> = by_id.iter().rev().cloned().collect();
            assert_eq!(walk(&client, &db, "desc", limit).await, newest_first, "desc by {limit}");
        }
        let page = client.get("?order=desc").await.json;
        assert_eq!(page["data"][0]["object"], "conversation");
        assert_eq!(page["data"].as_array().unwrap().len(), 7, "only the caller's");
        let offset = client.list("?limit=2").await;
        assert!(offset["total"].is_u64(), "without after or order, the offset listing answers");
    }

    async fn bad_cursor_queries_are_400_naming_the_parameter(db: TestDb) {
        let client = Client::axum(&db).await;
        let cases = [
            ("?after=nope", "after"),
            ("?order=sideways", "order"),
            ("?order=asc&offset=2", "offset"),
            ("?order=asc&q=word", "q"),
            ("?order=asc&limit=0", "limit"),
            ("?order=asc&limit=101", "limit"),
            ("?order=asc&order=desc", "order"),
        ];
        for (query, param) in cases {
            let reply = client.get(query).await;
            assert_eq!((reply.status, reply.error_param()), (StatusCode::BAD_REQUEST, Some(param)), "{query}");
        }
    }
}
