//! Accepting client connections: HTTP/1.1 with bounded client patience, served by one event
//! loop per thread, and a shutdown that finishes in-flight requests for a bounded time.
//!
//! Why not `axum::serve`: it sets no timer, so a client that sends half a request head (or
//! opens keep-alive connections and never uses them) holds a connection and a file
//! descriptor forever, and a graceful shutdown waits for it forever too.
//!
//! Why a single-threaded runtime per thread, each accepting from the shared listening socket
//! (the model of nginx's and Envoy's workers), rather than one work-stealing runtime: a request
//! is a chain of wake-ups (client connection, upstream connection, back), and with work
//! stealing each hop can land on, and first wake, the other worker. Each thread here keeps a
//! connection's whole request on itself, with its own upstream connection pool (see
//! [`crate::upstream`]). Measured at 64 concurrent requests on 2 CPUs: see bench/README.md.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{oneshot, watch};

use crate::gateway::Gateway;

/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, lets
/// in-flight requests finish for at most `chatd.shutdown_grace_secs`, and returns.
///
/// Connections are served by `chatd.threads` threads of their own, whatever runtime calls
/// this.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let threads = gateway.snapshot().config.server_threads();
    let app = super::router(gateway.clone());
    let (stop, stopping) = watch::channel(false);
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads {
        // Everything that can fail happens here, so a failure is the caller's error rather
        // than a thread that silently serves nothing.
        let mut builder = tokio::runtime::Builder::new_current_thread();
        let runtime = crate::runtime::drop_on_park(&mut builder)
            .enable_all()
            .build()?;
        let own = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener.try_clone()?)?
        };
        let (app, gateway, stopping) = (app.clone(), gateway.clone(), stopping.clone());
        let (done, finished_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("chatd-http-{index}"))
            .spawn(move || {
                runtime.block_on(accept_loop(own, app, gateway, stopping));
                // Tells `serve` this thread's connections are finished (or were cut after
                // the grace period).
                drop(done);
            })?;
        finished.push(finished_rx);
    }
    drop(listener);
    shutdown.await;
    let _ = stop.send(true);
    for thread in finished {
        // An error only means the thread ended without saying so: finished either way.
        let _ = thread.await;
    }
    Ok(())
}

/// One thread's share of the work: accepts from the shared socket (whichever thread is idle
/// takes the next connection) and serves what it accepted, until told to stop.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    gateway: Arc<Gateway>,
    mut stopping: watch::Receiver<bool>,
) {
    let connections = GracefulShutdown::new();
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
            // A dropped sender is a stop too: nobody is left to serve for.
            _ = stopping.wait_for(|stop| *stop) => break,
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
}

/// Accept errors that concern one connection only (it was reset before it was accepted).
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
