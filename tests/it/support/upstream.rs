//! [`TestModel`]: an OpenAI-compatible chat-completions endpoint for tests.
//!
//! It records every request it receives and answers chat requests from a script the
//! test queues, falling back to a deterministic streamed reply. Mount it in-process as
//! the inner service of the layer, or serve it on loopback as a standalone upstream.
//!
//! ```ignore
//! let model = TestModel::new();
//! model.push(Reply::sse([content_chunk("Hel"), content_chunk("lo"), stop_chunk(), done()]));
//! let server = TestServer::start(model.router()).await;
//! // ... send a request ...
//! assert_eq!(model.last_request().messages(), vec![json!({"role": "user", "content": "hi"})]);
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

/// The response id every scripted chunk carries.
pub const RESPONSE_ID: &str = "chatcmpl-test";
/// The model name every scripted chunk carries.
pub const MODEL: &str = "test-model";
/// The `created` timestamp every scripted chunk carries.
pub const CREATED: i64 = 1_700_000_000;

/// One request as the test model received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query, as received.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl RecordedRequest {
    /// The request's `messages` array (empty when it has none).
    pub fn messages(&self) -> Vec<Value> {
        self.json
            .as_ref()
            .and_then(|body| body.get("messages"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// The headers without those that depend on the connection (`host`).
    pub fn headers_without_host(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.remove(header::HOST);
        headers
    }
}

/// How a streamed reply the model sent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every frame was sent.
    Completed,
    /// The body was dropped before its last frame: the client (or a layer) went away.
    Cancelled,
}

/// What the model answers to one chat request.
#[derive(Clone, Debug)]
pub struct Reply {
    kind: ReplyKind,
    /// Pause before every frame but the first.
    delay: Duration,
    /// Extra response headers.
    headers: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
enum ReplyKind {
    /// Content pieces: streamed as chunks, or one `chat.completion` when the request
    /// says `"stream": false`.
    Text(Vec<String>),
    /// Raw SSE frames, sent as given whatever the request asks.
    Sse(Vec<Bytes>),
    /// A JSON body with a status (a `chat.completion`, or an error envelope).
    Json(StatusCode, Value),
}

impl Reply {
    /// A reply made of these content pieces: one chunk each when streamed.
    pub fn text<I, S>(pieces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_kind(ReplyKind::Text(
            pieces.into_iter().map(Into::into).collect(),
        ))
    }

    /// A `text/event-stream` reply of exactly these frames, each sent as one body frame.
    /// Empty frames are skipped.
    pub fn sse<I, B>(frames: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        Self::from_kind(ReplyKind::Sse(frames.into_iter().map(Into::into).collect()))
    }

    /// A `200 application/json` reply with this body (a `chat.completion` object).
    pub fn json(body: Value) -> Self {
        Self::from_kind(ReplyKind::Json(StatusCode::OK, body))
    }

    /// An error reply: this status and an OpenAI error envelope with this message.
    pub fn error(status: StatusCode, message: &str) -> Self {
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body =
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
        Self::from_kind(ReplyKind::Json(status, body))
    }

    /// Waits this long before every frame but the first (streamed replies only).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Adds a response header (for example `content-encoding`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn from_kind(kind: ReplyKind) -> Self {
        Self {
            kind,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }
}

#[derive(Default)]
struct ModelState {
    requests: Mutex<Vec<RecordedRequest>>,
    script: Mutex<VecDeque<Reply>>,
    stream_ends: Mutex<Vec<StreamEnd>>,
}

/// An OpenAI-compatible chat-completions endpoint for tests. Cloning shares its state.
#[derive(Clone, Default)]
pub struct TestModel {
    state: Arc<ModelState>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide its own failure.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TestModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// The endpoint as a router: `POST .../chat/completions`, `GET .../models`, and
    /// `404` in the OpenAI envelope for every other request (all recorded).
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Queues the answer to the next chat request that has none queued.
    pub fn push(&self, reply: Reply) {
        lock(&self.state.script).push_back(reply);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// The chat-completions requests received so far, in order.
    pub fn chat_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::POST && r.path.ends_with("/chat/completions"))
            .collect()
    }

    /// The last request received. Panics when there was none.
    pub fn last_request(&self) -> RecordedRequest {
        lock(&self.state.requests)
            .last()
            .cloned()
            .expect("the test model received no request")
    }

    /// How each streamed reply ended, in the order they ended.
    pub fn stream_ends(&self) -> Vec<StreamEnd> {
        lock(&self.state.stream_ends).clone()
    }

    fn record(&self, request: RecordedRequest) {
        lock(&self.state.requests).push(request);
    }

    fn next_reply(&self, request: &RecordedRequest) -> Reply {
        lock(&self.state.script)
            .pop_front()
            .unwrap_or_else(|| default_reply(request))
    }
}

/// The reply when nothing is queued: `You said: <last user text>`, word by word.
fn default_reply(request: &RecordedRequest) -> Reply {
    let said = request
        .messages()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let text = format!("You said: {said}");
    Reply::text(text.split_inclusive(' ').map(str::to_owned))
}

async fn handle(State(model): State<TestModel>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    let recorded = RecordedRequest {
        method: parts.method.clone(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: parts.headers.clone(),
        json: serde_json::from_slice(&body).ok(),
        body,
    };
    model.record(recorded.clone());

    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::POST, p) if p.ends_with("/chat/completions") => chat(&model, &recorded),
        (&Method::GET, p) if p.ends_with("/models") => json_response(StatusCode::OK, &models()),
        (_, p) if p.ends_with("/chat/completions") || p.ends_with("/models") => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.")
        }
        _ => error_response(StatusCode::NOT_FOUND, &format!("Unknown path {path}.")),
    }
}

fn chat(model: &TestModel, request: &RecordedRequest) -> Response {
    let Some(body) = request.json.as_ref().filter(|b| b.is_object()) else {
        return error_response(StatusCode::BAD_REQUEST, "The body is not a JSON object.");
    };
    if !body.get("messages").is_some_and(Value::is_array) {
        return error_response(StatusCode::BAD_REQUEST, "'messages' is required.");
    }
    let streamed = body.get("stream") != Some(&Value::Bool(false));
    let reply = model.next_reply(request);
    let mut response = match reply.kind {
        ReplyKind::Json(status, body) => json_response(status, &body),
        ReplyKind::Text(pieces) if !streamed => {
            json_response(StatusCode::OK, &completion(&pieces.concat()))
        }
        ReplyKind::Text(pieces) => sse_response(model, text_stream(&pieces), reply.delay),
        ReplyKind::Sse(frames) => sse_response(model, frames, reply.delay),
    };
    for (name, value) in &reply.headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        let value = HeaderValue::from_str(value).expect("a header value");
        response.headers_mut().insert(name, value);
    }
    response
}

/// The frames of a typical streamed reply of these content pieces.
pub fn text_stream<S: AsRef<str>>(pieces: &[S]) -> Vec<Bytes> {
    let mut frames = vec![role_chunk()];
    frames.extend(pieces.iter().map(|p| content_chunk(p.as_ref())));
    frames.extend([stop_chunk(), usage_chunk(9, pieces.len() as u64), done()]);
    frames
}

/// Marks the stream as cancelled unless it got to its last frame.
struct StreamGuard {
    model: TestModel,
    completed: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let end = if self.completed {
            StreamEnd::Completed
        } else {
            StreamEnd::Cancelled
        };
        lock(&self.model.state.stream_ends).push(end);
    }
}

fn sse_response(model: &TestModel, frames: Vec<Bytes>, delay: Duration) -> Response {
    let frames: VecDeque<Bytes> = frames.into_iter().filter(|f| !f.is_empty()).collect();
    let guard = StreamGuard {
        model: model.clone(),
        completed: frames.is_empty(),
    };
    let stream = futures_util::stream::unfold(
        (frames, guard, true),
        move |(mut frames, mut guard, first)| async move {
            let frame = frames.pop_front()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if frames.is_empty() {
                guard.completed = true;
            }
            Some((Ok::<_, std::io::Error>(frame), (frames, guard, false)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "param": null,
        "code": null,
    }});
    json_response(status, &body)
}

/// The fixed body of `GET /v1/models`.
pub fn models() -> Value {
    json!({"object": "list", "data": [
        {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "tests"}
    ]})
}

/// A non-streaming `chat.completion` whose message has this content.
pub fn completion(content: &str) -> Value {
    completion_with_message(json!({
        "role": "assistant",
        "content": content,
        "refusal": null,
        "annotations": [],
    }))
}

/// A non-streaming `chat.completion` whose `choices[0].message` is `message`.
pub fn completion_with_message(message: Value) -> Value {
    json!({
        "id": RESPONSE_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    })
}

/// One SSE event: `data: <json>` and a blank line.
pub fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// A `chat.completion.chunk` with these `choices`.
pub fn chunk_with_choices(choices: Value) -> Value {
    json!({
        "id": RESPONSE_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_test",
        "choices": choices,
    })
}

/// A chunk whose `choices[0]` carries this delta and finish reason.
pub fn delta_chunk(delta: Value, finish_reason: Option<&str>) -> Bytes {
    event(&chunk_with_choices(json!([{
        "index": 0,
        "delta": delta,
        "logprobs": null,
        "finish_reason": finish_reason,
    }])))
}

/// The first chunk of a reply: the role and empty content.
pub fn role_chunk() -> Bytes {
    delta_chunk(json!({"role": "assistant", "content": ""}), None)
}

/// A chunk carrying a piece of content.
pub fn content_chunk(text: &str) -> Bytes {
    delta_chunk(json!({"content": text}), None)
}

/// A chunk carrying a piece of reasoning in `delta.reasoning_content`.
pub fn reasoning_chunk(text: &str) -> Bytes {
    delta_chunk(json!({"reasoning_content": text}), None)
}

/// A chunk carrying a piece of a refusal.
pub fn refusal_chunk(text: &str) -> Bytes {
    delta_chunk(json!({"refusal": text}), None)
}

/// A chunk carrying one tool-call delta: `id`, `type` and the function name come with
/// the call's first delta only, argument pieces with every one.
pub fn tool_call_chunk(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> Bytes {
    let mut call = json!({"index": index, "function": {"arguments": arguments}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    delta_chunk(json!({"tool_calls": [call]}), None)
}

/// The chunk that ends the choice with this reason (`"stop"`, `"tool_calls"`, ...).
pub fn finish_chunk(reason: &str) -> Bytes {
    delta_chunk(json!({}), Some(reason))
}

/// The chunk that ends the choice with `finish_reason: "stop"`.
pub fn stop_chunk() -> Bytes {
    finish_chunk("stop")
}

/// The usage chunk sent after the last choice chunk (`choices: []`).
pub fn usage_chunk(prompt_tokens: u64, completion_tokens: u64) -> Bytes {
    let mut chunk = chunk_with_choices(json!([]));
    chunk["usage"] = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    event(&chunk)
}

/// An error event inside a `200` stream, as providers send when they fail mid-reply.
pub fn error_event(message: &str) -> Bytes {
    event(&json!({"error": {"message": message, "type": "server_error", "code": null}}))
}

/// The event that ends a stream.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// Concatenates frames into one byte string (to cut it again elsewhere).
pub fn concat(frames: &[Bytes]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.iter().copied()).collect()
}

/// The `data` of each event of an SSE body written with LF line endings, as the layer's
/// clients read it: one string per event, `[DONE]` included.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}
