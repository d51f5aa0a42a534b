//! [`Config`]: everything the service needs, shared by the layer and all its clones.

use std::sync::Arc;
use std::time::Duration;

use crate::chat::ModePolicy;
use crate::metrics::Backend;
use crate::owner::OwnerResolver;
use crate::responses::{DEFAULT_RESPONSES_PATH, MaxTokensField};
use crate::store::ConversationStore;
use crate::turn::PendingWrites;

/// The default chat-completions path.
pub const DEFAULT_CHAT_PATH: &str = "/v1/chat/completions";
/// Default largest request body the layer reads: 32 MiB.
pub const DEFAULT_REQUEST_BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Default largest reply the layer captures for storage: 16 MiB.
pub const DEFAULT_CAPTURE_LIMIT: usize = 16 * 1024 * 1024;
/// Default time a turn may take to store before the client is told it was not.
pub const DEFAULT_STORAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`ConversationLayer`](crate::ConversationLayer)'s builder methods set, read by
/// every request.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) store: Arc<dyn ConversationStore>,
    /// The store's kind, for the metrics' `backend` label.
    pub(crate) backend: Backend,
    pub(crate) chat_paths: Vec<String>,
    /// The paths of OpenAI's Responses API, answered through the first chat path.
    pub(crate) responses_paths: Vec<String>,
    /// Which chat field a response's `max_output_tokens` becomes.
    pub(crate) max_tokens_field: MaxTokensField,
    pub(crate) policy: ModePolicy,
    pub(crate) owners: OwnerResolver,
    pub(crate) request_body_limit: usize,
    pub(crate) capture_limit: usize,
    pub(crate) storage_timeout: Duration,
    pub(crate) history_window: Option<u32>,
    /// Storage tasks still running, shared by every clone of the layer.
    pub(crate) writes: Arc<PendingWrites>,
}

impl Config {
    /// The defaults, over `store`.
    pub(crate) fn new(store: Arc<dyn ConversationStore>, backend: Backend) -> Self {
        Self {
            store,
            backend,
            chat_paths: vec![DEFAULT_CHAT_PATH.to_owned()],
            responses_paths: vec![DEFAULT_RESPONSES_PATH.to_owned()],
            max_tokens_field: MaxTokensField::default(),
            policy: ModePolicy::default(),
            owners: OwnerResolver::default(),
            request_body_limit: DEFAULT_REQUEST_BODY_LIMIT,
            capture_limit: DEFAULT_CAPTURE_LIMIT,
            storage_timeout: DEFAULT_STORAGE_TIMEOUT,
            history_window: None,
            writes: Arc::default(),
        }
    }
}
