//! [`ResponseBody`]: the body of every response that passes through the layer, one
//! variant per way the layer treats a reply: forwarded as it is, captured as it streams
//! ([`stream`]), replayed after the layer read it ([`json`]), or made by the layer as it
//! goes ([`channel`]).

mod channel;
mod json;
mod stream;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use channel::ChannelBody;
use json::ReplayedBody;
pub(crate) use json::store_json_reply;
use stream::CapturedStream;

use crate::turn::PendingTurn;

pin_project! {
    /// The body of every response that passes through the layer.
    ///
    /// For requests the layer does not touch it is the inner body itself, frame for
    /// frame; for answers the layer makes itself (errors, JSON replies it read) it is
    /// their bytes; for streamed chat replies it forwards each inner frame as it comes,
    /// as the same bytes, while capturing a copy for storage and holding `data: [DONE]`
    /// back until the turn is stored.
    ///
    /// It implements [`http_body::Body`]; you rarely name it except in service bounds.
    ///
    /// ```
    /// use http_body::Body;
    /// use tower_conversations::ResponseBody;
    /// let body: ResponseBody<http_body_util::Empty<bytes::Bytes>> = bytes::Bytes::from("{}").into();
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Forwarded { #[pin] inner: B },
        Replayed { body: ReplayedBody<B> },
        Captured { #[pin] body: CapturedStream<B> },
        Channel { body: ChannelBody },
    }
}

impl<B: Body> ResponseBody<B> {
    /// The inner body, untouched.
    pub(crate) fn forwarded(inner: B) -> Self {
        Self {
            kind: Kind::Forwarded { inner },
        }
    }

    /// A streamed reply, forwarded and captured for `turn`.
    pub(crate) fn captured(inner: B, turn: PendingTurn, capture_limit: usize) -> Self {
        Self {
            kind: Kind::Captured {
                body: CapturedStream::new(inner, turn, capture_limit),
            },
        }
    }
}

impl<B: Body> ResponseBody<B> {
    /// A body the layer writes itself as it goes (a translated stream), read from
    /// `receiver` until its sender is dropped.
    pub(crate) fn channel(receiver: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self {
            kind: Kind::Channel {
                body: ChannelBody::new(receiver),
            },
        }
    }
}

impl<B: Body> From<ReplayedBody<B>> for ResponseBody<B> {
    fn from(body: ReplayedBody<B>) -> Self {
        Self {
            kind: Kind::Replayed { body },
        }
    }
}

impl<B: Body> From<Bytes> for ResponseBody<B> {
    fn from(bytes: Bytes) -> Self {
        ReplayedBody::from(bytes).into()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    // Inlined into the caller, as it was before the capture was boxed: out of line, it
    // cost some 70 instructions a frame more (counted with `load --instructions`).
    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Forwarded { inner } => inner.poll_frame(cx),
            KindProj::Replayed { body } => body.poll_frame(cx),
            KindProj::Captured { body } => body.poll_frame(cx),
            KindProj::Channel { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Forwarded { inner } => inner.is_end_stream(),
            Kind::Replayed { body } => body.is_end_stream(),
            Kind::Captured { body } => body.is_end_stream(),
            Kind::Channel { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Forwarded { inner } => inner.size_hint(),
            Kind::Replayed { body } => body.size_hint(),
            Kind::Captured { body } => body.size_hint(),
            Kind::Channel { .. } => SizeHint::default(),
        }
    }
}
