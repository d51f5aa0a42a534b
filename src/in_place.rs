//! Futures boxed where they are built.
//!
//! `Box::pin(make())`, and `#[async_trait]`, which boxes that way, make the future first
//! and then move it into its box, which copies all of it. A PostgreSQL turn's future
//! holds sqlx's acquire future and is about 15 KiB: the move cost every turn, and again
//! every history load, about 15,000 instructions (a byte an instruction under
//! callgrind; see `docs/performance.md`). [`built_in_box`] allocates first, which lets
//! the compiler write the future where it stays; the stores' `TurnStore` methods are
//! written out with the signatures `#[async_trait]` would give them to use it.

use std::pin::Pin;

/// The future `make` returns, written into a box allocated before it is made.
///
/// ```ignore
/// let future = built_in_box(|| history(self, owner, id, last));
/// ```
pub(crate) fn built_in_box<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
