//! The bookkeeping of one exchange while it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cut::CutSignal;
use super::{Gateway, Provider};
use crate::error::GatewayError;
use crate::routing::Route;
use crate::telemetry::RequestGuard;

impl Gateway {
    /// Routes `model` to its first candidate, admits it for its client (models and limits,
    /// when client keys are on) and starts the bookkeeping of an exchange with its provider,
    /// for exchanges that do not fail over (embeddings).
    pub(super) async fn begin_exchange(
        &self,
        model: &str,
        kind: Kind,
    ) -> Result<(Route, InFlight), GatewayError> {
        let started = Instant::now();
        let snapshot = self.snapshot();
        let (route, provider) = snapshot.route(model)?;
        let meter = crate::clients::admit(&snapshot.config, model, &route).await?;
        let mut exchange = self.in_flight(provider, &route, started, kind, &self.cut_signal());
        exchange.meter = meter;
        Ok((route, exchange))
    }

    /// Starts the bookkeeping of `provider`'s part in an exchange that began at `started`
    /// (each candidate of a chain gets its own; the client's meter goes to the one that
    /// serves).
    pub(super) fn in_flight(
        &self,
        provider: Arc<Provider>,
        route: &Route,
        started: Instant,
        kind: Kind,
        cut: &CutSignal,
    ) -> InFlight {
        InFlight {
            stats: Some(provider.stats.start()),
            model: route.model.clone(),
            provider,
            started,
            kind,
            cut: cut.clone(),
            meter: None,
        }
    }
}

/// Milliseconds since `started`, for log lines.
pub(super) fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// What kind of exchange an [`InFlight`] tracks, for its log lines.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Request,
    Stream,
}

/// One chat exchange from routing to its end: counts it in its provider's stats, tells when
/// the shutdown cuts it ([`Gateway::cut_in_flight`]), and logs it if it is dropped unfinished
/// (its client went away, or chatd exited with it still running): the handler that would
/// have logged it is gone then.
pub(super) struct InFlight {
    pub(super) provider: Arc<Provider>,
    model: String,
    pub(super) started: Instant,
    pub(super) kind: Kind,
    /// Present until the exchange finishes.
    stats: Option<RequestGuard>,
    cut: CutSignal,
    /// Counts the client's usage (client keys on); records it when dropped.
    pub(super) meter: Option<crate::clients::Meter>,
}

impl InFlight {
    /// Records the outcome; returns the exchange's latency.
    pub(super) fn finish(&mut self, ok: bool) -> Duration {
        let latency = self.started.elapsed();
        if let Some(stats) = self.stats.take() {
            stats.finish(latency, ok);
        }
        // The client's tokens count when the answer ends.
        self.meter.take();
        latency
    }

    /// The token counts the upstream reported so far, for the client's usage and limits.
    pub(super) fn tokens(&mut self, input: Option<u32>, output: Option<u32>) {
        if let Some(meter) = self.meter.as_mut() {
            meter.tokens(input, output);
        }
    }

    /// The client's name for log lines, `-` without client keys.
    pub(super) fn client(&self) -> &str {
        self.meter.as_ref().map_or("-", |m| m.client())
    }

    /// How an exchange ended by the shutdown fails.
    pub(super) fn cut_error(&self) -> GatewayError {
        GatewayError::ShuttingDown {
            provider: self.provider.name.clone(),
        }
    }

    pub(super) fn is_finished(&self) -> bool {
        self.stats.is_none()
    }

    /// Awaits `work`, unless the shutdown grace period ends first.
    pub(super) async fn unless_cut<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        tokio::select! {
            biased;
            out = work => out,
            () = self.cut() => Err(self.cut_error()),
        }
    }

    /// Resolves once the shutdown grace period is over (never if the gateway is gone).
    /// Owns what it needs, so the exchange stays usable while it waits.
    pub(super) fn cut(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.cut.wait()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.is_finished() {
            return;
        }
        let after_ms = format_args!("{:.3}", elapsed_ms(self.started));
        let (provider, model, client) = (&self.provider.name, &self.model, self.client());
        // Cut exchanges answer an error and finish; one still here was cut with its
        // connection as chatd exited.
        match (self.cut.is_cut(), self.kind) {
            (true, Kind::Request) => {
                tracing::warn!(%provider, %model, client, after_ms, "request cut: chatd exited before it finished");
            }
            (true, Kind::Stream) => {
                tracing::warn!(%provider, %model, client, after_ms, "stream cut: chatd exited before it finished");
            }
            (false, Kind::Request) => {
                tracing::info!(%provider, %model, client, after_ms, "request cancelled: the client went away");
            }
            (false, Kind::Stream) => {
                tracing::info!(%provider, %model, client, after_ms, "stream cancelled: the client went away");
            }
        }
    }
}
