//! Which mode a chat request runs in: contract section 3.

use uuid::Uuid;

use super::ChatRequest;
use crate::error::ApiError;

/// How the layer decides whether a chat request is stateless or part of a conversation.
///
/// ```
/// use tower_conversations::ModePolicy;
/// assert_eq!(ModePolicy::default(), ModePolicy::SystemMessage);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModePolicy {
    /// The default: a request with a `system` or `developer` message is stateless; one
    /// without starts or (with `X-Conversation-ID`) continues a conversation.
    #[default]
    SystemMessage,
    /// The header alone decides: none means stateless, an empty value (or `new`) starts
    /// a conversation, a UUID continues one. System messages are forwarded first and
    /// never stored.
    Header,
}

/// The `X-Conversation-ID` header as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConversationHeader {
    /// Not sent.
    Absent,
    /// Sent empty (or `new`): start a conversation.
    New,
    /// A UUID.
    Id(Uuid),
    /// Anything else, including several values.
    Invalid,
}

impl ConversationHeader {
    /// Reads every value the request carries under the header name.
    pub(crate) fn from_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        todo!()
    }
}

/// What the layer does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Not a chat request the layer understands: forward untouched.
    Passthrough,
    /// Forward the original bytes; store nothing; no header on the response.
    Stateless,
    /// Start a conversation with this fresh UUIDv7.
    New(Uuid),
    /// Continue this conversation.
    Continue(Uuid),
}

/// Decides the mode from the policy, the header and the parsed body (`None` when the
/// body is not a chat request: not JSON, or no `messages` array of messages).
pub(crate) fn decide(
    policy: ModePolicy,
    header: ConversationHeader,
    request: Option<&ChatRequest<'_>>,
) -> Result<Mode, ApiError> {
    todo!()
}
