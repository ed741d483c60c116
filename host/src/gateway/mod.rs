//! One chat exchange end to end: route → adapter builds the request → host adds auth and
//! sends → adapter parses.
//!
//! A request may have several candidates (a tier's fallback chain) and each provider several
//! endpoints: `failover.rs` tries them in order, retrying what may succeed a second time,
//! `endpoints.rs` picks an endpoint and keeps its health (the circuit breaker), and
//! `admission.rs` holds each provider to its concurrency limit.
//!
//! Everything a request needs is in one immutable [`Snapshot`] (config, adapters, providers;
//! `snapshot.rs`, `provider.rs`), swapped atomically on reload (`reloading.rs`): a request
//! keeps the snapshot it started with. Streams are in `stream.rs`; `in_flight.rs` tracks each
//! exchange while it runs (stats, a client that leaves, the shutdown's cut); the model
//! listing is `models.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::contract::{ChatRequest, ChatResponse};
use crate::error::GatewayError;
use crate::keys::Credentials;
use crate::routing::Route;
use crate::runtime::library::AdapterSet;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::telemetry::StatsRegistry;
use crate::upstream::Upstream;
use failover::Answer;
use in_flight::Kind;
use provider::retry_after;
use stream::hold_while;

mod admission;
mod capable;
mod cut;
mod embeddings;
mod endpoints;
mod failover;
mod in_flight;
mod models;
mod provider;
mod reloading;
mod snapshot;
mod stream;

pub use embeddings::EmbeddingsOutcome;
pub use endpoints::{HealthSnapshot, Lasting};
pub use models::ModelListing;
pub use provider::Provider;
pub use reloading::{RejectedAdapter, ReloadReport, ReloadScope};
pub use snapshot::Snapshot;
pub use stream::{ChatStream, EVENTS_PER_INSTANCE, KEEP_INSTANCE_IDLE};

/// A finished non-streamed exchange.
#[derive(Debug)]
pub struct ChatOutcome {
    /// The candidate that answered: its provider and upstream model.
    pub route: Route,
    /// The adapter's parsed answer.
    pub response: ChatResponse,
    /// Total time in chatd, upstream included.
    pub latency: Duration,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Http(String),
}

/// The running gateway: what lives as long as the process (runtime, HTTP client, counters)
/// and the current snapshot.
pub struct Gateway {
    runtime: Runtime,
    upstream: Upstream,
    state: ArcSwap<Snapshot>,
    stats: StatsRegistry,
    /// Endpoint health and concurrency slots, kept across reloads.
    lasting: Lasting,
    models: models::ModelCatalog,
    reloads: reloading::Reloads,
    /// Turns true when the shutdown grace period is over (see [`Gateway::cut_in_flight`]).
    cut: watch::Sender<bool>,
}

impl Gateway {
    /// Starts the runtime and loads adapters and providers from `config`.
    pub async fn start(config: Config) -> Result<Arc<Gateway>, StartError> {
        let runtime = Runtime::new(RuntimeConfig::from_config(&config.chatd.sandbox))
            .map_err(StartError::Runtime)?;
        let adapters = AdapterSet::load(
            &runtime,
            config.chatd.adapters_dir.as_deref(),
            &AdapterSet::default(),
        )
        .await;
        Gateway::from_parts(config, runtime, adapters).await
    }

    /// A gateway over an already started runtime and loaded adapters (tests share these to
    /// avoid recompiling components).
    pub async fn from_parts(
        config: Config,
        runtime: Runtime,
        adapters: AdapterSet,
    ) -> Result<Arc<Gateway>, StartError> {
        // No `check_adapters` here: a provider whose adapter is missing is registered as
        // unavailable (with the reason), as it is when its file is deleted while chatd
        // runs; a restart must not take every other provider down with it.
        // `chatd check` still fails on it.
        let upstream =
            Upstream::new(config.chatd.max_upstream_body_bytes).map_err(StartError::Http)?;
        let stats = StatsRegistry::default();
        let lasting = Lasting::default();
        let config = Arc::new(config);
        let credentials = Credentials::resolve(&config);
        let snapshot = Snapshot::build(
            config.clone(),
            Arc::new(adapters),
            &credentials,
            &stats,
            &lasting,
        )
        .await;
        snapshot.log_unregistered();
        Ok(Arc::new(Gateway {
            reloads: reloading::Reloads::new(config),
            runtime,
            upstream,
            state: ArcSwap::from_pointee(snapshot),
            stats,
            lasting,
            models: models::ModelCatalog::default(),
            cut: watch::Sender::new(false),
        }))
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The current snapshot, borrowed: no reference count is taken unless the guard is
    /// turned into an `Arc` (what a request that only looks at it needs).
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.state.load()
    }

    /// The adapter runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Where the config was loaded from.
    pub fn config_path(&self) -> &std::path::Path {
        self.reloads.config_path()
    }

    /// Per-provider counters.
    pub fn stats(&self) -> &StatsRegistry {
        &self.stats
    }

    /// One non-streamed chat exchange. `request.model` is the model as the client named it.
    pub async fn chat(&self, mut request: ChatRequest) -> Result<ChatOutcome, GatewayError> {
        let served = self.failover(&mut request, Kind::Request).await?;
        let mut exchange = served.exchange;
        let Answer::Whole(response) = served.answer else {
            exchange.finish(false);
            return Err(GatewayError::Internal("a stream answered a request".into()));
        };
        exchange.tokens(response.usage.input_tokens, response.usage.output_tokens);
        let latency = exchange.finish(true);
        let provider = &exchange.provider;
        provider.stats.tokens(
            &served.route.model,
            response.usage.input_tokens,
            response.usage.output_tokens,
        );
        crate::otel::answered(
            &crate::otel::current_span(),
            &provider.name,
            &served.route.model,
            response.usage.input_tokens,
            response.usage.output_tokens,
        );
        Ok(ChatOutcome {
            route: served.route,
            response,
            latency,
        })
    }

    /// One whole exchange with one endpoint of `provider`.
    async fn exchange(
        &self,
        provider: &provider::Provider,
        target: &crate::upstream::Target,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        use tracing::Instrument;
        let stats = &provider.stats;
        let mut builder = provider.instance().await?;
        let began = Instant::now();
        let built = builder
            .build_request(request)
            .instrument(tracing::debug_span!("adapter.build"))
            .await;
        stats.adapter_time(began.elapsed());
        let built = built
            .map_err(|e| provider.call_failed(e))?
            .map_err(|e| provider.adapter_error(e, None))?;
        let send = self
            .upstream
            .send(target, provider.request_to(target, built)?)
            .instrument(tracing::debug_span!("upstream", otel.kind = "client"));
        let began = Instant::now();
        let (response, kept) = hold_while(builder, Instant::now() + KEEP_INSTANCE_IDLE, send).await;
        stats.upstream_time(began.elapsed());
        let response = response.map_err(|e| provider.upstream_failed(e))?;
        let mut parser = match kept {
            Some(instance) => instance,
            None => provider.instance().await?,
        };
        let began = Instant::now();
        let parsed = parser
            .parse_response(&response)
            .instrument(tracing::debug_span!("adapter.parse"))
            .await;
        stats.adapter_time(began.elapsed());
        parser.release();
        parsed
            .map_err(|e| provider.call_failed(e))?
            .map_err(|e| provider.adapter_error(e, retry_after(&response)))
    }
}
