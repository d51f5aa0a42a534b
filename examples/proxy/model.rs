//! The model behind the proxy, chosen at start-up: the upstream, or the demo model.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use tower::Service;

use crate::ModelRequest;
use crate::demo;
use crate::forward::Forward;

/// The model as a service: a plain enum rather than a boxed service, since every request
/// clones it (the router once, the conversation layer once more), and a boxed service's
/// clone allocates where this one copies a pointer.
#[derive(Clone)]
pub enum Model {
    /// Forwards to the upstream, through one client shared by every request.
    Upstream(Arc<Forward>),
    /// The built-in demo model.
    Demo,
}

impl Service<ModelRequest> for Model {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest) -> Self::Future {
        match self {
            Self::Upstream(forward) => Box::pin(forward.clone().send(request)),
            Self::Demo => Box::pin(demo::answer(request)),
        }
    }
}
