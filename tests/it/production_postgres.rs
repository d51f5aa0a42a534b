//! PostgreSQL as it runs in production (contract section 13): behind a transaction-mode
//! pooler, through a server restart, and with the connections that store calls keep
//! from one call to the next instead of giving them back to the pool.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tower_conversations::store::{ConversationStore, NewConversation, NewMessage};
use tower_conversations::{ConversationLayer, TurnStore};
use uuid::Uuid;

use crate::support::cluster::OwnCluster;
use crate::support::db::{TestDb, TestPool};
use crate::support::echo::echo_model;
use crate::support::pgbouncer::PgBouncer;
use crate::support::server::*;
use crate::support::turns::{echo_turns, ends_with_done, storage_failed};
use crate::support::upstream::TestModel;

const CLIENTS: usize = 16;

/// `model` behind the layer, with the management API beside it.
async fn serve(model: Router, layer: ConversationLayer) -> TestServer {
    let api = layer.api();
    TestServer::start(
        model
            .layer(layer)
            .merge(Router::new().nest_service("/v1/conversations", api)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_in_transaction_mode_every_turn_is_stored_and_every_continued_turn_sees_its_history()
 {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // Four server connections for sixteen clients: one client's transactions move
    // between server connections all the time.
    let Some(bouncer) = PgBouncer::start(4).await else {
        return;
    };
    // Migrations ran over the direct connection (TestDb); the layer's pool goes through
    // PgBouncer with sqlx's statement cache off, the documented switch.
    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(&bouncer.url(&db.name, "statement-cache-capacity=0"))
        .await
        .expect("connect through pgbouncer");
    let model = TestModel::new();
    let app = Arc::new(serve(model.router(), ConversationLayer::new(pool)).await);

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let app = app.clone();
        clients.push(tokio::spawn(async move {
            let first = format!("client {client} starts");
            let answer = send_chat(&app, None, &chat_body(json!([user(&first)]))).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            assert!(
                ends_with_done(&answer) && !storage_failed(&answer),
                "{}",
                answer.text()
            );
            let id = answer.id();
            // A JSON reply, which carries `metadata.storage_failed` when storing failed.
            let mut body = chat_body(json!([user(&format!("client {client} goes on"))]));
            body["stream"] = json!(false);
            let answer = send_chat(&app, Some(id), &body).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            assert!(answer.json().get("metadata").is_none(), "{}", answer.text());
            id
        }));
    }
    let mut ids = Vec::new();
    for client in clients {
        ids.push(client.await.expect("a client"));
    }

    let store = db.store();
    for (client, &id) in ids.iter().enumerate() {
        let turns = echo_turns(&store, id).await.expect("the conversation");
        assert_eq!(
            turns,
            [
                format!("client {client} starts"),
                format!("client {client} goes on")
            ],
            "both turns stored, in order"
        );
    }

    // The management API through the same pool: every endpoint answers.
    let id = ids[0].to_string();
    let owner: &[(&str, &str)] = &[("content-type", "application/json")];
    let list = send(
        &app,
        Method::GET,
        "/v1/conversations?limit=100",
        owner,
        String::new(),
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    assert_eq!(list.json()["total"], CLIENTS);
    let search = send(
        &app,
        Method::GET,
        "/v1/conversations?q=starts",
        owner,
        String::new(),
    )
    .await;
    assert_eq!(search.json()["total"], CLIENTS, "{}", search.text());
    for (method, path, body, status) in [
        (
            Method::GET,
            format!("/v1/conversations/{id}"),
            "",
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/v1/conversations/{id}/messages?limit=2"),
            "",
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            format!("/v1/conversations/{id}"),
            r#"{"title": "renamed"}"#,
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/v1/conversations/{id}/fork"),
            r#"{"at_sequence": 1}"#,
            StatusCode::CREATED,
        ),
        (
            Method::DELETE,
            format!("/v1/conversations/{id}/messages?from_sequence=2"),
            "",
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/v1/conversations".to_owned(),
            r#"{"messages": [{"role": "user", "content": "seed"}]}"#,
            StatusCode::CREATED,
        ),
        (
            Method::DELETE,
            format!("/v1/conversations/{id}"),
            "",
            StatusCode::OK,
        ),
    ] {
        let answer = send(&app, method.clone(), &path, owner, body.to_owned()).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.text());
    }
    let log = bouncer.log();
    assert!(!log.contains("prepared statement"), "{log}");
}

/// The turns each client ended without `storage_failed`, and those it was told failed.
#[derive(Default)]
struct Outcomes {
    stored: BTreeSet<String>,
    flagged: BTreeSet<String>,
    refused: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_and_doubles_no_turn_and_storing_resumes_at_once() {
    let Some(cluster) = OwnCluster::create() else {
        return;
    };
    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(&cluster.url())
        .await
        .expect("connect to the test's cluster");
    tower_conversations::migrate(&pool).await.expect("migrate");
    let app = Arc::new(
        serve(
            echo_model(Duration::ZERO),
            ConversationLayer::new(pool.clone()),
        )
        .await,
    );

    let restarted = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (app, restarted) = (app.clone(), restarted.clone());
        clients.push(tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut id: Option<Uuid> = None;
            let mut turn = 0;
            // Turns until two seconds after the restart.
            let mut after: Option<Instant> = None;
            while after.is_none_or(|after| after.elapsed() < Duration::from_secs(2)) {
                if after.is_none() && restarted.load(Ordering::SeqCst) {
                    after = Some(Instant::now());
                }
                let text = format!("client {client} turn {turn}");
                turn += 1;
                let answer = send_chat(&app, id, &chat_body(json!([user(&text)]))).await;
                match answer.status {
                    StatusCode::OK if storage_failed(&answer) => {
                        outcomes.flagged.insert(text);
                    }
                    StatusCode::OK => {
                        assert!(ends_with_done(&answer), "{}", answer.text());
                        id = Some(answer.id());
                        outcomes.stored.insert(text);
                    }
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND => {
                        // History could not be read while the server was down; a new
                        // conversation whose first turn failed does not exist yet.
                        outcomes.refused += 1;
                        if answer.status == StatusCode::NOT_FOUND {
                            id = None;
                        }
                    }
                    other => panic!("{other}: {}", answer.text()),
                }
            }
            (id, outcomes)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart();
    restarted.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    for client in clients {
        results.push(client.await.expect("a client"));
    }

    // After the restart every client stored turns again.
    let store: Arc<dyn tower_conversations::ConversationStore> = Arc::new(pool.clone());
    for (id, outcomes) in &results {
        let id = id.expect("every client stored a turn after the restart");
        let stored: Vec<String> = echo_turns(&store, id).await.expect("its conversation");
        let unique: BTreeSet<&String> = stored.iter().collect();
        assert_eq!(unique.len(), stored.len(), "no turn doubled: {stored:?}");
        for text in &stored {
            assert!(
                outcomes.stored.contains(text) || outcomes.flagged.contains(text),
                "{text} stored but never sent"
            );
        }
    }
    // Every turn a client saw end without storage_failed is stored (in the client's
    // last conversation or an earlier one the restart cut off).
    let every: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT message->>'content' FROM messages WHERE role = 'user'",
    )
    .fetch_all(&pool)
    .await
    .expect("read every user message")
    .into_iter()
    .collect();
    for (_, outcomes) in &results {
        for text in &outcomes.stored {
            assert!(
                every.contains(text),
                "{text} was confirmed but is not stored"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributing_the_tables_does_nothing_where_citus_is_not_installed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let TestPool::Postgres(pool) = &db.pool else {
        unreachable!("a Postgres test database");
    };
    let distributed = tower_conversations::distribute(pool)
        .await
        .expect("distribute answers");
    assert!(!distributed, "no Citus here");
    // Called again at the next start, it still does nothing and the store still works.
    assert!(!tower_conversations::distribute(pool).await.expect("again"));
    let app = serve(
        echo_model(Duration::ZERO),
        ConversationLayer::new(pool.clone()),
    )
    .await;
    let answer = send_chat(&app, None, &chat_body(json!([user("hello")]))).await;
    assert!(
        ends_with_done(&answer) && !storage_failed(&answer),
        "{}",
        answer.text()
    );
}

/// The migration that stores a message's text once (0002) carries a database written by
/// the first schema over: every row kept, every history read back, the old rows still
/// found by search beside the new ones.
#[tokio::test]
async fn the_text_stored_once_migration_keeps_every_row_and_search_still_finds_old_messages() {
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    let TestPool::Postgres(pool) = &db.pool else {
        unreachable!("a PostgreSQL test database")
    };
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.dangerous_set_table_name("_tower_conversations_migrations");
    migrator.run_to(1, pool).await.expect("the first schema");
    let old = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count, metadata)
         VALUES ($1, '', 'old', now(), now(), 2, '{}')",
    )
    .bind(old)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text, metadata, created_at)
         VALUES ($1, 0, 'user', '{\"role\":\"user\",\"content\":\"ancient words\"}', 'ancient words', '{}', now()),
                ($1, 1, 'assistant', '{\"role\":\"assistant\",\"content\":\"reply\"}', 'reply', '{}', now())",
    )
    .bind(old)
    .execute(pool)
    .await
    .unwrap();

    let store = db.store();
    tower_conversations::migrate(&*store)
        .await
        .expect("the later migrations");
    assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    let history = store.load_history("", old, None).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0].json(),
        r#"{"role":"user","content":"ancient words"}"#
    );

    let new = store
        .create(
            "",
            &tower_conversations::store::NewConversation {
                messages: vec![tower_conversations::store::NewMessage::new(
                    json!({"role": "user", "content": "modern words"}),
                )],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    let found = |words: &'static str| {
        let store = store.clone();
        async move {
            let query = tower_conversations::store::ListQuery {
                search: Some(words.into()),
                ..Default::default()
            };
            let listed = store.list("", &query).await.unwrap();
            listed
                .conversations
                .iter()
                .map(|c| c.id)
                .collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(found("ancient").await, BTreeSet::from([old]));
    assert_eq!(found("modern").await, BTreeSet::from([new]));
    assert_eq!(found("words").await, BTreeSet::from([old, new]));
}

/// A migrated test database and a pool of `max_connections` on it that counts the
/// connections given back to it (sqlx runs `after_release` for each), with `acquire` cut
/// off after `acquire_timeout`; as the example proxy's, it does not test each connection
/// it hands out.
async fn counted_pool(
    max_connections: u32,
    acquire_timeout: Duration,
) -> Option<(TestDb, PgPool, Arc<AtomicUsize>)> {
    counted_pool_testing(max_connections, acquire_timeout, false).await
}

/// [`counted_pool`], testing each connection it hands out when `test_before_acquire`.
async fn counted_pool_testing(
    max_connections: u32,
    acquire_timeout: Duration,
    test_before_acquire: bool,
) -> Option<(TestDb, PgPool, Arc<AtomicUsize>)> {
    let db = TestDb::postgres().await?;
    let released = Arc::new(AtomicUsize::new(0));
    let counter = released.clone();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(test_before_acquire)
        .after_release(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .connect(&db.url)
        .await
        .expect("connect to the test database");
    Some((db, pool, released))
}

/// A conversation of one message, stored through `pool`.
async fn one_conversation(pool: &PgPool) -> Uuid {
    pool.create(
        "",
        &NewConversation {
            messages: vec![NewMessage::new(json!({"role": "user", "content": "hi"}))],
            ..Default::default()
        },
    )
    .await
    .expect("create a conversation")
    .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_one_after_another_reuse_a_kept_connection_instead_of_giving_it_back_each_time() {
    let Some((_db, pool, released)) = counted_pool(4, Duration::from_secs(5)).await else {
        return;
    };
    let id = one_conversation(&pool).await;
    let before = released.load(Ordering::SeqCst);
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(
            pool.load_history("", id, None)
                .await
                .expect("history")
                .len(),
            1
        );
    }
    // A connection goes back to the pool at least once a second; every call would be 50.
    let seconds = started.elapsed().as_secs() as usize;
    let given_back = released.load(Ordering::SeqCst) - before;
    assert!(
        given_back <= 2 * (seconds + 1),
        "{given_back} connections given back to the pool over 50 calls in {seconds} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_tests_every_connection_it_hands_out_has_none_kept() {
    let Some((_db, pool, released)) = counted_pool_testing(4, Duration::from_secs(5), true).await
    else {
        return;
    };
    let id = one_conversation(&pool).await;
    let before = released.load(Ordering::SeqCst);
    for _ in 0..20 {
        pool.load_history("", id, None).await.expect("history");
    }
    // The release runs in a task of its own after each call (the create's may come
    // after `before` was read).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let given_back = released.load(Ordering::SeqCst) - before;
    assert!(given_back >= 20, "{given_back} given back over 20 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_goes_back_to_the_pool_within_a_second_or_two_of_the_last_call() {
    let Some((_db, pool, released)) = counted_pool(4, Duration::from_secs(5)).await else {
        return;
    };
    let id = one_conversation(&pool).await;
    pool.load_history("", id, None).await.expect("history");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        released.load(Ordering::SeqCst) >= 1,
        "no connection given back"
    );
    assert_eq!(
        pool.num_idle(),
        pool.size() as usize,
        "every connection is back in the pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_does_not_wait_for_a_kept_connection() {
    let Some((_db, pool, _)) = counted_pool(4, Duration::from_secs(5)).await else {
        return;
    };
    let id = one_conversation(&pool).await;
    pool.load_history("", id, None).await.expect("history");
    tokio::time::timeout(Duration::from_millis(500), pool.close())
        .await
        .expect("the pool closed at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_connection_has_it_free_for_others_right_after_a_call() {
    let Some((_db, pool, _)) = counted_pool(1, Duration::from_millis(300)).await else {
        return;
    };
    let id = one_conversation(&pool).await;
    for _ in 0..5 {
        pool.load_history("", id, None).await.expect("history");
        let mut connection = pool.acquire().await.expect("the pool's one connection");
        sqlx::query("SELECT 1")
            .execute(&mut *connection)
            .await
            .expect("a query of the caller's own");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_the_server_closed_fails_at_most_one_call() {
    let Some((db, pool, _)) = counted_pool(4, Duration::from_secs(5)).await else {
        return;
    };
    let id = one_conversation(&pool).await;
    pool.load_history("", id, None).await.expect("history");
    // The server ends every other session on the database, the kept one among them.
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("a connection of its own");
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS ended",
    )
    .fetch_one(&admin)
    .await
    .expect("terminate the pool's sessions");
    assert!(ended >= 1, "the pool had a session to end");
    let first = pool.load_history("", id, None).await;
    let second = pool.load_history("", id, None).await;
    assert_eq!(second.expect("the call after").len(), 1, "first: {first:?}");
}
