//! Storage (contract section 6), through the store itself: each test runs on SQLite and
//! on PostgreSQL with the same body, then what only SQLite needs.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tower_conversations::store::{
    ConversationDetail, ConversationStore, ConversationUpdate, ListQuery, MessageQuery, Metadata,
    NewConversation, NewMessage, Order, StoreError, TurnStore, TurnTarget,
};
use uuid::Uuid;

use crate::support::db::{Backend, SQLITE_PENDING_SEARCH, TestDb, TestPool};
use crate::support::store::*;

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Messages of every shape the layer stores: content parts, tool calls, tool results,
/// refusals, non-ASCII text, awkward numbers, reasoning, reasoning events, metadata.
fn rich_messages() -> Vec<NewMessage> {
    let question = NewMessage::new(json!({
        "role": "user",
        "name": "zoë",
        "content": [
            {"type": "text", "text": "Wie spät ist es in 東京? 🚀 \"quoted\" \\ back\nslash\ttab"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
        ]
    }));
    let mut call = NewMessage::new(json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [{
            "id": "call_1",
            "type": "function",
            "function": {"name": "clock", "arguments": "{\"city\":\"Tōkyō\"}"}
        }]
    }));
    call.reasoning = Some("The user wants the time; call the clock.".to_owned());
    call.reasoning_events = vec![
        json!({"type": "thinking", "text": "first"}),
        json!({"type": "signature", "value": "c2ln", "index": 1}),
    ];
    call.set_metadata(
        json!({
            "model": "demo-1",
            "id": "chatcmpl-1",
            "finish_reason": "tool_calls",
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            "system_fingerprint": null
        })
        .as_object()
        .unwrap()
        .clone(),
    );
    let result = NewMessage::new(json!({
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "{\"time\": \"09:30\", \"big\": 18446744073709551615, \"neg\": -7, \"half\": 0.5}\u{0}nul"
    }));
    let mut answer = NewMessage::new(json!({
        "role": "assistant",
        "content": "In Tōkyō ist es 09:30. ✅",
        "refusal": null,
        "extra": {"nested": [1, 2.5, -3, true, false, null, "", {}], "max": 18446744073709551615u64}
    }));
    answer.set_metadata(
        json!({"incomplete": true, "error": {"message": "cut"}})
            .as_object()
            .unwrap()
            .clone(),
    );
    vec![question, call, result, answer]
}

/// Every message of `detail` is the one sent in its place, numbered from 0, with what
/// was kept beside it.
fn assert_stored_as_sent(detail: &ConversationDetail, messages: &[NewMessage]) {
    assert_eq!(detail.messages.len(), messages.len());
    for (index, (stored, sent)) in detail.messages.iter().zip(messages).enumerate() {
        assert_eq!(stored.sequence_number, index as i64);
        assert_eq!(stored.message, sent.to_value(), "message {index}");
        assert_eq!(stored.reasoning, sent.reasoning, "reasoning {index}");
        assert_eq!(
            stored.reasoning_events, sent.reasoning_events,
            "events {index}"
        );
        assert_eq!(stored.metadata, sent.metadata(), "metadata {index}");
    }
}

backend_tests! {
    async fn the_first_turn_creates_the_conversation_titled_from_the_first_user_message(db: TestDb) {
        let store = db.store();
        let id = Uuid::now_v7();
        let before = chrono::Utc::now() - chrono::Duration::seconds(5);
        let first = store
            .append_turn("", id, TurnTarget::NewConversation, &turn("  Plan a trip to Lisbon  ", "Sure."))
            .await
            .unwrap();
        assert_eq!(first, 0);

        let detail = store.get("", id).await.unwrap();
        let conversation = detail.conversation;
        assert_eq!(conversation.id, id);
        assert_eq!(conversation.title.as_deref(), Some("Plan a trip to Lisbon"));
        assert_eq!(conversation.message_count, 2);
        assert!(conversation.metadata.is_empty());
        assert!(conversation.created_at >= before);
        assert_eq!(conversation.created_at, conversation.updated_at);
        let sequence: Vec<i64> = detail.messages.iter().map(|m| m.sequence_number).collect();
        assert_eq!(sequence, [0, 1]);
    }

    async fn a_title_is_cut_to_80_characters_on_a_char_boundary(db: TestDb) {
        let store = db.store();
        let long = "ü".repeat(79) + "東京 and more";
        let id = conversation_with(&store, "", &[turn(&long, "ok")]).await;
        let title = store.get("", id).await.unwrap().conversation.title.unwrap();
        assert_eq!(title.chars().count(), 80);
        assert!(title.ends_with('東'));
    }

    async fn get_returns_every_message_exactly_as_stored(db: TestDb) {
        let store = db.store();
        let messages = rich_messages();
        let id = Uuid::now_v7();
        store.append_turn("", id, TurnTarget::NewConversation, &messages).await.unwrap();

        let detail = store.get("", id).await.unwrap();
        assert_stored_as_sent(&detail, &messages);
        for stored in &detail.messages {
            assert_eq!(stored.created_at, detail.conversation.updated_at);
        }
        let history = values(store.load_history("", id, None).await.unwrap());
        let sent: Vec<Value> = messages.iter().map(|m| m.to_value().clone()).collect();
        assert_eq!(history, sent);
    }

    /// Two messages a turn (bound column by column on SQLite) come back as exactly as
    /// four at once: reasoning, events, metadata, NUL and all, and searchable.
    async fn rich_messages_stored_two_a_turn_come_back_exactly_as_sent(db: TestDb) {
        let store = db.store();
        let messages = rich_messages();
        let id = Uuid::now_v7();
        store.append_turn("", id, TurnTarget::NewConversation, &messages[..2]).await.unwrap();
        assert_eq!(store.append_turn("", id, TurnTarget::Existing, &messages[2..]).await.unwrap(), 2);

        assert_stored_as_sent(&store.get("", id).await.unwrap(), &messages);
        for word in ["Tōkyō", "quoted"] {
            assert_eq!(store.list("", &search(word)).await.unwrap().total, 1, "{word}");
        }
    }

    async fn appended_turns_get_contiguous_sequence_numbers(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("one", "1")]).await;
        let created = store.get("", id).await.unwrap().conversation;

        let tool_turn = vec![
            user("two"),
            NewMessage::new(json!({"role": "assistant", "content": null, "tool_calls": []})),
            NewMessage::new(json!({"role": "tool", "tool_call_id": "t", "content": "2"})),
        ];
        assert_eq!(store.append_turn("", id, TurnTarget::Existing, &tool_turn).await.unwrap(), 2);
        assert_eq!(store.append_turn("", id, TurnTarget::Existing, &turn("three", "3")).await.unwrap(), 5);

        let detail = store.get("", id).await.unwrap();
        assert_eq!(detail.conversation.message_count, 7);
        assert!(detail.conversation.updated_at > created.updated_at);
        assert_eq!(detail.conversation.created_at, created.created_at);
        let sequence: Vec<i64> = detail.messages.iter().map(|m| m.sequence_number).collect();
        assert_eq!(sequence, (0..7).collect::<Vec<_>>());
        let contents: Vec<&Value> = detail.messages.iter().map(|m| &m.message["content"]).collect();
        assert_eq!(
            contents,
            [&json!("one"), &json!("1"), &json!("two"), &Value::Null, &json!("2"), &json!("three"), &json!("3")]
        );
    }

    async fn load_history_with_last_returns_the_last_messages_in_order(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0"), turn("q1", "a1"), turn("q2", "a2")]).await;
        let contents = |history: Vec<Value>| -> Vec<String> {
            history.iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(contents(values(store.load_history("", id, Some(3)).await.unwrap())), ["a1", "q2", "a2"]);
        assert_eq!(contents(values(store.load_history("", id, Some(1)).await.unwrap())), ["a2"]);
        assert!(values(store.load_history("", id, Some(0)).await.unwrap()).is_empty());
        assert_eq!(values(store.load_history("", id, Some(100)).await.unwrap()).len(), 6);
        assert_eq!(
            contents(values(store.load_history("", id, None).await.unwrap())),
            ["q0", "a0", "q1", "a1", "q2", "a2"]
        );
    }

    async fn load_history_of_an_empty_conversation_is_empty_and_of_an_unknown_one_not_found(db: TestDb) {
        let store = db.store();
        let empty = store.create("", &NewConversation::default()).await.unwrap();
        assert!(values(store.load_history("", empty.id, None).await.unwrap()).is_empty());
        assert_not_found(store.load_history("", Uuid::now_v7(), None).await, "unknown id");
    }

    async fn create_seeds_a_conversation_with_messages_title_and_metadata(db: TestDb) {
        let store = db.store();
        let seeded = store
            .create("", &NewConversation {
                title: None,
                metadata: metadata(&[("source", "import")]),
                messages: vec![
                    NewMessage::new(json!({"role": "system", "content": "Be brief."})),
                    user("Imported question"),
                    assistant("Imported answer"),
                ],
            })
            .await
            .unwrap();
        assert_eq!(seeded.title.as_deref(), Some("Imported question"));
        assert_eq!(seeded.message_count, 3);
        assert_eq!(seeded.metadata, metadata(&[("source", "import")]));
        assert_eq!(seeded.id.get_version_num(), 7);
        let detail = store.get("", seeded.id).await.unwrap();
        assert_eq!(detail.conversation, seeded);
        assert_eq!(detail.messages[1].message, json!({"role": "user", "content": "Imported question"}));

        let titled = store
            .create("", &NewConversation { title: Some("Mine".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(titled.title.as_deref(), Some("Mine"));
        assert_eq!(titled.message_count, 0);
        assert_eq!(store.append_turn("", titled.id, TurnTarget::Existing, &turn("q", "a")).await.unwrap(), 0);
    }

    async fn list_pages_newest_first_with_the_total(db: TestDb) {
        let store = db.store();
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(conversation_with(&store, "", &[turn(&format!("q{n}"), "a")]).await);
        }
        // A new turn makes the oldest conversation the newest.
        store.append_turn("", ids[0], TurnTarget::Existing, &turn("again", "a")).await.unwrap();
        let newest_first = [ids[0], ids[4], ids[3], ids[2], ids[1]];

        let mut seen = Vec::new();
        for offset in [0, 2, 4] {
            let listed = store.list("", &page(2, offset)).await.unwrap();
            assert_eq!(listed.total, 5);
            seen.extend(listed.conversations.iter().map(|c| c.id));
        }
        assert_eq!(seen, newest_first);

        let all = store.list("", &page(100, 0)).await.unwrap();
        let updated: Vec<_> = all.conversations.iter().map(|c| c.updated_at).collect();
        assert!(updated.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(all.conversations[0].message_count, 4);

        let past_the_end = store.list("", &page(2, 10)).await.unwrap();
        assert!(past_the_end.conversations.is_empty());
        assert_eq!(past_the_end.total, 5);
    }

    async fn search_finds_conversations_whose_messages_hold_every_word(db: TestDb) {
        let store = db.store();
        let fox = conversation_with(&store, "", &[turn("The quick brown fox", "jumps")]).await;
        let silver = conversation_with(&store, "", &[turn("Quick silver", "is mercury")]).await;
        let parts = conversation_with(&store, "", &[vec![NewMessage::new(json!({
            "role": "user",
            "content": [{"type": "text", "text": "brown bread"}, {"type": "image_url", "image_url": {"url": "x"}}]
        }))]])
        .await;
        let umlaut = conversation_with(&store, "", &[turn("Grüße aus 東京", "ok")]).await;
        let refused = conversation_with(&store, "", &[vec![
            NewMessage::new(json!({"role": "user", "content": "tell me"})),
            NewMessage::new(json!({"role": "assistant", "content": null, "refusal": "declined politely"})),
        ]])
        .await;
        let nul = conversation_with(&store, "", &[turn("zero\u{0}byte", "ok")]).await;

        let found = |words: &'static str| {
            let store = store.clone();
            async move {
                let listed = store.list("", &search(words)).await.unwrap();
                assert_eq!(listed.total as usize, listed.conversations.len(), "{words}");
                listed.conversations.iter().map(|c| c.id).collect::<BTreeSet<_>>()
            }
        };
        assert_eq!(found("quick").await, BTreeSet::from([fox, silver]));
        assert_eq!(found("QUICK Brown").await, BTreeSet::from([fox]));
        assert_eq!(found("brown").await, BTreeSet::from([fox, parts]));
        assert_eq!(found("mercury").await, BTreeSet::from([silver]));
        assert_eq!(found("grüße").await, BTreeSet::from([umlaut]));
        assert_eq!(found("declined").await, BTreeSet::from([refused]));
        assert_eq!(found("zero").await, BTreeSet::from([nul]));
        assert_eq!(found("byte").await, BTreeSet::from([nul]));
        assert_eq!(found("quick missing").await, BTreeSet::new());
        assert_eq!(found("image_url").await, BTreeSet::new());
        assert_eq!(found("   ").await, BTreeSet::new());

        let paged = store.list("", &ListQuery { limit: 1, offset: 1, search: Some("quick".into()) }).await.unwrap();
        assert_eq!(paged.total, 2);
        assert_eq!(paged.conversations.iter().map(|c| c.id).collect::<Vec<_>>(), [fox]);
    }

    async fn search_treats_query_syntax_and_sql_metacharacters_as_text(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("Fine or good: it's 100% foo_bar", "ok")]).await;
        let cases = [
            ("fine", true),
            ("FINE good", true),
            ("fine OR nothing", false),
            ("fine AND NOT good", false),
            ("NEAR(fine good)", false),
            ("fin*", false),
            ("fin:*", false),
            ("content_text:fine", false),
            ("f%e", false),
            ("%", false),
            ("_", false),
            ("'", false),
            ("\"", false),
            ("*", false),
            (":", false),
            ("100%", true),
            ("it's", true),
            ("\"fine\"", true),
            ("foo_bar", true),
            ("good -fine", true),
            ("^fine", true),
            ("fine & !good", true),
            ("'; DROP TABLE conversations; --", false),
            ("\"); DELETE FROM messages; --", false),
        ];
        for (words, matches) in cases {
            let listed = store
                .list("", &search(words))
                .await
                .unwrap_or_else(|e| panic!("search {words:?} failed: {e:?}"));
            let ids: Vec<Uuid> = listed.conversations.iter().map(|c| c.id).collect();
            let expected = if matches { vec![id] } else { vec![] };
            assert_eq!(ids, expected, "search {words:?}");
            assert_eq!(listed.total, expected.len() as u64, "total for {words:?}");
        }
        assert_eq!(store.get("", id).await.unwrap().messages.len(), 2);
    }

    async fn update_renames_and_replaces_the_metadata(db: TestDb) {
        let store = db.store();
        let created = store
            .create("", &NewConversation {
                title: Some("Old".into()),
                metadata: metadata(&[("a", "1"), ("b", "2")]),
                messages: turn("q", "a"),
            })
            .await
            .unwrap();

        let renamed = store
            .update("", created.id, &ConversationUpdate { title: Some("New title".into()), metadata: None })
            .await
            .unwrap();
        assert_eq!(renamed.title.as_deref(), Some("New title"));
        assert_eq!(renamed.metadata, created.metadata);
        assert_eq!(renamed.message_count, 2);
        assert!(renamed.updated_at > created.updated_at);

        let replaced = store
            .update("", created.id, &ConversationUpdate { title: None, metadata: Some(metadata(&[("c", "ç ✓")])) })
            .await
            .unwrap();
        assert_eq!(replaced.title.as_deref(), Some("New title"));
        assert_eq!(replaced.metadata, metadata(&[("c", "ç ✓")]));
        assert!(replaced.updated_at > renamed.updated_at);
        assert_eq!(store.get("", created.id).await.unwrap().conversation, replaced);

        let cleared = store
            .update("", created.id, &ConversationUpdate { title: None, metadata: Some(Metadata::new()) })
            .await
            .unwrap();
        assert!(cleared.metadata.is_empty());
    }

    async fn delete_removes_the_conversation_and_its_messages(db: TestDb) {
        let store = db.store();
        let doomed = conversation_with(&store, "", &[turn("doomed words", "a"), turn("q", "a")]).await;
        let kept = conversation_with(&store, "", &[turn("kept words", "a")]).await;
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 6);

        store.delete("", doomed).await.unwrap();
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
        assert_not_found(store.get("", doomed).await, "get after delete");
        assert_not_found(store.delete("", doomed).await, "second delete");
        assert_eq!(store.list("", &search("doomed")).await.unwrap().total, 0);
        assert_eq!(store.list("", &search("words")).await.unwrap().conversations[0].id, kept);
        if db.backend == Backend::Sqlite {
            db.check_search_index().await;
        }
    }

    async fn deletes_cascaded_from_conversations_keep_the_search_index_right(db: TestDb) {
        let store = db.store();
        conversation_with(&store, "", &[turn("cascade words", "a")]).await;
        // A delete outside the store. SQLite cascades it to the messages; PostgreSQL has
        // no foreign key to cascade it (a turn would pay its check per message), so the
        // messages stay, out of reach: every read and search goes through the
        // conversation row.
        db.execute("DELETE FROM conversations").await;
        let left = if db.backend == Backend::Sqlite { 0 } else { 2 };
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, left);
        assert_eq!(store.list("", &search("cascade")).await.unwrap().total, 0);
        if db.backend == Backend::Sqlite {
            db.check_search_index().await;
            assert_eq!(
                db.scalar("SELECT count(*) FROM messages_search WHERE messages_search MATCH 'cascade'").await,
                0
            );
        }
    }

    async fn fork_copies_messages_up_to_n_into_a_new_conversation(db: TestDb) {
        let store = db.store();
        let source = store
            .create("", &NewConversation {
                title: None,
                metadata: metadata(&[("k", "v")]),
                messages: rich_messages(),
            })
            .await
            .unwrap();
        store.append_turn("", source.id, TurnTarget::Existing, &turn("later", "later")).await.unwrap();

        let fork = store.fork("", source.id, 2).await.unwrap();
        assert_ne!(fork.id, source.id);
        assert_eq!(fork.id.get_version_num(), 7);
        assert_eq!(fork.message_count, 3);
        assert_eq!(fork.title, source.title);
        assert_eq!(fork.metadata, source.metadata);

        let original = store.get("", source.id).await.unwrap();
        let copied = store.get("", fork.id).await.unwrap();
        assert_eq!(copied.conversation, fork);
        assert_eq!(copied.messages.len(), 3);
        for (copy, kept) in copied.messages.iter().zip(&original.messages) {
            assert_eq!(copy.sequence_number, kept.sequence_number);
            assert_eq!(copy.message, kept.message);
            assert_eq!(copy.reasoning, kept.reasoning);
            assert_eq!(copy.reasoning_events, kept.reasoning_events);
            assert_eq!(copy.metadata, kept.metadata);
        }
        assert_eq!(original.conversation.message_count, 6);
        assert_eq!(original.messages.len(), 6);

        assert_eq!(store.append_turn("", fork.id, TurnTarget::Existing, &turn("branch", "b")).await.unwrap(), 3);
        assert_eq!(store.get("", source.id).await.unwrap().messages.len(), 6);
        assert_eq!(store.list("", &search("branch")).await.unwrap().conversations[0].id, fork.id);
    }

    async fn fork_past_the_end_is_out_of_range(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q", "a")]).await;
        for at in [2, 3, -1, i64::MAX, i64::MIN] {
            let result = store.fork("", id, at).await;
            assert!(matches!(result, Err(StoreError::OutOfRange)), "at {at}: {result:?}");
        }
        assert_eq!(store.fork("", id, 1).await.unwrap().message_count, 2);
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 2);
        let empty = store.create("", &NewConversation::default()).await.unwrap();
        assert!(matches!(store.fork("", empty.id, 0).await, Err(StoreError::OutOfRange)));
    }

    async fn truncated_numbers_are_never_handed_out_again(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0"), turn("q1", "a1"), turn("q2 gone", "a2")]).await;
        let before = store.get("", id).await.unwrap().conversation;

        assert_eq!(store.truncate("", id, 2).await.unwrap(), 4);
        let truncated = store.get("", id).await.unwrap();
        assert_eq!(truncated.conversation.message_count, 2, "the count is the rows left");
        assert_eq!(truncated.messages.len(), 2);
        assert!(truncated.conversation.updated_at > before.updated_at);
        assert_eq!(store.list("", &search("gone")).await.unwrap().total, 0);

        let first = store.append_turn("", id, TurnTarget::Existing, &turn("q1 again", "a1 again")).await.unwrap();
        assert_eq!(first, 6, "the next turn starts past every number handed out");
        let detail = store.get("", id).await.unwrap();
        assert_eq!(sequence_numbers(&detail.messages), [0, 1, 6, 7]);
        assert_eq!(detail.messages[2].message["content"], "q1 again");
        assert_eq!(detail.conversation.message_count, 4);

        for past_the_end in [8, 99] {
            assert_eq!(store.truncate("", id, past_the_end).await.unwrap(), 0);
        }
        let untouched = store.get("", id).await.unwrap().conversation;
        assert_eq!(untouched.message_count, 4);
        assert_eq!(untouched.updated_at, detail.conversation.updated_at, "cutting nothing changes nothing");
        assert!(matches!(store.truncate("", id, -1).await, Err(StoreError::OutOfRange)));
        assert_eq!(store.truncate("", id, 3).await.unwrap(), 2, "a cut inside a gap drops what lies above it");
        assert_eq!(store.truncate("", id, 0).await.unwrap(), 2);
        assert_eq!(store.get("", id).await.unwrap().conversation.message_count, 0);
        assert_eq!(store.append_turn("", id, TurnTarget::Existing, &turn("fresh", "start")).await.unwrap(), 8);
        if db.backend == Backend::Sqlite {
            db.check_search_index().await;
        }
    }

    async fn the_history_window_counts_messages_not_numbers(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0"), turn("q1", "a1"), turn("q2", "a2")]).await;
        store.truncate("", id, 2).await.unwrap();
        store.append_turn("", id, TurnTarget::Existing, &turn("q3", "a3")).await.unwrap();
        let contents = |history: Vec<Value>| -> Vec<String> {
            history.iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(contents(values(store.load_history("", id, Some(3)).await.unwrap())), ["a0", "q3", "a3"]);
        assert_eq!(contents(values(store.load_history("", id, Some(4)).await.unwrap())), ["q0", "a0", "q3", "a3"]);
        assert_eq!(values(store.load_history("", id, Some(5)).await.unwrap()).len(), 4);
        assert!(values(store.load_history("", id, Some(0)).await.unwrap()).is_empty());
        assert_eq!(values(store.load_history("", id, None).await.unwrap()).len(), 4);
    }

    async fn a_fork_after_a_truncation_copies_the_messages_up_to_its_point(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0"), turn("q1", "a1")]).await;
        store.truncate("", id, 2).await.unwrap();
        store.append_turn("", id, TurnTarget::Existing, &turn("q2", "a2")).await.unwrap();

        let at_a_message = store.fork("", id, 4).await.unwrap();
        assert_eq!(at_a_message.message_count, 3);
        assert_eq!(sequence_numbers(&store.get("", at_a_message.id).await.unwrap().messages), [0, 1, 4]);
        let next = store.append_turn("", at_a_message.id, TurnTarget::Existing, &turn("q", "a")).await.unwrap();
        assert_eq!(next, 5, "the fork goes on after its point");

        let in_the_gap = store.fork("", id, 3).await.unwrap();
        assert_eq!(in_the_gap.message_count, 2);
        let next = store.append_turn("", in_the_gap.id, TurnTarget::Existing, &turn("q", "a")).await.unwrap();
        assert_eq!(next, 4);

        for past_the_last in [6, 100] {
            assert!(matches!(store.fork("", id, past_the_last).await, Err(StoreError::OutOfRange)));
        }
    }

    async fn messages_page_by_sequence_number_cursor(db: TestDb) {
        let store = db.store();
        let seeded = store
            .create("", &NewConversation {
                messages: (0..5).map(|n| user(&format!("m{n}"))).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        let sequences = |after: Option<i64>, limit: u32, order: Order| {
            let store = store.clone();
            async move {
                let page = store.messages("", seeded.id, &MessageQuery { after, limit, order }).await.unwrap();
                let sequence: Vec<i64> = page.messages.iter().map(|m| m.sequence_number).collect();
                (sequence, page.has_more)
            }
        };
        assert_eq!(sequences(None, 2, Order::Asc).await, (vec![0, 1], true));
        assert_eq!(sequences(Some(1), 2, Order::Asc).await, (vec![2, 3], true));
        assert_eq!(sequences(Some(3), 2, Order::Asc).await, (vec![4], false));
        assert_eq!(sequences(Some(2), 2, Order::Asc).await, (vec![3, 4], false));
        assert_eq!(sequences(Some(4), 2, Order::Asc).await, (vec![], false));
        assert_eq!(sequences(None, 2, Order::Desc).await, (vec![4, 3], true));
        assert_eq!(sequences(Some(3), 2, Order::Desc).await, (vec![2, 1], true));
        assert_eq!(sequences(Some(1), 2, Order::Desc).await, (vec![0], false));
        assert_eq!(sequences(Some(0), 2, Order::Desc).await, (vec![], false));
        assert_eq!(sequences(None, 100, Order::Asc).await, (vec![0, 1, 2, 3, 4], false));

        let page = store
            .messages("", seeded.id, &MessageQuery { after: Some(0), limit: 1, order: Order::Asc })
            .await
            .unwrap();
        assert_eq!(page.messages[0].message, json!({"role": "user", "content": "m1"}));

        let empty = store.create("", &NewConversation::default()).await.unwrap();
        let none = store.messages("", empty.id, &MessageQuery { after: None, limit: 10, order: Order::Asc }).await.unwrap();
        assert!(none.messages.is_empty() && !none.has_more);
        assert_not_found(
            store.messages("", Uuid::now_v7(), &MessageQuery { after: None, limit: 10, order: Order::Asc }).await,
            "unknown id",
        );
    }

    async fn appending_to_an_unknown_conversation_is_not_found_and_stores_nothing(db: TestDb) {
        let store = db.store();
        assert_not_found(
            store.append_turn("", Uuid::now_v7(), TurnTarget::Existing, &turn("q", "a")).await,
            "append to unknown id",
        );
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 0);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 0);
    }

    async fn creating_an_existing_id_again_fails_and_changes_nothing(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("first", "a")]).await;
        let result = store.append_turn("", id, TurnTarget::NewConversation, &turn("second", "b")).await;
        assert!(matches!(result, Err(StoreError::Query(_))), "{result:?}");
        let detail = store.get("", id).await.unwrap();
        assert_eq!(detail.conversation.message_count, 2);
        assert_eq!(detail.messages[0].message["content"], "first");
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    }

    async fn concurrent_turns_on_one_conversation_never_collide(db: TestDb) {
        // Enough connections that all 32 turns really run at once on PostgreSQL.
        let store = db.store_with_connections(32).await;
        let id = store.create("", &NewConversation::default()).await.unwrap().id;
        let start = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|n| {
                let store = store.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    store
                        .append_turn("", id, TurnTarget::Existing, &turn(&format!("q{n}"), &format!("a{n}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut firsts = BTreeSet::new();
        for task in tasks {
            firsts.insert(task.await.unwrap());
        }
        assert_eq!(firsts, (0..32).map(|n| n * 2).collect::<BTreeSet<i64>>());

        let detail = store.get("", id).await.unwrap();
        assert_eq!(detail.conversation.message_count, 64);
        let sequence: Vec<i64> = detail.messages.iter().map(|m| m.sequence_number).collect();
        assert_eq!(sequence, (0..64).collect::<Vec<_>>());
        let mut turns = BTreeSet::new();
        for pair in detail.messages.chunks(2) {
            let question = pair[0].message["content"].as_str().unwrap();
            let answer = pair[1].message["content"].as_str().unwrap();
            let n = question.strip_prefix('q').unwrap();
            assert_eq!(answer, format!("a{n}"), "turn q{n} is not contiguous");
            turns.insert(n.to_owned());
        }
        assert_eq!(turns.len(), 32);
    }

    async fn a_conversation_deleted_while_turns_land_leaves_no_message_behind(db: TestDb) {
        // Each round: 8 turns and a delete of the same conversation, all at once. Every
        // turn either lands before the delete (and goes with it) or finds no
        // conversation; none may leave messages whose conversation is gone.
        let store = db.store_with_connections(9).await;
        for _ in 0..30 {
            let id = conversation_with(&store, "", &[turn("q", "a")]).await;
            let start = Arc::new(tokio::sync::Barrier::new(9));
            let turns: Vec<_> = (0..8)
                .map(|n| {
                    let store = store.clone();
                    let start = start.clone();
                    tokio::spawn(async move {
                        start.wait().await;
                        store
                            .append_turn("", id, TurnTarget::Existing, &turn(&format!("q{n}"), "a"))
                            .await
                    })
                })
                .collect();
            start.wait().await;
            store.delete("", id).await.unwrap();
            for task in turns {
                match task.await.unwrap() {
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(other) => panic!("a turn racing a delete failed otherwise: {other:?}"),
                }
            }
        }
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 0);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 0, "messages outlived their conversation");
    }

    async fn a_row_that_cannot_be_decoded_is_corrupt_not_a_panic(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q", "a")]).await;
        // Metadata values must be strings; a number is valid JSON that cannot be read back.
        db.execute("UPDATE conversations SET metadata = '{\"k\": 1}'").await;
        let result = store.get("", id).await;
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        assert!(matches!(store.list("", &page(10, 0)).await, Err(StoreError::Corrupt(_))));
        assert_eq!(values(store.load_history("", id, None).await.unwrap()).len(), 2);
    }

    async fn a_stored_message_that_is_not_one_json_object_is_corrupt_not_spliced(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q", "a")]).await;
        // JSON that either column type takes, but not a message: nothing to splice.
        db.change_messages("UPDATE messages SET message = '[\"q\"]' WHERE sequence_number = 0").await;
        let result = store.load_history("", id, None).await;
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        // Whitespace around an object is still the object, spliced without it.
        db.change_messages("UPDATE messages SET message = ' {\"role\":\"user\",\"content\":\"q\"} ' WHERE sequence_number = 0").await;
        let history = store.load_history("", id, None).await.unwrap();
        assert_eq!(history[0].json(), r#"{"role":"user","content":"q"}"#);
        if matches!(db.pool, TestPool::Sqlite(_)) {
            // SQLite keeps any text: a message cut short is not spliced either.
            db.change_messages("UPDATE messages SET message = '{\"role\":\"user\"' WHERE sequence_number = 0").await;
            let result = store.load_history("", id, None).await;
            assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
            // Roles come back joined by NUL, which the store never writes into one: a
            // role that holds it anyway puts the roles out of step, and nothing is
            // spliced under the wrong role.
            db.change_messages("UPDATE messages SET message = '{\"role\":\"user\"}', role = 'us' || char(0) || 'er' WHERE sequence_number = 0").await;
            let result = store.load_history("", id, None).await;
            assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
            // Messages come back joined by NUL, which no JSON text holds: a text that
            // holds it anyway is not cut into two messages.
            db.change_messages("UPDATE messages SET message = '{\"role\":\"user\"}' || char(0) || '{}', role = 'user' WHERE sequence_number = 0").await;
            let result = store.load_history("", id, None).await;
            assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        }
    }

    async fn a_history_read_sees_what_another_connection_wrote_since_the_last_turn(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q", "a")]).await;
        assert_eq!(values(store.load_history("", id, None).await.unwrap())[0]["content"], "q");
        // Not through the store: on SQLite, another connection than the one the store's
        // writes (and, between them, its history reads) go through.
        db.change_messages("UPDATE messages SET message = '{\"role\":\"user\",\"content\":\"edited\"}' WHERE sequence_number = 0").await;
        let history = values(store.load_history("", id, None).await.unwrap());
        assert_eq!(history[0]["content"], "edited");
        assert_eq!(history.len(), 2);
    }

    async fn a_history_extended_by_this_store_s_own_turn_sees_a_later_commit_of_another_connection(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0")]).await;
        store.load_history("", id, None).await.unwrap();
        // Held, then extended by a turn this store wrote: on SQLite nothing else was
        // committed to the file since, and the history is spliced without a read.
        store.append_turn("", id, TurnTarget::Existing, &turn("q1", "a1")).await.unwrap();
        assert_eq!(values(store.load_history("", id, None).await.unwrap()).len(), 4);
        // Until another connection commits.
        db.change_messages("UPDATE messages SET message = '{\"role\":\"user\",\"content\":\"edited\"}' WHERE sequence_number = 2").await;
        let history = values(store.load_history("", id, None).await.unwrap());
        assert_eq!(history.len(), 4);
        assert_eq!(history[2]["content"], "edited");
        // And the same after a turn of another conversation this store wrote since.
        store.append_turn("", id, TurnTarget::Existing, &turn("q2", "a2")).await.unwrap();
        conversation_with(&store, "", &[turn("x", "y")]).await;
        db.change_messages("UPDATE messages SET message = '{\"role\":\"user\",\"content\":\"again\"}' WHERE sequence_number = 4").await;
        let history = values(store.load_history("", id, None).await.unwrap());
        assert_eq!(history.len(), 6);
        assert_eq!(history[4]["content"], "again");
    }

    async fn histories_held_through_concurrent_turns_are_what_a_fresh_read_gives(db: TestDb) {
        let store = db.store();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = conversation_with(&store, "", &[turn("q", "a")]).await;
            store.load_history("", id, None).await.unwrap();
            ids.push(id);
        }
        // Turns that wait together are written as one batch on SQLite, two of one
        // conversation among them, and each extends (or drops) what the store holds.
        for round in 0..4 {
            let tasks: Vec<_> = ids
                .iter()
                .flat_map(|&id| [id, id])
                .enumerate()
                .map(|(n, id)| {
                    let store = store.clone();
                    let messages = turn(&format!("q{round}.{n}"), &format!("a{round}.{n}"));
                    tokio::spawn(async move { store.append_turn("", id, TurnTarget::Existing, &messages).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let fresh = db.store_with_connections(1).await;
            for &id in &ids {
                let held = store.load_history("", id, None).await.unwrap();
                assert_eq!(held.len(), 2 + 4 * (round + 1));
                assert_eq!(held, fresh.load_history("", id, None).await.unwrap());
            }
        }
    }

    async fn a_history_held_in_process_is_what_a_fresh_read_gives(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0")]).await;
        // Read (and so held) once, then extended by each turn this store writes.
        store.load_history("", id, None).await.unwrap();
        let odd = [
            user("tab\t quote\" backslash\\ nul\u{0} emoji 🦀 \u{2028}"),
            NewMessage::new(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": [1, 2.50, 1e3]}"}}
            ]})),
            NewMessage::new(json!({"role": "tool", "tool_call_id": "c1", "content": "é"})),
            NewMessage::new(json!({"role": "custom\u{0}role", "content": "x"})),
        ];
        for messages in [&odd[..], &rich_messages()[..], &turn("q2", "a2")[..]] {
            store.append_turn("", id, TurnTarget::Existing, messages).await.unwrap();
            let held = store.load_history("", id, None).await.unwrap();
            let fresh = db.store_with_connections(1).await.load_history("", id, None).await.unwrap();
            assert_eq!(held, fresh);
        }
        let windowed = store.load_history("", id, Some(3)).await.unwrap();
        let all = store.load_history("", id, None).await.unwrap();
        assert_eq!(windowed, all[all.len() - 3..]);
    }

    async fn a_history_is_read_whole_after_another_instance_wrote_a_turn(db: TestDb) {
        let (here, there) = (db.store(), db.store_with_connections(2).await);
        let id = conversation_with(&here, "", &[turn("q0", "a0")]).await;
        assert_eq!(here.load_history("", id, None).await.unwrap().len(), 2);
        there.append_turn("", id, TurnTarget::Existing, &turn("q1", "a1")).await.unwrap();
        let history = values(here.load_history("", id, None).await.unwrap());
        assert_eq!(history.len(), 4);
        assert_eq!(history[2]["content"], "q1");
        // Another turn elsewhere between this store's read and its own turn: what it held
        // is not extended with its turn, but read again.
        there.append_turn("", id, TurnTarget::Existing, &turn("q2", "a2")).await.unwrap();
        here.append_turn("", id, TurnTarget::Existing, &turn("q3", "a3")).await.unwrap();
        let contents: Vec<Value> = values(here.load_history("", id, None).await.unwrap())
            .iter()
            .map(|m| m["content"].clone())
            .collect();
        assert_eq!(contents, ["q0", "a0", "q1", "a1", "q2", "a2", "q3", "a3"]);
    }

    async fn a_truncation_is_seen_by_the_next_history_read(db: TestDb) {
        let (here, there) = (db.store(), db.store_with_connections(2).await);
        let id = conversation_with(&here, "", &[turn("q0", "a0"), turn("q1", "a1"), turn("q2", "a2")]).await;
        assert_eq!(here.load_history("", id, None).await.unwrap().len(), 6);
        assert_eq!(there.truncate("", id, 4).await.unwrap(), 2);
        assert_eq!(here.load_history("", id, None).await.unwrap().len(), 4);
        // Through the same store, and again down to the same count with a new turn after:
        // the revision still tells the histories apart.
        here.append_turn("", id, TurnTarget::Existing, &turn("q3", "a3")).await.unwrap();
        assert_eq!(here.load_history("", id, None).await.unwrap().len(), 6);
        assert_eq!(here.truncate("", id, 6).await.unwrap(), 2);
        let history = values(here.load_history("", id, None).await.unwrap());
        assert_eq!(history.len(), 4);
        assert_eq!(history[3]["content"], "a1");
    }

    async fn an_item_delete_that_only_rewrites_a_message_is_seen_by_the_next_history_read(db: TestDb) {
        let (here, there) = (db.store(), db.store_with_connections(2).await);
        let calls = NewMessage::new(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        ]}));
        let id = conversation_with(&here, "", &[vec![user("time and weather?"), calls]]).await;
        assert_eq!(values(here.load_history("", id, None).await.unwrap())[1]["tool_calls"].as_array().map(Vec::len), Some(2));
        // Neither call has an output: the delete rewrites the one message, and the count
        // and the next sequence number stay as they were.
        let after = there.delete_item("", id, "fc_1_0".parse().unwrap()).await.unwrap();
        assert_eq!(after.message_count, 2);
        let history = values(here.load_history("", id, None).await.unwrap());
        assert_eq!(history[1]["tool_calls"].as_array().map(Vec::len), Some(1));
        assert_eq!(history[1]["tool_calls"][0]["id"], "c2");
    }

    async fn a_truncation_by_an_instance_that_knows_no_revision_is_seen_by_the_next_turn(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0")]).await;
        assert_eq!(store.load_history("", id, None).await.unwrap().len(), 2);
        // As an earlier version truncates: the count moves, the revision does not.
        db.execute("DELETE FROM messages WHERE sequence_number = 1").await;
        db.execute("UPDATE conversations SET message_count = 1").await;
        assert_eq!(store.load_history("", id, None).await.unwrap().len(), 1);
        // And between this store's read and its turn: what it held is not extended.
        store.load_history("", id, None).await.unwrap();
        db.execute("DELETE FROM messages WHERE sequence_number = 0").await;
        db.execute("UPDATE conversations SET message_count = 0").await;
        store.append_turn("", id, TurnTarget::Existing, &turn("q1", "a1")).await.unwrap();
        let contents: Vec<Value> = values(store.load_history("", id, None).await.unwrap())
            .iter()
            .map(|m| m["content"].clone())
            .collect();
        assert_eq!(contents, ["q1", "a1"]);
    }

    async fn a_store_that_keeps_no_histories_sees_a_change_by_hand_at_once(db: TestDb) {
        let store = db.store();
        store.set_history_cache_limit(0);
        let id = conversation_with(&store, "", &[turn("q0", "a0"), turn("q1", "a1")]).await;
        assert_eq!(store.load_history("", id, None).await.unwrap().len(), 4);
        // By hand, and without moving the revision: only a history held would hide it.
        db.execute("UPDATE messages SET message = '{\"role\":\"user\",\"content\":\"edited\"}' WHERE sequence_number = 2").await;
        let history = values(store.load_history("", id, None).await.unwrap());
        assert_eq!(history[2]["content"], "edited");
        // The same store keeping histories again holds it from its next read on.
        store.set_history_cache_limit(1 << 20);
        store.load_history("", id, None).await.unwrap();
        db.execute("UPDATE messages SET message = '{\"role\":\"user\",\"content\":\"hidden\"}' WHERE sequence_number = 2").await;
        let held = values(store.load_history("", id, None).await.unwrap());
        assert_eq!(held[2]["content"], "edited", "a change by hand that does not move the revision");
    }

    async fn a_conversation_deleted_elsewhere_is_not_found_by_the_next_history_read(db: TestDb) {
        let (here, there) = (db.store(), db.store_with_connections(2).await);
        let id = conversation_with(&here, "", &[turn("q0", "a0")]).await;
        assert_eq!(here.load_history("", id, None).await.unwrap().len(), 2);
        there.delete("", id).await.unwrap();
        assert_not_found(here.load_history("", id, None).await, "a deleted conversation's history");
        assert_not_found(here.load_history("other", id, None).await, "another owner's");
    }

    async fn a_history_read_cut_off_leaves_the_next_turn_and_read_whole(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q0", "a0")]).await;
        for n in 1..=5 {
            // Polled once and dropped, its statement perhaps already on its way to the
            // connection; the turn that follows needs the same connection on SQLite.
            let read = store.load_history("", id, None);
            let _ = tokio::time::timeout(std::time::Duration::ZERO, read).await;
            let question = format!("q{n}");
            store
                .append_turn("", id, TurnTarget::Existing, &turn(&question, "a"))
                .await
                .unwrap();
            let history = values(store.load_history("", id, None).await.unwrap());
            assert_eq!(history.len(), 2 * (n + 1));
            assert_eq!(history[2 * n]["content"], question.as_str());
        }
    }

    async fn migrating_again_is_harmless(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "", &[turn("q", "a")]).await;
        store.migrate().await.unwrap();
        tower_conversations::migrate(&store).await.unwrap();
        assert_eq!(values(store.load_history("", id, None).await.unwrap()).len(), 2);
    }
}

/// Conversations stored before sequence numbers got a counter of their own: after the
/// migration every row is still there, and each conversation goes on past its highest
/// number (the old schema numbered densely, but the backfill relies on the rows alone).
async fn the_counter_migration_continues_every_conversation_past_its_rows(
    db: TestDb,
    before_counter: i64,
) {
    // The store's own migrations table, so that `migrate` later runs only the rest.
    let table = "_tower_conversations_migrations";
    match &db.pool {
        TestPool::Sqlite(pool) => {
            let mut migrator = sqlx::migrate!("migrations/sqlite");
            migrator.dangerous_set_table_name(table);
            migrator.run_to(before_counter, pool).await
        }
        TestPool::Postgres(pool) => {
            let mut migrator = sqlx::migrate!("migrations/postgres");
            migrator.dangerous_set_table_name(table);
            migrator.run_to(before_counter, pool).await
        }
    }
    .expect("the migrations before the counter");
    match db.backend {
        Backend::Sqlite => {
            db.execute(
                "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count, metadata) VALUES
                 (X'018f0000000070008000000000000001', '', NULL, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z', 3, '{}'),
                 (X'018f0000000070008000000000000002', '', NULL, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z', 0, '{}'),
                 (X'018f0000000070008000000000000003', '', NULL, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z', 2, '{}')",
            )
            .await;
            db.execute(
                "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text, metadata, created_at) VALUES
                 (X'018f0000000070008000000000000001', 0, 'user', '{\"role\":\"user\",\"content\":\"m0\"}', 'm0', '{}', '2024-01-01T00:00:00.000000Z'),
                 (X'018f0000000070008000000000000001', 1, 'assistant', '{\"role\":\"assistant\",\"content\":\"m1\"}', 'm1', '{}', '2024-01-01T00:00:00.000000Z'),
                 (X'018f0000000070008000000000000001', 2, 'user', '{\"role\":\"user\",\"content\":\"m2\"}', 'm2', '{}', '2024-01-01T00:00:00.000000Z'),
                 (X'018f0000000070008000000000000003', 0, 'user', '{\"role\":\"user\",\"content\":\"g0\"}', 'g0', '{}', '2024-01-01T00:00:00.000000Z'),
                 (X'018f0000000070008000000000000003', 4, 'user', '{\"role\":\"user\",\"content\":\"g4\"}', 'g4', '{}', '2024-01-01T00:00:00.000000Z')",
            )
            .await;
        }
        Backend::Postgres => {
            db.execute(
                "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count, metadata) VALUES
                 ('018f0000-0000-7000-8000-000000000001', '', NULL, now(), now(), 3, '{}'),
                 ('018f0000-0000-7000-8000-000000000002', '', NULL, now(), now(), 0, '{}'),
                 ('018f0000-0000-7000-8000-000000000003', '', NULL, now(), now(), 2, '{}')",
            )
            .await;
            db.execute(
                "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text, metadata, created_at) VALUES
                 ('018f0000-0000-7000-8000-000000000001', 0, 'user', '{\"role\":\"user\",\"content\":\"m0\"}', 'm0', '{}', now()),
                 ('018f0000-0000-7000-8000-000000000001', 1, 'assistant', '{\"role\":\"assistant\",\"content\":\"m1\"}', 'm1', '{}', now()),
                 ('018f0000-0000-7000-8000-000000000001', 2, 'user', '{\"role\":\"user\",\"content\":\"m2\"}', 'm2', '{}', now()),
                 ('018f0000-0000-7000-8000-000000000003', 0, 'user', '{\"role\":\"user\",\"content\":\"g0\"}', 'g0', '{}', now()),
                 ('018f0000-0000-7000-8000-000000000003', 4, 'user', '{\"role\":\"user\",\"content\":\"g4\"}', 'g4', '{}', now())",
            )
            .await;
        }
    }
    let ids = [
        "018f0000-0000-7000-8000-000000000001",
        "018f0000-0000-7000-8000-000000000002",
        "018f0000-0000-7000-8000-000000000003",
    ]
    .map(|id| Uuid::parse_str(id).unwrap());
    let store = db.store();
    store.migrate().await.expect("the counter migration");

    assert_eq!(
        db.scalar("SELECT count(*) FROM messages").await,
        5,
        "no row lost"
    );
    let seeded_detail = store.get("", ids[0]).await.unwrap();
    assert_eq!(sequence_numbers(&seeded_detail.messages), [0, 1, 2]);
    assert_eq!(seeded_detail.conversation.message_count, 3);
    assert_eq!(
        store
            .get("", ids[2])
            .await
            .unwrap()
            .conversation
            .message_count,
        2
    );
    let next = |id| {
        let store = store.clone();
        async move {
            store
                .append_turn("", id, TurnTarget::Existing, &turn("q", "a"))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        (next(ids[0]).await, next(ids[1]).await, next(ids[2]).await),
        (3, 0, 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_migration_continues_every_conversation_past_its_rows_on_sqlite() {
    let db = TestDb::sqlite_unmigrated().await;
    // 0001 write-ahead log, 0002 the tables.
    the_counter_migration_continues_every_conversation_past_its_rows(db, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_migration_continues_every_conversation_past_its_rows_on_postgres() {
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    // 0001 the tables; later migrations run after the rows are in.
    the_counter_migration_continues_every_conversation_past_its_rows(db, 1).await;
}

/// SQLite turns foreign keys on per connection, and the caller's pool may turn them off:
/// deleting and truncating must not rely on `ON DELETE CASCADE`.
#[tokio::test]
async fn sqlite_delete_and_truncate_do_not_rely_on_foreign_keys() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let db = TestDb::sqlite().await;
    let options: SqliteConnectOptions = db.url.parse().unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.foreign_keys(false))
        .await
        .unwrap();
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(foreign_keys, 0);
    let store: Arc<dyn ConversationStore> = Arc::new(pool);

    let deleted = conversation_with(&store, "", &[turn("delete me", "a")]).await;
    let truncated = conversation_with(&store, "", &[turn("keep", "a"), turn("cut", "b")]).await;
    store.delete("", deleted).await.unwrap();
    assert_eq!(store.truncate("", truncated, 2).await.unwrap(), 2);
    assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    assert_eq!(store.list("", &search("delete")).await.unwrap().total, 0);
    assert_eq!(store.list("", &search("cut")).await.unwrap().total, 0);
    db.check_search_index().await;
}

/// A SQLite pool on a migrated test database that counts the connections given back to
/// it (sqlx runs `after_release` for each) and, as the example proxy's, does not test
/// each connection it hands out.
async fn sqlite_counted_pool() -> (
    TestDb,
    sqlx::SqlitePool,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let db = TestDb::sqlite().await;
    let options: SqliteConnectOptions = db.url.parse().unwrap();
    let released = Arc::new(AtomicUsize::new(0));
    let counter = released.clone();
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .after_release(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .connect_with(options)
        .await
        .unwrap();
    (db, pool, released)
}

/// A history read on SQLite leaves its connection for the next read, for up to a
/// second, rather than giving it back to the pool (which tests it with a round trip to
/// its worker thread) each time.
#[tokio::test]
async fn sqlite_history_reads_one_after_another_reuse_a_kept_connection() {
    use std::sync::atomic::Ordering;
    let (_db, pool, released) = sqlite_counted_pool().await;
    let id = Uuid::now_v7();
    pool.append_turn("", id, TurnTarget::NewConversation, &turn("kept", "a"))
        .await
        .unwrap();
    let before = released.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(pool.load_history("", id, None).await.unwrap().len(), 2);
    }
    let seconds = started.elapsed().as_secs() as usize;
    let given_back = released.load(Ordering::SeqCst) - before;
    assert!(
        given_back <= 2 * (seconds + 1),
        "{given_back} connections given back to the pool over 50 reads in {seconds} s"
    );
}

/// A connection a SQLite history read kept goes back to the pool within a second or two,
/// and at once when the pool closes.
#[tokio::test]
async fn sqlite_a_kept_connection_goes_back_to_the_pool_in_time_and_at_its_close() {
    let (_db, pool, _) = sqlite_counted_pool().await;
    let id = Uuid::now_v7();
    pool.append_turn("", id, TurnTarget::NewConversation, &turn("kept", "a"))
        .await
        .unwrap();
    pool.load_history("", id, None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(
        pool.num_idle(),
        pool.size() as usize,
        "every connection back"
    );
    pool.load_history("", id, None).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_millis(500), pool.close())
        .await
        .expect("the pool closed at once");
}

/// The SQLite migration switches the database file to write-ahead logging.
#[tokio::test]
async fn sqlite_databases_use_write_ahead_logging() {
    let db = TestDb::sqlite().await;
    let TestPool::Sqlite(pool) = &db.pool else {
        unreachable!()
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Holds SQLite's write lock from a connection of its own, outside the store's queue,
/// so that turns sent meanwhile pile up behind whichever of them asked first.
async fn hold_sqlite_write_lock(db: &TestDb) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut holder = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// Sends each turn from a task of its own, in order, while the write lock is held by
/// another connection, then lets the lock go. On this single-threaded runtime every
/// task has queued its turn before the lock is released: the first turn is written
/// alone (it asked for the lock before the others came), the rest together.
async fn turns_sent_together(
    db: &TestDb,
    store: &Arc<dyn ConversationStore>,
    turns: Vec<(Uuid, TurnTarget, Vec<NewMessage>)>,
) -> Vec<Result<i64, StoreError>> {
    let mut holder = hold_sqlite_write_lock(db).await;
    let tasks: Vec<_> = turns
        .into_iter()
        .map(|(id, target, messages)| {
            let store = store.clone();
            tokio::spawn(async move { store.append_turn("", id, target, &messages).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// Writes run on a connection of the store's own, kept from write to write: a pool of
/// one connection, held by a reader, does not keep a turn or a management write waiting.
#[tokio::test]
async fn sqlite_writes_need_none_of_the_pools_connections() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let db = TestDb::sqlite().await;
    let options: SqliteConnectOptions = db.url.parse().unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let store: Arc<dyn ConversationStore> = Arc::new(pool.clone());
    let reading = pool.acquire().await.unwrap();
    let written = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let id = Uuid::now_v7();
        store
            .append_turn("", id, TurnTarget::NewConversation, &turn("q", "a"))
            .await?;
        store.delete("", id).await
    })
    .await;
    assert!(
        matches!(written, Ok(Ok(()))),
        "a write waited for the pool's only connection: {written:?}"
    );
    drop(reading);
    assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 0);
}

/// The store's own connection goes with the pool it was opened for: once that pool is
/// closed its writes fail, as a closed pool's always did, and a new pool on the same
/// file writes through a connection of its own.
#[tokio::test]
async fn sqlite_a_closed_pool_writes_nothing_and_the_next_pool_on_its_file_writes_on() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let db = TestDb::sqlite().await;
    let options: SqliteConnectOptions = db.url.parse().unwrap();
    let open = || {
        SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
    };
    let first = open().await.unwrap();
    first
        .append_turn(
            "",
            Uuid::now_v7(),
            TurnTarget::NewConversation,
            &turn("one", "a"),
        )
        .await
        .unwrap();
    first.close().await;
    let refused = first
        .append_turn(
            "",
            Uuid::now_v7(),
            TurnTarget::NewConversation,
            &turn("two", "a"),
        )
        .await;
    assert!(refused.is_err(), "a closed pool wrote: {refused:?}");

    let second = open().await.unwrap();
    second
        .append_turn(
            "",
            Uuid::now_v7(),
            TurnTarget::NewConversation,
            &turn("three", "a"),
        )
        .await
        .unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 2);
    let found = second.list("", &search("three")).await.unwrap();
    assert_eq!(found.total, 1);
}

/// Turns that wait for the database file together are committed together: one
/// transaction, one timestamp, for all but the first.
#[tokio::test]
async fn sqlite_turns_that_wait_together_are_written_in_one_transaction() {
    let db = TestDb::sqlite().await;
    let store = db.store_with_connections(4).await;
    let turns = (0..16)
        .map(|n| {
            (
                Uuid::now_v7(),
                TurnTarget::NewConversation,
                turn(&format!("q{n}"), "a"),
            )
        })
        .collect();
    let outcomes = turns_sent_together(&db, &store, turns).await;
    assert!(
        outcomes.iter().all(|outcome| matches!(outcome, Ok(0))),
        "{outcomes:?}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 16);
    assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 32);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT created_at) FROM messages")
            .await,
        2,
        "the first turn alone, then the fifteen that queued behind it in one batch"
    );
}

/// A turn that fails halfway through a batch leaves nothing of itself behind, and the
/// turns written with it (before and after it) are stored all the same.
#[tokio::test]
async fn sqlite_a_turn_failing_in_a_batch_leaves_nothing_and_spares_the_others() {
    let db = TestDb::sqlite().await;
    let store = db.store_with_connections(4).await;
    // Refuses one message: the turn's conversation row is written before its messages.
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content_text = 'refused'
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .await;
    let existing = conversation_with(&store, "", &[turn("first", "a")]).await;
    let refused = Uuid::now_v7();
    let turns = vec![
        (
            Uuid::now_v7(),
            TurnTarget::NewConversation,
            turn("alone", "a"),
        ),
        (existing, TurnTarget::Existing, turn("second", "b")),
        (refused, TurnTarget::NewConversation, turn("refused", "a")),
        (existing, TurnTarget::NewConversation, turn("again", "a")),
        (Uuid::now_v7(), TurnTarget::Existing, turn("unknown", "a")),
        (existing, TurnTarget::Existing, turn("third", "c")),
    ];
    let outcomes = turns_sent_together(&db, &store, turns).await;
    assert!(matches!(outcomes[0], Ok(0)), "{:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Ok(2)), "{:?}", outcomes[1]);
    assert!(
        matches!(outcomes[2], Err(StoreError::Query(_))),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(outcomes[3], Err(StoreError::Query(_))),
        "{:?}",
        outcomes[3]
    );
    assert!(
        matches!(outcomes[4], Err(StoreError::NotFound)),
        "{:?}",
        outcomes[4]
    );
    assert!(matches!(outcomes[5], Ok(4)), "{:?}", outcomes[5]);

    assert_not_found(
        store.get("", refused).await,
        "the refused turn's conversation",
    );
    let contents: Vec<Value> = store
        .get("", existing)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.message["content"].clone())
        .collect();
    assert_eq!(contents, ["first", "a", "second", "b", "third", "c"]);
    assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 2);
    assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 8);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT created_at) FROM messages WHERE content_text IN ('second', 'third')")
            .await,
        1,
        "the failures came between turns of one batch"
    );
}

/// A turn whose caller stopped waiting (a timeout dropped its future) before any writer
/// took it is not written later by whoever comes next: its caller was told it failed.
#[tokio::test]
async fn sqlite_a_turn_given_up_while_queued_is_never_written() {
    let db = TestDb::sqlite().await;
    let store = db.store_with_connections(4).await;
    let mut holder = hold_sqlite_write_lock(&db).await;
    let send = |id: Uuid, question: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append_turn("", id, TurnTarget::NewConversation, &turn(question, "a"))
                .await
        })
    };
    let (first, given_up) = (Uuid::now_v7(), Uuid::now_v7());
    let writing = send(first, "first");
    let queued = send(given_up, "given up");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    queued.abort();
    assert!(queued.await.unwrap_err().is_cancelled());
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    assert!(matches!(writing.await.unwrap(), Ok(0)));
    let next = Uuid::now_v7();
    assert!(matches!(send(next, "next").await.unwrap(), Ok(0)));

    assert_not_found(store.get("", given_up).await, "the given-up turn");
    assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 2);
}

/// The file's writer keeps its connection from write to write: a write cut off inside
/// its transaction (a timeout dropped its future) leaves no part of itself, and the next
/// write on that connection goes through.
#[tokio::test]
async fn sqlite_writes_cut_off_inside_their_transaction_leave_no_part_and_the_next_write_goes_through()
 {
    let db = TestDb::sqlite().await;
    let store = db.store_with_connections(4).await;
    let mut answered = 0;
    for step in 0..40u64 {
        let cut_after = std::time::Duration::from_micros(step * 25);
        let id = Uuid::now_v7();
        let messages = turn("cut", "a");
        let write = store.append_turn("", id, TurnTarget::NewConversation, &messages);
        if matches!(tokio::time::timeout(cut_after, write).await, Ok(Ok(0))) {
            answered += 1;
            // A REST write on the same connection, cut off the same way.
            let _ = tokio::time::timeout(cut_after, store.delete("", id)).await;
        }
    }
    let next = Uuid::now_v7();
    store
        .append_turn("", next, TurnTarget::NewConversation, &turn("next", "a"))
        .await
        .expect("the write after the cut-off ones");
    store.delete("", next).await.expect("a delete after them");
    store
        .append_turn(
            "",
            Uuid::now_v7(),
            TurnTarget::NewConversation,
            &turn("last", "a"),
        )
        .await
        .expect("a turn after the delete");

    let conversations = db.scalar("SELECT count(*) FROM conversations").await;
    assert_eq!(
        db.scalar("SELECT count(*) FROM messages").await,
        2 * conversations,
        "every stored turn whole"
    );
    assert!(
        conversations >= 1,
        "{answered} answered, {conversations} stored"
    );
    db.check_search_index().await;
}

/// A SQLite turn that is a batch of its own begins and commits its transaction in the
/// same call as its statements; cut off at any point of that call, it leaves no
/// transaction open behind it: the very next write goes through.
#[tokio::test]
async fn sqlite_a_turn_cut_off_at_any_point_leaves_the_next_write_to_go_through() {
    let db = TestDb::sqlite().await;
    let store = db.store_with_connections(4).await;
    let new_turn = |question: &'static str| {
        let store = store.clone();
        async move {
            store
                .append_turn(
                    "",
                    Uuid::now_v7(),
                    TurnTarget::NewConversation,
                    &turn(question, "a"),
                )
                .await
        }
    };
    // How long one write takes here, to cut the others at points all across it.
    let started = std::time::Instant::now();
    new_turn("first").await.expect("the first write");
    let took = started.elapsed();
    for step in 0..120u32 {
        let cut_after = took * step / 100;
        let _ = tokio::time::timeout(cut_after, new_turn("cut")).await;
        new_turn("next")
            .await
            .unwrap_or_else(|error| panic!("the write after one cut at {cut_after:?}: {error}"));
    }
    let conversations = db.scalar("SELECT count(*) FROM conversations").await;
    assert_eq!(
        db.scalar("SELECT count(*) FROM messages").await,
        2 * conversations,
        "every stored turn whole"
    );
    assert!(conversations >= 121, "{conversations} stored");
    db.check_search_index().await;
}

/// A SQLite turn that fails on its own (here: a new conversation whose id is taken)
/// leaves nothing of itself and no transaction open: the next write goes through.
#[tokio::test]
async fn sqlite_a_turn_that_fails_alone_leaves_the_next_write_to_go_through() {
    let db = TestDb::sqlite().await;
    let store = db.store();
    let id = Uuid::now_v7();
    let first = turn("first", "a");
    store
        .append_turn("", id, TurnTarget::NewConversation, &first)
        .await
        .expect("the first turn");
    for _ in 0..3 {
        store
            .append_turn("", id, TurnTarget::NewConversation, &turn("again", "b"))
            .await
            .expect_err("the id is taken");
        store
            .append_turn("", id, TurnTarget::Existing, &turn("more", "c"))
            .await
            .expect("the write after the failed one");
    }
    assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
    assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 8);
    db.check_search_index().await;
}

/// A file whose index predates `columnsize=0` (migration 0008): the index is made
/// again from the messages, indexed and pending alike, and keeps no table of sizes.
#[tokio::test]
async fn sqlite_the_index_made_again_without_sizes_finds_every_message_once() {
    let db = TestDb::sqlite_unmigrated().await;
    let TestPool::Sqlite(pool) = &db.pool else {
        unreachable!("a SQLite database")
    };
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    migrator.dangerous_set_table_name("_tower_conversations_migrations");
    migrator
        .run_to(7, pool)
        .await
        .expect("the migrations before 0008");
    db.execute(
        "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count, next_sequence, metadata) VALUES
         (X'018f0000000070008000000000000001', '', NULL, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z', 3, 3, '{}')",
    )
    .await;
    db.execute(
        "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text, metadata, created_at) VALUES
         (X'018f0000000070008000000000000001', 0, 'user', '{\"role\":\"user\",\"content\":\"indexed alpha\"}', 'indexed alpha', '{}', '2024-01-01T00:00:00.000000Z'),
         (X'018f0000000070008000000000000001', 1, 'assistant', '{\"role\":\"assistant\",\"content\":\"indexed beta\"}', 'indexed beta', '{}', '2024-01-01T00:00:00.000000Z')",
    )
    .await;
    // The first two indexed, as a batch of turns would have; the third left pending.
    db.execute(
        "INSERT INTO messages_search (rowid, content_text)
         SELECT m.id, m.content_text FROM search_pending p JOIN messages m ON m.id = p.id",
    )
    .await;
    db.execute("DELETE FROM search_pending").await;
    db.execute(
        "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text, metadata, created_at) VALUES
         (X'018f0000000070008000000000000001', 2, 'user', '{\"role\":\"user\",\"content\":\"pending gamma\"}', 'pending gamma', '{}', '2024-01-01T00:00:00.000000Z')",
    )
    .await;
    assert_eq!(db.scalar("SELECT count(*) FROM search_pending").await, 1);

    db.store().migrate().await.expect("migration 0008");
    assert_eq!(
        db.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'messages_search_docsize'")
            .await,
        0,
        "no table of sizes"
    );
    assert_eq!(
        db.scalar(SQLITE_PENDING_SEARCH).await,
        0,
        "the pending message indexed with the rest"
    );
    assert_eq!(
        db.scalar("SELECT through FROM search_indexed").await,
        db.scalar("SELECT max(id) FROM messages").await,
        "the mark past every message"
    );
    for (word, found) in [("indexed", 2), ("alpha", 1), ("beta", 1), ("gamma", 1)] {
        let matches: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages_search WHERE messages_search MATCH ?1",
        )
        .bind(word)
        .fetch_one(pool)
        .await
        .expect("a match");
        assert_eq!(matches, found, "{word}");
    }
    db.check_search_index().await;
}

/// SQLite hands out the highest message id again once its row is gone: a message that
/// gets an id the index had passed is still indexed, and the index stays whole.
#[tokio::test]
async fn sqlite_a_message_given_a_deleted_highest_id_is_still_found() {
    let db = TestDb::sqlite().await;
    let store = db.store();
    conversation_with(&store, "", &[turn("alpha question", "a")]).await;
    let last = conversation_with(&store, "", &[turn("beta question", "b")]).await;
    assert_eq!(store.list("", &search("beta")).await.unwrap().total, 1);
    let highest = db.scalar("SELECT max(id) FROM messages").await;

    store.delete("", last).await.unwrap();
    conversation_with(&store, "", &[turn("gamma question", "c")]).await;
    assert_eq!(
        db.scalar("SELECT max(id) FROM messages").await,
        highest,
        "the deleted ids handed out again"
    );
    assert_eq!(store.list("", &search("gamma")).await.unwrap().total, 1);
    assert_eq!(store.list("", &search("beta")).await.unwrap().total, 0);
    assert_eq!(store.list("", &search("question")).await.unwrap().total, 2);
    db.check_search_index().await;
}

/// SQLite feeds its full-text index after the turn: a turn's messages wait, a batch of
/// turns indexes what waits at most once a second (unless many turns wait: see
/// `search_index.rs`), and a search indexes whatever is pending first, so it finds every
/// message committed before it.
#[tokio::test]
async fn sqlite_the_search_index_is_fed_after_turns_and_a_search_sees_every_committed_message() {
    let db = TestDb::sqlite().await;
    let store = db.store();
    let first = conversation_with(&store, "", &[turn("alpha question", "a")]).await;
    assert_eq!(
        db.scalar(SQLITE_PENDING_SEARCH).await,
        2,
        "a turn leaves its messages pending"
    );
    assert_eq!(
        store.list("", &search("alpha")).await.unwrap().total,
        1,
        "a search finds them"
    );
    assert_eq!(
        db.scalar(SQLITE_PENDING_SEARCH).await,
        0,
        "having indexed them"
    );

    // A pending message deleted, and a pending one rewritten: the index stays right.
    let gone = conversation_with(&store, "", &[turn("beta question", "b")]).await;
    store.delete("", gone).await.unwrap();
    conversation_with(
        &store,
        "",
        &[turn("gamma question", "c"), turn("delta", "d")],
    )
    .await;
    db.execute("UPDATE messages SET content_text = 'epsilon' WHERE content_text = 'delta'")
        .await;
    // And an indexed one rewritten: it leaves the index and waits to come back.
    db.execute("UPDATE messages SET content_text = 'zeta' WHERE content_text = 'alpha question'")
        .await;
    for (word, found) in [
        ("beta", 0),
        ("gamma", 1),
        ("delta", 0),
        ("epsilon", 1),
        ("alpha", 0),
        ("zeta", 1),
    ] {
        assert_eq!(
            store.list("", &search(word)).await.unwrap().total,
            found,
            "{word}"
        );
    }
    db.check_search_index().await;

    // Without a search, the next batch a second or more after the last indexing feeds it.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    store
        .append_turn("", first, TurnTarget::Existing, &turn("eta", "h"))
        .await
        .unwrap();
    // In a task of its own, after the turn has its answer: wait for it (at most 5 s).
    for _ in 0..100 {
        if db.scalar(SQLITE_PENDING_SEARCH).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(db.scalar(SQLITE_PENDING_SEARCH).await, 0);
    assert_eq!(
        db.scalar("SELECT count(*) FROM messages_search WHERE messages_search MATCH 'eta'")
            .await,
        1
    );
}
