//! [`RequestBody`]: what the inner service receives as a request body, and
//! [`read_body`], how the layer and the management API read a client's body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::error::ApiError;

/// The length `body` declares: at least as many bytes as its size hint promises, which
/// for hyper's request bodies is the `Content-Length` hyper has already read and checked
/// (reading the hint costs a few instructions, parsing the header again a few hundred).
pub(crate) fn declared_length<B: Body>(body: &B) -> Option<u64> {
    Some(body.size_hint().lower()).filter(|&length| length > 0)
}

/// Reads a request body whole, up to `limit` bytes: `413 request_too_large` beyond it
/// (at once when the `declared` length says so, before a byte is read), `400` when the
/// client's body fails mid-way. Trailers are dropped: a JSON body has no use for them.
///
/// A body that arrives in one frame, as a small request does, comes back as that frame's
/// bytes, not copied; one of several frames is copied once, into one buffer.
pub(crate) async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::request_too_large(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut whole = Whole::Empty;
    let mut left = limit;
    // A body that says it has ended is not polled again: for hyper's, whose end is known
    // from `Content-Length`, that saves a poll after the last byte.
    while !body.is_end_stream() {
        let frame = match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let error: BoxError = error.into();
                tracing::debug!(%error, "reading a request body failed");
                return Err(ApiError::invalid_request(
                    "The request body could not be read.",
                ));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        left = match left.checked_sub(data.len()) {
            Some(left) => left,
            None => return Err(ApiError::request_too_large(limit)),
        };
        whole.push(data);
    }
    Ok(whole.into_bytes())
}

/// The frames of a body read so far.
enum Whole {
    Empty,
    /// One frame, kept as it came.
    One(Bytes),
    /// Several, copied together.
    Several(BytesMut),
}

impl Whole {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        *self = match std::mem::replace(self, Self::Empty) {
            Self::Empty => Self::One(data),
            Self::One(first) => {
                let mut several = BytesMut::with_capacity(first.len() + data.len());
                several.extend_from_slice(&first);
                several.extend_from_slice(&data);
                Self::Several(several)
            }
            Self::Several(mut several) => {
                several.extend_from_slice(&data);
                Self::Several(several)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(bytes) => bytes,
            Self::Several(several) => several.freeze(),
        }
    }
}

pin_project! {
    /// The request body the inner service sees: the client's body untouched for every
    /// request the layer passes through, or the chat request it read and forwards.
    ///
    /// It implements [`http_body::Body`], so axum routers and hyper services take it as
    /// they take any other body.
    ///
    /// ```
    /// use http_body::Body;
    /// use tower_conversations::RequestBody;
    /// let body = RequestBody::<http_body_util::Empty<bytes::Bytes>>::from_bytes("{}".into());
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    pub struct RequestBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Original { #[pin] inner: B },
        Read { bytes: Option<Bytes> },
    }
}

impl<B> RequestBody<B> {
    /// The client's body, forwarded as it is.
    pub fn original(inner: B) -> Self {
        Self {
            kind: Kind::Original { inner },
        }
    }

    /// A complete body made of `bytes`.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Read { bytes: Some(bytes) },
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Original { inner } => inner.poll_frame(cx),
            KindProj::Read { bytes } => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Original { inner } => inner.is_end_stream(),
            Kind::Read { bytes } => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Original { inner } => inner.size_hint(),
            Kind::Read { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = Full::new(Bytes::from_static(b"{}"));
        let bytes = read_body(body, None, 2).await.unwrap();
        assert_eq!(bytes, Bytes::from_static(b"{}"));
    }

    /// A body sent as the given frames, or failing where one is `Err`.
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, std::io::Error>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn data(text: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    #[tokio::test]
    async fn a_body_of_one_frame_is_that_frame_not_a_copy() {
        let frame = Bytes::from(b"{\"messages\":[]}".to_vec());
        let at = frame.as_ptr();
        let body = Frames([Ok(Frame::data(frame))].into());
        let bytes = read_body(body, None, 64).await.unwrap();
        assert_eq!(bytes, Bytes::from_static(b"{\"messages\":[]}"));
        assert_eq!(bytes.as_ptr(), at);
    }

    #[tokio::test]
    async fn frames_are_read_in_order_and_trailers_dropped() {
        let trailers = Ok(Frame::trailers(http::HeaderMap::new()));
        let body = Frames(
            [
                data("{\"mess"),
                data(""),
                data("ages\":"),
                trailers,
                data("[]}"),
            ]
            .into(),
        );
        let bytes = read_body(body, None, 15).await.unwrap();
        assert_eq!(bytes, Bytes::from_static(b"{\"messages\":[]}"));
    }

    #[tokio::test]
    async fn frames_past_the_limit_together_are_request_too_large() {
        let body = Frames([data("{\"mess"), data("ages\":"), data("[]}")].into());
        let error = read_body(body, None, 14).await.unwrap_err();
        assert_eq!(error.code, "request_too_large");
    }

    #[tokio::test]
    async fn a_body_that_fails_is_an_invalid_request() {
        let failed = Err(std::io::Error::other("reset"));
        let body = Frames([data("{\"mess"), failed].into());
        let error = read_body(body, None, 64).await.unwrap_err();
        assert_eq!(error.status, http::StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "invalid_request");
    }

    #[tokio::test]
    async fn an_empty_body_is_empty() {
        let bytes = read_body(Frames([].into()), None, 0).await.unwrap();
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_request_too_large() {
        let body = Full::new(Bytes::from(vec![b' '; 17]));
        let error = read_body(body, None, 16).await.unwrap_err();
        assert_eq!(error.status, http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.code, "request_too_large");
    }

    /// A body that promises `.0` bytes and has none.
    struct Promising(u64);

    impl Body for Promising {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(None)
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0)
        }
    }

    #[tokio::test]
    async fn a_declared_length_past_the_limit_is_refused_before_reading() {
        let declared = declared_length(&Promising(17));
        let error = read_body(Promising(17), declared, 16).await.unwrap_err();
        assert_eq!(error.code, "request_too_large");
        let declared = declared_length(&Promising(16));
        let bytes = read_body(Promising(16), declared, 16).await.unwrap();
        assert!(bytes.is_empty());
    }
}
