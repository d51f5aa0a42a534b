//! [`Finisher`]: what turns the assembled reply into the response object, stores it, and
//! says so in the object: shared by the JSON and the streamed path, so that both store
//! before they answer (read-your-writes) and report a failed write the same way.
//!
//! When storing fails or times out, the response still reaches the client, with
//! `"metadata": {"storage_failed": "true"}` added (a string, as response metadata values
//! are): it is then not stored, and cannot be a `previous_response_id`.

use serde_json::{Value, json};

use super::id::ResponseId;
use super::object::{finished, in_progress, renumber};
use super::request::ResponsesRequest;
use super::storage::ResponseWrite;
use crate::store::NewMessage;

/// The metadata key that says a response was not stored.
pub(crate) const STORAGE_FAILED: &str = "storage_failed";

/// One response on its way: its id, its request, and where it will be stored.
pub(crate) struct Finisher {
    pub(crate) id: ResponseId,
    pub(crate) created_at: i64,
    pub(crate) request: ResponsesRequest,
    /// The sequence number the assistant message is expected to take.
    pub(crate) sequence: i64,
    /// `None` for `store: false`. Its messages are the input; the reply joins them.
    pub(crate) write: Option<ResponseWrite>,
    pub(crate) capture_limit: usize,
}

impl Finisher {
    pub(crate) fn sequence(&self) -> i64 {
        self.sequence
    }

    pub(crate) fn capture_limit(&self) -> usize {
        self.capture_limit
    }

    /// The object `response.created` carries.
    pub(crate) fn in_progress(&self) -> Value {
        in_progress(&self.id.to_string(), self.created_at, &self.request)
    }

    /// The finished response object for `reply`, answered only after it is stored (or
    /// marked `storage_failed`).
    pub(crate) async fn finish(self, reply: NewMessage) -> Value {
        let id = self.id.to_string();
        let mut object = finished(&id, self.created_at, &self.request, &reply, self.sequence);
        let Some(mut write) = self.write else {
            return object;
        };
        write.messages.push(reply);
        match write.spawn(object.clone()).await {
            Ok(Some(sequence)) => renumber(&mut object, sequence),
            _ => {
                if !object["metadata"].is_object() {
                    object["metadata"] = json!({});
                }
                object["metadata"][STORAGE_FAILED] = json!("true");
            }
        }
        object
    }
}
