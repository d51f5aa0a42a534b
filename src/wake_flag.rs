//! [`WakeFlag`]: a waker of its own for one of the futures a task polls, so that the task
//! polls it again only when it asked to be.
//!
//! Why: a reply's body polls its turn's write beside the reply's inner body (see
//! [`Storing`](crate::turn::Storing)), and the connection's task that polls the body is
//! woken by either, and by the connection itself. Polled at every wake-up, the write
//! tried its database socket again each time, for nothing: on PostgreSQL five polls a
//! turn where two do, three reads through TLS that found no data, and about 4,000
//! instructions a turn (see `docs/performance.md`). The same bookkeeping as
//! `FuturesUnordered`'s, for one future, with the standard library alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

/// Whether the future it wakes for asked to be polled, and the task to wake then.
pub(crate) struct WakeFlag {
    woken: AtomicBool,
    task: Mutex<Waker>,
}

impl WakeFlag {
    /// A flag already set, since a future must be polled once before it can ask again;
    /// and the waker to poll the future with.
    pub(crate) fn new() -> (Arc<Self>, Waker) {
        let flag = Arc::new(Self {
            woken: AtomicBool::new(true),
            task: Mutex::new(Waker::noop().clone()),
        });
        let waker = Waker::from(flag.clone());
        (flag, waker)
    }

    /// Takes the polling task's waker (the one to wake when the future asks to be polled
    /// again), and says whether the future asked since the last call: if not, polling it
    /// now would find nothing new.
    pub(crate) fn take(&self, cx: &Context<'_>) -> bool {
        {
            let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            if !task.will_wake(cx.waker()) {
                task.clone_from(cx.waker());
            }
        }
        // After the waker is in place: a wake-up from now on reaches this task.
        self.woken.swap(false, Ordering::AcqRel)
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wake-ups of the task that polls.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_future_is_polled_first_then_only_after_it_asked() {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let task = Waker::from(counter.clone());
        let cx = Context::from_waker(&task);
        let (flag, own) = WakeFlag::new();

        assert!(flag.take(&cx), "the first poll");
        assert!(!flag.take(&cx), "nothing asked since");

        own.wake_by_ref();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(flag.take(&cx), "polled after it asked");
        assert!(!flag.take(&cx));
    }

    #[test]
    fn a_wake_up_reaches_the_task_that_polled_last() {
        let first = Arc::new(Counter(AtomicUsize::new(0)));
        let second = Arc::new(Counter(AtomicUsize::new(0)));
        let (flag, own) = WakeFlag::new();
        let first_waker = Waker::from(first.clone());
        let second_waker = Waker::from(second.clone());
        flag.take(&Context::from_waker(&first_waker));
        flag.take(&Context::from_waker(&second_waker));

        own.wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
