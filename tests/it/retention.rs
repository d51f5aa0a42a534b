//! Retention and erasure (contract section 11): erase everything of one owner, purge
//! conversations idle longer than an age, in batches; on both backends.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::api::*;
use crate::support::db::Backend;
use crate::support::process::Proxy;
use crate::support::store::*;

backend_tests! {
    async fn erasing_an_owner_deletes_all_of_theirs_in_batches_and_nothing_of_anyone_elses(db: TestDb) {
        let store = db.store();
        // More than one batch of 500.
        for n in 0..520 {
            conversation_with(&store, "alice", &[turn(&format!("q{n}"), "a")]).await;
        }
        let kept = conversation_with(&store, "bob", &[turn("bob's", "a")]).await;
        let shared = conversation_with(&store, "", &[turn("shared", "a")]).await;

        assert_eq!(store.erase_owner("alice").await.unwrap(), 520);
        assert_eq!(store.list("alice", &page(10, 0)).await.unwrap().total, 0);
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 2);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 4, "their messages went too");
        assert!(store.get("bob", kept).await.is_ok());
        assert!(store.get("", shared).await.is_ok());
        assert_eq!(store.erase_owner("alice").await.unwrap(), 0, "erasing again finds nothing");
        if db.backend == Backend::Sqlite {
            db.check_search_index().await;
        }
    }

    async fn purging_deletes_conversations_idle_since_the_cutoff_of_every_owner_and_keeps_the_rest(db: TestDb) {
        let store = db.store();
        let old_alice = conversation_with(&store, "alice", &[turn("old", "a")]).await;
        let old_bob = conversation_with(&store, "bob", &[turn("old", "a")]).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let cutoff = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let fresh = conversation_with(&store, "alice", &[turn("fresh", "a")]).await;
        // A turn after the cutoff keeps an old conversation.
        let revived = old_bob;
        store.append_turn("bob", revived, tower_conversations::TurnTarget::Existing, &turn("again", "b")).await.unwrap();

        assert_eq!(store.purge_idle(cutoff).await.unwrap(), 1);
        assert!(matches!(store.get("alice", old_alice).await, Err(tower_conversations::StoreError::NotFound)));
        assert!(store.get("alice", fresh).await.is_ok());
        assert!(store.get("bob", revived).await.is_ok());
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 6);
        assert_eq!(store.purge_idle(cutoff).await.unwrap(), 0);
    }

    async fn purging_walks_every_owner_past_a_batch_of_owners_with_nothing_idle_and_past_an_owner_with_more_than_a_batch(db: TestDb) {
        let store = db.store();
        // Idle: the first owner in order (the empty one), one with more than a batch of
        // 500, and the last.
        conversation_with(&store, "", &[turn("old", "a")]).await;
        for n in 0..501 {
            conversation_with(&store, "m", &[turn(&format!("old {n}"), "a")]).await;
        }
        conversation_with(&store, "zzz", &[turn("old", "a")]).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let cutoff = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Between them, more owners than a batch looks at, none of them idle.
        for n in 0..505 {
            conversation_with(&store, &format!("o{n:03}"), &[turn("fresh", "a")]).await;
        }

        assert_eq!(store.purge_idle(cutoff).await.unwrap(), 503);
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 505);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 1010);
        assert_eq!(store.list("m", &page(10, 0)).await.unwrap().total, 0);
        assert_eq!(store.list("zzz", &page(10, 0)).await.unwrap().total, 0);
        assert_eq!(store.purge_idle(cutoff).await.unwrap(), 0);
    }

    async fn the_proxy_purges_conversations_idle_longer_than_its_retention_days(db: TestDb) {
        let store = db.store();
        conversation_with(&store, "someone", &[turn("idle", "a")]).await;
        let recent = conversation_with(&store, "someone", &[turn("recent", "a")]).await;
        db.execute(match db.backend {
            Backend::Sqlite => "UPDATE conversations SET updated_at = '2020-01-01T00:00:00.000000Z' WHERE title = 'idle'",
            Backend::Postgres => "UPDATE conversations SET updated_at = now() - interval '3 days' WHERE title = 'idle'",
        })
        .await;
        let proxy = Proxy::start(&["--database-url", &db.url, "--retention-days", "2"], &[]).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while db.scalar("SELECT count(*) FROM conversations").await > 1 {
            assert!(std::time::Instant::now() < deadline, "not purged: {}", proxy.log());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(store.get("someone", recent).await.is_ok(), "two days have not passed for this one");
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    }

    async fn erasure_over_http_deletes_every_conversation_of_the_caller(db: TestDb) {
        let client = Client::axum(&db).await;
        for n in 0..3 {
            client.create(json!({"title": format!("mine {n}")})).await;
        }
        let other = client.as_owner("bob").create(json!({"title": "bob's"})).await;
        let reply = client.delete("?all=true").await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        assert_eq!(reply.json, json!({"object": "conversation.erasure", "deleted": 3}));
        assert_eq!(client.list("").await["total"], 0);
        assert_eq!(client.as_owner("bob").detail(&other).await["title"], "bob's");
    }

    async fn erasure_without_an_owner_is_403_and_erases_nothing(db: TestDb) {
        let client = Client::axum(&db).await;
        let shared = client.as_owner("");
        shared.create(json!({"title": "shared"})).await;
        let reply = shared.delete("?all=true").await;
        assert_eq!((reply.status, reply.error_code()), (StatusCode::FORBIDDEN, "owner_required"));
        assert_eq!(shared.list("").await["total"], 1);
    }

    async fn erasure_without_all_true_is_400_naming_it(db: TestDb) {
        let client = Client::axum(&db).await;
        client.create(json!({"title": "kept"})).await;
        for query in ["", "?all=false", "?all=1", "?all=true&all=true"] {
            let reply = client.delete(query).await;
            assert_eq!((reply.status, reply.error_param()), (StatusCode::BAD_REQUEST, Some("all")), "{query}");
        }
        assert_eq!(client.list("").await["total"], 1);
    }
}

#[test]
fn the_proxy_refuses_a_retention_that_is_not_a_number_of_days() {
    for days in ["0", "-1", "two", "1.5"] {
        let stderr = crate::support::process::refused(&["--retention-days", days], &[]);
        assert!(stderr.contains("--retention-days"), "{days}: {stderr}");
    }
}
