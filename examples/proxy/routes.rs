//! Which service answers which path: the management API under `/v1/conversations`,
//! everything else through the conversation layer (when it is on) to the model.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};
use tower_conversations::{ConversationApi, ConversationLayer, RequestBody};

use crate::response::{self, ProxyBody};

/// Where the management API is mounted.
pub const API_PREFIX: &str = "/v1/conversations";

/// The model behind the proxy: the upstream client or the demo model.
pub type Model = BoxCloneService<Request<RequestBody<Incoming>>, Response<ProxyBody>, Infallible>;

type Inner = BoxCloneService<Request<Incoming>, Response<ProxyBody>, Infallible>;

/// The proxy's whole HTTP surface as one tower service.
#[derive(Clone)]
pub struct Routes {
    api: Option<ConversationApi>,
    model: Inner,
}

impl Routes {
    /// The layer wraps the model, and the API shares the layer's store and owners.
    pub fn with_layer(layer: &ConversationLayer, model: Model) -> Self {
        let layered = layer
            .layer(model)
            .map_response(|answer| answer.map(response::boxed));
        Self {
            api: Some(layer.api()),
            model: BoxCloneService::new(layered),
        }
    }

    /// The model alone: no layer, no API, no database.
    pub fn passthrough(model: Model) -> Self {
        let bare =
            model.map_request(|request: Request<Incoming>| request.map(RequestBody::original));
        Self {
            api: None,
            model: BoxCloneService::new(bare),
        }
    }
}

fn is_api_path(path: &str) -> bool {
    path.strip_prefix(API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Service<Request<Incoming>> for Routes {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both services are always ready; each call readies its own clone below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        match &self.api {
            Some(api) if is_api_path(request.uri().path()) => {
                let api = api.clone();
                Box::pin(async move {
                    let answer = api.oneshot(request).await?;
                    Ok(answer.map(response::boxed))
                })
            }
            _ => Box::pin(self.model.clone().oneshot(request)),
        }
    }
}
