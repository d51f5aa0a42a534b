//! Reading a request body whole, but never more than [`BODY_LIMIT`] bytes of it.

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::ApiError;

/// Largest request body the management API reads: 8 MiB, room for a hundred seed
/// messages with long contents, small enough that no client can exhaust memory.
pub(crate) const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// The whole body, or `413 request_too_large` past [`BODY_LIMIT`], or `400` when the
/// client's body fails mid-way.
pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => {
            Err(ApiError::request_too_large(BODY_LIMIT))
        }
        Err(error) => {
            tracing::debug!(%error, "reading a management request body failed");
            Err(ApiError::invalid_request(
                "The request body could not be read.",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let bytes = read_body(Full::new(Bytes::from_static(b"{}")))
            .await
            .unwrap();
        assert_eq!(bytes, Bytes::from_static(b"{}"));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_request_too_large() {
        let body = Full::new(Bytes::from(vec![b' '; BODY_LIMIT + 1]));
        let error = read_body(body).await.unwrap_err();
        assert_eq!(error.status, http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.code, "request_too_large");
    }
}
