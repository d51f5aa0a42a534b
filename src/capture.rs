//! [`StreamCapture`]: what the capturing body keeps of a streamed reply, and when.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::chat::ReplyAssembler;
use crate::sse::SseParser;
use crate::turn::PendingTurn;

/// Captures a copy of a streamed reply for storage while deciding, for each frame,
/// which bytes go to the client now and which are held back (`[DONE]` waits until the
/// turn is stored).
pub(crate) struct StreamCapture {
    parser: SseParser,
    reply: ReplyAssembler,
    captured: usize,
    limit: usize,
    /// Bytes that may still turn out to be the `[DONE]` line, oldest first.
    held: Vec<Bytes>,
    /// `None` once the turn was handed to storage, or given up past the capture limit.
    turn: Option<PendingTurn>,
}

impl StreamCapture {
    pub(crate) fn new(turn: PendingTurn, limit: usize) -> Self {
        Self {
            parser: SseParser::default(),
            reply: ReplyAssembler::new(),
            captured: 0,
            limit,
            held: Vec::new(),
            turn: Some(turn),
        }
    }

    /// Takes one data frame of the inner body and queues what the client gets now:
    /// the frame itself in the usual case, or slices of it (never copies).
    pub(crate) fn on_data(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) {
        self.captured = self.captured.saturating_add(chunk.len());
        if self.captured > self.limit && self.turn.is_some() {
            tracing::warn!(
                limit = self.limit,
                "reply exceeds the capture limit; it will not be stored"
            );
            self.turn = None;
            self.parser.stop_capturing();
        }
        let reply = &mut self.reply;
        let fed = self.parser.feed(&chunk, |data| reply.on_event(data));
        if fed.done && fed.forward == 0 {
            // The `[DONE]` line began in the held bytes: they go nowhere.
            self.held.clear();
            return;
        }
        if fed.forward > 0 {
            out.extend(self.held.drain(..));
        }
        if fed.forward == chunk.len() {
            out.push_back(chunk);
            return;
        }
        if fed.forward > 0 {
            out.push_back(chunk.slice(..fed.forward));
        }
        if !fed.done {
            self.held.push(chunk.slice(fed.forward..));
        }
    }

    /// Whether the reply's `[DONE]` has arrived (and is being held back).
    pub(crate) fn is_done(&self) -> bool {
        self.parser.is_done()
    }

    /// The inner body ended (or sent `[DONE]`): releases bytes held for a `[DONE]` that
    /// never came and hands the turn to storage. `None` when there is nothing to store
    /// (the reply outgrew the capture limit), which the client must hear as a failure.
    pub(crate) fn finish(&mut self, out: &mut VecDeque<Bytes>) -> Option<oneshot::Receiver<bool>> {
        if !self.parser.is_done() {
            out.extend(self.held.drain(..));
            let reply = &mut self.reply;
            self.parser.finish(|data| reply.on_event(data));
        }
        let complete = self.parser.is_done() || self.reply.finished();
        let turn = self.turn.take()?;
        Some(turn.store(self.reply.take_message(complete)))
    }

    /// The stream broke off (inner error): stores what arrived, marked incomplete.
    pub(crate) fn abandon(&mut self) {
        if let Some(turn) = self.turn.take() {
            // Nobody waits for the outcome: the client is already being told of the error.
            drop(turn.store(self.reply.take_message(false)));
        }
    }

    /// The chunk that tells the client its turn was not stored.
    pub(crate) fn storage_failed_event(&self) -> Bytes {
        self.reply.storage_failed_event()
    }
}

impl Drop for StreamCapture {
    /// The client went away mid-stream: the partial turn is still stored, marked
    /// incomplete, in a task of its own.
    fn drop(&mut self) {
        self.abandon();
    }
}
