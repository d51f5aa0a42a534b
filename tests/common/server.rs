//! Servers on loopback for tests: any axum router or tower service, on `127.0.0.1:0`,
//! stopped (with every open connection) when dropped.
//!
//! ```ignore
//! let model = TestModel::new();
//! let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
//! let response = reqwest::Client::new().post(app.url("/v1/chat/completions")).send().await?;
//! ```

use std::error::Error;
use std::net::SocketAddr;

use axum::Router;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Service;
use tower_conversations::ConversationLayer;

use super::upstream::TestModel;

type BoxError = Box<dyn Error + Send + Sync>;

/// A server on loopback, running until dropped.
pub struct TestServer {
    addr: SocketAddr,
    /// Dropping it tells the accept loop and every connection to stop.
    _stop: watch::Sender<()>,
    accept_loop: JoinHandle<()>,
}

impl TestServer {
    /// Serves an axum router.
    pub async fn start(router: Router) -> Self {
        Self::start_service(router).await
    }

    /// Serves any tower service over HTTP/1.1 and HTTP/2 (plain text) with hyper.
    pub async fn start_service<S, B>(service: S) -> Self
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = watch::channel(());
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = TowerToHyperService::new(service.clone());
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    // Dropping the connection closes it: the test server is gone.
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        TestServer {
            addr,
            _stop: stop,
            accept_loop,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// The app under test: the test model behind the layer, as an axum app would mount it.
pub async fn serve_layered(model: &TestModel, layer: ConversationLayer) -> TestServer {
    TestServer::start(model.router().layer(layer)).await
}

/// The test model alone, on loopback: the baseline a layered app is compared with, or
/// the upstream of a proxy.
pub async fn serve_model(model: &TestModel) -> TestServer {
    TestServer::start(model.router()).await
}
