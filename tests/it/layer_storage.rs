//! When storing a turn fails, hangs, or outlives its client (contract section 5),
//! with faults injected into a real database.

use std::time::{Duration, Instant};

use crate::support::db::{Backend, TestDb, TestPool};
use crate::support::server::*;
use crate::support::upstream::*;
use http::StatusCode;
use serde_json::{Value, json};
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer, ConversationStore};
use uuid::Uuid;

/// Makes every insert into `messages` fail, as a full disk or a broken constraint would.
async fn fail_inserts_into_messages(db: &TestDb) {
    match db.backend {
        Backend::Sqlite => {
            db.execute(
                "CREATE TRIGGER fail_messages BEFORE INSERT ON messages \
                 BEGIN SELECT RAISE(ABORT, 'injected'); END",
            )
            .await
        }
        Backend::Postgres => {
            db.execute(
                "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$",
            )
            .await;
            db.execute(
                "CREATE TRIGGER fail_messages BEFORE INSERT ON messages \
                 FOR EACH ROW EXECUTE FUNCTION fail_insert()",
            )
            .await;
        }
    }
}

/// Another connection holding `messages` locked until released.
enum HeldLock {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

async fn lock_messages(db: &TestDb) -> HeldLock {
    match &db.pool {
        TestPool::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            HeldLock::Postgres(tx)
        }
        TestPool::Sqlite(pool) => {
            let mut connection = pool.acquire().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *connection)
                .await
                .unwrap();
            HeldLock::Sqlite(connection)
        }
    }
}

async fn release(lock: HeldLock) {
    match lock {
        HeldLock::Postgres(tx) => tx.rollback().await.unwrap(),
        HeldLock::Sqlite(mut connection) => {
            sqlx::query("ROLLBACK")
                .execute(&mut *connection)
                .await
                .unwrap();
        }
    }
}

async fn message_count(db: &TestDb) -> i64 {
    db.scalar("SELECT COUNT(*) FROM messages").await
}

async fn conversation_count(db: &TestDb) -> i64 {
    db.scalar("SELECT COUNT(*) FROM conversations").await
}

/// Checks that a streamed answer is the upstream's stream with the `storage_failed`
/// chunk just before `[DONE]`.
fn assert_ends_with_storage_failed(answer: &Answer, upstream: &[bytes::Bytes]) {
    let (last, content) = upstream.split_last().expect("frames");
    assert_eq!(last, &done(), "the upstream stream ends with [DONE]");
    assert!(
        answer.body.starts_with(&concat(content)),
        "every content chunk reaches the client as sent"
    );
    let events = answer.events();
    let upstream_events = sse_data(std::str::from_utf8(&concat(content)).unwrap());
    assert_eq!(events.len(), upstream_events.len() + 2, "{events:?}");
    assert_eq!(events[..upstream_events.len()], upstream_events[..]);
    let failed: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        failed,
        json!({"id": RESPONSE_ID, "object": "chat.completion.chunk", "created": CREATED,
            "model": MODEL, "choices": [], "metadata": {"storage_failed": true}})
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

backend_tests! {
    async fn a_storage_failure_ends_the_stream_with_a_storage_failed_chunk(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = send_chat(&app, None, &chat_body(json!([user("hi")])))
            .await
            .id();
        fail_inserts_into_messages(&db).await;

        for conversation in [Some(id), None] {
            let frames = text_stream(&["Hel", "lo"]);
            model.push(Reply::sse(frames.clone()));
            let answer = send_chat(&app, conversation, &chat_body(json!([user("again")]))).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_ends_with_storage_failed(&answer, &frames);
        }
        assert_eq!(message_count(&db).await, 2, "the first turn only");
        assert_eq!(
            conversation_count(&db).await,
            1,
            "no row for the failed new conversation"
        );
    }

    async fn a_storage_failure_after_a_json_reply_marks_it_storage_failed(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        fail_inserts_into_messages(&db).await;
        let plain = completion("Hello");
        let mut with_metadata = completion("Hello");
        with_metadata["metadata"] = json!({"trace": "abc"});

        for reply in [plain, with_metadata] {
            model.push(Reply::json(reply.clone()));
            let body = json!({"model": MODEL, "stream": false, "messages": [user("hi")]});
            let answer = send_chat(&app, None, &body).await;

            let mut expected = reply.clone();
            let metadata = expected
                .as_object_mut()
                .unwrap()
                .entry("metadata")
                .or_insert(json!({}));
            metadata["storage_failed"] = json!(true);
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.json(), expected);
            let length: usize = answer.headers["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, answer.body.len(), "Content-Length is corrected");
        }
        assert_eq!(message_count(&db).await, 0);
    }

    async fn storage_that_hangs_gives_storage_failed_within_the_timeout(db: TestDb) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).storage_timeout(Duration::from_millis(300));
        let app = serve_layered(&model, layer).await;
        let lock = lock_messages(&db).await;

        let frames = text_stream(&["Hel", "lo"]);
        model.push(Reply::sse(frames.clone()));
        let started = Instant::now();
        let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;
        let took = started.elapsed();
        release(lock).await;

        assert_ends_with_storage_failed(&answer, &frames);
        assert!(
            took < Duration::from_secs(2),
            "took {took:?} with a 300 ms timeout"
        );
    }

    async fn a_client_gone_mid_stream_leaves_the_partial_turn_stored_as_incomplete(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let pieces: Vec<String> = (0..20).map(|i| format!("piece{i} ")).collect();
        model.push(Reply::text(pieces.clone()).delay(Duration::from_millis(100)));

        let client = reqwest::Client::new();
        let mut response = client
            .post(app.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body(json!([user("Count slowly")])).to_string())
            .send()
            .await
            .unwrap();
        let id: Uuid = response.headers()[CONVERSATION_ID_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut received = String::new();
        while received.matches("piece").count() < 2 {
            let chunk = response.chunk().await.unwrap().expect("the stream goes on");
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        drop(response);
        drop(client);

        let messages = eventually(Duration::from_secs(5), "the partial turn", || async {
            let messages = db.store().get("", id).await.ok()?.messages;
            (messages.len() == 2).then_some(messages)
        })
        .await;
        let content = messages[1].message["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content.starts_with("piece0 piece1 "), "{content:?}");
        assert_ne!(content, pieces.concat(), "the reply was cut short");
        assert_eq!(messages[1].metadata["incomplete"], true);
        eventually(
            Duration::from_secs(5),
            "the upstream call to be cancelled",
            || async {
                model
                    .stream_ends()
                    .contains(&StreamEnd::Cancelled)
                    .then_some(())
            },
        )
        .await;
    }

    async fn a_reply_over_the_capture_limit_reaches_the_client_whole_and_is_not_stored(db: TestDb) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).capture_limit(1024);
        let app = serve_layered(&model, layer).await;
        let pieces: Vec<String> = (0..40).map(|i| format!("{i:03} 0123456789 ")).collect();
        let frames = text_stream(&pieces);
        model.push(Reply::sse(frames.clone()));
        let answer = send_chat(&app, None, &chat_body(json!([user("Say a lot")]))).await;

        assert_eq!(answer.status, StatusCode::OK);
        assert_ends_with_storage_failed(&answer, &frames);
        assert_eq!(message_count(&db).await, 0);
        assert_eq!(conversation_count(&db).await, 0);
    }

    async fn a_store_outage_while_loading_history_is_503_without_its_cause(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = send_chat(&app, None, &chat_body(json!([user("hi")])))
            .await
            .id();
        db.execute("ALTER TABLE messages RENAME TO messages_out_of_reach")
            .await;

        let answer = send_chat(&app, Some(id), &chat_body(json!([user("again")]))).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.error_code(), "conversation_store_unavailable");
        assert_eq!(answer.json()["error"]["type"], "server_error");
        for detail in ["messages", "SELECT", "sqlite", "postgres", "relation"] {
            assert!(
                !answer.text().contains(detail),
                "{detail} leaked: {}",
                answer.text()
            );
        }
        assert_eq!(model.chat_requests().len(), 1, "the upstream is not called");
    }
}
