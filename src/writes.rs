//! Counting the turns being stored, so that shutdown can wait for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The number of storage tasks still running, shared by a layer and all its clones.
#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    running: AtomicUsize,
    idle: Notify,
}

/// Held by one storage task; the count drops when it does.
#[derive(Debug)]
pub(crate) struct WriteGuard(Arc<PendingWrites>);

impl PendingWrites {
    pub(crate) fn start(self: &Arc<Self>) -> WriteGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        WriteGuard(self.clone())
    }

    /// Resolves once no storage task is running.
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
