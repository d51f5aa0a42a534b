//! The stored responses' own endpoints, answered by the layer:
//!
//! | request | answer |
//! |---|---|
//! | `GET {path}/{id}` | `200` the stored response object |
//! | `DELETE {path}/{id}` | `200 {"id", "object": "response.deleted", "deleted": true}`; the response can no longer be a `previous_response_id`, and its turn stays in its conversation |
//! | `GET {path}/{id}/input_items?after=&limit=&order=` | `200 {"object": "list", "data", "first_id", "last_id", "has_more"}`: the items of the response's own input (not of the responses before it), newest first by default |
//!
//! An unknown id, a malformed one, a response stored with `store: false` and another
//! owner's response are all `404 response_not_found`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header, request};
use serde_json::{Value, json};

use super::id::ResponseId;
use super::object::renumber;
use crate::api::items::item_list;
use crate::api::query::{ItemsQuery, QueryParams};
use crate::config::Config;
use crate::error::ApiError;
use crate::items::to_items;
use crate::store::{ConversationStore, MessageQuery, Order, StoreError, StoredResponse};

/// One of the endpoints, with the response id as given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    Get(&'a str),
    Delete(&'a str),
    InputItems(&'a str),
}

/// The endpoint a request is for, if it is one: `path` must lie under one of `paths`.
pub(crate) fn route<'a>(method: &Method, path: &'a str, paths: &[String]) -> Option<Endpoint<'a>> {
    let rest = paths
        .iter()
        .find_map(|base| path.strip_prefix(base.as_str())?.strip_prefix('/'))?;
    match rest.split_once('/') {
        None if !rest.is_empty() => match *method {
            Method::GET => Some(Endpoint::Get(rest)),
            Method::DELETE => Some(Endpoint::Delete(rest)),
            _ => None,
        },
        Some((id, "input_items")) if *method == Method::GET && !id.is_empty() => {
            Some(Endpoint::InputItems(id))
        }
        _ => None,
    }
}

/// A JSON answer in any body that can be made from bytes.
pub(crate) fn json_answer<B: From<Bytes>>(status: StatusCode, body: &Value) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "response_not_found",
        format!("Response with id '{id}' not found."),
    )
}

/// Answers a request that [`route`] found an endpoint for: `404` when it is not one.
pub(crate) async fn serve<B: From<Bytes>>(
    config: Arc<Config>,
    parts: request::Parts,
) -> Response<B> {
    let Some(endpoint) = route(&parts.method, parts.uri.path(), &config.responses_paths) else {
        return ApiError::not_found().into_response();
    };
    let owner = config.owners.resolve(&parts);
    match answer(config.store.as_ref(), &owner, endpoint, parts.uri.query()).await {
        Ok(body) => json_answer(StatusCode::OK, &body),
        Err(error) => error.into_response(),
    }
}

/// Answers one endpoint for `owner`.
async fn answer(
    store: &dyn ConversationStore,
    owner: &str,
    endpoint: Endpoint<'_>,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    match endpoint {
        Endpoint::Get(id) => {
            let stored = load(store, owner, id).await?;
            Ok(body_of(stored))
        }
        Endpoint::Delete(id) => {
            let key = parse(id)?;
            match store.delete_response(owner, key.0).await {
                Err(StoreError::NotFound) => Err(not_found(id)),
                other => other.map_err(ApiError::from),
            }?;
            Ok(json!({"id": id, "object": "response.deleted", "deleted": true}))
        }
        Endpoint::InputItems(id) => {
            let query = QueryParams::parse(query).items()?;
            let stored = load(store, owner, id).await?;
            input_items(store, owner, &stored, query).await
        }
    }
}

fn parse(id: &str) -> Result<ResponseId, ApiError> {
    id.parse().map_err(|_| not_found(id))
}

async fn load(
    store: &dyn ConversationStore,
    owner: &str,
    id: &str,
) -> Result<StoredResponse, ApiError> {
    match store.response(owner, parse(id)?.0).await {
        Err(StoreError::NotFound) => Err(not_found(id)),
        other => Ok(other?),
    }
}

/// The stored object, its item ids those of where its turn landed.
pub(crate) fn body_of(stored: StoredResponse) -> Value {
    let mut body = stored.body;
    renumber(&mut body, stored.position.last_sequence);
    body
}

/// The items of the response's input: its turn but the last message (the reply).
async fn input_items(
    store: &dyn ConversationStore,
    owner: &str,
    stored: &StoredResponse,
    query: ItemsQuery,
) -> Result<Value, ApiError> {
    let ItemsQuery {
        after,
        limit,
        order,
    } = query;
    let position = stored.position;
    let count = position.last_sequence - position.first_sequence;
    let mut items: Vec<Value> = Vec::new();
    if count > 0 {
        let page = store
            .messages(
                owner,
                position.items_conversation_id,
                &MessageQuery {
                    after: Some(position.first_sequence - 1),
                    limit: u32::try_from(count).unwrap_or(u32::MAX),
                    order: Order::Asc,
                },
            )
            .await;
        let page = match page {
            // The conversation holding the turn is gone: so is the input.
            Err(StoreError::NotFound) => None,
            other => Some(other?),
        };
        for message in page.iter().flat_map(|page| &page.messages) {
            if message.sequence_number < position.last_sequence {
                items.extend(to_items(message.sequence_number, &message.message));
            }
        }
    }
    if order == Order::Desc {
        items.reverse();
    }
    if let Some(after) = after {
        let after = after.to_string();
        let Some(at) = items.iter().position(|item| item["id"] == after.as_str()) else {
            return Err(
                ApiError::invalid_request("`after` must be an item id of this list.")
                    .with_param("after"),
            );
        };
        items.drain(..=at);
    }
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(item_list(items, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_a_responses_path_are_endpoints() {
        let paths = ["/v1/responses".to_owned()];
        let route = |method: Method, path| route(&method, path, &paths);
        assert_eq!(
            route(Method::GET, "/v1/responses/resp_1"),
            Some(Endpoint::Get("resp_1"))
        );
        assert_eq!(
            route(Method::DELETE, "/v1/responses/r"),
            Some(Endpoint::Delete("r"))
        );
        assert_eq!(
            route(Method::GET, "/v1/responses/r/input_items"),
            Some(Endpoint::InputItems("r"))
        );
        for (method, path) in [
            (Method::GET, "/v1/responses"),
            (Method::GET, "/v1/responses/"),
            (Method::POST, "/v1/responses/r"),
            (Method::GET, "/v1/responsesX/r"),
            (Method::GET, "/v1/responses/r/other"),
            (Method::GET, "/v1/responses//input_items"),
        ] {
            assert_eq!(route(method, path), None, "{path}");
        }
    }
}
