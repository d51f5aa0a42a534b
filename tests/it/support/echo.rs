//! [`echo_model`]: a fast upstream that answers `You said: <last user text>` and keeps
//! no record of what it served.
//!
//! [`TestModel`](super::upstream::TestModel) records every request, which is what most
//! tests want and what a load or memory test must not do: thousands of recorded
//! requests would grow without bound and slow every turn down.
//!
//! ```ignore
//! let app = TestServer::start(echo_model(Duration::ZERO).layer(layer)).await;
//! ```

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;

use super::upstream::{completion, content_chunk, done, role_chunk, stop_chunk};

/// The reply the echo model streams for a request whose last user message says `said`.
pub fn echo_of(said: &str) -> String {
    format!("You said: {said}")
}

/// The echo model as a router answering every `POST`: streamed as one chunk per word
/// (with `delay` before every frame but the first), or one `chat.completion` when the
/// request says `"stream": false`.
pub fn echo_model(delay: Duration) -> Router {
    Router::new().fallback(move |body: Bytes| answer(body, delay, true))
}

/// The echo model streaming its reply as one content chunk: the fewest frames a
/// streamed turn can have, for tests that count turns rather than frames.
pub fn terse_echo_model() -> Router {
    Router::new().fallback(move |body: Bytes| answer(body, Duration::ZERO, false))
}

async fn answer(body: Bytes, delay: Duration, word_by_word: bool) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return plain(StatusCode::BAD_REQUEST, "application/json", "{}".into());
    };
    let said = request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let reply = echo_of(said);
    if request["stream"] == Value::Bool(false) {
        return plain(
            StatusCode::OK,
            "application/json",
            completion(&reply).to_string().into(),
        );
    }
    let mut frames = vec![role_chunk()];
    if word_by_word {
        frames.extend(reply.split_inclusive(' ').map(content_chunk));
    } else {
        frames.push(content_chunk(&reply));
    }
    frames.extend([stop_chunk(), done()]);
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), true),
        move |(mut frames, first)| async move {
            let frame = frames.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::io::Error>(frame), (frames, false)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn plain(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
