//! Servers on loopback for tests: any axum router or tower service, on `127.0.0.1:0`,
//! stopped (with every open connection) when dropped.
//!
//! ```ignore
//! let model = TestModel::new();
//! let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
//! let response = reqwest::Client::new().post(app.url("/v1/chat/completions")).send().await?;
//! ```

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Service;
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer};
use uuid::Uuid;

use super::upstream::{MODEL, TestModel, sse_data};

type BoxError = Box<dyn Error + Send + Sync>;

/// A server on loopback, running until dropped.
pub struct TestServer {
    addr: SocketAddr,
    /// Dropping it tells the accept loop and every connection to stop.
    _stop: watch::Sender<()>,
    accept_loop: JoinHandle<()>,
}

impl TestServer {
    /// Serves an axum router.
    pub async fn start(router: Router) -> Self {
        Self::start_service(router).await
    }

    /// Serves any tower service over HTTP/1.1 and HTTP/2 (plain text) with hyper.
    pub async fn start_service<S, B>(service: S) -> Self
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = watch::channel(());
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = TowerToHyperService::new(service.clone());
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    // Dropping the connection closes it: the test server is gone.
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        TestServer {
            addr,
            _stop: stop,
            accept_loop,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// A `text/event-stream` response with this body, for inner services written by hand.
pub fn sse_response<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// The app under test: the test model behind the layer, as an axum app would mount it.
pub async fn serve_layered(model: &TestModel, layer: ConversationLayer) -> TestServer {
    TestServer::start(model.router().layer(layer)).await
}

/// The test model alone, on loopback: the baseline a layered app is compared with, or
/// the upstream of a proxy.
pub async fn serve_model(model: &TestModel) -> TestServer {
    TestServer::start(model.router()).await
}

/// A finished answer of the app under test, body read to its end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The `X-Conversation-ID` the answer carries, parsed. Panics on a malformed one.
    pub fn conversation_id(&self) -> Option<Uuid> {
        self.headers.get(CONVERSATION_ID_HEADER).map(|value| {
            let text = value.to_str().expect("X-Conversation-ID is ASCII");
            Uuid::parse_str(text).expect("X-Conversation-ID is a UUID")
        })
    }

    /// The `X-Conversation-ID`, which the answer must carry.
    pub fn id(&self) -> Uuid {
        self.conversation_id()
            .unwrap_or_else(|| panic!("no X-Conversation-ID on {self:?}"))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The data of each SSE event of the body.
    pub fn events(&self) -> Vec<String> {
        sse_data(self.text())
    }

    /// `error.code` of an OpenAI error envelope.
    pub fn error_code(&self) -> String {
        let body = self.json();
        assert_eq!(
            body["error"]["type"].as_str().map(|t| !t.is_empty()),
            Some(true)
        );
        assert!(body["error"]["message"].is_string(), "{body}");
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A chat-completions body asking for a streamed reply to these messages.
pub fn chat_body(messages: Value) -> Value {
    json!({"model": MODEL, "stream": true, "messages": messages})
}

/// A user message.
pub fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// An assistant message with this text.
pub fn assistant(content: &str) -> Value {
    json!({"role": "assistant", "content": content})
}

/// Sends `body` to the app's chat path, with `X-Conversation-ID: id` when given, and
/// reads the whole answer.
pub async fn send_chat(app: &TestServer, id: Option<Uuid>, body: &Value) -> Answer {
    let id = id.map(|id| id.to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(id) = &id {
        headers.push((CONVERSATION_ID_HEADER, id.as_str()));
    }
    send(
        app,
        Method::POST,
        "/v1/chat/completions",
        &headers,
        body.to_string(),
    )
    .await
}

/// Sends a chat body to the app's chat path with these headers (an `X-Conversation-ID` of
/// any value among them) and reads the whole answer.
pub async fn send_chat_with(app: &TestServer, headers: &[(&str, &str)], body: &Value) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(
        app,
        Method::POST,
        "/v1/chat/completions",
        &all,
        body.to_string(),
    )
    .await
}

/// Starts a conversation with one user message and returns its id.
pub async fn start_conversation(app: &TestServer, text: &str) -> Uuid {
    let answer = send_chat(app, None, &chat_body(json!([user(text)]))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.id()
}

/// Sends any request to the app and reads the whole answer.
pub async fn send(
    app: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Answer {
    send_to(app.url(path), method, headers, body).await
}

/// Sends any request to `url` and reads the whole answer.
pub async fn send_to(
    url: String,
    method: Method,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut request = reqwest::Client::new().request(method, url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send the request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("read the whole body");
    Answer {
        status,
        headers,
        body,
    }
}

/// Polls `check` until it gives `Some`, for at most `limit`. Panics when time runs out.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
