//! `POST /v1/responses`: read and check the request, resolve its state, call the inner
//! chat-completions service with the translated request, and answer its reply as a
//! response object (JSON) or as Responses events (streamed).

use std::pin::pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use http::header::{ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_service::Service;

use super::endpoints::json_answer;
use super::finish::Finisher;
use super::request::ResponsesRequest;
use super::storage::{self, ResponseWrite};
use super::stream::{replay, translate};
use crate::body::ResponseBody;
use crate::chat::assemble_json_reply;
use crate::config::{Config, DEFAULT_CHAT_PATH};
use crate::error::ApiError;
use crate::request_body::{RequestBody, declared_length, read_body};
use crate::store::NewMessage;
use crate::{BoxError, CONVERSATION_ID};

/// Handles one `POST` to a responses path.
pub(crate) async fn create<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<Config>,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send,
{
    let (mut parts, body) = request.into_parts();
    let declared = declared_length(&body);
    let bytes = match read_body(body, declared, config.request_body_limit).await {
        Ok(bytes) => bytes,
        Err(error) => return Ok(error.into_response()),
    };
    let request = match ResponsesRequest::parse(&bytes, config.max_tokens_field) {
        Ok(request) => request,
        Err(error) => return Ok(error.into_response()),
    };
    let owner = config.owners.resolve(&parts);
    let store = config.store.as_ref();
    let window = config.history_window;
    let plan = match storage::plan(store, &owner, &request, window, config.storage_timeout).await {
        Ok(plan) => plan,
        Err(error) => return Ok(error.into_response()),
    };
    let mut messages = Vec::with_capacity(plan.history.len() + request.input.len() + 1);
    // Instructions are for this request only: sent first, never stored.
    if let Some(instructions) = &request.instructions {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    messages.extend(plan.history);
    messages.extend(request.input.iter().cloned());
    let chat = Bytes::from(request.chat_body(messages).to_string());

    let path = config
        .chat_paths
        .first()
        .map_or(DEFAULT_CHAT_PATH, String::as_str);
    parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static(DEFAULT_CHAT_PATH));
    parts.headers.remove(TRANSFER_ENCODING);
    // State is the request body's here; a header meant for the chat path goes no further.
    parts.headers.remove(CONVERSATION_ID);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(chat.len()));
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The layer reads the reply, so it asks for one it can read.
    parts
        .headers
        .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));

    let input: Vec<NewMessage> = request.input.iter().cloned().map(NewMessage::new).collect();
    let sequence = plan.first_sequence + i64::try_from(input.len()).unwrap_or(i64::MAX);
    let write = plan.placement.map(|placement| ResponseWrite {
        store: config.store.clone(),
        owner: owner.clone(),
        id: plan.id,
        placement,
        messages: input,
        timeout: config.storage_timeout,
        pending: config.writes.start(),
    });
    let stream = request.stream;
    let finisher = Finisher {
        id: plan.id,
        created_at: Utc::now().timestamp(),
        request,
        sequence,
        write,
        capture_limit: config.capture_limit,
    };
    let response = inner
        .call(Request::from_parts(parts, RequestBody::from_bytes(chat)))
        .await?;
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        return Ok(upstream_error(parts.status, body, config.capture_limit).await);
    }
    let streamed_reply = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("text/event-stream"));
    if stream && streamed_reply {
        return Ok(event_stream(translate(body, finisher)));
    }
    let Some(bytes) = read_limited(body, config.capture_limit).await else {
        return Ok(bad_gateway("The upstream's reply could not be read whole.").into_response());
    };
    let Some(reply) = assemble_json_reply(&bytes) else {
        return Ok(bad_gateway("The upstream's reply is not a chat completion.").into_response());
    };
    if stream {
        // The upstream answered a streamed request whole: the events all come at once.
        return Ok(event_stream(replay(reply, finisher)));
    }
    let object = finisher.finish(reply).await;
    Ok(json_answer(StatusCode::OK, &object))
}

/// A `text/event-stream` answer of the events sent on `events`.
fn event_stream<B: Body>(events: mpsc::Receiver<Bytes>) -> Response<ResponseBody<B>> {
    let mut answer = Response::new(ResponseBody::channel(events));
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    answer
}

fn bad_gateway(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
}

/// The body's bytes, or `None` when it fails or is longer than `limit`.
async fn read_limited<B>(body: B, limit: usize) -> Option<Bytes>
where
    B: Body<Data = Bytes>,
{
    let mut body = pin!(body);
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.ok()?.data_ref() {
            bytes.extend_from_slice(data);
            if bytes.len() > limit {
                return None;
            }
        }
    }
    Some(bytes.freeze())
}

/// An upstream's error answer, passed on with its status: as it came when it is an
/// OpenAI error envelope, else wrapped in one.
async fn upstream_error<B, R>(status: StatusCode, body: B, limit: usize) -> Response<R>
where
    B: Body<Data = Bytes>,
    R: From<Bytes>,
{
    let bytes = read_limited(body, limit).await.unwrap_or_default();
    if let Ok(envelope) = serde_json::from_slice::<Value>(&bytes)
        && envelope["error"].is_object()
    {
        return json_answer(status, &envelope);
    }
    let text = String::from_utf8_lossy(&bytes);
    let text: String = text.chars().take(500).collect();
    ApiError::new(
        status,
        "upstream_error",
        format!("The upstream answered {status}: {text}"),
    )
    .into_response()
}
