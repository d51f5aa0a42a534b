//! The chat-completions JSON logic, free of HTTP and databases: deciding a request's
//! mode, splicing history into it, cutting the history window, and assembling the
//! assistant message from a reply.

mod mode;
mod reply;
mod request;
mod window;

pub use mode::ModePolicy;
#[cfg(feature = "fuzzing")]
pub(crate) use mode::decide_parsed;
pub(crate) use mode::{ConversationHeader, Mode, ModeError, decide};
#[cfg(feature = "fuzzing")]
pub(crate) use reply::scanner_agrees_with_serde;
pub(crate) use reply::{
    ReplyAssembler, StorageFailedMarker, assemble_json_reply, mark_storage_failed,
};
#[cfg(feature = "sqlite")]
pub(crate) use request::is_one_object;
pub(crate) use request::{ChatRequest, parse_chat_request, scan_chat_request};
#[cfg(feature = "fuzzing")]
pub(crate) use request::{object_check_agrees_with_serde, scan_agrees_with_parse};
pub(crate) use window::trim_to_turn_boundary;
