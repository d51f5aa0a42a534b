//! Operating the example proxy: API keys, the health checks, Prometheus metrics and
//! start-up errors, through the built binary with the test model as its upstream.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tower_conversations::CONVERSATION_ID_HEADER;
use uuid::Uuid;

use crate::support::db::{TestDb, postgres_server_url};
use crate::support::process::Proxy;
use crate::support::server::{
    Answer, TestServer, chat_body, eventually, send_to, serve_model, user,
};
use crate::support::upstream::{Reply, TestModel};

const ALICE: &str = "sk-alice";
const BOB: &str = "sk-bob";
const EVE: &str = "sk-eve";

/// A file of the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("tc_test_ops_{}_{name}", Uuid::now_v7().simple()));
        std::fs::write(&path, contents).expect("write the temporary file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }

    fn write(&self, contents: &str) {
        std::fs::write(&self.0, contents).expect("rewrite the temporary file");
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// SHA-256 in hex, as a key file may list a key.
fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text))
}

/// A key file allowing Alice by her key and Bob by its hash.
fn alice_and_bob() -> TempFile {
    TempFile::new(
        "keys.txt",
        &format!(
            "# clients of the proxy\n\n{ALICE}   # alice\n{}\n",
            sha256_hex(BOB)
        ),
    )
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A request to the proxy, as the holder of `token` when given.
async fn request(
    proxy: &Proxy,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    send_to(proxy.url(path), method, &headers, body.to_owned()).await
}

async fn get(proxy: &Proxy, path: &str, token: Option<&str>) -> Answer {
    request(proxy, Method::GET, path, token, "").await
}

/// A chat request continuing `id` when given.
async fn chat(proxy: &Proxy, token: Option<&str>, id: Option<Uuid>, messages: Value) -> Answer {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let id = id.map(|id| id.to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    if let Some(id) = &id {
        headers.push((CONVERSATION_ID_HEADER, id.as_str()));
    }
    let body = chat_body(messages).to_string();
    send_to(
        proxy.url("/v1/chat/completions"),
        Method::POST,
        &headers,
        body,
    )
    .await
}

/// The test model on loopback and a proxy in front of it, on a fresh SQLite database.
async fn proxy_with(args: &[&str], env: &[(&str, &str)]) -> (TestModel, TestServer, Proxy, TestDb) {
    let db = TestDb::sqlite().await;
    let model = TestModel::new();
    let upstream = serve_model(&model).await;
    let base = upstream.url("");
    let mut all_args = vec![
        "--upstream",
        base.as_str(),
        "--database-url",
        db.url.as_str(),
    ];
    all_args.extend_from_slice(args);
    let proxy = Proxy::start(&all_args, env).await;
    (model, upstream, proxy, db)
}

/// Asserts the proxy's own `401` in the OpenAI envelope.
fn assert_refused(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        answer.text()
    );
    assert_eq!(answer.error_code(), "invalid_api_key", "{what}");
    assert_eq!(
        answer.json()["error"]["type"],
        "invalid_request_error",
        "{what}"
    );
}

/// The value of the series `name` whose labels are exactly `labels`, in Prometheus text.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let have: Vec<&str> = series_labels.split(',').filter(|l| !l.is_empty()).collect();
            let matches = series_name == name
                && have.len() == wanted.len()
                && wanted.iter().all(|label| have.contains(&label.as_str()));
            matches.then(|| value.parse().expect("a number"))
        })
}

/// Runs the proxy to its exit (it is expected to fail at start), at most 30 s.
async fn run_to_exit(args: &[&str]) -> (Output, Duration) {
    let mut command = crate::support::process::command(args, &[]);
    command.args(["--listen", "127.0.0.1:0"]);
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || command.output().expect("run the proxy")),
    )
    .await
    .expect("the proxy exits within 30 s")
    .expect("the proxy ran");
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_key_or_one_listed_by_its_sha256_is_let_in_on_chat_management_and_forwarded_paths()
{
    let keys = alice_and_bob();
    let (_model, _upstream, proxy, _db) = proxy_with(&["--api-keys", keys.path()], &[]).await;
    assert!(proxy.log().contains("2 key(s)"), "{}", proxy.log());

    for key in [ALICE, BOB] {
        let answer = chat(&proxy, Some(key), None, json!([user("Hello")])).await;
        assert_eq!(answer.status, StatusCode::OK, "{key}: {}", answer.text());
        let listed = get(&proxy, "/v1/conversations", Some(key)).await;
        assert_eq!(listed.status, StatusCode::OK, "{key}: {}", listed.text());
        assert_eq!(listed.json()["total"], 1, "each key is an owner of its own");
        let models = get(&proxy, "/v1/models", Some(key)).await;
        assert_eq!(models.status, StatusCode::OK, "{key}: {}", models.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_owns_the_same_conversations_with_the_key_file_as_without_it() {
    let keys = alice_and_bob();
    let (_model, upstream, checked, db) = proxy_with(&["--api-keys", keys.path()], &[]).await;
    for key in [ALICE, BOB] {
        let answer = chat(&checked, Some(key), None, json!([user("Hello")])).await;
        assert_eq!(answer.status, StatusCode::OK, "{key}: {}", answer.text());
    }

    let base = upstream.url("");
    let open = Proxy::start(&["--upstream", &base, "--database-url", &db.url], &[]).await;
    for key in [ALICE, BOB] {
        let listed = get(&open, "/v1/conversations", Some(key)).await;
        assert_eq!(listed.status, StatusCode::OK, "{key}: {}", listed.text());
        assert_eq!(
            listed.json()["total"],
            1,
            "{key}: the owner is the token's digest, whoever computed it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_cannot_be_stored_is_logged_with_its_conversation_id() {
    let (_model, _upstream, proxy, db) = proxy_with(&[], &[]).await;
    db.execute("DROP TABLE messages").await;

    let answer = chat(&proxy, Some(ALICE), None, json!([user("Hello")])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(
        answer.text().contains("storage_failed"),
        "{}",
        answer.text()
    );
    let id = answer.headers[CONVERSATION_ID_HEADER]
        .to_str()
        .expect("an ASCII id")
        .to_owned();
    let logged = format!("gen_ai.conversation.id={id}");
    eventually(Duration::from_secs(5), "the failure logged", || async {
        let log = proxy.log();
        log.lines()
            .any(|line| line.contains("storing the turn failed") && line.contains(&logged))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_or_missing_key_gets_401_in_the_openai_envelope_on_chat_management_and_forwarded_paths()
 {
    let keys = alice_and_bob();
    let (model, _upstream, proxy, _db) = proxy_with(&["--api-keys", keys.path()], &[]).await;
    let bobs_hash = sha256_hex(BOB);

    for token in [Some(EVE), None, Some(bobs_hash.as_str())] {
        let what = format!("token {token:?}");
        let answer = chat(&proxy, token, None, json!([user("Hello")])).await;
        assert_refused(&answer, &what);
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
        assert_refused(&get(&proxy, "/v1/conversations", token).await, &what);
        assert_refused(&get(&proxy, "/v1/models", token).await, &what);
    }
    assert!(
        model.requests().is_empty(),
        "refused requests never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_file_a_request_without_a_token_gets_401_when_an_upstream_answers() {
    let (model, _upstream, proxy, _db) = proxy_with(&[], &[]).await;
    assert!(
        proxy.log().contains("without one get 401"),
        "{}",
        proxy.log()
    );

    assert_refused(&chat(&proxy, None, None, json!([user("Hi")])).await, "chat");
    assert_refused(&get(&proxy, "/v1/conversations", None).await, "management");
    assert_refused(&get(&proxy, "/v1/models", None).await, "forwarded");
    assert!(model.requests().is_empty());

    let answer = chat(&proxy, Some(EVE), None, json!([user("Hi")])).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "any token is an owner: {}",
        answer.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_anonymous_lets_requests_without_a_token_in() {
    let (_model, _upstream, proxy, _db) = proxy_with(&["--allow-anonymous"], &[]).await;
    assert!(proxy.log().contains("--allow-anonymous"), "{}", proxy.log());

    let first = chat(&proxy, None, None, json!([user("Hi")])).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let listed = get(&proxy, "/v1/conversations", None).await;
    assert_eq!(listed.json()["total"], 1, "{}", listed.text());
    assert_eq!(get(&proxy, "/v1/models", None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_anonymous_with_a_key_file_is_refused_as_a_contradiction() {
    let keys = alice_and_bob();
    let message =
        crate::support::process::refused(&["--api-keys", keys.path()], &[("ALLOW_ANONYMOUS", "1")]);
    assert!(
        message.contains("--allow-anonymous") && message.contains(keys.path()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_api_key_without_a_key_file_is_warned_about_at_start() {
    let (_model, _upstream, proxy, _db) =
        proxy_with(&[], &[("UPSTREAM_API_KEY", "sk-upstream")]).await;
    let log = proxy.log();
    assert!(
        log.contains("whoever can reach this proxy spends that key"),
        "{log}"
    );
    assert!(!log.contains("sk-upstream"), "{log}");

    let keys = alice_and_bob();
    let (_model, _upstream, proxy, _db) = proxy_with(
        &["--api-keys", keys.path()],
        &[("UPSTREAM_API_KEY", "sk-upstream")],
    )
    .await;
    assert!(!proxy.log().contains("spends that key"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_applies_the_same_key_check() {
    let keys = alice_and_bob();
    let model = TestModel::new();
    let upstream = serve_model(&model).await;
    let proxy = Proxy::start(
        &[
            "--passthrough",
            "--upstream",
            &upstream.url(""),
            "--api-keys",
            keys.path(),
        ],
        &[],
    )
    .await;

    assert_refused(
        &chat(&proxy, Some(EVE), None, json!([user("Hi")])).await,
        "eve",
    );
    assert_refused(&get(&proxy, "/v1/models", None).await, "no key");
    assert!(model.requests().is_empty());
    let answer = chat(&proxy, Some(ALICE), None, json!([user("Hi")])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.headers.get(CONVERSATION_ID_HEADER).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_file_is_refused_after_sighup_while_an_earlier_stream_finishes() {
    let keys = alice_and_bob();
    let (model, _upstream, proxy, db) = proxy_with(&["--api-keys", keys.path()], &[]).await;
    model.push(Reply::text(["one ", "two ", "three ", "four"]).delay(Duration::from_millis(300)));
    let mut stream = reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(ALICE)
        .json(&chat_body(json!([user("Count")])))
        .send()
        .await
        .expect("send");
    assert_eq!(stream.status(), StatusCode::OK);
    let mut body = stream
        .chunk()
        .await
        .expect("first chunk")
        .expect("a chunk")
        .to_vec();

    keys.write(&format!("{}\n", sha256_hex(BOB)));
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(hangup.success());
    eventually(
        Duration::from_secs(5),
        "Alice's key to be refused",
        || async {
            let answer = get(&proxy, "/v1/conversations", Some(ALICE)).await;
            (answer.status == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
    assert_eq!(
        get(&proxy, "/v1/conversations", Some(BOB)).await.status,
        StatusCode::OK
    );

    while let Some(chunk) = stream.chunk().await.expect("the rest of the stream") {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).expect("UTF-8");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("storage_failed"), "{text}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM messages").await, 2);
    assert!(proxy.log().contains("SIGHUP: 1 key(s)"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_without_a_key_and_are_never_forwarded() {
    let keys = alice_and_bob();
    let (model, _upstream, proxy, _db) = proxy_with(&["--api-keys", keys.path()], &[]).await;

    let alive = get(&proxy, "/healthz", None).await;
    assert_eq!(alive.status, StatusCode::OK, "{}", alive.text());
    assert_eq!(alive.json()["status"], "ok");
    let ready = get(&proxy, "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    assert!(model.requests().is_empty());
}

/// A TCP relay on loopback to a database server, which the test can cut off (every
/// connection through it closed, new ones closed as soon as they are accepted) and
/// restore: the database becomes unreachable for the proxy alone.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accepting: AbortHandle,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let accepting = tokio::spawn({
            let (up, connections) = (up.clone(), connections.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue;
                    }
                    let target = target.clone();
                    let relayed = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(relayed.abort_handle());
                }
            }
        })
        .abort_handle();
        Relay {
            addr,
            up,
            connections,
            accepting,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_postgres_is_unreachable_and_200_again_after() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let options = PgConnectOptions::from_str(&db.url).expect("the test database URL");
    let relay = Relay::start(format!("{}:{}", options.get_host(), options.get_port())).await;
    let url = format!(
        "postgres://{}@{}/{}",
        options.get_username(),
        relay.addr,
        db.name
    );
    let proxy = Proxy::start(&["--database-url", &url], &[]).await;
    assert_eq!(get(&proxy, "/readyz", None).await.status, StatusCode::OK);

    relay.cut();
    let started = Instant::now();
    let unready = get(&proxy, "/readyz", None).await;
    assert_eq!(
        unready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        unready.text()
    );
    assert_eq!(unready.error_code(), "conversation_store_unavailable");
    assert_eq!(unready.json()["error"]["type"], "server_error");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        get(&proxy, "/healthz", None).await.status,
        StatusCode::OK,
        "alive all the same"
    );

    relay.restore();
    eventually(
        Duration::from_secs(15),
        "/readyz to answer 200 again",
        || async { (get(&proxy, "/readyz", None).await.status == StatusCode::OK).then_some(()) },
    )
    .await;
    let answer = chat(&proxy, None, None, json!([user("Back")])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_known_traffic_count_turns_stored_and_failed_and_the_held_ends() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (_model, _upstream, proxy, db) =
        proxy_with(&["--metrics-listen", &metrics_addr], &[]).await;

    let first = chat(&proxy, Some(ALICE), None, json!([user("Hello")])).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let second = chat(
        &proxy,
        Some(ALICE),
        Some(first.id()),
        json!([user("Again")]),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    let system = json!([{"role": "system", "content": "Be brief."}, user("Hi")]);
    let stateless = chat(&proxy, Some(ALICE), None, system).await;
    assert_eq!(stateless.status, StatusCode::OK, "{}", stateless.text());
    let unknown = chat(
        &proxy,
        Some(ALICE),
        Some(Uuid::now_v7()),
        json!([user("?")]),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // From here on every turn fails in the database.
    db.execute(
        "CREATE TRIGGER refuse_turns BEFORE INSERT ON messages \
         BEGIN SELECT RAISE(ABORT, 'turns refused by the test'); END",
    )
    .await;
    let failed = chat(&proxy, Some(ALICE), Some(first.id()), json!([user("Lost")])).await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.text());
    assert!(
        failed.text().contains("storage_failed"),
        "{}",
        failed.text()
    );

    let scraped = send_to(
        format!("http://{metrics_addr}/metrics"),
        Method::GET,
        &[],
        "",
    )
    .await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert!(
        scraped.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = scraped.text();
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    let sqlite = ("backend", "sqlite");
    let requests = "tower_conversations_requests_total";
    assert_eq!(value(requests, &[("mode", "new")]), 1.0);
    assert_eq!(value(requests, &[("mode", "continue")]), 2.0);
    assert_eq!(value(requests, &[("mode", "stateless")]), 1.0);
    assert_eq!(value(requests, &[("mode", "error")]), 1.0);
    let stored = "tower_conversations_turns_stored_total";
    assert_eq!(value(stored, &[sqlite, ("mode", "new")]), 1.0);
    assert_eq!(value(stored, &[sqlite, ("mode", "continue")]), 1.0);
    let failed = "tower_conversations_turns_failed_total";
    assert_eq!(
        value(failed, &[sqlite, ("mode", "continue"), ("cause", "query")]),
        1.0
    );
    assert_eq!(
        metric(text, failed, &[sqlite, ("mode", "new"), ("cause", "query")]),
        None
    );
    let loads = "tower_conversations_history_loads_total";
    assert_eq!(value(loads, &[sqlite, ("outcome", "loaded")]), 2.0);
    assert_eq!(value(loads, &[sqlite, ("outcome", "not_found")]), 1.0);
    let storage = "tower_conversations_storage_seconds_count";
    assert_eq!(value(storage, &[sqlite, ("mode", "continue")]), 2.0);
    // Three streams held their end while their turn was stored (or failed to be).
    assert_eq!(
        value("tower_conversations_stream_end_held_seconds_count", &[]),
        3.0
    );
    assert!(value("tower_conversations_stream_end_held_seconds_sum", &[]) > 0.0);
    assert_eq!(value("tower_conversations_turns_pending", &[]), 0.0);
    assert!(text.contains("# TYPE tower_conversations_stream_end_held_seconds histogram"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address_need_no_key_and_are_never_forwarded() {
    let keys = alice_and_bob();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (model, _upstream, proxy, _db) = proxy_with(
        &["--api-keys", keys.path(), "--metrics-listen", &metrics_addr],
        &[],
    )
    .await;
    let answer = chat(&proxy, Some(ALICE), None, json!([user("Hi")])).await;
    assert_eq!(answer.status, StatusCode::OK);

    let scraped = send_to(
        format!("http://{metrics_addr}/metrics"),
        Method::GET,
        &[],
        "",
    )
    .await;
    assert_eq!(scraped.status, StatusCode::OK, "{}", scraped.text());
    assert!(
        scraped
            .text()
            .contains("tower_conversations_turns_stored_total")
    );
    assert_eq!(
        model.requests().len(),
        1,
        "only the chat request went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_main_address_need_a_key() {
    let keys = alice_and_bob();
    let (model, _upstream, proxy, _db) = proxy_with(&["--api-keys", keys.path()], &[]).await;
    let answer = chat(&proxy, Some(BOB), None, json!([user("Hi")])).await;
    assert_eq!(answer.status, StatusCode::OK);

    assert_refused(&get(&proxy, "/metrics", None).await, "no key");
    assert_refused(&get(&proxy, "/metrics", Some(EVE)).await, "eve");
    let scraped = get(&proxy, "/metrics", Some(ALICE)).await;
    assert_eq!(scraped.status, StatusCode::OK, "{}", scraped.text());
    assert!(
        scraped
            .text()
            .contains("tower_conversations_turns_stored_total")
    );
    assert_eq!(
        model.requests().len(),
        1,
        "/metrics is answered by the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_for_a_serving_proxy_and_nonzero_for_none() {
    let db = TestDb::sqlite().await;
    let proxy = Proxy::start(&["--database-url", &db.url], &[]).await;
    let check = |args: Vec<String>, env: Vec<(&'static str, String)>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::support::process::command(&args, &env)
                .output()
                .expect("run the health check")
        })
        .await
        .expect("ran")
    };

    let ready = check(vec!["--healthcheck".into(), proxy.url("/readyz")], vec![]).await;
    assert!(ready.status.success(), "{}", stderr(&ready));
    let by_path = check(
        vec!["--healthcheck".into(), "/healthz".into()],
        vec![("LISTEN_ADDR", proxy.addr().to_string())],
    )
    .await;
    assert!(by_path.status.success(), "{}", stderr(&by_path));

    let nobody = format!("http://127.0.0.1:{}/healthz", free_port());
    let missing = check(vec!["--healthcheck".into(), nobody.clone()], vec![]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains(&nobody), "{}", stderr(&missing));
    let not_found = check(vec!["--healthcheck".into(), proxy.url("/nowhere")], vec![]).await;
    assert_eq!(not_found.status.code(), Some(1), "{}", stderr(&not_found));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_stops_the_start_within_seconds_naming_host_and_port() {
    let port = free_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/conversations");

    let (output, took) = run_to_exit(&["--database-url", &url]).await;

    let message = stderr(&output);
    assert!(!output.status.success(), "{message}");
    assert!(took < Duration::from_secs(15), "{took:?}: {message}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}/conversations")),
        "{message}"
    );
    assert!(
        message.contains("Connection refused"),
        "the cause: {message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_stops_the_start_with_the_databases_own_message() {
    let Some(_server) = TestDb::postgres().await else {
        return;
    };
    // A database of its own where the migrations cannot create their first table.
    let name = format!("tc_test_ops_{}", Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(&postgres_server_url())
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create the database");
    let options = PgConnectOptions::from_str(&postgres_server_url()).expect("server URL");
    let url = format!(
        "postgres://{}@{}:{}/{name}",
        options.get_username(),
        options.get_host(),
        options.get_port()
    );
    let database = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE conversations (not_ours integer)")
        .execute(&database)
        .await
        .expect("create the table in the way");
    database.close().await;

    let (output, _) = run_to_exit(&["--database-url", &url]).await;

    let message = stderr(&output);
    assert!(!output.status.success(), "{message}");
    assert!(message.contains("running the migrations"), "{message}");
    assert!(message.contains(&name), "{message}");
    assert!(
        message.contains(r#"relation "conversations" already exists"#),
        "the database's own message: {message}"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("drop the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_file_that_cannot_be_opened_stops_the_start_naming_the_path() {
    let path: PathBuf = std::env::temp_dir()
        .join(format!("tc_test_ops_missing_{}", Uuid::now_v7().simple()))
        .join("conversations.db");
    let url = format!("sqlite://{}", path.display());

    let (output, took) = run_to_exit(&["--database-url", &url]).await;

    let message = stderr(&output);
    assert!(!output.status.success(), "{message}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(message.contains(path.to_str().unwrap()), "{message}");
    assert!(
        message.contains("unable to open database file"),
        "{message}"
    );
    assert!(!Path::new(&path).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_that_cannot_be_read_stops_the_start_naming_the_path() {
    let missing =
        std::env::temp_dir().join(format!("tc_test_ops_{}.keys", Uuid::now_v7().simple()));
    let missing = missing.to_str().unwrap();

    let (output, _) =
        run_to_exit(&["--api-keys", missing, "--database-url", "sqlite::memory:"]).await;
    let message = stderr(&output);
    assert!(!output.status.success(), "{message}");
    assert!(
        message.contains(missing) && message.contains("No such file"),
        "{message}"
    );

    let empty = TempFile::new("empty.keys", "# nobody yet\n\n");
    let (output, _) = run_to_exit(&[
        "--api-keys",
        empty.path(),
        "--database-url",
        "sqlite::memory:",
    ])
    .await;
    let message = stderr(&output);
    assert!(!output.status.success(), "{message}");
    assert!(
        message.contains(empty.path()) && message.contains("lists no key"),
        "{message}"
    );
}

#[test]
fn the_proxy_refuses_a_history_cache_that_is_not_a_number_of_mib() {
    for mib in ["-1", "sixteen", "1.5", "16MiB"] {
        let stderr = crate::support::process::refused(&["--history-cache-mib", mib], &[]);
        assert!(stderr.contains("--history-cache-mib"), "{mib}: {stderr}");
    }
}
