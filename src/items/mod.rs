//! Items: OpenAI's Responses and Conversations shapes, as a view of stored chat messages.
//!
//! Conversations are stored as chat-completions messages, since that is what the next
//! chat request sends upstream. OpenAI's Conversations API speaks of *items* instead; this
//! module converts between the two, with no HTTP and no database in it:
//!
//! - a `user`, `system`, `developer` or `assistant` message is a `message` item whose
//!   content parts are `input_text` (`output_text` with `annotations: []` for the
//!   assistant), `input_image`, `input_file` or `refusal`;
//! - each tool call of an assistant message is a `function_call` item;
//! - a `tool` message is a `function_call_output` item.
//!
//! [`to_items`] makes the items of one stored message, [`to_messages`] turns input items
//! back into chat messages. Item ids ([`ItemId`]) are derived from the message's sequence
//! number, which is never handed out twice in a conversation, so an id is never reused.
//!
//! Deleting an item (`DELETE /v1/conversations/{id}/items/{item_id}`) deletes or
//! rewrites the messages it is a view of, so that what is left is still a history a chat
//! request can send upstream:
//!
//! - a `function_call` item and its `function_call_output` are deleted together, whichever
//!   of the two is named: the call leaves its assistant message's `tool_calls`, and the
//!   `tool` message answering it is deleted;
//! - the calls left in that message keep their item ids: `fc_<seq>_<n>` numbers a call by
//!   its place in `tool_calls` when the message was stored, and the store keeps those
//!   numbers beside a message whose calls were deleted ([`to_items_numbered`] reads them),
//!   so a call never takes over the id of a deleted one;
//! - an assistant message left without calls loses its `tool_calls` field, and goes whole
//!   when it had no text (no `message` item of its own: it only called tools);
//! - the `message` item of an assistant message that also calls functions is its text:
//!   deleting it sets `content` to null (and drops a `refusal`), and the calls stay;
//! - any other `message` item goes with its message, and an assistant message takes the
//!   `tool` messages answering its calls with it.
//!
//! Round trip: chat messages in the shapes the layer stores (text, arrays of parts, tool
//! calls, tool results, refusals) come back unchanged from [`to_messages`]`(`[`to_items`]`)`,
//! with two normalisations that do not change what a model is sent: an array holding a
//! single text part comes back as a string, and chat-only fields the item shapes have no
//! place for (a message's `name`) are not carried.
//!
//! ```
//! use serde_json::json;
//! use tower_conversations::items::{to_items, to_messages};
//!
//! let stored = json!({"role": "user", "content": "Hi"});
//! let items = to_items(7, &stored);
//! assert_eq!(items, [json!({
//!     "type": "message", "id": "msg_7", "status": "completed", "role": "user",
//!     "content": [{"type": "input_text", "text": "Hi"}]
//! })]);
//! assert_eq!(to_messages(&items)?, [stored]);
//! # Ok::<(), tower_conversations::items::ItemError>(())
//! ```

mod content;
mod id;
mod input;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod removal;
mod view;

pub use id::{ItemId, NotAnItemId};
pub use input::{ItemError, to_messages};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use removal::{Removal, SpanMessage, removal};
pub use view::{to_items, to_items_numbered};
