//! [`ResponseBody`]: the response body the layer returns.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use crate::capture::StreamCapture;
use crate::chat::StorageFailedMarker;

/// The event that ends an OpenAI-compatible stream.
const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

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
        Inner { #[pin] inner: B },
        Frames { frames: VecDeque<Frame<Bytes>>, rest: Rest<B> },
        Capture {
            #[pin] inner: B,
            capture: StreamCapture,
            out: VecDeque<Bytes>,
            phase: Phase,
            trailers: Option<HeaderMap>,
        },
    }
}

/// What follows the frames of a body the layer read (part of).
pub(crate) enum Rest<B: Body> {
    End,
    /// The inner body failed with this after the frames.
    Error(B::Error),
    /// The inner body goes on: a JSON reply the layer stopped reading at the capture
    /// limit, whose rest streams through the marker that adds `storage_failed` before
    /// the top-level object closes.
    Marking(Pin<Box<B>>, StorageFailedMarker),
}

/// Queues `data` for the client with the `storage_failed` member spliced in where the
/// marker says, as slices of `data` around it (no copy).
pub(crate) fn push_marked(
    marker: &mut StorageFailedMarker,
    data: Bytes,
    out: &mut VecDeque<Frame<Bytes>>,
) {
    let Some(insertion) = marker.feed(&data) else {
        out.push_back(Frame::data(data));
        return;
    };
    if insertion.at > 0 {
        out.push_back(Frame::data(data.slice(..insertion.at)));
    }
    out.push_back(Frame::data(Bytes::from_static(insertion.member)));
    out.push_back(Frame::data(data.slice(insertion.at..)));
}

/// Where a captured stream is.
enum Phase {
    /// Forwarding the inner body.
    Streaming,
    /// The turn is being stored (`None`: there was nothing to store); the inner body is
    /// drained meanwhile if it is still open, so its connection can be reused.
    Storing {
        stored: Option<oneshot::Receiver<bool>>,
        inner_open: bool,
    },
    /// Only trailers, if any, remain.
    Trailers,
    Finished,
}

impl<B: Body> ResponseBody<B> {
    /// The inner body, untouched.
    pub(crate) fn inner(inner: B) -> Self {
        Self {
            kind: Kind::Inner { inner },
        }
    }

    /// A body the layer made or read: these frames, then `rest`.
    pub(crate) fn frames(frames: VecDeque<Frame<Bytes>>, rest: Rest<B>) -> Self {
        Self {
            kind: Kind::Frames { frames, rest },
        }
    }

    /// A streamed reply, forwarded and captured.
    pub(crate) fn capture(inner: B, capture: StreamCapture) -> Self {
        Self {
            kind: Kind::Capture {
                inner,
                capture,
                out: VecDeque::new(),
                phase: Phase::Streaming,
                trailers: None,
            },
        }
    }
}

impl<B: Body> From<Bytes> for ResponseBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::frames(VecDeque::from([Frame::data(bytes)]), Rest::End)
    }
}

impl<B> Body for ResponseBody<B>
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
            KindProj::Inner { inner } => inner.poll_frame(cx),
            KindProj::Frames { frames, rest } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                match std::mem::replace(rest, Rest::End) {
                    Rest::End => Poll::Ready(None),
                    Rest::Error(error) => Poll::Ready(Some(Err(error))),
                    Rest::Marking(mut inner, mut marker) => {
                        let polled = inner.as_mut().poll_frame(cx);
                        let polled = match polled {
                            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                                Ok(data) => {
                                    push_marked(&mut marker, data, frames);
                                    Poll::Ready(frames.pop_front().map(Ok))
                                }
                                Err(frame) => Poll::Ready(Some(Ok(frame))),
                            },
                            Poll::Ready(None) => {
                                if !marker.marked() {
                                    tracing::warn!(
                                        "the reply could not be marked storage_failed: it is \
                                         not one JSON object, or has metadata of its own"
                                    );
                                }
                                return Poll::Ready(None);
                            }
                            other => other,
                        };
                        *rest = Rest::Marking(inner, marker);
                        polled
                    }
                }
            }
            KindProj::Capture {
                mut inner,
                capture,
                out,
                phase,
                trailers,
            } => loop {
                if let Some(bytes) = out.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                match phase {
                    Phase::Streaming => match ready!(inner.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => {
                                capture.on_data(data, out);
                                if capture.is_done() {
                                    *phase = Phase::Storing {
                                        stored: capture.finish(out),
                                        inner_open: true,
                                    };
                                }
                            }
                            Err(frame) => *trailers = frame.into_trailers().ok(),
                        },
                        Some(Err(error)) => {
                            capture.abandon();
                            *phase = Phase::Finished;
                            return Poll::Ready(Some(Err(error)));
                        }
                        None => {
                            *phase = Phase::Storing {
                                stored: capture.finish(out),
                                inner_open: false,
                            };
                        }
                    },
                    Phase::Storing { stored, inner_open } => {
                        // After `[DONE]` the rest of the inner body is read and dropped.
                        while *inner_open {
                            match inner.as_mut().poll_frame(cx) {
                                Poll::Ready(Some(Ok(frame))) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        *trailers = Some(t);
                                    }
                                }
                                Poll::Ready(Some(Err(_)) | None) => *inner_open = false,
                                Poll::Pending => break,
                            }
                        }
                        let durable = match stored {
                            Some(receiver) => ready!(Pin::new(receiver).poll(cx)).unwrap_or(false),
                            None => false,
                        };
                        if !durable {
                            out.push_back(capture.storage_failed_event());
                        }
                        if capture.is_done() {
                            out.push_back(Bytes::from_static(DONE_EVENT));
                        }
                        *phase = Phase::Trailers;
                    }
                    Phase::Trailers => {
                        *phase = Phase::Finished;
                        if let Some(trailers) = trailers.take() {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    }
                    Phase::Finished => return Poll::Ready(None),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { inner } => inner.is_end_stream(),
            Kind::Frames { frames, rest } => match rest {
                Rest::End => frames.is_empty(),
                Rest::Error(_) => false,
                Rest::Marking(inner, _) => frames.is_empty() && inner.is_end_stream(),
            },
            Kind::Capture { phase, out, .. } => matches!(phase, Phase::Finished) && out.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { inner } => inner.size_hint(),
            Kind::Frames { frames, rest } => {
                if !matches!(rest, Rest::End) {
                    return SizeHint::default();
                }
                let len = frames
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|data| data.len() as u64)
                    .sum();
                SizeHint::with_exact(len)
            }
            // The layer may hold back or add bytes: the length is not known.
            Kind::Capture { .. } => SizeHint::default(),
        }
    }
}
