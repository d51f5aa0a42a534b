//! [`RequestBody`]: what the inner service receives as a request body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

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
