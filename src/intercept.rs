//! The conversation path of a chat request: read, decide, load history, splice,
//! forward, then hand the reply to [`respond`](crate::respond).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use tower_service::Service;
use tracing::Instrument;
use uuid::Uuid;

use crate::CONVERSATION_ID_HEADER;
use crate::body::ResponseBody;
use crate::chat::{ConversationHeader, Mode, decide, parse_chat_request, trim_to_turn_boundary};
use crate::error::ApiError;
use crate::layer::Config;
use crate::request_body::RequestBody;
use crate::respond::{Stateful, respond};
use crate::service::BoxError;

/// Handles one `POST` to a chat path.
pub(crate) async fn intercept<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<Config>,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: http_body::Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send,
{
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(body, &parts.headers, config.request_body_limit).await {
        Ok(bytes) => bytes,
        Err(error) => return Ok(error.into_response()),
    };
    let header = ConversationHeader::from_values(
        parts
            .headers
            .get_all(CONVERSATION_ID_HEADER)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let chat = parse_chat_request(&bytes);
    let mode = match decide(config.policy, header, chat.as_ref()) {
        Ok(mode) => mode,
        Err(error) => return Ok(error.into_response()),
    };
    let (id, create) = match (mode, &chat) {
        (Mode::New(id), Some(_)) => (id, true),
        (Mode::Continue(id), Some(_)) => (id, false),
        // Stateless and unreadable requests go on with their original bytes.
        _ => {
            let request = Request::from_parts(parts, RequestBody::from_bytes(bytes.clone()));
            let response = inner.call(request).await?;
            return Ok(response.map(ResponseBody::inner));
        }
    };
    let Some(chat) = chat else {
        return Ok(ApiError::invalid_request("The body is not a chat request.").into_response());
    };
    let span = tracing::info_span!(
        "conversation",
        "gen_ai.conversation.id" = %id,
        mode = if create { "new" } else { "continue" },
    );
    async {
        let owner = config.owners.resolve(&parts);
        let forwarded = if create {
            // A new conversation costs no database round trip before the first byte.
            bytes.clone()
        } else {
            let mut history = match load_history(&config, &owner, id).await {
                Ok(history) => history,
                Err(error) => return Ok(error.into_response()),
            };
            if config.history_window.is_some() {
                trim_to_turn_boundary(&mut history);
            }
            let spliced = Bytes::from(chat.splice(&history));
            parts.headers.remove(TRANSFER_ENCODING);
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(spliced.len()));
            spliced
        };
        let stateful = Stateful {
            id,
            create,
            owner,
            messages: chat.turn_messages(),
        };
        let request = Request::from_parts(parts, RequestBody::from_bytes(forwarded));
        let response = inner.call(request).await?;
        Ok(respond(response, stateful, &config).await)
    }
    .instrument(span)
    .await
}

/// Loads the history to splice, within the storage timeout: a pool that cannot reach
/// its database retries until its own acquire timeout (30 s by default in sqlx), and a
/// locked table makes a read wait for as long as the lock is held. The client hears
/// `503` as soon as the layer has waited as long as it would for a write.
async fn load_history(config: &Config, owner: &str, id: Uuid) -> Result<Vec<Value>, ApiError> {
    let load = config.store.load_history(owner, id, config.history_window);
    match tokio::time::timeout(config.storage_timeout, load).await {
        Ok(loaded) => Ok(loaded?),
        Err(_) => {
            tracing::error!(timeout = ?config.storage_timeout, "loading the history timed out");
            Err(ApiError::store_unavailable())
        }
    }
}

/// Reads the request body whole, up to `limit` bytes (413 beyond; 400 when the client's
/// body fails).
async fn read_body<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::request_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ApiError::request_too_large(limit)),
        Err(_) => Err(ApiError::invalid_request(
            "The request body could not be read.",
        )),
    }
}
