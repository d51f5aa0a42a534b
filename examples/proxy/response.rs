//! The one body type every route answers with, and the OpenAI error envelope.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends: the upstream's streamed body, the layer's
/// capturing body, the demo model's stream or a JSON answer, behind one type so that the
/// routes can be chosen at run time.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Erases a body's type; its frames pass through unchanged.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A complete JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let body =
        Full::new(Bytes::from(value.to_string())).map_err(|never: Infallible| match never {});
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error in the OpenAI envelope, the shape every OpenAI client already knows how to
/// read: `{"error": {"message", "type", "param", "code"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json(
        status,
        &serde_json::json!({"error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": code,
        }}),
    )
}
