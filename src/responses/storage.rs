//! Where a response's state comes from and where its turn goes: the history a request
//! sees, and the placement of its turn (see [`ResponsePlacement`]).
//!
//! - No state: a new conversation, filed under a fresh id.
//! - `conversation`: its messages come first, and the turn is appended to it.
//! - `previous_response_id`: the messages of its conversation up to that response's
//!   last one. When that response is still the conversation's last turn, the new turn
//!   is appended there (checked again when storing: if another branch got there first,
//!   the turn goes to a fork made at that point); otherwise the conversation is forked
//!   at that point, once, and the chain goes on in the fork.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::id::ResponseId;
use super::request::{ResponsesRequest, State, previous_not_found};
use crate::chat::trim_to_turn_boundary;
use crate::error::ApiError;
use crate::store::{
    ConversationStore, HistoryMessage, NewMessage, NewResponse, ResponsePlacement, StoreError,
};
use crate::turn::WriteGuard;

/// What a request's state resolved to, before the upstream is called.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) id: ResponseId,
    /// Where the turn goes; `None` when the request says `store: false`.
    pub(crate) placement: Option<ResponsePlacement>,
    /// The stored messages the model sees before the input.
    pub(crate) history: Vec<Value>,
    /// The sequence number the turn's first message is expected to take: exact for
    /// chains, an estimate for a `conversation` that other turns may reach meanwhile.
    pub(crate) first_sequence: i64,
}

/// Runs a store call within the storage timeout: `503` when it takes longer.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<Result<T, StoreError>, ApiError> {
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        tracing::error!(?timeout, "the conversation store did not answer in time");
        ApiError::store_unavailable()
    })
}

/// Resolves the request's state for `owner`.
pub(crate) async fn plan(
    store: &dyn ConversationStore,
    owner: &str,
    request: &ResponsesRequest,
    window: Option<u32>,
    timeout: Duration,
) -> Result<Plan, ApiError> {
    let (id, placement, history, first_sequence) = match request.state {
        State::Fresh => (
            ResponseId::new(Uuid::now_v7()),
            ResponsePlacement::NewConversation,
            Vec::new(),
            0,
        ),
        State::Conversation(conversation) => {
            let detail = within(timeout, store.get(owner, conversation)).await??;
            let next = detail.messages.last().map_or(0, |m| m.sequence_number + 1);
            let history = detail.messages.into_iter().map(|m| m.message).collect();
            let placement = ResponsePlacement::Append { after: None };
            (ResponseId::new(conversation), placement, history, next)
        }
        State::Previous(previous) => {
            let not_found = || previous_not_found(&previous.to_string());
            let stored = match within(timeout, store.response(owner, previous.0)).await? {
                Err(StoreError::NotFound) => return Err(not_found()),
                other => other?,
            };
            let position = stored.position;
            let conversation = position.items_conversation_id;
            let detail = match within(timeout, store.get(owner, conversation)).await? {
                Err(StoreError::NotFound) => return Err(not_found()),
                other => other?,
            };
            let last = position.last_sequence;
            let at_tip = detail.messages.last().map(|m| m.sequence_number) == Some(last);
            let history = detail
                .messages
                .into_iter()
                .take_while(|m| m.sequence_number <= last)
                .map(|m| m.message)
                .collect();
            let (id, placement) = if at_tip {
                let placement = ResponsePlacement::Append { after: Some(last) };
                (ResponseId::new(conversation), placement)
            } else {
                let placement = ResponsePlacement::Fork {
                    source: conversation,
                    at_sequence: last,
                };
                (ResponseId::new(Uuid::now_v7()), placement)
            };
            (id, placement, history, last + 1)
        }
    };
    let history = match (request.truncate, window) {
        (true, Some(window)) => windowed(history, window),
        _ => history,
    };
    Ok(Plan {
        id,
        placement: request.store.then_some(placement),
        history,
        first_sequence,
    })
}

/// The last `window` messages, cut at a turn boundary as the chat path's window is.
fn windowed(history: Vec<Value>, window: u32) -> Vec<Value> {
    let skip = history.len().saturating_sub(window as usize);
    let mut kept: Vec<HistoryMessage> = history[skip..]
        .iter()
        .filter_map(HistoryMessage::from_value)
        .collect();
    trim_to_turn_boundary(&mut kept);
    kept.iter().map(HistoryMessage::to_value).collect()
}

/// A response to store with its turn, once the reply is assembled.
pub(crate) struct ResponseWrite {
    pub(crate) store: Arc<dyn ConversationStore>,
    pub(crate) owner: String,
    pub(crate) id: ResponseId,
    pub(crate) placement: ResponsePlacement,
    pub(crate) messages: Vec<NewMessage>,
    pub(crate) timeout: Duration,
    /// Counts the write as pending until it ends, so that shutdown waits for it.
    pub(crate) pending: WriteGuard,
}

impl ResponseWrite {
    /// Stores `body` with the turn in a task of its own (so that a client going away
    /// cancels nothing), within the timeout. The receiver answers the sequence number the
    /// assistant message took, or `None` when storing failed or timed out.
    pub(crate) fn spawn(self, body: Value) -> oneshot::Receiver<Option<i64>> {
        let (sender, receiver) = oneshot::channel();
        tokio::spawn(async move {
            let response = NewResponse {
                key: self.id.0,
                placement: self.placement,
                messages: &self.messages,
                body: &body,
            };
            let write = self.store.append_response(&self.owner, &response);
            let stored = match tokio::time::timeout(self.timeout, write).await {
                Ok(Ok(position)) => Some(position.last_sequence),
                Ok(Err(error)) => {
                    tracing::error!(
                        error = %error,
                        cause = ?std::error::Error::source(&error),
                        "storing the response failed"
                    );
                    None
                }
                Err(_) => {
                    tracing::error!(timeout = ?self.timeout, "storing the response timed out");
                    None
                }
            };
            let _ = sender.send(stored);
            drop(self.pending);
        });
        receiver
    }
}
