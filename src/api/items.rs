//! The item endpoints (OpenAI's conversation items), over the stored chat messages.
//!
//! Items are a view of messages ([`crate::items`]): a page of items is read as a page of
//! the messages they come from. Each message is at least one item, so `limit + 2`
//! messages from the cursor's message on always hold `limit + 1` items past the cursor,
//! enough to fill the page and tell whether more follow.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use uuid::Uuid;

use super::handlers::{BODY_LIMIT, Call};
use super::request;
use super::response::{json_response, summary};
use crate::BoxError;
use crate::error::ApiError;
use crate::items::{ItemId, to_items_numbered};
use crate::request_body::read_body;
use crate::store::{MessageQuery, Order, StoredMessage, TurnTarget};

/// Where an item stands in its conversation: its message, then its place in it (the
/// message's own item first, then its calls by index). No arithmetic on the index, which
/// a client's cursor may set to `usize::MAX`.
type Position = (i64, Option<usize>);

fn position(id: ItemId) -> Position {
    match id {
        ItemId::Message { sequence_number } | ItemId::FunctionCallOutput { sequence_number } => {
            (sequence_number, None)
        }
        ItemId::FunctionCall {
            sequence_number,
            index,
        } => (sequence_number, Some(index)),
    }
}

/// The position of an item this module made, read back from its id.
fn position_of(item: &Value) -> Option<Position> {
    item["id"].as_str()?.parse().ok().map(position)
}

/// `GET /{id}/items?after=&limit=&order=`: OpenAI's list shape.
pub(super) async fn list<B>(
    call: Call<'_, B>,
    id: Uuid,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let query = call.query.items()?;
    let cursor = query.after.map(position);
    // From the cursor's own message on: some of its items may lie past the cursor.
    let after = cursor.map(|(sequence, _)| match query.order {
        Order::Asc => sequence.saturating_sub(1),
        Order::Desc => sequence.saturating_add(1),
    });
    let page = call
        .store
        .messages(
            call.owner,
            id,
            &MessageQuery {
                after,
                limit: query.limit + 2,
                order: query.order,
            },
        )
        .await?;
    let mut items: Vec<Value> = Vec::new();
    for message in &page.messages {
        let mut of_message = items_of(message);
        if query.order == Order::Desc {
            of_message.reverse();
        }
        items.extend(of_message);
    }
    if let Some(cursor) = cursor {
        items.retain(|item| {
            position_of(item).is_some_and(|at| match query.order {
                Order::Asc => at > cursor,
                Order::Desc => at < cursor,
            })
        });
    }
    let limit = query.limit as usize;
    let has_more = items.len() > limit || page.has_more;
    items.truncate(limit);
    Ok(json_response(StatusCode::OK, &item_list(items, has_more)))
}

/// `GET /{id}/items/{item_id}`: one item.
pub(super) async fn get<B>(
    call: Call<'_, B>,
    id: Uuid,
    item: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let wanted: Option<ItemId> = item.parse().ok();
    let sequence = wanted.map_or(0, ItemId::sequence_number);
    // Read even for an id this store never writes, so that an unknown or another
    // owner's conversation is `conversation_not_found` whatever the item id.
    let page = call
        .store
        .messages(
            call.owner,
            id,
            &MessageQuery {
                after: Some(sequence.saturating_sub(1)),
                limit: 1,
                order: Order::Asc,
            },
        )
        .await?;
    let found = page
        .messages
        .first()
        .filter(|message| message.sequence_number == sequence && wanted.is_some())
        .and_then(|message| {
            items_of(message)
                .into_iter()
                .find(|candidate| candidate["id"] == item)
        })
        .ok_or_else(ApiError::item_not_found)?;
    Ok(json_response(StatusCode::OK, &found))
}

/// `DELETE /{id}/items/{item_id}`: deletes the item, with what must go along (see
/// [`crate::items`]), and answers the conversation object, as OpenAI does.
pub(super) async fn delete<B>(
    call: Call<'_, B>,
    id: Uuid,
    item: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let Ok(item) = item.parse::<ItemId>() else {
        // An id this store never writes names no item; the conversation is looked up
        // all the same, so that an unknown or another owner's one says so.
        let page = MessageQuery {
            limit: 1,
            ..MessageQuery::default()
        };
        call.store.messages(call.owner, id, &page).await?;
        return Err(ApiError::item_not_found());
    };
    let conversation = call.store.delete_item(call.owner, id, item).await?;
    Ok(json_response(StatusCode::OK, &summary(&conversation)))
}

/// `POST /{id}/items` `{"items": [...]}`: up to 20 input items, stored as one turn (one
/// transaction, consecutive sequence numbers); answers the items as stored.
pub(super) async fn add<B>(call: Call<'_, B>, id: Uuid) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let messages = request::new_items(&read_body(call.body, None, BODY_LIMIT).await?)?;
    let first = call
        .store
        .append_turn(call.owner, id, TurnTarget::Existing, &messages)
        .await?;
    let items: Vec<Value> = messages
        .iter()
        .zip(first..)
        .flat_map(|(message, sequence)| to_items_numbered(sequence, &message.to_value(), None))
        .collect();
    Ok(json_response(StatusCode::OK, &item_list(items, false)))
}

fn items_of(message: &StoredMessage) -> Vec<Value> {
    to_items_numbered(
        message.sequence_number,
        &message.message,
        message.call_numbers.as_deref(),
    )
}

/// `{"object": "list", "data", "first_id", "last_id", "has_more"}`; the ids are `null`
/// on an empty page.
pub(crate) fn item_list(items: Vec<Value>, has_more: bool) -> Value {
    let first_id = items.first().map(|item| item["id"].clone());
    let last_id = items.last().map(|item| item["id"].clone());
    json!({
        "object": "list",
        "data": items,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": has_more,
    })
}
