//! Accepting client connections: HTTP/1.1 with bounded client patience, served by one event
//! loop per thread, and a shutdown that finishes in-flight requests for a bounded time.
//!
//! Why not `axum::serve`: it sets no timer, so a client that sends half a request head (or
//! opens keep-alive connections and never uses them) holds a connection and a file
//! descriptor forever, and a graceful shutdown waits for it forever too.
//!
//! Why a single-threaded runtime per thread rather than one work-stealing runtime: a request
//! is a chain of wake-ups (client connection, upstream connection, back), and with work
//! stealing each hop can land on, and first wake, the other worker. Each thread here keeps a
//! connection's whole request on itself, with its own upstream connection pool (see
//! [`crate::upstream`]) — the model of nginx's and Envoy's workers. The caller's runtime
//! accepts and hands each connection to the thread serving the fewest: with every thread
//! accepting from the shared socket instead, whichever thread was awake took the next
//! connection, and a measured c=64 run ended with two thirds of the load on one thread.
//! Measured at 64 concurrent requests on 2 CPUs: see bench/README.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, oneshot};

use crate::gateway::Gateway;

/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The largest request head (request line and headers) served; a larger one is answered
/// 431. hyper's own bound is its read buffer (~400 KiB), which a head passes or not depending
/// on how its bytes arrive; this makes the documented number exact.
const MAX_REQUEST_HEAD: usize = 400 * 1024;

/// A server thread as the acceptor sees it.
struct Worker {
    connections: mpsc::UnboundedSender<std::net::TcpStream>,
    /// Connections it is serving now.
    load: Arc<AtomicUsize>,
}

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, lets
/// in-flight requests finish for at most `chatd.shutdown_grace_secs`, and returns.
///
/// Connections are served by `chatd.threads` threads of their own, whatever runtime calls
/// this; the calling runtime only accepts.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let threads = gateway.snapshot().config.server_threads();
    let app = super::router(gateway.clone()).map_err(std::io::Error::other)?;
    let mut workers = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads {
        // Fails here, as the caller's error, rather than as a thread that serves nothing.
        let mut builder = tokio::runtime::Builder::new_current_thread();
        let runtime = crate::runtime::drop_on_park(&mut builder)
            .enable_all()
            .build()?;
        let (connections, incoming) = mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(0));
        let (app, gateway, counted) = (app.clone(), gateway.clone(), load.clone());
        let (done, finished_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("chatd-http-{index}"))
            .spawn(move || {
                runtime.block_on(serve_connections(incoming, app, gateway, counted));
                // Connections still open after the grace period are tasks of this runtime:
                // dropping it cuts them (and logs them) before `serve` hears the thread is done.
                drop(runtime);
                drop(done);
            })?;
        workers.push(Worker { connections, load });
        finished.push(finished_rx);
    }
    let accepted = accept(&listener, &workers, shutdown).await;
    // Closing the channels tells every thread to stop taking connections and shut down.
    drop(listener);
    drop(workers);
    for thread in finished {
        // An error only means the thread ended without saying so: finished either way.
        let _ = thread.await;
    }
    accepted
}

/// Accepts until `shutdown`, handing each connection to the least loaded thread; fails only
/// when no thread is left to serve.
async fn accept(
    listener: &tokio::net::TcpListener,
    workers: &[Worker],
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0;
    let mut failing = AcceptFailures::default();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    failing.recovered();
                    tcp
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    failing.failed(&e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        // Without TCP_NODELAY, Nagle's algorithm holds small stream chunks back until the
        // client's delayed ACK (~40 ms on Linux): fatal for token streaming.
        let _ = tcp.set_nodelay(true);
        let Ok(tcp) = tcp.into_std() else { continue };
        hand_over(workers, tcp, &mut next)?;
    }
}

/// Logs accept failures that last (out of file descriptors) once per [`ACCEPT_LOG_EVERY`]
/// instead of at every retry, and says when accepting works again.
#[derive(Default)]
struct AcceptFailures {
    since: Option<std::time::Instant>,
    last_logged: Option<std::time::Instant>,
    unlogged: u32,
}

/// How often a lasting accept failure is logged again.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

impl AcceptFailures {
    fn failed(&mut self, e: &std::io::Error) {
        let now = std::time::Instant::now();
        self.since.get_or_insert(now);
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < ACCEPT_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::error!(
            error = %e,
            repeated = self.unlogged,
            retry_ms = ACCEPT_BACKOFF.as_millis() as u64,
            "cannot accept a connection; retrying"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                after_ms = since.elapsed().as_millis() as u64,
                "accepting connections again"
            );
            *self = AcceptFailures::default();
        }
    }
}

/// Sends a connection to the least loaded live thread; fails when none is left. `next` is
/// where the search starts, rotated so that ties spread out.
fn hand_over(
    workers: &[Worker],
    mut tcp: std::net::TcpStream,
    next: &mut usize,
) -> std::io::Result<()> {
    loop {
        // A thread that stopped (a panic outside any request) closed its channel: it must not
        // look like the least loaded one and swallow every new connection.
        let loads: Vec<usize> = workers
            .iter()
            .map(|w| {
                if w.connections.is_closed() {
                    usize::MAX
                } else {
                    w.load.load(Ordering::Relaxed)
                }
            })
            .collect();
        let chosen = &workers[least_loaded(&loads, *next)];
        *next = (*next + 1) % workers.len();
        if chosen.connections.is_closed() {
            return Err(std::io::Error::other("every server thread has stopped"));
        }
        chosen.load.fetch_add(1, Ordering::Relaxed);
        match chosen.connections.send(tcp) {
            Ok(()) => return Ok(()),
            Err(unsent) => {
                chosen.load.fetch_sub(1, Ordering::Relaxed);
                tracing::error!("a server thread has stopped; its share goes to the others");
                tcp = unsent.0;
            }
        }
    }
}

/// The index of the smallest load; among equal ones, the first from `start` on (wrapping),
/// so that ties do not all go to the first thread.
fn least_loaded(loads: &[usize], start: usize) -> usize {
    (0..loads.len())
        .map(|i| (start + i) % loads.len())
        .min_by_key(|&i| loads[i])
        .unwrap_or(0)
}

/// One thread's work: serves the connections handed to it until the acceptor closes the
/// channel, then lets them finish within the grace period.
async fn serve_connections(
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    app: axum::Router,
    gateway: Arc<Gateway>,
    load: Arc<AtomicUsize>,
) {
    gateway.serve_cut_on_this_thread();
    let connections = GracefulShutdown::new();
    while let Some(tcp) = incoming.recv().await {
        let finished = Finished(load.clone());
        let peer = tcp.peer_addr().ok();
        let tcp = match tokio::net::TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch an accepted connection");
                continue;
            }
        };
        // Read per connection, so a reload changes it for the connections that follow.
        let patience = gateway.snapshot().config.client_timeout();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            // Also bounds how long an idle keep-alive connection stays open: hyper waits
            // for the next request's head under the same timer.
            .header_read_timeout(patience)
            .max_header_size(MAX_REQUEST_HEAD)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that resets or times out is its own problem, not the server's. One
            // that sends something other than HTTP gets hyper's bare 400 (431 for oversized
            // headers, 414 for a huge URI) before the router sees it; without this line it
            // would leave no trace.
            if let Err(e) = connection.await
                && e.is_parse()
            {
                let peer = peer.map(|p| p.to_string()).unwrap_or_default();
                tracing::info!(%peer, error = %e, "malformed HTTP request; answered with an empty 4xx and closed the connection");
            }
            drop(finished);
        });
    }
    let grace = gateway.snapshot().config.shutdown_grace();
    let all_closed = connections.shutdown();
    tokio::pin!(all_closed);
    if tokio::time::timeout(grace, &mut all_closed).await.is_err() {
        // Every thread gets here at about the same time; one line says it.
        if gateway.cut_in_flight() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "requests still in flight after the shutdown grace period; ending them"
            );
        }
        // Their error answers go out now; a connection still open after this (its client
        // reads nothing, or it is not a chat exchange) is dropped with this thread's runtime.
        if tokio::time::timeout(CUT_ANSWER_TIME, &mut all_closed)
            .await
            .is_err()
        {
            tracing::warn!(
                connections = load.load(Ordering::Relaxed),
                "closing connections still open after the shutdown grace period (a client \
                 not reading its answer, or a request that is not a chat)"
            );
        }
    }
}

/// How long requests ended by the shutdown get to send their error answers.
const CUT_ANSWER_TIME: Duration = Duration::from_secs(1);

/// Counts a connection out of its thread's load when it ends, however it ends.
struct Finished(Arc<AtomicUsize>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::{Worker, hand_over, least_loaded};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    fn connection() -> std::net::TcpStream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap()
    }

    #[test]
    fn a_stopped_thread_gets_no_connections_and_none_left_is_an_error() {
        let (tx0, rx0) = mpsc::unbounded_channel();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let workers = [
            Worker {
                connections: tx0,
                load: Arc::new(AtomicUsize::new(0)),
            },
            Worker {
                connections: tx1,
                load: Arc::new(AtomicUsize::new(5)),
            },
        ];
        drop(rx0);
        let mut next = 0;
        for _ in 0..3 {
            hand_over(&workers, connection(), &mut next).unwrap();
        }
        let mut received = 0;
        while rx1.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 3);
        assert_eq!(workers[0].load.load(Ordering::Relaxed), 0);
        assert_eq!(workers[1].load.load(Ordering::Relaxed), 8);
        drop(rx1);
        let err = hand_over(&workers, connection(), &mut next).unwrap_err();
        assert!(
            err.to_string().contains("every server thread has stopped"),
            "{err}"
        );
    }

    #[test]
    fn connections_go_to_the_least_loaded_thread() {
        assert_eq!(least_loaded(&[3, 1, 2], 0), 1);
        assert_eq!(least_loaded(&[3, 1, 2], 2), 1);
        assert_eq!(least_loaded(&[5], 0), 0);
    }

    #[test]
    fn a_lasting_accept_failure_is_logged_once_per_interval() {
        let mut failing = super::AcceptFailures::default();
        let e = std::io::Error::from_raw_os_error(24);
        failing.failed(&e);
        assert_eq!(failing.unlogged, 0);
        for _ in 0..50 {
            failing.failed(&e);
        }
        // Logged once; the 50 retries since are counted for the next line.
        assert_eq!(failing.unlogged, 50);
        assert!(failing.since.is_some());
        failing.recovered();
        assert!(failing.since.is_none() && failing.last_logged.is_none());
        assert_eq!(failing.unlogged, 0);
    }

    #[test]
    fn ties_rotate_from_the_start_index() {
        assert_eq!(least_loaded(&[0, 0, 0], 0), 0);
        assert_eq!(least_loaded(&[0, 0, 0], 1), 1);
        assert_eq!(least_loaded(&[0, 0, 0], 2), 2);
        assert_eq!(least_loaded(&[1, 0, 0], 0), 1);
        assert_eq!(least_loaded(&[0, 1, 0], 1), 2);
    }

    #[test]
    fn keep_alive_connections_end_up_even() {
        // Connections that stay open: the acceptor's rule alone decides the spread.
        let mut loads = [0usize; 2];
        for next in 0..64 {
            let i = least_loaded(&loads, next % 2);
            loads[i] += 1;
        }
        assert_eq!(loads, [32, 32]);
    }
}
