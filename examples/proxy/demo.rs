//! A built-in stand-in for a real model, so that the proxy shows the whole feature with
//! no upstream and no API key: its reply says how many messages it was sent, which is
//! how a user sees that the history was spliced in.
//!
//! A request that offers `tools` is answered with a call to the first one (arguments
//! [`CALL_ARGUMENTS`]), unless its last message is already a tool result or it says
//! `tool_choice: "none"`; then it gets text. So a function-calling round trip runs with
//! no upstream, through chat completions and the Responses API alike.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use tower_conversations::{ApiError, DEFAULT_CHAT_PATH, RequestBody};

use crate::ModelRequest;

/// The model name the demo answers as, unless the request names one.
pub const MODEL: &str = "demo";
/// How long the demo waits between chunks, so that streaming is visible in a terminal.
const CHUNK_INTERVAL: Duration = Duration::from_millis(20);
/// Largest request the demo reads.
const REQUEST_LIMIT: usize = 32 * 1024 * 1024;
/// Longest quote of the last message the reply repeats.
const QUOTE_CHARS: usize = 200;
/// The arguments of every tool call the demo makes.
pub const CALL_ARGUMENTS: &str = r#"{"demo":true}"#;

/// Answers as the demo model: `POST /v1/chat/completions` (streaming when the request
/// says `"stream": true`, a `chat.completion` object otherwise) and `GET /v1/models`.
/// The reply is deterministic. Never fails, so that it can stand where the upstream
/// client stands.
pub async fn answer(request: ModelRequest) -> Result<Response, Infallible> {
    Ok(match (request.method(), request.uri().path()) {
        (&Method::POST, DEFAULT_CHAT_PATH) => {
            chat(request.into_body()).await.unwrap_or_else(|message| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message).into_response()
            })
        }
        (&Method::GET, "/v1/models") => Json(json!({"object": "list", "data": [
            {"id": MODEL, "object": "model", "created": 0, "owned_by": "tower-conversations"}
        ]}))
        .into_response(),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "The demo model answers only POST /v1/chat/completions and GET /v1/models.",
        )
        .into_response(),
    })
}

/// The reply to a chat request, or why the request cannot be answered.
async fn chat(body: RequestBody<Body>) -> Result<Response, &'static str> {
    let bytes = axum::body::to_bytes(Body::new(body), REQUEST_LIMIT)
        .await
        .map_err(|_| "The request body could not be read.")?;
    let request: Value =
        serde_json::from_slice(&bytes).map_err(|_| "The request body is not JSON.")?;
    let messages = request["messages"]
        .as_array()
        .ok_or("The request has no messages array.")?;
    let reply = Reply {
        id: format!("chatcmpl-demo-{}", messages.len()),
        created: unix_time(),
        model: request["model"].as_str().unwrap_or(MODEL).to_owned(),
        text: reply_text(messages),
        call: tool_to_call(&request, messages),
        prompt_tokens: messages.iter().map(|m| word_count(&message_text(m))).sum(),
    };
    Ok(if request["stream"] == Value::Bool(true) {
        let include_usage = request["stream_options"]["include_usage"] == Value::Bool(true);
        reply.streamed(include_usage)
    } else {
        Json(reply.completion()).into_response()
    })
}

/// The first tool's name, when the demo answers with a call to it.
fn tool_to_call(request: &Value, messages: &[Value]) -> Option<String> {
    let answered = messages.last().is_some_and(|m| m["role"] == "tool");
    if answered || request["tool_choice"] == "none" {
        return None;
    }
    let first = request["tools"].as_array()?.first()?;
    first["function"]["name"].as_str().map(str::to_owned)
}

/// What the demo says: how many messages it saw, and what the last one said.
fn reply_text(messages: &[Value]) -> String {
    let count = messages.len();
    let plural = if count == 1 { "" } else { "s" };
    let last = messages.last().map(message_text).unwrap_or_default();
    let mut quote: String = last.chars().take(QUOTE_CHARS).collect();
    if last.chars().count() > QUOTE_CHARS {
        quote.push('…');
    }
    format!(
        "You sent {count} message{plural}; the last one said: \"{quote}\". \
         (I am the proxy's built-in demo model.)"
    )
}

/// A message's text: its string content, or its text parts joined.
fn message_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// One answer, rendered either as a `chat.completion` or as a stream of chunks.
struct Reply {
    id: String,
    created: u64,
    model: String,
    text: String,
    /// The tool it calls instead of answering with text.
    call: Option<String>,
    prompt_tokens: usize,
}

impl Reply {
    fn usage(&self) -> Value {
        let completion_tokens = match self.call {
            Some(_) => word_count(CALL_ARGUMENTS),
            None => word_count(&self.text),
        };
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    /// The call's id: fixed per conversation length, so a run repeats exactly.
    fn call_id(&self) -> String {
        self.id.replacen("chatcmpl-demo", "call_demo", 1)
    }

    fn completion(&self) -> Value {
        let (message, finish_reason) = match &self.call {
            None => (json!({"role": "assistant", "content": self.text}), "stop"),
            Some(name) => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": self.call_id(), "type": "function",
                    "function": {"name": name, "arguments": CALL_ARGUMENTS},
                }]}),
                "tool_calls",
            ),
        };
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": self.usage(),
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    /// The reply as server-sent events: the role, the text a few words at a time, the
    /// finish reason, the usage when asked for, then `[DONE]`.
    fn streamed(&self, include_usage: bool) -> Response {
        let mut events = vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        match &self.call {
            None => {
                let words: Vec<&str> = self.text.split_inclusive(' ').collect();
                for piece in words.chunks(3) {
                    events.push(self.chunk(json!({"content": piece.concat()}), Value::Null));
                }
                events.push(self.chunk(json!({}), json!("stop")));
            }
            Some(name) => {
                let call = json!({"index": 0, "id": self.call_id(), "type": "function",
                                  "function": {"name": name, "arguments": CALL_ARGUMENTS}});
                events.push(self.chunk(json!({"tool_calls": [call]}), Value::Null));
                events.push(self.chunk(json!({}), json!("tool_calls")));
            }
        }
        if include_usage {
            let mut usage = self.chunk(json!({}), Value::Null);
            usage["choices"] = json!([]);
            usage["usage"] = self.usage();
            events.push(usage);
        }
        let mut frames: Vec<Bytes> = events
            .iter()
            .map(|event| Bytes::from(format!("data: {event}\n\n")))
            .collect();
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));

        let stream = futures_util::stream::iter(frames.into_iter().enumerate()).then(
            |(index, frame)| async move {
                if index > 0 {
                    tokio::time::sleep(CHUNK_INTERVAL).await;
                }
                Ok::<_, Infallible>(frame)
            },
        );
        let headers = [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ];
        (headers, Body::from_stream(stream)).into_response()
    }
}
