//! The cursor listing of conversations (contract section 11): OpenAI's list shape,
//! ordered by id, beside the offset listing on the same path; on both backends.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tower_conversations::TurnTarget;
use uuid::Uuid;

use crate::support::api::*;
use crate::support::db::{TestDb, TestPool};
use crate::support::store::turn;

/// The ids of every conversation a cursor listing with `query` walks through, by `limit`.
async fn ids_walked(client: &Client, query: &str, limit: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..50 {
        let reply = client.get(&format!("?{query}&limit={limit}{after}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        assert!(
            reply.json.get("total").is_none(),
            "no total on cursor pages"
        );
        assert_eq!(reply.json["object"], "list");
        let data = reply.json["data"].as_array().unwrap();
        seen.extend(data.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        if reply.json["has_more"] == false {
            return seen;
        }
        after = format!("&after={}", reply.json["last_id"].as_str().unwrap());
    }
    panic!("the pages never ended: {seen:?}");
}

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
            ("?order=asc&q=a&q=b", "q"),
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

backend_tests! {
    async fn cursor_pages_search_every_word_and_page_by_id_like_the_list(db: TestDb) {
        let client = Client::axum(&db).await;
        let texts = [
            "the invoice for March", "weather today", "an Invoice, overdue", "invoice paid",
            "nothing here", "overdue rent", "invoice overdue again",
        ];
        let mut ids = Vec::new();
        for text in texts {
            ids.push(client.create(json!({"messages": [{"role": "user", "content": text}]})).await);
        }
        client.as_owner("bob").create(json!({"messages": [{"role": "user", "content": "invoice"}]})).await;
        let with = |words: &[&str]| -> Vec<String> {
            texts.iter().zip(&ids)
                .filter(|(text, _)| words.iter().all(|w| text.to_lowercase().split(|c: char| !c.is_alphanumeric()).any(|t| t == *w)))
                .map(|(_, id)| id.clone())
                .collect()
        };
        let invoices = with(&["invoice"]);
        assert_eq!(invoices.len(), 4);
        for limit in [1, 2, 3, 20] {
            assert_eq!(ids_walked(&client, "order=asc&q=invoice", limit).await, invoices, "asc by {limit}");
            let newest_first: Vec<String> = invoices.iter().rev().cloned().collect();
            assert_eq!(ids_walked(&client, "order=desc&q=invoice", limit).await, newest_first, "desc by {limit}");
        }
        assert_eq!(ids_walked(&client, "order=asc&q=overdue+invoice", 2).await, with(&["overdue", "invoice"]), "every word");
        assert!(ids_walked(&client, "order=asc&q=absent", 5).await.is_empty());
        assert_eq!(ids_walked(&client, "order=asc&q=+", 5).await, ids, "a blank q lists everything");
        let mut by_offset: Vec<String> = client.list("?q=invoice").await["conversations"]
            .as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
        by_offset.sort();
        assert_eq!(by_offset, invoices, "the offset listing finds the same");
    }
}

backend_tests! {
    async fn search_pages_by_id_find_the_same_whether_a_word_is_common_or_rare(db: TestDb) {
        let client = Client::axum(&db).await;
        // 6,100 messages with the common word: SQLite then walks conversations instead
        // of reading every match first; both ways must find the same.
        let mut ids = Vec::new();
        for n in 0..61 {
            let messages: Vec<Value> = (0..100)
                .map(|m| {
                    let rare = if (n, m) == (13, 57) { " rare" } else { "" };
                    json!({"role": "user", "content": format!("common words {n} {m}{rare}")})
                })
                .collect();
            ids.push(client.create(json!({"messages": messages})).await);
        }
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(ids_walked(&client, "order=asc&q=common", 5).await, ids);
        assert_eq!(ids_walked(&client, "order=desc&q=common", 7).await, newest_first);
        assert_eq!(ids_walked(&client, "order=desc&q=rare+common", 7).await, [ids[13].clone()]);
        assert_eq!(ids_walked(&client, "order=asc&q=words+57", 3).await, ids);
        assert!(ids_walked(&client, "order=asc&q=absent+common", 3).await.is_empty());
    }
}

/// Two owners' conversations, 20 messages each, filled by SQL (through the store it
/// would take minutes): `heavy` n in 0..2,600 with ids (1, n), `other` with ids (2, n).
/// Message text, by owner, conversation n and message m: see the words' comments in the
/// test below.
const SEARCH_FILL: [&str; 2] = [
    "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                                next_sequence, metadata)
     WITH RECURSIVE counter(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM counter WHERE n < 2599)
     SELECT unhex(printf('%016x%016x', o.tag, n)), o.owner, 'conversation ' || n,
            '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 20, 20, '{}'
     FROM counter, (SELECT 1 AS tag, 'heavy' AS owner UNION ALL SELECT 2, 'other') AS o",
    "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text,
                           metadata, created_at)
     WITH RECURSIVE counter(m) AS (SELECT 0 UNION ALL SELECT m + 1 FROM counter WHERE m < 19),
     texts AS (
         SELECT c.id, counter.m,
                'filler everywhere'
                || CASE WHEN c.owner = 'other' OR c.n < 5 OR c.n >= 2595 THEN ' edge' ELSE '' END
                || CASE WHEN counter.m = 0 AND (c.owner = 'other' OR c.n % 100 = 0)
                        THEN ' middling' ELSE '' END
                || CASE WHEN c.owner = 'heavy' AND c.n % 500 = 7 AND counter.m = 3
                        THEN ' seldom' ELSE '' END AS text
         FROM (SELECT id, owner, CAST(substr(title, 14) AS INTEGER) AS n FROM conversations) AS c,
              counter)
     SELECT id, m, 'user', json_object('role', 'user', 'content', text), text, '{}',
            '2026-01-01T00:00:00.000000Z'
     FROM texts",
];

/// SQLite searches pages by id in stages picked by how many messages hold the words
/// (few: matches first; some: a walk probing a set of them for 2,000 conversations, then
/// matches first; many: a walk probing the index for 64 conversations, then the two
/// others). Whichever stages a word takes, the pages hold exactly the owner's
/// conversations that hold it, in id order, each once.
#[tokio::test]
async fn sqlite_search_pages_find_every_match_whichever_way_the_word_count_picks() {
    use tower_conversations::store::{CursorQuery, Order};
    let db = TestDb::sqlite().await;
    let TestPool::Sqlite(pool) = &db.pool else {
        unreachable!()
    };
    for statement in SEARCH_FILL {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    let store = db.store();
    // A search indexes the messages written since the last indexing (the fill) first.
    let any = CursorQuery {
        search: Some("filler".to_owned()),
        ..CursorQuery::default()
    };
    store.list_by_id("heavy", &any).await.unwrap();
    let heavy = |n: u64| Uuid::from_u64_pair(1, n);
    // (word, matching messages of both owners, heavy's conversations holding it)
    let words: [(&str, i64, Vec<u64>); 4] = [
        // In every message: 104,000 matches; the walk probing the index fills each page.
        ("everywhere", 104_000, (0..2600).collect()),
        // In all of `other`'s messages, and heavy's first and last five conversations:
        // 52,200 matches; the walks find one end's five, matches first the other's.
        ("edge", 52_200, (0..5).chain(2595..2600).collect()),
        // In `other`'s first messages and every 100th of heavy's: 2,626 matches; the walk
        // probing a set of them finds 20 within 2,000 conversations, matches first the rest.
        ("middling", 2_626, (0..2600).step_by(100).collect()),
        // Six messages: matches first.
        ("seldom", 6, (7..2600).step_by(500).collect()),
    ];
    for (word, matches, holding) in words {
        let counted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages_search WHERE messages_search MATCH ?1",
        )
        .bind(word)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(counted, matches, "{word}: the fill");
        for (order, limit) in [(Order::Asc, 7), (Order::Desc, 7), (Order::Desc, 100)] {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let query = CursorQuery {
                    after,
                    limit,
                    order,
                    search: Some(word.to_owned()),
                };
                let page = store.list_by_id("heavy", &query).await.unwrap();
                seen.extend(page.conversations.iter().map(|c| c.id));
                after = seen.last().copied();
                if !page.has_more {
                    break;
                }
            }
            let mut expected: Vec<Uuid> = holding.iter().map(|&n| heavy(n)).collect();
            if order == Order::Desc {
                expected.reverse();
            }
            assert_eq!(seen, expected, "{word}, {order:?} by {limit}");
        }
    }
}
