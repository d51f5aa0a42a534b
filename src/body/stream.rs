//! [`CapturedStream`]: a streamed (`text/event-stream`) reply, forwarded frame by frame
//! while a copy is assembled into the turn's assistant message and stored.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use crate::chat::ReplyAssembler;
use crate::metrics::{self, ReplyFormat};
use crate::sse::{Fed, StreamEnd};
use crate::turn::{PendingTurn, Storing};

pin_project! {
    /// Forwards each frame of the inner body as it comes, as the same bytes, while
    /// capturing a copy; `[DONE]` waits until the turn is stored.
    ///
    /// The inner body is held inline and the capture in a box of its own ([`Capture`]):
    /// at a model's pace each frame finds its stream's state out of the cache, and the
    /// capture is ten times the size of the layer's other bodies, which every response
    /// (stateless ones included) is moved with several times on its way out. Reading
    /// the box before the inner body is polled lets the two misses overlap instead of
    /// following one another, as they did with the inner body inside the box (see
    /// `docs/performance.md`).
    pub(crate) struct CapturedStream<B> {
        #[pin]
        inner: B,
        state: Box<Capture>,
    }
}

/// What a captured stream keeps besides its inner body. Laid out as declared
/// (`repr(C)`), what every frame reads first: the queue's length, the phase, the
/// stream's end and the reply's content and pattern (see [`StreamCapture`]) sit
/// together in the fewest lines, and the rest after them (see `docs/performance.md`).
#[repr(C)]
struct Capture {
    out: VecDeque<Bytes>,
    phase: Phase,
    capture: StreamCapture,
    trailers: Option<HeaderMap>,
}

/// Where a captured stream is.
enum Phase {
    /// Forwarding the inner body; `waited`: its last poll found no frame, so the next
    /// one comes after a wake-up, when the capture's lines may be out of the cache (see
    /// [`StreamCapture::warm`]). Right after a frame they are not.
    Streaming {
        waited: bool,
    },
    /// The turn is being stored (`None`: there was nothing to store); the inner body is
    /// drained meanwhile if it is still open, so its connection can be reused. The end
    /// of the stream is held back since `held_since`.
    Storing {
        stored: Option<Storing>,
        inner_open: bool,
        held_since: Instant,
    },
    /// Only trailers, if any, remain.
    Trailers,
    Finished,
}

impl<B> CapturedStream<B> {
    pub(crate) fn new(inner: B, turn: PendingTurn, capture_limit: usize) -> Self {
        Self {
            inner,
            state: Box::new(Capture {
                capture: StreamCapture::new(turn, capture_limit),
                out: VecDeque::new(),
                phase: Phase::Streaming { waited: true },
                trailers: None,
            }),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CapturedStream<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let Capture {
            out,
            phase,
            capture,
            trailers,
        } = &mut **this.state;
        loop {
            if let Some(bytes) = out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match phase {
                Phase::Streaming { waited } => match ready!({
                    if *waited {
                        capture.warm();
                    }
                    let polled = inner.as_mut().poll_frame(cx);
                    *waited = polled.is_pending();
                    polled
                }) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            let fed = capture.on_data(data, out);
                            if let Some(whole) = fed.whole {
                                return Poll::Ready(Some(Ok(Frame::data(whole))));
                            }
                            if fed.done {
                                *phase = Phase::Storing {
                                    stored: capture.finish(out),
                                    inner_open: true,
                                    held_since: Instant::now(),
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
                            held_since: Instant::now(),
                        };
                    }
                },
                Phase::Storing {
                    stored,
                    inner_open,
                    held_since,
                } => {
                    // After `[DONE]` the rest of the inner body is read and dropped.
                    while *inner_open {
                        match inner.as_mut().poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                if let Ok(last) = frame.into_trailers() {
                                    *trailers = Some(last);
                                }
                            }
                            Poll::Ready(Some(Err(_)) | None) => *inner_open = false,
                            Poll::Pending => break,
                        }
                    }
                    let durable = match stored {
                        Some(storing) => ready!(Pin::new(storing).poll(cx)),
                        None => false,
                    };
                    metrics::stream_end_held(held_since.elapsed());
                    capture.close(durable, out);
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
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state.phase, Phase::Finished) && self.state.out.is_empty()
    }

    // The size hint stays unknown: the layer may hold back or add bytes.
}

/// What the capturing body keeps of a streamed reply: the stream's end, the assistant
/// message being assembled, and the turn waiting for it. Laid out as declared, what a
/// frame reads first (see [`CapturedStream`]).
#[repr(C)]
struct StreamCapture {
    end: StreamEnd,
    captured: usize,
    limit: usize,
    reply: ReplyAssembler,
    /// `None` once the turn was handed to storage, or given up past the capture limit.
    turn: Option<PendingTurn>,
}

impl StreamCapture {
    fn new(turn: PendingTurn, limit: usize) -> Self {
        Self {
            end: StreamEnd::default(),
            reply: ReplyAssembler::new(),
            captured: 0,
            limit,
            turn: Some(turn),
        }
    }

    /// Reads each line of memory the next frame reads out of line: this capture's own
    /// fields, the pattern's bytes and the end of the content (see
    /// [`ReplyAssembler::warm`]). Called just before the inner body is polled for that
    /// frame, when its last poll found none: the poll that follows a frame finds the
    /// lines still in the cache.
    ///
    /// Why: at a model's pace a stream's state is out of the cache by its next frame,
    /// and each line the frame reads then waits for memory, one after the other, since
    /// the code finds each only after reading the one before. Read together here, while
    /// the inner body is polled, those waits overlap with one another and with the inner
    /// body's own (measured in `docs/performance.md`). The values read are combined only
    /// so that one `black_box` keeps every load; nothing changes.
    #[inline]
    fn warm(&self) {
        std::hint::black_box(self.captured ^ self.limit ^ self.end.warm() ^ self.reply.warm());
    }

    /// Takes one data frame: hands it back to go on whole, or queues what the client
    /// gets now; says whether the reply's `[DONE]` has arrived (and is held back).
    fn on_data(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) -> Fed {
        self.captured = self.captured.saturating_add(chunk.len());
        if self.captured > self.limit
            && let Some(turn) = self.turn.take()
        {
            tracing::warn!(
                "gen_ai.conversation.id" = %turn.id,
                limit = self.limit,
                "reply exceeds the capture limit; it will not be stored"
            );
            metrics::reply_over_capture_limit(turn.backend, turn.target, ReplyFormat::Stream);
            self.end.stop_capturing();
        }
        let reply = &mut self.reply;
        self.end.feed(chunk, |data| reply.on_event_bytes(data), out)
    }

    /// The inner body ended (or sent `[DONE]`): starts storing the turn. `None` when
    /// there is nothing to store (the reply outgrew the capture limit), which the client
    /// must hear as a failure.
    fn finish(&mut self, out: &mut VecDeque<Bytes>) -> Option<Storing> {
        let reply = &mut self.reply;
        self.end.finish(|data| reply.on_event_bytes(data), out);
        let complete = self.end.is_done() || self.reply.finished();
        let turn = self.turn.take()?;
        Some(turn.store(self.reply.take_message(complete)))
    }

    /// Storing is over: queues `storage_failed` when it failed, then `[DONE]`.
    fn close(&self, durable: bool, out: &mut VecDeque<Bytes>) {
        self.end
            .close(durable, || self.reply.storage_failed_chunk(), out);
    }

    /// The stream broke off (inner error): stores what arrived, marked incomplete.
    fn abandon(&mut self) {
        if let Some(turn) = self.turn.take() {
            // Nobody waits for the outcome: the client is already being told of the error.
            // Dropped, the write goes on in a task of its own.
            drop(turn.store(self.reply.take_message(false)));
        }
    }
}

impl Drop for StreamCapture {
    /// The client went away mid-stream: the partial turn is still stored, marked
    /// incomplete, in a task of its own.
    fn drop(&mut self) {
        self.abandon();
    }
}
