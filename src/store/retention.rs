//! What erasure and purging share on both backends: which conversations go, and how many
//! at a time.
//!
//! Both pick a batch of ids (PostgreSQL with one read, SQLite owner by owner: see its
//! `retention`), then delete each conversation by its id with the condition that picked
//! it repeated in the `WHERE` (a turn that moved a conversation's `updated_at` meanwhile
//! keeps it). A write then touches one conversation and its messages, which on a
//! distributed engine (Citus) live on one worker, and no lock is held for longer than a
//! batch.

use chrono::{DateTime, Utc};

/// Most conversations one batch picks (and, on SQLite, one transaction deletes).
pub(crate) const BATCH: i64 = 500;

/// Which conversations a sweep deletes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sweep<'a> {
    /// Every conversation of this owner.
    Owner(&'a str),
    /// Every conversation, of any owner, last updated before this time.
    IdleSince(DateTime<Utc>),
}
