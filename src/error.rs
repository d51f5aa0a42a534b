//! The OpenAI error envelope: every error the layer or the management API answers
//! itself is made here, in one place.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::chat::ModeError;
use crate::store::StoreError;

/// An error in the OpenAI envelope: what the layer and the management API answer
/// themselves, and what an application beside them (the example proxy) can answer too,
/// so that every error a client sees has one shape.
///
/// Rendered as `{"error": {"message", "type", "param", "code"}}` with
/// `Content-Type: application/json`; `type` is `invalid_request_error` for 4xx answers
/// and `server_error` for 5xx ones, as OpenAI's API does.
///
/// ```
/// use http::StatusCode;
/// use tower_conversations::ApiError;
///
/// let response: http::Response<bytes::Bytes> =
///     ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "Unknown API key.").into_response();
/// assert_eq!(response.status(), 401);
/// let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
/// assert_eq!(body["error"]["code"], "invalid_api_key");
/// assert_eq!(body["error"]["type"], "invalid_request_error");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: Cow<'static, str>,
    pub(crate) param: Option<Cow<'static, str>>,
}

impl ApiError {
    /// An error with this status, machine-readable `code` and human-readable `message`.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    /// Names the request field or parameter at fault (`"limit"`, `"messages[3].role"`).
    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub(crate) fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn invalid_conversation_id() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_conversation_id",
            "The conversation id must be a UUID.",
        )
    }

    pub(crate) fn conversation_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "conversation_not_found",
            "No conversation with that id was found.",
        )
    }

    pub(crate) fn conversation_id_with_system_message() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "conversation_id_with_system_message",
            "A request with a system or developer message is stateless and cannot carry X-Conversation-ID.",
        )
    }

    /// An item id the conversation does not hold (or that this store never writes).
    pub(crate) fn item_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "item_not_found",
            "No item with that id was found in the conversation.",
        )
    }

    /// Erasure asked for in the shared space, which belongs to no one: refused, so that
    /// no anonymous call can erase everyone's conversations.
    pub(crate) fn owner_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "owner_required",
            "Erasing every conversation needs an owner; this request has none.",
        )
    }

    /// A path the management API does not serve.
    pub(crate) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such endpoint; see the management API's documentation for its paths.",
        )
    }

    /// A path served, but not for this method; the caller adds the `Allow` header.
    pub(crate) fn method_not_allowed(allowed: &'static str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("This path accepts only {allowed}."),
        )
    }

    pub(crate) fn request_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub(crate) fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "conversation_store_unavailable",
            "The conversation store is unavailable; try again later.",
        )
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable `code` of the envelope.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The envelope as JSON bytes.
    pub fn to_bytes(&self) -> Bytes {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }});
        Bytes::from(body.to_string())
    }

    /// The whole response, with any body type that can be made from bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.to_bytes()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<ModeError> for ApiError {
    fn from(error: ModeError) -> Self {
        match error {
            ModeError::InvalidConversationId => Self::invalid_conversation_id(),
            ModeError::ConversationIdWithSystemMessage => {
                Self::conversation_id_with_system_message()
            }
            ModeError::NotAChatRequest => Self::invalid_request(
                "X-Conversation-ID was sent, but the body is not a chat completion request: \
                 it must be a JSON object whose `messages` is an array of objects, each with \
                 a string `role`.",
            )
            .with_param("messages"),
        }
    }
}

impl From<StoreError> for ApiError {
    /// Not-found becomes 404; everything else becomes 503 and is logged with its cause,
    /// which never reaches the client.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::conversation_not_found(),
            StoreError::ItemNotFound => Self::item_not_found(),
            StoreError::OutOfRange => {
                Self::invalid_request("That sequence number is not in the conversation.")
            }
            other => {
                tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "conversation store failed");
                Self::store_unavailable()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_openai_shape() {
        let value: serde_json::Value =
            serde_json::from_slice(&ApiError::invalid_conversation_id().to_bytes()).unwrap();
        assert_eq!(value["error"]["code"], "invalid_conversation_id");
        assert_eq!(value["error"]["type"], "invalid_request_error");
        assert!(value["error"]["param"].is_null());
        assert!(value["error"]["message"].is_string());
    }

    #[test]
    fn server_errors_have_the_server_error_type() {
        let value: serde_json::Value =
            serde_json::from_slice(&ApiError::store_unavailable().to_bytes()).unwrap();
        assert_eq!(value["error"]["type"], "server_error");
    }
}
