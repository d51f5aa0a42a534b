//! [`ReplayedBody`]: a body the layer read (in part) before answering: a JSON reply it
//! stored, an error it made, or a JSON reply too long to store whose rest streams
//! through the marker that adds `storage_failed`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Response, response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::ResponseBody;
use crate::chat::{StorageFailedMarker, assemble_json_reply, mark_storage_failed};
use crate::metrics::{self, ReplyFormat};
use crate::turn::PendingTurn;

/// These frames, then `rest`.
pub(crate) struct ReplayedBody<B: Body> {
    frames: VecDeque<Frame<Bytes>>,
    rest: Rest<B>,
}

/// What follows the frames of a body the layer read (part of).
enum Rest<B: Body> {
    End,
    /// The inner body failed with this after the frames.
    Error(B::Error),
    /// The inner body goes on: a JSON reply the layer stopped reading at the capture
    /// limit, whose rest streams through the marker that adds `storage_failed` before
    /// the top-level object closes.
    Marking(Pin<Box<B>>, StorageFailedMarker),
}

impl<B: Body> From<Bytes> for ReplayedBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self {
            frames: VecDeque::from([Frame::data(bytes)]),
            rest: Rest::End,
        }
    }
}

/// Reads a JSON reply whole, stores its turn, and marks the reply when storing failed.
pub(crate) async fn store_json_reply<B>(
    mut parts: response::Parts,
    body: B,
    turn: PendingTurn,
    limit: usize,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let mut body = Box::pin(body);
    let mut frames = VecDeque::new();
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                size = size.saturating_add(frame.data_ref().map_or(0, Bytes::len));
                frames.push_back(frame);
                if size > limit {
                    tracing::warn!(
                        "gen_ai.conversation.id" = %turn.id,
                        limit,
                        "JSON reply exceeds the capture limit; it is not stored"
                    );
                    metrics::reply_over_capture_limit(turn.backend, turn.target, ReplyFormat::Json);
                    return pass_marked(parts, frames, body);
                }
            }
            Err(error) => {
                let rest = Rest::Error(error);
                return Response::from_parts(parts, ReplayedBody { frames, rest }.into());
            }
        }
    }
    let bytes = join_data(&frames);
    let durable = match assemble_json_reply(&bytes) {
        Some(reply) => turn.store(reply).await,
        None => {
            tracing::warn!(
                "gen_ai.conversation.id" = %turn.id,
                "the JSON reply is not a chat completion; the turn is not stored"
            );
            false
        }
    };
    if !durable && let Some(marked) = mark_storage_failed(&bytes) {
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(marked.len()));
        frames.retain(|frame| !frame.is_data());
        frames.push_front(Frame::data(Bytes::from(marked)));
    }
    let rest = Rest::End;
    Response::from_parts(parts, ReplayedBody { frames, rest }.into())
}

/// A JSON reply too long to store: what was read and the rest of the body go to the
/// client as they are, with `storage_failed` added as they stream past.
fn pass_marked<B>(
    mut parts: response::Parts,
    read: VecDeque<Frame<Bytes>>,
    body: Pin<Box<B>>,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes>,
{
    // The mark makes the body longer than the upstream said.
    parts.headers.remove(CONTENT_LENGTH);
    let mut marker = StorageFailedMarker::new();
    let mut frames = VecDeque::with_capacity(read.len() + 2);
    for frame in read {
        match frame.into_data() {
            Ok(data) => push_marked(&mut marker, data, &mut frames),
            Err(frame) => frames.push_back(frame),
        }
    }
    let rest = Rest::Marking(body, marker);
    Response::from_parts(parts, ReplayedBody { frames, rest }.into())
}

/// The data of `frames` as one buffer (without copying when there is one frame).
fn join_data(frames: &VecDeque<Frame<Bytes>>) -> Bytes {
    let mut data = frames.iter().filter_map(Frame::data_ref);
    match (data.next(), data.next()) {
        (None, _) => Bytes::new(),
        (Some(only), None) => only.clone(),
        _ => {
            let mut joined = BytesMut::new();
            for piece in frames.iter().filter_map(Frame::data_ref) {
                joined.extend_from_slice(piece);
            }
            joined.freeze()
        }
    }
}

/// Queues `data` for the client with the `storage_failed` member spliced in where the
/// marker says, as slices of `data` around it (no copy).
fn push_marked(marker: &mut StorageFailedMarker, data: Bytes, out: &mut VecDeque<Frame<Bytes>>) {
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

impl<B: Body<Data = Bytes>> ReplayedBody<B> {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match std::mem::replace(&mut self.rest, Rest::End) {
            Rest::End => Poll::Ready(None),
            Rest::Error(error) => Poll::Ready(Some(Err(error))),
            Rest::Marking(mut inner, mut marker) => {
                let polled = match inner.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            push_marked(&mut marker, data, &mut self.frames);
                            Poll::Ready(self.frames.pop_front().map(Ok))
                        }
                        Err(frame) => Poll::Ready(Some(Ok(frame))),
                    },
                    Poll::Ready(None) => {
                        if !marker.marked() {
                            tracing::warn!(
                                "the reply could not be marked storage_failed: it is not \
                                 one JSON object, or has metadata of its own"
                            );
                        }
                        return Poll::Ready(None);
                    }
                    other => other,
                };
                self.rest = Rest::Marking(inner, marker);
                polled
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        match &self.rest {
            Rest::End => self.frames.is_empty(),
            Rest::Error(_) => false,
            Rest::Marking(inner, _) => self.frames.is_empty() && inner.is_end_stream(),
        }
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        if !matches!(self.rest, Rest::End) {
            return SizeHint::default();
        }
        let len = self
            .frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(|data| data.len() as u64)
            .sum();
        SizeHint::with_exact(len)
    }
}
