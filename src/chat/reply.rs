//! Assembling the assistant message from a reply: streamed deltas or a JSON body.

use bytes::Bytes;

use crate::store::NewMessage;

/// Builds the assistant message of a streamed reply from its SSE events' data.
#[derive(Debug, Default)]
pub(crate) struct ReplyAssembler {}

impl ReplyAssembler {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Takes one SSE event's data (`[DONE]` never reaches it). Non-JSON data and events
    /// without `choices` are ignored; `{"error": ...}` is remembered.
    pub(crate) fn on_event(&mut self, data: &str) {
        todo!()
    }

    /// Whether a `finish_reason` arrived.
    pub(crate) fn finished(&self) -> bool {
        todo!()
    }

    /// The assistant message and what is kept beside it. `complete` is false when the
    /// stream was cut short (client gone, upstream failed); the message then carries
    /// `metadata.incomplete = true`, as it does after an error event.
    pub(crate) fn take_message(&mut self, complete: bool) -> NewMessage {
        todo!()
    }

    /// The extra last chunk that tells the client its turn was not stored:
    /// `data: {"id", "object": "chat.completion.chunk", "created", "model", "choices": [],
    /// "metadata": {"storage_failed": true}}` and a blank line.
    pub(crate) fn storage_failed_event(&self) -> Bytes {
        todo!()
    }
}

/// The assistant message of a non-streaming reply (`choices[0].message`), or `None`
/// when the body is not such a reply.
pub(crate) fn assemble_json_reply(body: &[u8]) -> Option<NewMessage> {
    todo!()
}

/// The JSON reply with a top-level `"metadata": {"storage_failed": true}` merged in;
/// `None` when the body is not a JSON object.
pub(crate) fn mark_storage_failed(body: &[u8]) -> Option<Vec<u8>> {
    todo!()
}
