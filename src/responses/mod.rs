//! OpenAI's Responses API with state, answered over the inner chat-completions service.
//!
//! The layer intercepts `POST` to the responses paths (default `/v1/responses`),
//! translates the request into a chat-completions request ([`request`]) that it sends to
//! the inner service at the first chat path, and translates the reply back: into the
//! response object ([`object`]) or, streamed, into the Responses events ([`stream`]). The
//! inner service never needs to know about Responses.
//!
//! State is explicit, as in OpenAI's API (the system-message rule of the chat path does
//! not apply): `store` (default `true`), `previous_response_id` (chains; two responses made
//! from the same one are independent branches), and `conversation` (shared with the
//! Conversations API and `X-Conversation-ID`). See [`storage`] for how chains are stored:
//! a chain is a conversation, so a response costs one turn. `instructions` are sent for
//! the request alone and never stored; `system`/`developer` input items are stored like
//! any input. A response, streamed or not, is answered only once its turn is stored
//! ([`finish`]): a follow-up sent the moment it arrives sees it.
//!
//! The stored responses' own endpoints (`GET`/`DELETE {path}/{id}`, `GET
//! {path}/{id}/input_items`) are in [`endpoints`].

pub(crate) mod call;
mod delta;
pub(crate) mod endpoints;
mod finish;
mod id;
mod object;
mod request;
mod storage;
mod stream;

pub use request::MaxTokensField;

/// The default responses path.
///
/// ```
/// assert_eq!(tower_conversations::DEFAULT_RESPONSES_PATH, "/v1/responses");
/// ```
pub const DEFAULT_RESPONSES_PATH: &str = "/v1/responses";
