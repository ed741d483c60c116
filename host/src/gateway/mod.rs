//! The registered providers and one chat exchange end to end:
//! route → adapter builds the request → host adds auth and sends → adapter parses.
//!
//! Everything a request needs is in one immutable [`Snapshot`] (config, adapters, providers;
//! `snapshot.rs`), swapped atomically on reload (`reloading.rs`): a request keeps the
//! snapshot it started with. Streams are in `stream.rs`; `in_flight.rs` tracks each exchange
//! while it runs (stats, a client that leaves, the shutdown's cut).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::GatewayError;
use crate::routing::Route;
use crate::runtime::bindings::{ChatRequest, ChatResponse, HttpResponse, ModelInfo};
use crate::runtime::library::AdapterSet;
use crate::runtime::{AdapterInstance, CallError, Runtime, RuntimeConfig};
use crate::telemetry::StatsRegistry;
use crate::upstream::Upstream;
use in_flight::Kind;
use stream::hold_while;

mod cut;
mod in_flight;
mod reloading;
mod snapshot;
mod stream;

pub use reloading::{RejectedAdapter, ReloadReport, ReloadScope};
pub use snapshot::{Provider, Snapshot};
pub use stream::{ChatStream, EVENTS_PER_INSTANCE, KEEP_INSTANCE_IDLE};

/// A finished non-streamed exchange.
#[derive(Debug)]
pub struct ChatOutcome {
    /// How the model name was routed.
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

/// The running gateway: runtime, HTTP client and the current snapshot.
pub struct Gateway {
    runtime: Runtime,
    upstream: Upstream,
    state: ArcSwap<Snapshot>,
    stats: StatsRegistry,
    config_path: PathBuf,
    models_cache: Mutex<HashMap<String, CachedModels>>,
    /// One per provider: concurrent listings wait for one fetch instead of each making one.
    listing_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises reloads: each one builds on the snapshot the previous one installed.
    reload_lock: tokio::sync::Mutex<()>,
    last_reload: Mutex<Option<ReloadReport>>,
    /// Publishes `adapters_dir` after every reload, so the file watcher can follow it.
    adapters_dir: tokio::sync::watch::Sender<Option<PathBuf>>,
    /// The config chatd started with: what the settings a reload cannot change still are.
    initial: Arc<Config>,
    /// Turns true when the shutdown grace period is over (see [`Gateway::cut_in_flight`]).
    cut: watch::Sender<bool>,
}

/// One provider's upstream model list, remembered for `models_cache_secs`; or why it could
/// not be fetched, remembered for [`FAILED_LISTING_TTL`] at most.
struct CachedModels {
    /// Adapter hash + base URL the list was fetched with; a reload that changes either
    /// invalidates it.
    key: String,
    fetched: Instant,
    models: Result<Arc<Vec<ModelInfo>>, GatewayError>,
}

/// How long fetching one provider's model list may take, at most (less when the provider's
/// own timeout is shorter). A listing is metadata: one hung provider must not hold
/// `GET /v1/models` for the minutes a generation may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failed listing is remembered: clients that poll `/v1/models` during an outage
/// get the error at once instead of each waiting out [`LISTING_TIMEOUT`].
const FAILED_LISTING_TTL: Duration = Duration::from_secs(10);

/// The answer of [`Gateway::list_models`].
#[derive(Debug, Default)]
pub struct ModelListing {
    /// Tier name → model ID.
    pub tiers: BTreeMap<String, String>,
    /// Provider → its upstream models.
    pub providers: Vec<(String, Arc<Vec<ModelInfo>>)>,
    /// Providers whose listing failed.
    pub errors: Vec<(String, GatewayError)>,
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
        Gateway::from_parts(config, runtime, adapters)
    }

    /// A gateway over an already started runtime and loaded adapters (tests share these to
    /// avoid recompiling components).
    pub fn from_parts(
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
        let config_path = config.path.clone();
        let (adapters_dir, _) = tokio::sync::watch::channel(config.chatd.adapters_dir.clone());
        let config = Arc::new(config);
        let initial = config.clone();
        let snapshot = Snapshot::build(config, Arc::new(adapters), &stats);
        Ok(Arc::new(Gateway {
            initial,
            runtime,
            upstream,
            state: ArcSwap::from_pointee(snapshot),
            stats,
            config_path,
            models_cache: Mutex::new(HashMap::new()),
            listing_locks: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            last_reload: Mutex::new(None),
            adapters_dir,
            cut: watch::Sender::new(false),
        }))
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The adapter runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Where the config was loaded from.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Per-provider counters.
    pub fn stats(&self) -> &StatsRegistry {
        &self.stats
    }

    /// One non-streamed chat exchange. `request.model` is the model as the client named it.
    pub async fn chat(&self, mut request: ChatRequest) -> Result<ChatOutcome, GatewayError> {
        let (route, mut exchange) = self.begin(&mut request, Kind::Request)?;
        let provider = exchange.provider.clone();
        let result = exchange
            .unless_cut(self.exchange(&provider, &request))
            .await;
        let latency = exchange.finish(result.is_ok());
        Ok(ChatOutcome {
            route,
            response: result?,
            latency,
        })
    }

    async fn exchange(
        &self,
        provider: &Provider,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        let mut builder = instance(provider).await?;
        let http_request = builder
            .build_request(request)
            .await
            .map_err(|e| adapter_failed(provider, e))?
            .map_err(|e| provider.upstream_error(e, None))?;
        let send = self.upstream.send(&provider.target, http_request);
        let (response, kept) = hold_while(builder, Instant::now() + KEEP_INSTANCE_IDLE, send).await;
        let response = response?;
        let retry_after = retry_after(&response);
        let mut parser = match kept {
            Some(instance) => instance,
            None => instance(provider).await?,
        };
        let parsed = parser.parse_response(&response).await;
        parser.release();
        parsed
            .map_err(|e| adapter_failed(provider, e))?
            .map_err(|e| provider.upstream_error(e, retry_after))
    }

    /// The routable models: tiers and every registered provider's upstream list, fetched
    /// through the adapters concurrently and cached. One provider failing does not fail
    /// the listing.
    pub async fn list_models(&self) -> ModelListing {
        let snap = self.snapshot();
        let ttl = Duration::from_secs(snap.config.chatd.models_cache_secs);
        let fetches = snap.providers.values().map(|p| async move {
            let key = format!("{}|{}", p.adapter.sha256, p.target.base_url());
            if let Some(hit) = self.cached_models(&p.name, &key, ttl) {
                return (p.name.clone(), hit);
            }
            let lock = self.listing_lock(&p.name);
            let _fetching = lock.lock().await;
            // Another call may have fetched the list while this one waited.
            if let Some(hit) = self.cached_models(&p.name, &key, ttl) {
                return (p.name.clone(), hit);
            }
            let limit = LISTING_TIMEOUT.min(p.target.timeout);
            let result = match tokio::time::timeout(limit, self.fetch_models(p)).await {
                Ok(result) => result.map(Arc::new),
                Err(_) => Err(GatewayError::UpstreamTimeout {
                    provider: p.name.clone(),
                    timeout: limit,
                }),
            };
            self.lock_models_cache().insert(
                p.name.clone(),
                CachedModels {
                    key,
                    fetched: Instant::now(),
                    models: result.clone(),
                },
            );
            (p.name.clone(), result)
        });
        let mut listing = ModelListing {
            // A tier whose provider cannot take requests now is not a model one can use.
            tiers: snap
                .config
                .tiers
                .iter()
                .filter(|(tier, _)| crate::routing::resolve(&snap.routes, tier).is_ok())
                .map(|(tier, model)| (tier.clone(), model.clone()))
                .collect(),
            ..ModelListing::default()
        };
        for (name, result) in futures_util::future::join_all(fetches).await {
            match result {
                Ok(models) => listing.providers.push((name, models)),
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "listing upstream models failed");
                    listing.errors.push((name, e));
                }
            }
        }
        listing
    }

    fn listing_lock(&self, provider: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.listing_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(provider.to_owned()).or_default().clone()
    }

    fn lock_models_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedModels>> {
        self.models_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_models(
        &self,
        provider: &str,
        key: &str,
        ttl: Duration,
    ) -> Option<Result<Arc<Vec<ModelInfo>>, GatewayError>> {
        let cache = self.lock_models_cache();
        let hit = cache.get(provider)?;
        let ttl = match hit.models {
            Ok(_) => ttl,
            Err(_) => ttl.min(FAILED_LISTING_TTL),
        };
        (hit.key == key && hit.fetched.elapsed() < ttl).then(|| hit.models.clone())
    }

    async fn fetch_models(&self, provider: &Provider) -> Result<Vec<ModelInfo>, GatewayError> {
        let Some(request) = instance(provider)
            .await?
            .build_models_request()
            .await
            .map_err(|e| adapter_failed(provider, e))?
        else {
            return Ok(Vec::new());
        };
        let response = self.upstream.send(&provider.target, request).await?;
        let retry_after = retry_after(&response);
        instance(provider)
            .await?
            .parse_models_response(&response)
            .await
            .map_err(|e| adapter_failed(provider, e))?
            .map_err(|e| provider.upstream_error(e, retry_after))
    }
}

async fn instance(provider: &Provider) -> Result<AdapterInstance, GatewayError> {
    provider
        .adapter
        .instance()
        .await
        .map_err(|e| adapter_failed(provider, e))
}

fn adapter_failed(provider: &Provider, error: CallError) -> GatewayError {
    tracing::warn!(provider = %provider.name, adapter = %provider.adapter.name, %error, "adapter call failed");
    GatewayError::Adapter {
        provider: provider.name.clone(),
        adapter: provider.adapter.name.clone(),
        error,
    }
}

fn retry_after(response: &HttpResponse) -> Option<String> {
    response
        .headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.clone())
}
