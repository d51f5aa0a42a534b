//! The reply to a stateful chat request: `X-Conversation-ID`, then capture of the
//! streamed or JSON reply for storage.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, response};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::CONVERSATION_ID_HEADER;
use crate::body::{ResponseBody, Rest, push_marked};
use crate::capture::StreamCapture;
use crate::chat::{StorageFailedMarker, assemble_json_reply, mark_storage_failed};
use crate::layer::Config;
use crate::store::NewMessage;
use crate::turn::PendingTurn;

/// What the request side knows of a stateful turn.
pub(crate) struct Stateful {
    pub(crate) id: Uuid,
    pub(crate) create: bool,
    pub(crate) owner: String,
    /// The request's messages that belong in the turn.
    pub(crate) messages: Vec<NewMessage>,
}

/// How a reply can be read.
enum ReplyKind {
    Stream,
    Json,
    /// Compressed, or neither SSE nor JSON: passed through and not stored.
    Unreadable(&'static str),
}

impl ReplyKind {
    fn of(headers: &HeaderMap) -> Self {
        let encoded = headers
            .get(CONTENT_ENCODING)
            .is_some_and(|encoding| !encoding.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Self::Unreadable(
                "the reply is compressed; place compression outside the layer",
            );
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence == "text/event-stream" {
            Self::Stream
        } else if essence == "application/json" || essence.ends_with("+json") {
            Self::Json
        } else {
            Self::Unreadable("the reply is neither text/event-stream nor JSON")
        }
    }
}

/// Wraps the inner service's response to a stateful request.
///
/// Non-2xx responses pass untouched (no header, nothing stored); 2xx ones get
/// `X-Conversation-ID` and have their reply captured and stored.
pub(crate) async fn respond<B>(
    response: Response<B>,
    stateful: Stateful,
    config: &Arc<crate::layer::Config>,
) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
{
    if !response.status().is_success() {
        return response.map(ResponseBody::inner);
    }
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::try_from(stateful.id.to_string()) {
        parts.headers.insert(CONVERSATION_ID_HEADER, value);
    }
    let kind = ReplyKind::of(&parts.headers);
    if let ReplyKind::Unreadable(why) = kind {
        tracing::warn!(why, "the turn is not stored");
        return Response::from_parts(parts, ResponseBody::inner(body));
    }
    let turn = pending_turn(stateful, config);
    match kind {
        ReplyKind::Stream => {
            // The layer holds back and may add bytes: the length is no longer known.
            parts.headers.remove(CONTENT_LENGTH);
            let capture = StreamCapture::new(turn, config.capture_limit);
            Response::from_parts(parts, ResponseBody::capture(body, capture))
        }
        _ => capture_json(parts, body, turn, config.capture_limit).await,
    }
}

fn pending_turn(stateful: Stateful, config: &Config) -> PendingTurn {
    PendingTurn {
        store: config.store.clone(),
        owner: stateful.owner,
        id: stateful.id,
        create: stateful.create,
        messages: stateful.messages,
        timeout: config.storage_timeout,
        writes: config.writes.clone(),
        // A service is always called inside the runtime that the store's driver needs.
        runtime: Handle::current(),
    }
}

/// Reads a JSON reply whole, stores its turn, and marks it when storing failed.
async fn capture_json<B>(
    mut parts: response::Parts,
    body: B,
    turn: PendingTurn,
    limit: usize,
) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
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
                        limit,
                        "JSON reply exceeds the capture limit; it is not stored"
                    );
                    return pass_marked(parts, frames, body);
                }
            }
            Err(error) => {
                return Response::from_parts(
                    parts,
                    ResponseBody::frames(frames, Rest::Error(error)),
                );
            }
        }
    }
    let bytes = join_data(&frames);
    let durable = match assemble_json_reply(&bytes) {
        Some(reply) => turn.store(reply).await.unwrap_or(false),
        None => {
            tracing::warn!("the JSON reply is not a chat completion; the turn is not stored");
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
    Response::from_parts(parts, ResponseBody::frames(frames, Rest::End))
}

/// A JSON reply too long to store: what was read and the rest of the body go to the
/// client as they are, with `storage_failed` added as they stream past.
fn pass_marked<B>(
    mut parts: response::Parts,
    read: VecDeque<Frame<Bytes>>,
    body: Pin<Box<B>>,
) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
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
    Response::from_parts(
        parts,
        ResponseBody::frames(frames, Rest::Marking(body, marker)),
    )
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
