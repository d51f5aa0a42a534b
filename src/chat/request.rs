//! Reading a chat-completions request body and splicing history into it.

use std::ops::Range;

use serde_json::Value;

use crate::store::NewMessage;

/// A chat-completions body, read far enough to decide and splice, borrowing the bytes.
#[derive(Debug)]
pub(crate) struct ChatRequest<'a> {
    body: &'a [u8],
    /// Where the `messages` array stands in `body`.
    messages_span: Range<usize>,
    /// The request's messages, parsed.
    messages: Vec<Value>,
}

/// Reads `body` as a chat request: a JSON object whose `messages` is an array of objects,
/// each with a string `role`. `None` for anything else.
pub(crate) fn parse_chat_request(body: &[u8]) -> Option<ChatRequest<'_>> {
    todo!()
}

impl<'a> ChatRequest<'a> {
    /// The request's messages in order.
    pub(crate) fn messages(&self) -> &[Value] {
        &self.messages
    }

    /// Whether any message has role `system` or `developer`.
    pub(crate) fn has_system_message(&self) -> bool {
        todo!()
    }

    /// The body with `messages` replaced by: the request's system/developer messages,
    /// then `history`, then the request's other messages. Every other byte of the body
    /// is kept as it was.
    pub(crate) fn splice(&self, history: &[Value]) -> Vec<u8> {
        todo!()
    }

    /// The messages of this request that belong in the stored turn: all but
    /// system/developer ones, in order.
    pub(crate) fn turn_messages(&self) -> Vec<NewMessage> {
        todo!()
    }
}
