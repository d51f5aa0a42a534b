//! The example proxy end to end (contract section 9): the built binary as a child
//! process, the test model as its upstream, real HTTP on loopback, SQLite and PostgreSQL.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;
use tower_conversations::CONVERSATION_ID_HEADER;
use uuid::Uuid;

use crate::support::db::TestDb;
use crate::support::process::{self, Proxy};
use crate::support::server::{Answer, TestServer, chat_body, send_to, serve_model, user};
use crate::support::tls::TlsServer;
use crate::support::upstream::{Reply, TestModel, models};

/// The bearer token the tests send: with an upstream, the proxy refuses requests without
/// one.
const AUTHORIZATION: (&str, &str) = ("authorization", "Bearer token-a");

/// Sends a request to the proxy and reads the whole answer.
async fn send(
    proxy: &Proxy,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Answer {
    send_to(proxy.url(path), method, headers, body).await
}

/// Sends a chat request as the holder of `token`, continuing `id` when given.
async fn chat(proxy: &Proxy, token: Option<&str>, id: Option<Uuid>, body: &Value) -> Answer {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let id = id.map(|id| id.to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    if let Some(id) = &id {
        headers.push((CONVERSATION_ID_HEADER, id.as_str()));
    }
    send(
        proxy,
        Method::POST,
        "/v1/chat/completions",
        &headers,
        body.to_string(),
    )
    .await
}

/// The text of a streamed reply: every `delta.content` joined.
fn streamed_text(answer: &Answer) -> String {
    answer
        .events()
        .iter()
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The test model on loopback, and a proxy in front of it on `db`.
async fn proxy_for(db: &TestDb, model: &TestModel, env: &[(&str, &str)]) -> (TestServer, Proxy) {
    let upstream = serve_model(model).await;
    let base = upstream.url("");
    let mut all_env = vec![
        ("UPSTREAM_URL", base.as_str()),
        ("DATABASE_URL", db.url.as_str()),
    ];
    all_env.extend_from_slice(env);
    let proxy = Proxy::start(&[], &all_env).await;
    (upstream, proxy)
}

/// A proxy on `db` with a stream in flight: the model sends four deltas 300 ms apart, and
/// the first chunk has arrived (returned as bytes, after the response's status).
async fn slow_stream_under_way(
    db: &TestDb,
) -> (TestServer, Proxy, reqwest::Response, StatusCode, Vec<u8>) {
    let model = TestModel::new();
    model.push(Reply::text(["one ", "two ", "three ", "four"]).delay(Duration::from_millis(300)));
    let (upstream, proxy) = proxy_for(db, &model, &[]).await;
    let mut response = reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth("token-a")
        .json(&chat_body(json!([user("Count")])))
        .send()
        .await
        .expect("send");
    let status = response.status();
    let first = response
        .chunk()
        .await
        .expect("first chunk")
        .expect("a chunk")
        .to_vec();
    (upstream, proxy, response, status, first)
}

backend_tests! {
    async fn a_second_turn_reaches_the_upstream_with_the_first_turn_spliced_in(db: TestDb) {
        let model = TestModel::new();
        let (_upstream, proxy) = proxy_for(&db, &model, &[]).await;

        let first = chat(&proxy, Some("token-a"), None, &chat_body(json!([user("Hello")]))).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text());
        assert_eq!(streamed_text(&first), "You said: Hello");
        assert_eq!(first.events().last().map(String::as_str), Some("[DONE]"));
        let id = first.id();

        let second = chat(&proxy, Some("token-a"), Some(id), &chat_body(json!([user("Again")]))).await;
        assert_eq!(second.status, StatusCode::OK, "{}", second.text());
        assert_eq!(second.id(), id);
        assert_eq!(streamed_text(&second), "You said: Again");

        let upstream_messages = model.chat_requests()[1].messages();
        assert_eq!(
            upstream_messages,
            vec![
                user("Hello"),
                json!({"role": "assistant", "content": "You said: Hello"}),
                user("Again"),
            ]
        );
    }

    async fn get_models_passes_through_byte_identical(db: TestDb) {
        let model = TestModel::new();
        let (upstream, proxy) = proxy_for(&db, &model, &[]).await;
        let direct = reqwest::get(upstream.url("/v1/models?limit=5")).await.expect("direct");
        let direct_type = direct.headers()["content-type"].clone();
        let direct_body = direct.bytes().await.expect("direct body");

        let proxied = send(&proxy, Method::GET, "/v1/models?limit=5", &[AUTHORIZATION], "").await;

        assert_eq!(proxied.status, StatusCode::OK);
        assert_eq!(proxied.body, direct_body);
        assert_eq!(proxied.json(), models());
        assert_eq!(proxied.headers["content-type"], direct_type);
        assert!(proxied.headers.get(CONVERSATION_ID_HEADER).is_none());
        assert_eq!(model.last_request().path, "/v1/models?limit=5");
    }

    async fn upstream_api_key_replaces_authorization_and_bearer_tokens_are_owners(db: TestDb) {
        let model = TestModel::new();
        let (_upstream, proxy) =
            proxy_for(&db, &model, &[("UPSTREAM_API_KEY", "sk-upstream")]).await;

        let first = chat(&proxy, Some("token-a"), None, &chat_body(json!([user("Mine")]))).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text());
        assert_eq!(
            model.last_request().headers["authorization"],
            "Bearer sk-upstream",
            "the client's token must not reach the upstream"
        );
        let id = first.id();

        let intruder = chat(&proxy, Some("token-b"), Some(id), &chat_body(json!([user("Yours?")]))).await;
        assert_eq!(intruder.status, StatusCode::NOT_FOUND);
        assert_eq!(intruder.error_code(), "conversation_not_found");
        let anonymous = chat(&proxy, None, Some(id), &chat_body(json!([user("Anyone?")]))).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "a token is needed with an upstream");
        assert_eq!(model.chat_requests().len(), 1, "refused turns never reach the upstream");

        let owner = chat(&proxy, Some("token-a"), Some(id), &chat_body(json!([user("Still mine")]))).await;
        assert_eq!(owner.status, StatusCode::OK, "{}", owner.text());
        assert_eq!(model.chat_requests()[1].messages().len(), 3);
    }

    async fn the_management_api_is_mounted_and_shares_the_owners(db: TestDb) {
        let model = TestModel::new();
        let (_upstream, proxy) = proxy_for(&db, &model, &[]).await;
        let id = chat(&proxy, Some("token-a"), None, &chat_body(json!([user("Hello")]))).await.id();
        let path = format!("/v1/conversations/{id}");

        let mine = send(&proxy, Method::GET, &path, &[("authorization", "Bearer token-a")], "").await;
        assert_eq!(mine.status, StatusCode::OK, "{}", mine.text());
        assert_eq!(mine.json()["messages"].as_array().map(Vec::len), Some(2));

        let theirs = send(&proxy, Method::GET, &path, &[("authorization", "Bearer token-b")], "").await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND);
        let list = send(&proxy, Method::GET, "/v1/conversations", &[("authorization", "Bearer token-b")], "").await;
        assert_eq!(list.json()["total"], 0);
        assert!(model.requests().iter().all(|r| !r.path.starts_with("/v1/conversations")));
    }

    async fn the_demo_model_answers_without_an_upstream_and_sees_the_history(db: TestDb) {
        let proxy = Proxy::start(&["--database-url", &db.url], &[]).await;
        let log = proxy.log();
        assert!(log.contains("demo model") && log.contains("--upstream"), "{log}");

        let first = chat(&proxy, None, None, &json!({"stream": true, "messages": [user("Hello")]})).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text());
        assert!(first.events().len() > 3, "the demo streams several chunks: {}", first.text());
        assert!(
            streamed_text(&first).starts_with("You sent 1 message; the last one said: \"Hello\"."),
            "{}",
            first.text()
        );

        let second = chat(&proxy, None, Some(first.id()), &json!({"stream": false, "messages": [user("Again")]})).await;
        assert_eq!(second.status, StatusCode::OK, "{}", second.text());
        let completion = second.json();
        assert_eq!(completion["object"], "chat.completion");
        let content = completion["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        assert!(content.starts_with("You sent 3 messages; the last one said: \"Again\"."), "{content}");
    }

    async fn sigterm_lets_a_stream_in_flight_finish_and_its_turn_be_stored(db: TestDb) {
        let (_upstream, mut proxy, mut response, status, mut body) = slow_stream_under_way(&db).await;
        assert_eq!(status, StatusCode::OK);

        proxy.terminate();
        let addr = proxy.addr();
        crate::support::server::eventually(Duration::from_secs(5), "the proxy to stop accepting", || async move {
            tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
        })
        .await;
        while let Some(chunk) = response.chunk().await.expect("the rest of the stream") {
            body.extend_from_slice(&chunk);
        }

        let text = String::from_utf8(body).expect("UTF-8");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(!text.contains("storage_failed"), "{text}");
        assert!(proxy.exit_status(Duration::from_secs(10)).await.success(), "{}", proxy.log());
        assert!(proxy.log().contains("SIGTERM"), "{}", proxy.log());
        assert_eq!(db.scalar("SELECT COUNT(*) FROM messages").await, 2);
    }

    async fn a_turn_the_client_walked_away_from_is_stored_before_the_proxy_exits(db: TestDb) {
        let (_upstream, mut proxy, response, _, _) = slow_stream_under_way(&db).await;
        drop(response);
        proxy.terminate();

        assert!(proxy.exit_status(Duration::from_secs(10)).await.success(), "{}", proxy.log());
        assert_eq!(db.scalar("SELECT COUNT(*) FROM messages").await, 2, "{}", proxy.log());
    }
}

#[tokio::test]
async fn help_prints_the_options_and_exits_zero() {
    let output = process::command(&["--help"], &[])
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let usage = String::from_utf8(output.stdout).expect("UTF-8");
    for option in [
        "--listen",
        "--upstream",
        "--database-url",
        "--passthrough",
        "UPSTREAM_API_KEY",
    ] {
        assert!(usage.contains(option), "{option} missing from:\n{usage}");
    }
}

#[tokio::test]
async fn an_unknown_flag_is_refused_with_exit_code_two() {
    let output = process::command(&["--bogus"], &[]).output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        message.contains("--bogus") && message.contains("--help"),
        "{message}"
    );
}

#[tokio::test]
async fn flags_win_over_environment_variables() {
    let model = TestModel::new();
    let upstream = serve_model(&model).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let proxy = Proxy::start(
        &[
            "--passthrough",
            "--listen",
            &listen,
            "--upstream",
            &upstream.url(""),
        ],
        &[
            ("LISTEN_ADDR", "127.0.0.1:1"),
            ("UPSTREAM_URL", "http://127.0.0.1:1"),
        ],
    )
    .await;
    assert_eq!(proxy.addr().port(), port);
    let answer = send(&proxy, Method::GET, "/v1/models", &[AUTHORIZATION], "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn passthrough_adds_no_conversation_id_and_forwards_the_body_as_sent() {
    let model = TestModel::new();
    let upstream = serve_model(&model).await;
    let proxy = Proxy::start(&["--passthrough", "--upstream", &upstream.url("")], &[]).await;
    let body = r#"{"stream": true, "messages": [{"role": "user", "content": "Hi"}]}"#;

    let answer = send(
        &proxy,
        Method::POST,
        "/v1/chat/completions",
        &[("content-type", "application/json"), AUTHORIZATION],
        body,
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get(CONVERSATION_ID_HEADER).is_none());
    assert_eq!(streamed_text(&answer), "You said: Hi");
    assert_eq!(model.last_request().body, body.as_bytes());
}

#[tokio::test]
async fn a_streamed_reply_reaches_the_client_frame_by_frame() {
    let model = TestModel::new();
    let pause = Duration::from_millis(400);
    model.push(Reply::text(["a ", "b ", "c"]).delay(pause));
    let upstream = serve_model(&model).await;
    let proxy = Proxy::start(&["--passthrough", "--upstream", &upstream.url("")], &[]).await;
    let started = std::time::Instant::now();

    let mut response = reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth("token-a")
        .json(&chat_body(json!([user("Go")])))
        .send()
        .await
        .expect("send");
    response
        .chunk()
        .await
        .expect("first chunk")
        .expect("a chunk");
    let first_chunk = started.elapsed();
    while response.chunk().await.expect("the rest").is_some() {}
    let whole = started.elapsed();

    // Seven frames, six pauses: a proxy that buffered would deliver nothing before the end.
    assert!(whole >= pause * 6, "{whole:?}");
    assert!(
        first_chunk < pause * 2,
        "first chunk after {first_chunk:?} of {whole:?}"
    );
}

#[tokio::test]
async fn the_path_and_query_are_appended_to_the_upstream_base_url() {
    let model = TestModel::new();
    let upstream = serve_model(&model).await;
    let proxy = Proxy::start(
        &["--passthrough", "--upstream", &upstream.url("/openai/")],
        &[],
    )
    .await;

    let answer = send(
        &proxy,
        Method::GET,
        "/v1/models?after=a%20b",
        &[AUTHORIZATION],
        "",
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(model.last_request().path, "/openai/v1/models?after=a%20b");
}

#[tokio::test]
async fn hop_by_hop_headers_stay_behind_and_the_upstream_sees_its_own_host() {
    let model = TestModel::new();
    let upstream = serve_model(&model).await;
    let proxy = Proxy::start(&["--passthrough", "--upstream", &upstream.url("")], &[]).await;
    let headers = [
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "this connection only"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
        ("te", "trailers"),
        ("x-end-to-end", "kept"),
        ("authorization", "Bearer client-token"),
    ];

    let answer = send(&proxy, Method::GET, "/v1/models", &headers, "").await;

    assert_eq!(answer.status, StatusCode::OK);
    let seen = model.last_request().headers;
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(seen["x-end-to-end"], "kept");
    assert_eq!(
        seen["authorization"], "Bearer client-token",
        "no UPSTREAM_API_KEY: the client's own"
    );
    assert_eq!(seen["host"], upstream.addr().to_string());
}

#[tokio::test]
async fn chat_requests_ask_the_upstream_for_an_uncompressed_reply() {
    let model = TestModel::new();
    let upstream = serve_model(&model).await;
    let proxy = Proxy::start(&["--passthrough", "--upstream", &upstream.url("")], &[]).await;
    let gzip = [
        ("accept-encoding", "gzip, br"),
        ("content-type", "application/json"),
        AUTHORIZATION,
    ];

    send(
        &proxy,
        Method::POST,
        "/v1/chat/completions",
        &gzip,
        chat_body(json!([user("Hi")])).to_string(),
    )
    .await;
    assert_eq!(model.last_request().headers["accept-encoding"], "identity");

    send(&proxy, Method::GET, "/v1/models", &gzip, "").await;
    assert_eq!(
        model.last_request().headers["accept-encoding"],
        "gzip, br",
        "other paths are untouched"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_answers_502_in_the_openai_envelope() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let proxy = Proxy::start(
        &["--passthrough", "--upstream", &format!("http://{closed}")],
        &[],
    )
    .await;

    let answer = send(&proxy, Method::GET, "/v1/models", &[AUTHORIZATION], "").await;

    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.error_code(), "upstream_unreachable");
    assert_eq!(answer.json()["error"]["type"], "server_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_with_the_trusted_roots() {
    let db = TestDb::sqlite().await;
    let model = TestModel::new();
    let upstream = TlsServer::start(model.router()).await;
    let base = upstream.base_url();
    let proxy = Proxy::start(
        &["--upstream", &base, "--database-url", &db.url],
        &[("SSL_CERT_FILE", upstream.ca_file())],
    )
    .await;

    let first = chat(
        &proxy,
        Some("token-a"),
        None,
        &chat_body(json!([user("Secure")])),
    )
    .await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "{}\n{}",
        first.text(),
        proxy.log()
    );
    assert_eq!(streamed_text(&first), "You said: Secure");
    let second = chat(
        &proxy,
        Some("token-a"),
        Some(first.id()),
        &chat_body(json!([user("Again")])),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(model.chat_requests()[1].messages().len(), 3);
}

#[tokio::test]
async fn an_https_upstream_signed_by_an_unknown_ca_is_refused_with_502() {
    let model = TestModel::new();
    let upstream = TlsServer::start(model.router()).await;
    let stranger = TlsServer::start(TestModel::new().router()).await;
    let proxy = Proxy::start(
        &["--passthrough", "--upstream", &upstream.base_url()],
        &[("SSL_CERT_FILE", stranger.ca_file())],
    )
    .await;

    let answer = send(&proxy, Method::GET, "/v1/models", &[AUTHORIZATION], "").await;

    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(model.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sqlite_file_is_created() {
    let path = std::env::temp_dir().join(format!("tc_test_proxy_{}.db", Uuid::now_v7().simple()));
    let url = format!("sqlite://{}", path.display());
    assert!(!path.exists());

    let proxy = Proxy::start(&["--database-url", &url], &[]).await;

    assert!(path.exists(), "{}", proxy.log());
    let answer = chat(&proxy, None, None, &json!({"messages": [user("Hi")]})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.id();
    drop(proxy);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_names_the_database_but_never_its_password() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // The test server trusts local connections, so any password is accepted.
    let url = db
        .url
        .replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    assert_ne!(
        url, db.url,
        "expected a URL of the form postgres://postgres@..."
    );

    let proxy = Proxy::start(&["--database-url", &url], &[]).await;

    let log = proxy.log();
    assert!(
        log.contains("PostgreSQL") && log.contains(&db.name),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
}

/// The proxy hands out a Postgres connection without a ping when it was busy a moment
/// ago, and pings one that sat idle: connections the server closed while they were idle
/// (a restart, an idle timeout) are replaced before they can cost a turn.
#[tokio::test]
async fn postgres_connections_closed_while_idle_are_replaced_before_a_turn() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let model = TestModel::new();
    let (_upstream, proxy) = proxy_for(&db, &model, &[]).await;
    let first = chat(
        &proxy,
        Some("token-a"),
        None,
        &chat_body(json!([user("Hello")])),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());

    let admin = crate::support::faults::admin_pool().await;
    assert!(crate::support::faults::terminate_backends(&admin, &db.name).await > 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let second = chat(
        &proxy,
        Some("token-a"),
        Some(first.id()),
        &chat_body(json!([user("Again")])),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert!(
        !second.text().contains("storage_failed"),
        "{}",
        second.text()
    );
    // The owner of "token-a": its SHA-256 in hex.
    let owner = format!("{:x}", sha2::Sha256::digest("token-a"));
    let stored = db
        .store()
        .load_history(&owner, first.id(), None)
        .await
        .expect("stored");
    assert_eq!(stored.len(), 4, "both turns are stored: {stored:?}");
}
