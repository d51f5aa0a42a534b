//! Accepting connections, and stopping gracefully.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::routes::Routes;

/// How long in-flight requests may run on after a stop signal before they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `routes` on `listener` over HTTP/1.1 and HTTP/2 until `stop` resolves; then
/// stops accepting, closes idle connections and waits (up to [`SHUTDOWN_GRACE`]) for the
/// requests in flight, streams included, to finish.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    stop: impl Future<Output = &'static str>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let signal = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Stream chunks are small and latency-bound: never wait to coalesce them.
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(routes.clone());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            signal = &mut stop => break signal,
        }
    };
    drop(listener);
    tracing::info!("{signal} received: no longer accepting; finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections finished"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}: cutting them off");
        }
    }
}
