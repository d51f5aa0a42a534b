//! One function per endpoint: check the input, call the store, shape the answer.
//!
//! Input is checked whole before the store is called, so a bad request changes nothing.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use uuid::Uuid;

use super::items;
use super::query::QueryParams;
use super::request;
use super::response::{self, json_response};
use super::routes::Endpoint;
use crate::BoxError;
use crate::error::ApiError;
use crate::request_body::read_body;
use crate::store::{ConversationStore, StoreError};

/// What one request asks of the API, routed and with its owner resolved.
///
/// The item endpoints take it too; they live in [`items`](super::items).
pub(crate) struct Call<'a, B> {
    pub(crate) store: &'a dyn ConversationStore,
    pub(crate) owner: &'a str,
    pub(crate) query: QueryParams,
    pub(crate) body: B,
}

/// Largest request body the management API reads: 8 MiB, room for a hundred seed
/// messages with long contents, small enough that no client can exhaust memory. A longer
/// body is read up to the limit, whatever its declared length, so that the client gets
/// to read its `413` instead of a connection closed mid-send.
pub(crate) const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Answers `endpoint`.
pub(crate) async fn handle<B>(
    endpoint: Endpoint,
    call: Call<'_, B>,
) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match endpoint {
        Endpoint::List => list(call).await,
        Endpoint::Create => create(call).await,
        Endpoint::Erase => erase(call).await,
        Endpoint::Get(id) => get(call, id).await,
        Endpoint::Messages(id) => messages(call, id).await,
        Endpoint::Update(id) => update(call, id).await,
        Endpoint::Delete(id) => delete(call, id).await,
        Endpoint::Fork(id) => fork(call, id).await,
        Endpoint::Truncate(id) => truncate(call, id).await,
        Endpoint::Items(id) => items::list(call, id).await,
        Endpoint::AddItems(id) => items::add(call, id).await,
        Endpoint::Item(id, item) => items::get(call, id, &item).await,
        Endpoint::DeleteItem(id, item) => items::delete(call, id, &item).await,
    }
}

/// The offset listing, or the cursor listing when `after` or `order` is given.
async fn list<B>(call: Call<'_, B>) -> Result<Response<Full<Bytes>>, ApiError> {
    if let Some(cursor) = call.query.cursor_list()? {
        let page = call.store.list_by_id(call.owner, &cursor).await?;
        let data: Vec<_> = page.conversations.iter().map(response::summary).collect();
        let first_id = page.conversations.first().map(|c| c.id.to_string());
        let last_id = page.conversations.last().map(|c| c.id.to_string());
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "object": "list",
                "data": data,
                "first_id": first_id,
                "last_id": last_id,
                "has_more": page.has_more,
            }),
        ));
    }
    let query = call.query.list()?;
    let page = call.store.list(call.owner, &query).await?;
    let conversations: Vec<_> = page.conversations.iter().map(response::summary).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "conversations": conversations,
            "total": page.total,
            "limit": query.limit,
            "offset": query.offset,
        }),
    ))
}

async fn create<B>(call: Call<'_, B>) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let new = request::new_conversation(&read_body(call.body, None, BODY_LIMIT).await?)?;
    let created = call.store.create(call.owner, &new).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &response::summary(&created),
    ))
}

/// Erasure: the parameter is checked before the owner, so that a malformed call is told
/// what is malformed whoever makes it.
async fn erase<B>(call: Call<'_, B>) -> Result<Response<Full<Bytes>>, ApiError> {
    call.query.erase_all()?;
    if call.owner.is_empty() {
        return Err(ApiError::owner_required());
    }
    let deleted = call.store.erase_owner(call.owner).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "conversation.erasure", "deleted": deleted}),
    ))
}

async fn get<B>(call: Call<'_, B>, id: Uuid) -> Result<Response<Full<Bytes>>, ApiError> {
    let detail = call.store.get(call.owner, id).await?;
    let mut body = response::summary(&detail.conversation);
    body["messages"] = response::messages(&detail.messages);
    Ok(json_response(StatusCode::OK, &body))
}

async fn messages<B>(call: Call<'_, B>, id: Uuid) -> Result<Response<Full<Bytes>>, ApiError> {
    let query = call.query.messages()?;
    let page = call.store.messages(call.owner, id, &query).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "data": response::messages(&page.messages),
            "has_more": page.has_more,
        }),
    ))
}

async fn update<B>(call: Call<'_, B>, id: Uuid) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let change = request::update(&read_body(call.body, None, BODY_LIMIT).await?)?;
    let updated = call.store.update(call.owner, id, &change).await?;
    Ok(json_response(StatusCode::OK, &response::summary(&updated)))
}

async fn delete<B>(call: Call<'_, B>, id: Uuid) -> Result<Response<Full<Bytes>>, ApiError> {
    call.store.delete(call.owner, id).await?;
    Ok(json_response(StatusCode::OK, &response::deleted(id)))
}

async fn fork<B>(call: Call<'_, B>, id: Uuid) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let at_sequence = request::fork_point(&read_body(call.body, None, BODY_LIMIT).await?)?;
    let forked = call
        .store
        .fork(call.owner, id, at_sequence)
        .await
        .map_err(|error| out_of_range_names(error, "at_sequence"))?;
    Ok(json_response(
        StatusCode::CREATED,
        &response::summary(&forked),
    ))
}

async fn truncate<B>(call: Call<'_, B>, id: Uuid) -> Result<Response<Full<Bytes>>, ApiError> {
    let from_sequence = call.query.truncation_point()?;
    let deleted = call
        .store
        .truncate(call.owner, id, from_sequence)
        .await
        .map_err(|error| out_of_range_names(error, "from_sequence"))?;
    Ok(json_response(
        StatusCode::OK,
        &response::truncated(id, deleted),
    ))
}

/// A sequence number the conversation does not hold is the client's mistake: say which
/// parameter held it.
fn out_of_range_names(error: StoreError, param: &'static str) -> ApiError {
    match error {
        StoreError::OutOfRange => ApiError::from(error).with_param(param),
        other => other.into(),
    }
}
