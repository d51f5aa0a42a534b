//! When the database fails under the layer: inserts that fail, writes that hang, history
//! that cannot be loaded (contract sections 3 and 5), connections killed mid-stream, a
//! server that was never there, and a server that hangs. Every stream completes, every
//! turn is either stored or reported `storage_failed`, the cause never reaches the
//! client, and the layer recovers by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use tokio::sync::Barrier;
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer, ConversationStore};
use uuid::Uuid;

use crate::support::db::{Backend, TestDb, TestPool};
use crate::support::echo::echo_model;
use crate::support::faults::*;
use crate::support::server::*;
use crate::support::turns::*;
use crate::support::upstream::*;

/// How much later than the storage timeout a client may hear of a failure.
const SLACK: Duration = Duration::from_millis(200);

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

/// Sends a chat request but gives up (failing the test) rather than hang it.
async fn send_chat_within(app: &TestServer, id: Option<Uuid>, text: &str) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        send_chat(app, id, &chat_body(json!([user(text)]))),
    )
    .await
    .unwrap_or_else(|_| panic!("{text:?} got no answer in 20 s"));
    (answer, started.elapsed())
}

/// One client's turn while backends were being killed.
struct KilledTurn {
    id: Uuid,
    text: String,
    storage_failed: bool,
}

backend_tests! {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_stream_leave_every_turn_stored_or_reported() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let admin = admin_pool().await;
    let pool = layer_pool(&db, 4).await;
    let layer = ConversationLayer::new(pool.clone()).storage_timeout(Duration::from_secs(3));
    let app = Arc::new(TestServer::start(echo_model(Duration::from_millis(15)).layer(layer)).await);
    let mut ids = Vec::new();
    for i in 0..8 {
        let (answer, _) = send_chat_within(&app, None, &format!("start {i}")).await;
        assert!(!storage_failed(&answer));
        ids.push(answer.id());
    }

    // 32 clients, half continuing the conversations above, half starting new ones, with
    // replies of different lengths so that their turns are stored at different moments.
    let clients = 32;
    let streaming = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (app, streaming) = (app.clone(), streaming.clone());
        let continued = (client % 2 == 0).then(|| ids[client % ids.len()]);
        let text = format!("client {client} says{}", " more".repeat(client % 16));
        tasks.push(tokio::spawn(async move {
            let mut request = reqwest::Client::new()
                .post(app.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(chat_body(json!([user(&text)])).to_string());
            if let Some(id) = continued {
                request = request.header(CONVERSATION_ID_HEADER, id.to_string());
            }
            let response = request.send().await.expect("the request is answered");
            streaming.wait().await;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.expect("the stream completes");
            let answer = Answer {
                status,
                headers,
                body,
            };
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            assert!(ends_with_done(&answer), "{}", answer.text());
            KilledTurn {
                id: answer.id(),
                text,
                storage_failed: storage_failed(&answer),
            }
        }));
    }

    // Every client is streaming: from now on, kill the database's backends every 10 ms
    // until the last stream ended.
    streaming.wait().await;
    let killing = Arc::new(AtomicBool::new(true));
    let killed = Arc::new(AtomicI64::new(0));
    let killer = tokio::spawn({
        let (killing, killed, name) = (killing.clone(), killed.clone(), db.name.clone());
        async move {
            while killing.load(Ordering::SeqCst) {
                let count = terminate_backends(&admin, &name).await;
                killed.fetch_add(count, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            admin
        }
    });
    let mut turns = Vec::new();
    for task in tasks {
        turns.push(task.await.expect("the client task"));
    }
    killing.store(false, Ordering::SeqCst);
    let admin = killer.await.expect("the killer task");
    let killed = killed.load(Ordering::SeqCst);
    assert!(killed > 0, "no backend was killed");

    // A turn the client heard as stored is stored; one reported failed may or may not be
    // (a kill after COMMIT), but never in part.
    let store = db.store();
    let mut failed = 0;
    for turn in &turns {
        let texts = echo_turns(&store, turn.id).await.unwrap_or_default();
        let present = texts.iter().filter(|t| **t == turn.text).count();
        if turn.storage_failed {
            failed += 1;
            assert!(present <= 1, "{}: stored twice", turn.text);
        } else {
            assert_eq!(present, 1, "{}: heard as stored but missing", turn.text);
        }
    }
    eprintln!("killed {killed} backends; {failed} of {clients} turns reported storage_failed");

    // Nothing was restarted: the same app, pool and layer serve new turns again.
    for id in ids.iter().copied().map(Some).chain([None]) {
        let (answer, _) = send_chat_within(&app, id, "after the storm").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!storage_failed(&answer), "{}", answer.text());
        let texts = echo_turns(&store, answer.id()).await.expect("stored");
        assert_eq!(texts.last().map(String::as_str), Some("after the storm"));
    }
    assert!(backends(&admin, &db.name).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_leaves_stateless_requests_working() {
    let pool = lazy_pool(&unreachable_postgres_url().await);
    let layer = ConversationLayer::new(pool).storage_timeout(Duration::from_secs(1));
    let model = TestModel::new();
    let app = serve_layered(&model, layer).await;

    let started = Instant::now();
    let body = chat_body(json!([{"role": "system", "content": "Be brief."}, user("hi")]));
    let answer = send_chat(&app, None, &body).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.conversation_id(), None);
    assert_eq!(answer.body, concat(&text_stream(&["You ", "said: ", "hi"])));
    let models = send(&app, Method::GET, "/v1/models", &[], "").await;
    assert_eq!(models.status, StatusCode::OK);
    assert_eq!(models.json(), crate::support::upstream::models());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_streams_a_new_conversation_then_reports_storage_failed() {
    let timeout = Duration::from_secs(1);
    let pool = lazy_pool(&unreachable_postgres_url().await);
    let app = serve_layered(
        &TestModel::new(),
        ConversationLayer::new(pool).storage_timeout(timeout),
    )
    .await;

    let (answer, took) = send_chat_within(&app, None, "hello").await;

    assert_eq!(answer.status, StatusCode::OK);
    answer.id();
    let events = answer.events();
    let upstream = text_stream(&["You ", "said: ", "hello"]);
    let (_, content) = upstream.split_last().expect("frames");
    assert!(answer.body.starts_with(&concat(content)), "the reply whole");
    assert!(storage_failed(&answer), "{events:?}");
    assert!(ends_with_done(&answer));
    assert!(took <= timeout + SLACK, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_answers_a_continued_conversation_503_within_the_timeout() {
    let timeout = Duration::from_secs(1);
    let pool = lazy_pool(&unreachable_postgres_url().await);
    let model = TestModel::new();
    let app = serve_layered(
        &model,
        ConversationLayer::new(pool).storage_timeout(timeout),
    )
    .await;

    let (answer, took) = send_chat_within(&app, Some(Uuid::now_v7()), "again").await;

    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error_code(), "conversation_store_unavailable");
    assert!(model.requests().is_empty(), "the upstream is not called");
    assert!(
        took <= timeout + SLACK,
        "took {took:?}: the pool's 30 s acquire timeout leaked through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_reports_within_the_timeout_then_stores_again_without_leaking() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let connections = 4;
    let pool = layer_pool(&db, connections).await;
    let layer = ConversationLayer::new(pool.clone()).storage_timeout(timeout);
    let app = Arc::new(TestServer::start(echo_model(Duration::ZERO).layer(layer)).await);
    let (first, _) = send_chat_within(&app, None, "before the lock").await;
    let id = first.id();

    let lock = LockedMessages::take(&db).await;
    // More requests than the pool has connections: some also wait to acquire one.
    let mut tasks = Vec::new();
    for client in 0..6 {
        let app = app.clone();
        let continued = (client % 3 == 0).then_some(id);
        tasks.push(tokio::spawn(async move {
            let text = format!("during the lock {client}");
            let (answer, took) = send_chat_within(&app, continued, &text).await;
            (continued, text, answer, took)
        }));
    }
    let mut abandoned = Vec::new();
    for task in tasks {
        let (continued, text, answer, took) = task.await.expect("the client task");
        assert!(took <= timeout + SLACK, "{text}: took {took:?}");
        if continued.is_some() {
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
            assert_eq!(answer.error_code(), "conversation_store_unavailable");
        } else {
            assert_eq!(answer.status, StatusCode::OK, "{text}");
            assert!(storage_failed(&answer), "{text}: {}", answer.text());
            assert!(ends_with_done(&answer), "{text}");
            abandoned.push((answer.id(), text));
        }
    }
    lock.release().await;

    // The abandoned writes finish or fail once the table is free; the pool gets every
    // connection back and never grew past its limit.
    let size = settled_size(&pool, Duration::from_secs(10)).await;
    assert!(size <= connections, "{size} connections");
    let store = db.store();
    for (abandoned, text) in &abandoned {
        // Abandoned at the timeout, a write may still land later, whole or not at all.
        if let Some(texts) = echo_turns(&store, *abandoned).await {
            assert_eq!(texts, std::slice::from_ref(text));
        }
    }

    let (answer, _) = send_chat_within(&app, Some(id), "after the lock").await;
    assert!(!storage_failed(&answer), "{}", answer.text());
    let (fresh, _) = send_chat_within(&app, None, "a new one after the lock").await;
    assert!(!storage_failed(&fresh), "{}", fresh.text());
    assert_eq!(
        echo_turns(&store, id).await.expect("stored"),
        ["before the lock", "after the lock"]
    );
    assert_eq!(
        echo_turns(&store, fresh.id()).await.expect("stored"),
        ["a new one after the lock"]
    );
    let size = settled_size(&pool, Duration::from_secs(10)).await;
    assert!(size <= connections, "{size} connections");
    assert_eq!(store.get("", id).await.expect("readable").messages.len(), 4);
}
