//! [`PendingTurn`]: a turn whose request is known and whose reply is still arriving;
//! [`Storing`], its write under way; and [`PendingWrites`], the count of turns being
//! stored that shutdown waits for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::metrics::{self, Backend, FailureCause};
use crate::store::{NewMessage, TurnStore, TurnTarget};
use crate::wake_flag::WakeFlag;

/// Everything needed to store a turn once its assistant message is assembled. Built once
/// per stateful request, by the service, before the inner service is called.
pub(crate) struct PendingTurn {
    pub(crate) store: Arc<dyn TurnStore>,
    /// The store's kind, for the metrics.
    pub(crate) backend: Backend,
    pub(crate) owner: String,
    pub(crate) id: Uuid,
    /// Whether this turn creates the conversation or continues it.
    pub(crate) target: TurnTarget,
    /// The request's messages that belong in the turn.
    pub(crate) messages: Vec<NewMessage>,
    pub(crate) timeout: Duration,
    /// Counts this turn as pending from the moment it is built until its write ends, so
    /// that shutdown also waits for a reply whose body is dropped only after the server
    /// reported its connections closed (the drop is what starts storing a partial turn).
    pub(crate) pending: WriteGuard,
    /// Taken when the request came in, so that a body dropped outside the runtime's
    /// context (a client gone) can still start its write.
    pub(crate) runtime: Handle,
}

impl PendingTurn {
    /// Appends the turn, ending with `reply`. The write runs as the returned future is
    /// polled, in the task of whoever waits for it (the reply's body), and starts at once:
    /// written in a task of its own, it waited for that task's turn on a busy runtime and
    /// then for the body's, and `[DONE]` was held about twice as long (see
    /// `docs/performance.md`). Dropped before the write ends, the future hands it to a
    /// task of its own, so that neither a dropped response nor a dropped future cancels
    /// the write. The future answers whether the turn is durable; a write that fails or
    /// outlasts the timeout answers `false` (a write abandoned at the timeout may still
    /// have reached the database).
    pub(crate) fn store(self, reply: NewMessage) -> Storing {
        let PendingTurn {
            store,
            backend,
            owner,
            id,
            target,
            mut messages,
            timeout,
            pending,
            runtime,
        } = self;
        messages.push(reply);
        let span = tracing::Span::current();
        let write = async move {
            let started = Instant::now();
            let write = store.append_turn(&owner, id, target, &messages);
            let outcome = tokio::time::timeout(timeout, write).await;
            let elapsed = started.elapsed();
            let stored = match outcome {
                Ok(Ok(_)) => {
                    metrics::turn_stored(backend, target, elapsed);
                    true
                }
                Ok(Err(error)) => {
                    metrics::turn_failed(backend, target, FailureCause::of(&error), elapsed);
                    tracing::error!(
                        "gen_ai.conversation.id" = %id,
                        error = %error,
                        cause = ?std::error::Error::source(&error),
                        "storing the turn failed"
                    );
                    false
                }
                Err(_) => {
                    metrics::turn_failed(backend, target, FailureCause::Timeout, elapsed);
                    tracing::error!(
                        "gen_ai.conversation.id" = %id,
                        ?timeout,
                        "storing the turn timed out"
                    );
                    false
                }
            };
            drop(pending);
            stored
        };
        let (woken, waker) = WakeFlag::new();
        Storing {
            write: Some(Box::pin(write.instrument(span))),
            woken,
            waker,
            runtime,
        }
    }
}

/// A turn's write under way: see [`PendingTurn::store`].
pub(crate) struct Storing {
    /// `None` once the write ended, or was handed to a task of its own.
    write: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
    /// Set when the write asks to be polled again: the task that polls it is also woken
    /// by the reply's inner body and its connection (see [`WakeFlag`]).
    woken: Arc<WakeFlag>,
    /// The waker the write is polled with, which sets `woken`.
    waker: Waker,
    /// Where a write left unfinished goes on: the runtime the request came in on, since
    /// the future may be dropped outside any runtime's context (a client gone).
    runtime: Handle,
}

impl Future for Storing {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        let Some(write) = this.write.as_mut() else {
            // Polled again after it answered: nothing is being written any more.
            return Poll::Ready(false);
        };
        if !this.woken.take(cx) {
            return Poll::Pending;
        }
        let durable = ready!(write.as_mut().poll(&mut Context::from_waker(&this.waker)));
        this.write = None;
        Poll::Ready(durable)
    }
}

impl Drop for Storing {
    /// The caller stopped waiting (the client went away): the write goes on in a task
    /// of its own, and the turn is stored (or not) all the same.
    fn drop(&mut self) {
        if let Some(write) = self.write.take() {
            drop(self.runtime.spawn(write));
        }
    }
}

/// The number of turns not yet stored or given up (their replies still arriving, or
/// their writes running), shared by a layer and all its clones.
#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    running: AtomicUsize,
    idle: Notify,
}

/// Held by one pending turn, then by its storage task; the count drops when it does.
#[derive(Debug)]
pub(crate) struct WriteGuard(Arc<PendingWrites>);

impl PendingWrites {
    pub(crate) fn start(self: &Arc<Self>) -> WriteGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        metrics::turn_pending();
        WriteGuard(self.clone())
    }

    /// Resolves once no turn is pending.
    pub(crate) async fn idle(&self) {
        loop {
            // Registered before the check, so a task finishing in between still wakes us.
            let idle = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        metrics::turn_settled();
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_guard() {
        let writes = Arc::new(PendingWrites::default());
        writes.idle().await;
        let guard = writes.start();
        let waiter = tokio::spawn({
            let writes = writes.clone();
            async move { writes.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("idle after the last guard")
            .expect("waiter ran");
    }
}
