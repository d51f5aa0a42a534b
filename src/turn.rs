//! [`PendingTurn`]: a turn whose request is known and whose reply is still arriving.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::store::{ConversationStore, NewMessage};
use crate::writes::PendingWrites;

/// Everything needed to store a turn once its assistant message is assembled.
pub(crate) struct PendingTurn {
    pub(crate) store: Arc<dyn ConversationStore>,
    pub(crate) owner: String,
    pub(crate) id: Uuid,
    /// Whether this turn creates the conversation.
    pub(crate) create: bool,
    /// The request's messages that belong in the turn.
    pub(crate) messages: Vec<NewMessage>,
    pub(crate) timeout: Duration,
    pub(crate) writes: Arc<PendingWrites>,
    /// Taken when the request came in, so that a body dropped outside the runtime's
    /// context (a client gone) can still start its write.
    pub(crate) runtime: Handle,
}

impl PendingTurn {
    /// Appends the turn, ending with `reply`, in a task of its own, so that neither a
    /// dropped response nor a dropped future cancels the write. The receiver answers
    /// whether the turn is durable; a write that fails or outlasts the timeout answers
    /// `false` (a write abandoned at the timeout may still have reached the database).
    pub(crate) fn store(self, reply: NewMessage) -> oneshot::Receiver<bool> {
        let (sender, receiver) = oneshot::channel();
        let PendingTurn {
            store,
            owner,
            id,
            create,
            mut messages,
            timeout,
            writes,
            runtime,
        } = self;
        messages.push(reply);
        let guard = writes.start();
        let span = tracing::Span::current();
        runtime.spawn(
            async move {
                let write = store.append_turn(&owner, id, create, &messages);
                let stored = match tokio::time::timeout(timeout, write).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(error)) => {
                        tracing::error!(
                            error = %error,
                            cause = ?std::error::Error::source(&error),
                            "storing the turn failed"
                        );
                        false
                    }
                    Err(_) => {
                        tracing::error!(?timeout, "storing the turn timed out");
                        false
                    }
                };
                // The client may be gone; the turn is stored (or not) all the same.
                let _ = sender.send(stored);
                drop(guard);
            }
            .instrument(span),
        );
        receiver
    }
}
