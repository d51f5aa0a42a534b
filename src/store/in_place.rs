//! Store calls boxed where they are built.
//!
//! `#[async_trait]` boxes a call's future by moving the finished future into a new box,
//! which copies all of it. A PostgreSQL turn's future holds sqlx's acquire future and
//! is about 15 KiB: the move cost every turn, and again every history load, about 15,000
//! instructions (a byte an instruction under callgrind; see `docs/performance.md`). The
//! backends' [`TurnStore`](super::TurnStore) methods are therefore written out with the
//! signatures `#[async_trait]` would give them, and box through [`built_in_box`].

use std::pin::Pin;

use super::StoreError;

/// A boxed store call, as `#[async_trait]` types it.
pub(crate) type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The future `make` returns, written into a box allocated before it is made, which
/// lets the compiler build it in place instead of copying it there.
///
/// ```ignore
/// fn load_history<'a>(&'a self, /* ... */) -> Call<'a, Vec<HistoryMessage>> {
///     built_in_box(|| history(self, owner, id, last))
/// }
/// ```
pub(crate) fn built_in_box<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
