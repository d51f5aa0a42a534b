//! What the layer reports through the `metrics` crate's facade, recorded here and
//! nowhere else.
//!
//! Install any `metrics` recorder (a Prometheus exporter, for one) and these appear;
//! without one, each report costs a thread-local look-up and a call into the no-op
//! recorder. Label values are fixed strings and every key is built once, on the first
//! report, so reporting never allocates.
//!
//! | name | kind | labels | what it counts or measures |
//! |---|---|---|---|
//! | `tower_conversations_requests_total` | counter | `mode` | `POST`s to a chat path, each once, by how the layer handled it: `stateless` (a system message, forwarded as sent; the layer reads a body only up to the end of its first system message, so a body malformed after it counts here too), `new`, `continue`, `passthrough` (not a chat request, forwarded untouched), `error` (answered by the layer itself: a body over the limit, a bad or unknown conversation id, a history that could not be loaded) |
//! | `tower_conversations_history_loads_total` | counter | `backend`, `outcome` | history loads for continued conversations, by `outcome`: `loaded`, `not_found`, `timeout`, `unavailable` (the database could not be reached), `query` (it answered with an error) |
//! | `tower_conversations_history_load_seconds` | histogram | `backend` | how long each history load took, whatever its outcome (a load that timed out counts the timeout) |
//! | `tower_conversations_turns_stored_total` | counter | `backend`, `mode` | turns the store confirmed, `mode` being `new` or `continue` |
//! | `tower_conversations_turns_failed_total` | counter | `backend`, `mode`, `cause` | turns that were not stored, by `cause`: `timeout` (the storage timeout passed), `unavailable`, `query`, `capture_limit` (the reply was longer than the capture limit) |
//! | `tower_conversations_storage_seconds` | histogram | `backend`, `mode` | how long storing each turn took, failures included (a write that timed out counts the timeout) |
//! | `tower_conversations_turns_pending` | gauge | | turns taken on and not yet stored or given up (replies still arriving, writes running): what shutdown waits for |
//! | `tower_conversations_stream_end_held_seconds` | histogram | | how long the end of each streamed reply (`data: [DONE]`) was held back while its turn was stored: the latency the layer adds to a stream |
//! | `tower_conversations_replies_over_capture_limit_total` | counter | `format` | replies longer than the capture limit (`format`: `stream` or `json`), forwarded whole and not stored |
//!
//! `backend` is `postgres`, `sqlite` or `other` (any other store, or a pool handed to the
//! layer behind a trait object). Requests to other paths, and other methods, pass
//! through the layer uncounted.
//!
//! Two alerts are worth setting: the share of turns that fail,
//! `rate(tower_conversations_turns_failed_total[5m]) /
//! (rate(tower_conversations_turns_stored_total[5m]) + rate(tower_conversations_turns_failed_total[5m]))`,
//! and the 99th percentile of `tower_conversations_stream_end_held_seconds`, which
//! grows before turns start timing out.

use std::sync::LazyLock;
use std::time::Duration;

use ::metrics::{Key, KeyName, Label, Level, Metadata, SharedString, Unit};

use crate::store::{StoreError, TurnTarget};

const REQUESTS: &str = "tower_conversations_requests_total";
const HISTORY_LOADS: &str = "tower_conversations_history_loads_total";
const HISTORY_LOAD_SECONDS: &str = "tower_conversations_history_load_seconds";
const TURNS_STORED: &str = "tower_conversations_turns_stored_total";
const TURNS_FAILED: &str = "tower_conversations_turns_failed_total";
const STORAGE_SECONDS: &str = "tower_conversations_storage_seconds";
const TURNS_PENDING: &str = "tower_conversations_turns_pending";
const STREAM_END_HELD_SECONDS: &str = "tower_conversations_stream_end_held_seconds";
const REPLIES_OVER_CAPTURE_LIMIT: &str = "tower_conversations_replies_over_capture_limit_total";

/// Which kind of database a layer stores in: the `backend` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Sqlite,
    Other,
}

impl Backend {
    const ALL: [Self; 3] = [Self::Postgres, Self::Sqlite, Self::Other];

    /// The backend of `store`, read where its concrete type is still known (the layer
    /// keeps it as a trait object): the crate's own pools are known, anything else is
    /// `other`.
    pub(crate) fn of<S: 'static>(_store: &S) -> Self {
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        use std::any::TypeId;
        #[cfg(feature = "postgres")]
        if TypeId::of::<S>() == TypeId::of::<sqlx::PgPool>() {
            return Self::Postgres;
        }
        #[cfg(feature = "sqlite")]
        if TypeId::of::<S>() == TypeId::of::<sqlx::SqlitePool>() {
            return Self::Sqlite;
        }
        Self::Other
    }

    fn label(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::Other => "other",
        }
    }
}

/// How the layer handled one chat request: the `mode` label of
/// `tower_conversations_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestMode {
    Stateless,
    New,
    Continue,
    Passthrough,
    Error,
}

impl RequestMode {
    const ALL: [Self; 5] = [
        Self::Stateless,
        Self::New,
        Self::Continue,
        Self::Passthrough,
        Self::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Stateless => "stateless",
            Self::New => "new",
            Self::Continue => "continue",
            Self::Passthrough => "passthrough",
            Self::Error => "error",
        }
    }
}

/// The `mode` label of a turn.
const TARGETS: [TurnTarget; 2] = [TurnTarget::NewConversation, TurnTarget::Existing];

fn target_index(target: TurnTarget) -> usize {
    match target {
        TurnTarget::NewConversation => 0,
        TurnTarget::Existing => 1,
    }
}

fn target_label(target: TurnTarget) -> &'static str {
    match target {
        TurnTarget::NewConversation => "new",
        TurnTarget::Existing => "continue",
    }
}

/// Why a turn was not stored: the `cause` label of `tower_conversations_turns_failed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureCause {
    Timeout,
    Unavailable,
    Query,
    CaptureLimit,
}

impl FailureCause {
    const ALL: [Self; 4] = [
        Self::Timeout,
        Self::Unavailable,
        Self::Query,
        Self::CaptureLimit,
    ];

    /// The cause of a store's error: `unavailable` when the database could not be
    /// reached, `query` for everything it answered (a conversation deleted meanwhile
    /// included).
    pub(crate) fn of(error: &StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Unavailable,
            _ => Self::Query,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Query => "query",
            Self::CaptureLimit => "capture_limit",
        }
    }
}

/// How a history load ended: the `outcome` label of
/// `tower_conversations_history_loads_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoadOutcome {
    Loaded,
    NotFound,
    Timeout,
    Unavailable,
    Query,
}

impl LoadOutcome {
    const ALL: [Self; 5] = [
        Self::Loaded,
        Self::NotFound,
        Self::Timeout,
        Self::Unavailable,
        Self::Query,
    ];

    /// The outcome of a load that ended with the store's `error`.
    pub(crate) fn of(error: &StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            StoreError::Unavailable(_) => Self::Unavailable,
            _ => Self::Query,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::NotFound => "not_found",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Query => "query",
        }
    }
}

/// How a reply came: the `format` label of
/// `tower_conversations_replies_over_capture_limit_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyFormat {
    Stream,
    Json,
}

impl ReplyFormat {
    const ALL: [Self; 2] = [Self::Stream, Self::Json];

    fn label(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Json => "json",
        }
    }
}

/// A chat request was handled as `mode`.
pub(crate) fn request(mode: RequestMode) {
    counter(&keys().requests[mode as usize]);
}

/// A history load ended with `outcome` after `elapsed`.
pub(crate) fn history_loaded(backend: Backend, outcome: LoadOutcome, elapsed: Duration) {
    let keys = keys();
    counter(&keys.history_loads[backend as usize][outcome as usize]);
    histogram(&keys.history_load_seconds[backend as usize], elapsed);
}

/// A turn was stored after `elapsed`.
pub(crate) fn turn_stored(backend: Backend, target: TurnTarget, elapsed: Duration) {
    let keys = keys();
    let (b, t) = (backend as usize, target_index(target));
    counter(&keys.turns_stored[b][t]);
    histogram(&keys.storage_seconds[b][t], elapsed);
}

/// Storing a turn failed for `cause` after `elapsed`.
pub(crate) fn turn_failed(
    backend: Backend,
    target: TurnTarget,
    cause: FailureCause,
    elapsed: Duration,
) {
    let keys = keys();
    let (b, t) = (backend as usize, target_index(target));
    counter(&keys.turns_failed[b][t][cause as usize]);
    histogram(&keys.storage_seconds[b][t], elapsed);
}

/// A reply outgrew the capture limit, so its turn is not stored.
pub(crate) fn reply_over_capture_limit(backend: Backend, target: TurnTarget, format: ReplyFormat) {
    let keys = keys();
    counter(&keys.replies_over_capture_limit[format as usize]);
    let cause = FailureCause::CaptureLimit as usize;
    counter(&keys.turns_failed[backend as usize][target_index(target)][cause]);
}

/// The end of a streamed reply was held back for `elapsed`.
pub(crate) fn stream_end_held(elapsed: Duration) {
    histogram(&keys().stream_end_held_seconds, elapsed);
}

/// A turn was taken on: its request is being forwarded.
pub(crate) fn turn_pending() {
    gauge(&keys().turns_pending, 1.0);
}

/// A turn was stored, or given up.
pub(crate) fn turn_settled() {
    gauge(&keys().turns_pending, -1.0);
}

/// Where the reports say they come from.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn counter(key: &Key) {
    ::metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(1));
}

fn gauge(key: &Key, change: f64) {
    ::metrics::with_recorder(|recorder| recorder.register_gauge(key, &METADATA).increment(change));
}

fn histogram(key: &Key, elapsed: Duration) {
    ::metrics::with_recorder(|recorder| {
        recorder
            .register_histogram(key, &METADATA)
            .record(elapsed.as_secs_f64());
    });
}

/// Every series the layer reports, indexed by its labels' enum values.
struct Keys {
    requests: [Key; RequestMode::ALL.len()],
    history_loads: [[Key; LoadOutcome::ALL.len()]; Backend::ALL.len()],
    history_load_seconds: [Key; Backend::ALL.len()],
    turns_stored: [[Key; TARGETS.len()]; Backend::ALL.len()],
    turns_failed: [[[Key; FailureCause::ALL.len()]; TARGETS.len()]; Backend::ALL.len()],
    storage_seconds: [[Key; TARGETS.len()]; Backend::ALL.len()],
    turns_pending: Key,
    stream_end_held_seconds: Key,
    replies_over_capture_limit: [Key; ReplyFormat::ALL.len()],
}

/// The keys, built (and the metrics described to the recorder installed then) on the
/// first report.
fn keys() -> &'static Keys {
    static KEYS: LazyLock<Keys> = LazyLock::new(|| {
        describe();
        Keys::new()
    });
    &KEYS
}

impl Keys {
    fn new() -> Self {
        use std::array::from_fn;
        let backend = |b: usize| Label::from_static_parts("backend", Backend::ALL[b].label());
        let mode = |t: usize| Label::from_static_parts("mode", target_label(TARGETS[t]));
        Self {
            requests: from_fn(|m| {
                let mode = RequestMode::ALL[m].label();
                key(REQUESTS, vec![Label::from_static_parts("mode", mode)])
            }),
            history_loads: from_fn(|b| {
                from_fn(|o| {
                    let outcome = LoadOutcome::ALL[o].label();
                    let outcome = Label::from_static_parts("outcome", outcome);
                    key(HISTORY_LOADS, vec![backend(b), outcome])
                })
            }),
            history_load_seconds: from_fn(|b| key(HISTORY_LOAD_SECONDS, vec![backend(b)])),
            turns_stored: from_fn(|b| from_fn(|t| key(TURNS_STORED, vec![backend(b), mode(t)]))),
            turns_failed: from_fn(|b| {
                from_fn(|t| {
                    from_fn(|c| {
                        let cause = FailureCause::ALL[c].label();
                        let cause = Label::from_static_parts("cause", cause);
                        key(TURNS_FAILED, vec![backend(b), mode(t), cause])
                    })
                })
            }),
            storage_seconds: from_fn(|b| {
                from_fn(|t| key(STORAGE_SECONDS, vec![backend(b), mode(t)]))
            }),
            turns_pending: key(TURNS_PENDING, Vec::new()),
            stream_end_held_seconds: key(STREAM_END_HELD_SECONDS, Vec::new()),
            replies_over_capture_limit: from_fn(|f| {
                let format = ReplyFormat::ALL[f].label();
                let format = Label::from_static_parts("format", format);
                key(REPLIES_OVER_CAPTURE_LIMIT, vec![format])
            }),
        }
    }
}

/// A key whose labels are borrowed for the life of the process: recorders copy a key at
/// every report (`Key::to_retained`), which for owned labels means a new list each time.
/// The keys are a fixed set built once (see [`Keys`]), so leaking their label lists
/// costs what holding them in the static does anyway.
fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_static_parts(name, labels.leak())
}

/// Gives the recorder each metric's unit and help text.
fn describe() {
    let counters = [
        (REQUESTS, "Chat requests, by how the layer handled them."),
        (
            HISTORY_LOADS,
            "History loads for continued conversations, by outcome.",
        ),
        (TURNS_STORED, "Turns stored."),
        (TURNS_FAILED, "Turns not stored, by cause."),
        (
            REPLIES_OVER_CAPTURE_LIMIT,
            "Replies longer than the capture limit, forwarded and not stored.",
        ),
    ];
    let histograms = [
        (
            HISTORY_LOAD_SECONDS,
            "Time to load a conversation's history.",
        ),
        (STORAGE_SECONDS, "Time to store a turn, failures included."),
        (
            STREAM_END_HELD_SECONDS,
            "Time the end of a streamed reply was held back while its turn was stored.",
        ),
    ];
    ::metrics::with_recorder(|recorder| {
        for (name, help) in counters {
            recorder.describe_counter(name.into(), Some(Unit::Count), help.into());
        }
        for (name, help) in histograms {
            recorder.describe_histogram(name.into(), Some(Unit::Seconds), help.into());
        }
        recorder.describe_gauge(
            KeyName::from(TURNS_PENDING),
            Some(Unit::Count),
            SharedString::from("Turns being stored now."),
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_its_own_label_values() {
        let keys = Keys::new();
        let labels = |key: &Key| {
            key.labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect::<Vec<_>>()
        };
        let failed =
            &keys.turns_failed[Backend::Sqlite as usize][1][FailureCause::CaptureLimit as usize];
        assert_eq!(failed.name(), TURNS_FAILED);
        assert_eq!(
            labels(failed),
            ["backend=sqlite", "mode=continue", "cause=capture_limit"]
        );
        let loads = &keys.history_loads[Backend::Postgres as usize][LoadOutcome::Timeout as usize];
        assert_eq!(labels(loads), ["backend=postgres", "outcome=timeout"]);
        assert_eq!(
            labels(&keys.requests[RequestMode::Passthrough as usize]),
            ["mode=passthrough"]
        );
        assert_eq!(
            labels(&keys.replies_over_capture_limit[ReplyFormat::Json as usize]),
            ["format=json"]
        );
    }
}
