//! The signals that ask the proxy to stop.

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what `docker stop` and Kubernetes send),
/// naming the signal for the log.
pub async fn signal() -> &'static str {
    let ctrl_c = async {
        // If the handler cannot be installed the proxy still runs; only SIGTERM stops it.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => "Ctrl-C",
        () = terminate => "SIGTERM",
    }
}
