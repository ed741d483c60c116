//! How the shutdown's cut ([`Gateway::cut_in_flight`]) reaches the exchanges in flight.
//!
//! Every exchange waits for the cut while it runs. Had each subscribed to the gateway's
//! watch channel, each would do a dozen atomic operations on memory that every server thread
//! writes (subscribing, registering a waiter, dropping both), bouncing cache lines between
//! cores at every request. So a server thread keeps a signal of its own for its exchanges,
//! and one task per thread passes the gateway's cut on to it. Exchanges run elsewhere (tests
//! and benchmarks calling the gateway directly) subscribe to the gateway's watch.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, watch};

use super::Gateway;

/// One server thread's copy of the cut.
#[derive(Debug, Default)]
pub(super) struct ThreadCut {
    cut: AtomicBool,
    notify: Notify,
}

thread_local! {
    /// The signal of the gateway this server thread serves, with that gateway's address.
    static THREAD_CUT: RefCell<Option<(usize, Arc<ThreadCut>)>> = const { RefCell::new(None) };
}

/// What an exchange waits on for the cut.
#[derive(Debug, Clone)]
pub(super) enum CutSignal {
    Thread(Arc<ThreadCut>),
    Gateway(watch::Receiver<bool>),
}

impl Gateway {
    /// Ends the chat exchanges still in flight because the shutdown grace period is over:
    /// each answers a `shutting_down` error (a stream ends with one) instead of losing its
    /// connection mid-answer. Exchanges that start later end the same way at once. True for
    /// the first call.
    pub fn cut_in_flight(&self) -> bool {
        !self.cut.send_replace(true)
    }

    /// Gives the calling server thread a cut signal of its own (see the module notes). Call it
    /// on the thread's runtime, before it serves.
    pub(crate) fn serve_cut_on_this_thread(&self) {
        let signal = Arc::new(ThreadCut::default());
        let key = self as *const Gateway as usize;
        THREAD_CUT.with_borrow_mut(|slot| *slot = Some((key, signal.clone())));
        let mut gateway_cut = self.cut.subscribe();
        tokio::spawn(async move {
            // An error means the gateway is gone, and with it every exchange.
            if gateway_cut.wait_for(|cut| *cut).await.is_ok() {
                signal.cut.store(true, Ordering::Release);
                signal.notify.notify_waiters();
            }
        });
    }

    /// The signal an exchange starting on this thread waits on.
    pub(super) fn cut_signal(&self) -> CutSignal {
        let key = self as *const Gateway as usize;
        let local = THREAD_CUT.with_borrow(|slot| match slot {
            Some((k, signal)) if *k == key => Some(signal.clone()),
            _ => None,
        });
        match local {
            Some(signal) => CutSignal::Thread(signal),
            None => CutSignal::Gateway(self.cut.subscribe()),
        }
    }
}

impl CutSignal {
    /// Whether the cut has happened.
    pub(super) fn is_cut(&self) -> bool {
        match self {
            CutSignal::Thread(signal) => signal.cut.load(Ordering::Acquire),
            CutSignal::Gateway(rx) => *rx.borrow(),
        }
    }

    /// Resolves once the cut has happened (never if the gateway is gone). Owns what it needs.
    pub(super) fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let signal = match self {
            CutSignal::Thread(signal) => Ok(signal.clone()),
            CutSignal::Gateway(rx) => Err(rx.clone()),
        };
        async move {
            match signal {
                Ok(signal) => loop {
                    let notified = signal.notify.notified();
                    tokio::pin!(notified);
                    // Registered before the flag is read, so a cut in between still wakes it.
                    notified.as_mut().enable();
                    if signal.cut.load(Ordering::Acquire) {
                        return;
                    }
                    notified.await;
                },
                Err(mut rx) => {
                    if rx.wait_for(|cut| *cut).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn both_signals_wake_their_waiters_once_cut() {
        let (tx, rx) = watch::channel(false);
        let thread = Arc::new(ThreadCut::default());
        for signal in [CutSignal::Gateway(rx), CutSignal::Thread(thread.clone())] {
            assert!(!signal.is_cut());
            let waiting = tokio::spawn(signal.wait());
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!waiting.is_finished(), "woke before the cut");
            match &signal {
                CutSignal::Gateway(_) => {
                    tx.send_replace(true);
                }
                CutSignal::Thread(t) => {
                    t.cut.store(true, Ordering::Release);
                    t.notify.notify_waiters();
                }
            }
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("not woken by the cut")
                .unwrap();
            assert!(signal.is_cut());
            // Waiting after the cut returns at once.
            tokio::time::timeout(Duration::from_secs(5), signal.wait())
                .await
                .unwrap();
        }
    }
}
