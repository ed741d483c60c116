//! Accepting client connections: HTTP/1.1 with bounded client patience, and a shutdown that
//! finishes in-flight requests for a bounded time.
//!
//! Why not `axum::serve`: it sets no timer, so a client that sends half a request head (or
//! opens keep-alive connections and never uses them) holds a connection and a file
//! descriptor forever, and a graceful shutdown waits for it forever too.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::gateway::Gateway;

/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, lets
/// in-flight requests finish for at most `chatd.shutdown_grace_secs`, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = super::router(gateway.clone());
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY, Nagle's algorithm holds small stream chunks back until the
        // client's delayed ACK (~40 ms on Linux): fatal for token streaming.
        let _ = tcp.set_nodelay(true);
        // Read per connection, so a reload changes it for the connections that follow.
        let patience = gateway.snapshot().config.client_timeout();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            // Also bounds how long an idle keep-alive connection stays open: hyper waits
            // for the next request's head under the same timer.
            .header_read_timeout(patience)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that resets or times out is its own problem, not the server's.
            let _ = connection.await;
        });
    }
    drop(listener);
    let grace = gateway.snapshot().config.shutdown_grace();
    if tokio::time::timeout(grace, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight after the shutdown grace period; closing them"
        );
    }
    Ok(())
}

/// Accept errors that concern one connection only (it was reset before it was accepted).
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
