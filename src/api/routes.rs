//! Which endpoint a request is for, from its method and path alone.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use http_body_util::Full;
use uuid::Uuid;

use crate::error::ApiError;

/// One of the management endpoints, with the conversation it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /`
    List,
    /// `POST /`
    Create,
    /// `DELETE /?all=true`: every conversation of the caller
    Erase,
    /// `GET /{id}`
    Get(Uuid),
    /// `PATCH /{id}`, and `POST /{id}` (OpenAI's update)
    Update(Uuid),
    /// `DELETE /{id}`
    Delete(Uuid),
    /// `GET /{id}/messages`
    Messages(Uuid),
    /// `DELETE /{id}/messages`
    Truncate(Uuid),
    /// `POST /{id}/fork`
    Fork(Uuid),
    /// `GET /{id}/items`
    Items(Uuid),
    /// `POST /{id}/items`
    AddItems(Uuid),
    /// `GET /{id}/items/{item_id}`, with the item id as given: one this store never
    /// writes is `404`, like an item that is gone.
    Item(Uuid, String),
    /// `DELETE /{id}/items/{item_id}`, the item id as given.
    DeleteItem(Uuid, String),
}

/// Why a request matches no endpoint: the error, and for a wrong method the methods the
/// path does accept (the `Allow` header a `405` must carry).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unrouted {
    pub(crate) error: ApiError,
    pub(crate) allow: Option<&'static str>,
}

impl Unrouted {
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = self.error.into_response();
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<ApiError> for Unrouted {
    fn from(error: ApiError) -> Self {
        Self { error, allow: None }
    }
}

/// The resources the API serves, before the method is looked at.
enum Resource<'a> {
    Collection,
    Conversation(&'a str),
    Messages(&'a str),
    Fork(&'a str),
    Items(&'a str),
    Item(&'a str, &'a str),
}

/// Matches a request to its endpoint.
///
/// The path is taken relative to the mount point: a router that nests the API (axum's
/// `nest_service`) has already stripped it. `served_at` names the prefix to strip here
/// instead, for servers without a router; only one of the two may strip, since
/// `/v1/conversations/v1/conversations` would otherwise reach the API as a second
/// `/v1/conversations` and be stripped again. Under `served_at`, a path outside it is
/// `404`. The shape of the path is checked before the method, and the method before the
/// id, so that an unknown path is `404 not_found`, a known path with the wrong method is
/// `405` (the error names the allowed methods for the `Allow` header) and only then is a
/// malformed id `400 invalid_conversation_id`.
pub(crate) fn route(
    method: &Method,
    path: &str,
    served_at: Option<&str>,
) -> Result<Endpoint, Unrouted> {
    let relative = match served_at {
        None => Some(path),
        Some(prefix) => match path.strip_prefix(prefix) {
            // Only a whole segment is the mount point: `/v1/conversationsX` is not.
            Some(rest) if rest.is_empty() || rest.starts_with('/') => Some(rest),
            _ => None,
        },
    };
    let resource = relative
        .and_then(resource)
        .ok_or_else(ApiError::not_found)?;
    let endpoint = match (&resource, method) {
        (Resource::Collection, &Method::GET) => Endpoint::List,
        (Resource::Collection, &Method::POST) => Endpoint::Create,
        (Resource::Collection, &Method::DELETE) => Endpoint::Erase,
        (Resource::Conversation(id), &Method::GET) => Endpoint::Get(parse_id(id)?),
        (Resource::Conversation(id), &Method::PATCH | &Method::POST) => {
            Endpoint::Update(parse_id(id)?)
        }
        (Resource::Conversation(id), &Method::DELETE) => Endpoint::Delete(parse_id(id)?),
        (Resource::Messages(id), &Method::GET) => Endpoint::Messages(parse_id(id)?),
        (Resource::Messages(id), &Method::DELETE) => Endpoint::Truncate(parse_id(id)?),
        (Resource::Fork(id), &Method::POST) => Endpoint::Fork(parse_id(id)?),
        (Resource::Items(id), &Method::GET) => Endpoint::Items(parse_id(id)?),
        (Resource::Items(id), &Method::POST) => Endpoint::AddItems(parse_id(id)?),
        (Resource::Item(id, item), &Method::GET) => {
            Endpoint::Item(parse_id(id)?, (*item).to_owned())
        }
        (Resource::Item(id, item), &Method::DELETE) => {
            Endpoint::DeleteItem(parse_id(id)?, (*item).to_owned())
        }
        _ => {
            let allow = allowed_methods(&resource);
            return Err(Unrouted {
                error: ApiError::method_not_allowed(allow),
                allow: Some(allow),
            });
        }
    };
    Ok(endpoint)
}

/// The value of the `Allow` header for each resource.
fn allowed_methods(resource: &Resource<'_>) -> &'static str {
    match resource {
        Resource::Collection => "GET, POST, DELETE",
        Resource::Conversation(_) => "GET, POST, PATCH, DELETE",
        Resource::Messages(_) => "GET, DELETE",
        Resource::Fork(_) => "POST",
        Resource::Items(_) => "GET, POST",
        Resource::Item(..) => "GET, DELETE",
    }
}

fn resource(relative: &str) -> Option<Resource<'_>> {
    if relative.is_empty() || relative == "/" {
        return Some(Resource::Collection);
    }
    // One trailing slash is tolerated, as most routers do.
    let relative = relative.strip_prefix('/')?;
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    let mut segments = relative.split('/');
    let id = segments.next()?;
    if id.is_empty() {
        return None;
    }
    let resource = match segments.next() {
        None => Resource::Conversation(id),
        Some("messages") => Resource::Messages(id),
        Some("fork") => Resource::Fork(id),
        Some("items") => match segments.next() {
            None => Resource::Items(id),
            Some(item) if !item.is_empty() => Resource::Item(id, item),
            Some(_) => return None,
        },
        Some(_) => return None,
    };
    match segments.next() {
        None => Some(resource),
        Some(_) => None,
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| ApiError::invalid_conversation_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190b6a4-6f1e-7cc3-9d5e-2f1f6a0b4c11";
    const MOUNT_PATH: &str = "/v1/conversations";

    fn id() -> Uuid {
        Uuid::parse_str(ID).unwrap()
    }

    fn route(method: &Method, path: &str) -> Result<Endpoint, Unrouted> {
        super::route(method, path, None)
    }

    #[test]
    fn paths_relative_to_the_mount_point_and_full_paths_route_alike() {
        for (prefix, served_at) in [("", None), ("/v1/conversations", Some(MOUNT_PATH))] {
            let route = |method: &Method, path: &str| super::route(method, path, served_at);
            let at = |rest: &str| format!("{prefix}{rest}");
            assert_eq!(route(&Method::GET, &at("/")), Ok(Endpoint::List));
            assert_eq!(route(&Method::POST, &at("")), Ok(Endpoint::Create));
            assert_eq!(
                route(&Method::GET, &at(&format!("/{ID}"))),
                Ok(Endpoint::Get(id()))
            );
            assert_eq!(
                route(&Method::PATCH, &at(&format!("/{ID}/"))),
                Ok(Endpoint::Update(id()))
            );
            assert_eq!(
                route(&Method::DELETE, &at(&format!("/{ID}"))),
                Ok(Endpoint::Delete(id()))
            );
            assert_eq!(
                route(&Method::GET, &at(&format!("/{ID}/messages"))),
                Ok(Endpoint::Messages(id()))
            );
            assert_eq!(
                route(&Method::DELETE, &at(&format!("/{ID}/messages"))),
                Ok(Endpoint::Truncate(id()))
            );
            assert_eq!(
                route(&Method::POST, &at(&format!("/{ID}/fork"))),
                Ok(Endpoint::Fork(id()))
            );
            assert_eq!(
                route(&Method::DELETE, &at(&format!("/{ID}/items/fc_3_1"))),
                Ok(Endpoint::DeleteItem(id(), "fc_3_1".to_owned()))
            );
        }
    }

    #[test]
    fn an_empty_path_is_the_collection() {
        assert_eq!(route(&Method::GET, ""), Ok(Endpoint::List));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            format!("/{ID}/other"),
            format!("/{ID}/messages/3"),
            "//".to_owned(),
            "/v1/conversations".to_owned(),
        ] {
            let unrouted = route(&Method::GET, &path).unwrap_err();
            assert_eq!(unrouted.error.code, "not_found", "{path}");
            assert_eq!(unrouted.allow, None);
        }
    }

    #[test]
    fn the_mount_path_is_stripped_once_and_only_when_served_at_it() {
        for path in [
            "/v1/conversationsX",
            "/other",
            "/v1/conversations/v1/conversations",
        ] {
            let unrouted = super::route(&Method::GET, path, Some(MOUNT_PATH)).unwrap_err();
            assert_eq!(unrouted.error.code, "not_found", "{path}");
        }
        let nested = route(&Method::GET, "/v1/conversations").unwrap_err();
        assert_eq!(
            nested.error.code, "not_found",
            "a nested API strips nothing itself"
        );
    }

    #[test]
    fn wrong_methods_name_the_allowed_ones() {
        let unrouted = route(&Method::PUT, &format!("/{ID}")).unwrap_err();
        assert_eq!(unrouted.error.code, "method_not_allowed");
        assert_eq!(unrouted.allow, Some("GET, POST, PATCH, DELETE"));
        let unrouted = route(&Method::GET, &format!("/{ID}/fork")).unwrap_err();
        assert_eq!(unrouted.error.status, http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(unrouted.allow, Some("POST"));
        let response = unrouted.into_response();
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }

    #[test]
    fn malformed_ids_are_invalid_conversation_ids() {
        let unrouted = route(&Method::GET, "/not-a-uuid").unwrap_err();
        assert_eq!(unrouted.error.code, "invalid_conversation_id");
        let unrouted = route(&Method::POST, "/not-a-uuid/fork").unwrap_err();
        assert_eq!(unrouted.error.code, "invalid_conversation_id");
    }
}
