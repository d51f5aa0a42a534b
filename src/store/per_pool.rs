//! [`PerPool`]: what the store remembers of each pool it is called on.
//!
//! The store is implemented on sqlx's pool types themselves, which have no room for
//! state of ours, so what it keeps per pool (whether it sits behind a transaction
//! pooler, the connections kept between calls) is found by the pool's connect options,
//! which each pool holds in an `Arc` of its own from its creation to its end.

use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A `T` for each pool, found by the address of its connect options `O`.
pub(crate) struct PerPool<O, T> {
    seen: Mutex<Vec<(Weak<O>, T)>>,
}

impl<O, T: Clone> PerPool<O, T> {
    /// Nothing remembered yet.
    pub(crate) const fn new() -> Self {
        Self {
            seen: Mutex::new(Vec::new()),
        }
    }

    /// What is remembered of the pool whose connect options are `options`, made by
    /// `make` the first time. One lock and a look along a short list: cheaper than
    /// reading the options back.
    pub(crate) fn get(&self, options: &Arc<O>, make: impl FnOnce() -> T) -> T {
        // Every change to the list is one step: a panicking holder leaves it whole.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, known)) = seen
            .iter()
            // A weak pointer no longer alive may share the address of a newer pool's
            // options.
            .find(|(known, _)| {
                known.strong_count() > 0 && std::ptr::eq(known.as_ptr(), Arc::as_ptr(options))
            })
        {
            return known.clone();
        }
        let known = make();
        // Pools gone since no longer need remembering; their address may come again.
        seen.retain(|(known, _)| known.strong_count() > 0);
        seen.push((Arc::downgrade(options), known.clone()));
        known
    }
}
