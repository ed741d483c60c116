//! The registered providers and one chat exchange end to end:
//! route → adapter builds the request → host adds auth and sends → adapter parses.
//!
//! Everything a request needs is in one immutable [`Snapshot`] (config, adapters, providers),
//! swapped atomically on reload: a request keeps the snapshot it started with.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Config, ProviderConfig};
use crate::error::GatewayError;
use crate::keys::{self, KeySource};
use crate::routing::{self, Route, RouteTable};
use crate::runtime::bindings::{
    AuthScheme, ChatRequest, ChatResponse, HttpResponse, ModelInfo, StreamChunk,
};
use crate::runtime::library::AdapterSet;
use crate::runtime::{Adapter, AdapterInstance, CallError, Runtime, RuntimeConfig};
use crate::telemetry::{ProviderStats, RequestGuard, StatsRegistry};
use crate::upstream::{Framer, Target, Upstream};

/// A provider that can take requests.
#[derive(Debug)]
pub struct Provider {
    /// Its name (the routing prefix).
    pub name: String,
    /// The adapter serving it, pinned for this snapshot.
    pub adapter: Arc<Adapter>,
    /// Where its key came from (never the key).
    pub key_source: Option<KeySource>,
    /// Request counters.
    pub stats: Arc<ProviderStats>,
    /// Prepared upstream target (URL, timeout, headers incl. auth).
    pub target: Target,
}

/// Everything one request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// The config this snapshot was built from.
    pub config: Arc<Config>,
    /// The loaded adapters.
    pub adapters: Arc<AdapterSet>,
    /// Registered providers by name.
    pub providers: BTreeMap<String, Arc<Provider>>,
    /// Configured but unregistered providers, with the reason.
    pub unregistered: BTreeMap<String, String>,
    /// What routing needs.
    pub routes: RouteTable,
}

impl Snapshot {
    /// Registers every configured provider whose adapter loaded and whose key (if its adapter
    /// needs one) was found; the others are listed in `unregistered` with the reason.
    pub fn build(
        config: Arc<Config>,
        adapters: Arc<AdapterSet>,
        stats: &StatsRegistry,
    ) -> Snapshot {
        let mut providers = BTreeMap::new();
        let mut unregistered = BTreeMap::new();
        for (name, pc) in &config.chatd.providers {
            match register(name, pc, &config, &adapters, stats) {
                Ok(p) => {
                    providers.insert(name.clone(), Arc::new(p));
                }
                Err(reason) => {
                    tracing::warn!(provider = %name, %reason, "provider not registered");
                    unregistered.insert(name.clone(), reason);
                }
            }
        }
        let routes = RouteTable {
            tiers: config.tiers.clone(),
            configured: config.chatd.providers.keys().cloned().collect(),
            registered: providers.keys().cloned().collect(),
            default_provider: config.chatd.default_provider.clone(),
        };
        Snapshot {
            config,
            adapters,
            providers,
            unregistered,
            routes,
        }
    }

    /// Routes a model name to a registered provider.
    pub fn route(&self, model: &str) -> Result<(Route, Arc<Provider>), GatewayError> {
        let route = routing::resolve(&self.routes, model)?;
        let provider = self
            .providers
            .get(&route.provider)
            .cloned()
            .ok_or_else(|| {
                GatewayError::Internal(format!("route to unknown provider {}", route.provider))
            })?;
        Ok((route, provider))
    }
}

fn register(
    name: &str,
    pc: &ProviderConfig,
    config: &Config,
    adapters: &AdapterSet,
    stats: &StatsRegistry,
) -> Result<Provider, String> {
    let adapter = match adapters.entries.get(&pc.adapter) {
        Some(entry) => entry.active.clone().ok_or_else(|| {
            let why = entry
                .last_error
                .as_ref()
                .map(|f| f.error.to_string())
                .unwrap_or_default();
            format!("adapter {:?} failed to load: {why}", pc.adapter)
        })?,
        None => {
            let known: Vec<&str> = adapters.entries.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown adapter {:?} (known: {})",
                pc.adapter,
                known.join(", ")
            ));
        }
    };
    let base_url = match &pc.base_url {
        Some(url) => url.as_str().to_owned(),
        None => {
            let url = url::Url::parse(&adapter.info.default_base_url)
                .map_err(|e| format!("adapter default base URL is invalid: {e}"))?;
            crate::config::check_base_url(&url)
                .map_err(|e| format!("adapter default base URL {url}: {e}"))?;
            url.as_str().to_owned()
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &pc.headers {
        // Validated when the config was parsed.
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    let mut reserved = Vec::new();
    let key_source = match &adapter.info.auth {
        AuthScheme::None => None,
        scheme => {
            let var = pc.key_env.as_deref().ok_or_else(|| {
                format!(
                    "adapter {} needs an API key but no key_env is configured",
                    adapter.name
                )
            })?;
            let (key, source) = keys::resolve(var, pc.key_file.as_deref())
                .map_err(|missing| format!("no API key: looked in {}", missing.looked))?;
            let (header, value) = match scheme {
                AuthScheme::Header(h) => (
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("adapter declares invalid auth header {h:?}"))?,
                    HeaderValue::from_str(key.expose()),
                ),
                _ => (
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {}", key.expose())),
                ),
            };
            let mut value = value.map_err(|_| {
                format!("the API key from {source} contains characters not allowed in a header")
            })?;
            value.set_sensitive(true);
            reserved.push(header.clone());
            headers.insert(header, value);
            Some(source)
        }
    };
    Ok(Provider {
        name: name.to_owned(),
        target: Target {
            provider: name.to_owned(),
            adapter: adapter.name.clone(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout: config.timeout_for(pc),
            headers,
            reserved,
        },
        adapter,
        key_source,
        stats: stats.provider(name),
    })
}

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
}

/// One provider's upstream model list, remembered for `models_cache_secs`.
struct CachedModels {
    /// Adapter hash + base URL the list was fetched with; a reload that changes either
    /// invalidates it.
    key: String,
    fetched: Instant,
    models: Arc<Vec<ModelInfo>>,
}

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
        let upstream =
            Upstream::new(config.chatd.max_upstream_body_bytes).map_err(StartError::Http)?;
        let adapters = AdapterSet::load(
            &runtime,
            config.chatd.adapters_dir.as_deref(),
            &AdapterSet::default(),
        )
        .await;
        let stats = StatsRegistry::default();
        let config_path = config.path.clone();
        let snapshot = Snapshot::build(Arc::new(config), Arc::new(adapters), &stats);
        Ok(Arc::new(Gateway {
            runtime,
            upstream,
            state: ArcSwap::from_pointee(snapshot),
            stats,
            config_path,
            models_cache: Mutex::new(HashMap::new()),
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

    /// Replaces the snapshot (used by reload).
    pub fn install(&self, snapshot: Snapshot) {
        self.state.store(Arc::new(snapshot));
    }

    /// Per-provider counters.
    pub fn stats(&self) -> &StatsRegistry {
        &self.stats
    }

    /// One non-streamed chat exchange. `request.model` is the model as the client named it.
    pub async fn chat(&self, mut request: ChatRequest) -> Result<ChatOutcome, GatewayError> {
        let started = Instant::now();
        let (route, provider) = self.snapshot().route(&request.model)?;
        request.model = route.model.clone();
        request.stream = false;
        let guard = provider.stats.start();
        let result = self.exchange(&provider, &request).await;
        let latency = started.elapsed();
        guard.finish(latency, result.is_ok());
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
        let mut instance = instance(provider).await?;
        let http_request = instance
            .build_request(request)
            .await
            .map_err(|e| adapter_failed(provider, e))?
            .map_err(|e| GatewayError::from_adapter(&provider.name, e, None))?;
        let response = self.upstream.send(&provider.target, http_request).await?;
        let retry_after = retry_after(&response);
        instance
            .parse_response(&response)
            .await
            .map_err(|e| adapter_failed(provider, e))?
            .map_err(|e| GatewayError::from_adapter(&provider.name, e, retry_after))
    }

    /// The routable models: tiers and every registered provider's upstream list, fetched
    /// through the adapters concurrently and cached. One provider failing does not fail
    /// the listing.
    pub async fn list_models(&self) -> ModelListing {
        let snap = self.snapshot();
        let ttl = Duration::from_secs(snap.config.chatd.models_cache_secs);
        let fetches = snap.providers.values().map(|p| async move {
            let key = format!("{}|{}", p.adapter.sha256, p.target.base_url);
            if let Some(hit) = self.cached_models(&p.name, &key, ttl) {
                return (p.name.clone(), Ok(hit));
            }
            let result = self.fetch_models(p).await.map(Arc::new);
            if let Ok(models) = &result {
                self.lock_models_cache().insert(
                    p.name.clone(),
                    CachedModels {
                        key,
                        fetched: Instant::now(),
                        models: models.clone(),
                    },
                );
            }
            (p.name.clone(), result)
        });
        let mut listing = ModelListing {
            tiers: snap.config.tiers.clone(),
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

    fn lock_models_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedModels>> {
        self.models_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_models(
        &self,
        provider: &str,
        key: &str,
        ttl: Duration,
    ) -> Option<Arc<Vec<ModelInfo>>> {
        let cache = self.lock_models_cache();
        let hit = cache.get(provider)?;
        (hit.key == key && hit.fetched.elapsed() < ttl).then(|| hit.models.clone())
    }

    async fn fetch_models(&self, provider: &Provider) -> Result<Vec<ModelInfo>, GatewayError> {
        let mut instance = instance(provider).await?;
        let Some(request) = instance
            .build_models_request()
            .await
            .map_err(|e| adapter_failed(provider, e))?
        else {
            return Ok(Vec::new());
        };
        let response = self.upstream.send(&provider.target, request).await?;
        let retry_after = retry_after(&response);
        instance
            .parse_models_response(&response)
            .await
            .map_err(|e| adapter_failed(provider, e))?
            .map_err(|e| GatewayError::from_adapter(&provider.name, e, retry_after))
    }

    /// Starts a streamed chat exchange. Errors before the upstream starts streaming are
    /// returned here (and become normal HTTP errors); later ones come from the stream.
    pub async fn chat_stream(&self, mut request: ChatRequest) -> Result<ChatStream, GatewayError> {
        let started = Instant::now();
        let (route, provider) = self.snapshot().route(&request.model)?;
        request.model = route.model.clone();
        request.stream = true;
        let guard = provider.stats.start();
        let mut instance = instance(&provider).await?;
        if !provider.adapter.info.supports_streaming {
            return Err(GatewayError::Unsupported {
                provider: provider.name.clone(),
                message: format!(
                    "adapter {} does not support streaming",
                    provider.adapter.name
                ),
            });
        }
        let http_request = instance
            .build_request(&request)
            .await
            .map_err(|e| adapter_failed(&provider, e))?
            .map_err(|e| GatewayError::from_adapter(&provider.name, e, None))?;
        let open = match self
            .upstream
            .open_stream(&provider.target, http_request)
            .await?
        {
            Ok(open) => open,
            Err(error_response) => {
                let retry_after = retry_after(&error_response);
                let parsed = instance
                    .parse_response(&error_response)
                    .await
                    .map_err(|e| adapter_failed(&provider, e))?;
                return Err(match parsed {
                    Err(e) => GatewayError::from_adapter(&provider.name, e, retry_after),
                    // The adapter accepted a non-2xx answer; it is still not a stream.
                    Ok(_) => GatewayError::UpstreamStatus {
                        provider: provider.name.clone(),
                        status: error_response.status,
                        message: "upstream refused the stream".into(),
                    },
                });
            }
        };
        Ok(ChatStream {
            route,
            framer: Framer::new(provider.adapter.info.stream_framing),
            body: Box::pin(open.response.bytes_stream()),
            instance,
            provider,
            body_ended: false,
            guard: Some(guard),
            started,
            finished: false,
            saw_end: false,
        })
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A streamed answer in progress. Dropping it (the client went away) drops the upstream
/// connection, which cancels the upstream request.
pub struct ChatStream {
    /// How the model name was routed.
    pub route: Route,
    provider: Arc<Provider>,
    instance: AdapterInstance,
    framer: Framer,
    body: ByteStream,
    body_ended: bool,
    guard: Option<RequestGuard>,
    started: Instant,
    finished: bool,
    /// Whether the upstream signalled the end (a `done` event or a finish reason).
    saw_end: bool,
}

impl ChatStream {
    /// The provider serving this stream.
    pub fn provider(&self) -> &str {
        &self.provider.name
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The next chunk; `None` once the stream is complete. After an error, the stream ends.
    pub async fn next(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        if self.finished {
            return None;
        }
        let item = self.advance().await;
        match &item {
            Some(Ok(chunk)) if chunk.done => self.end(true),
            Some(Ok(_)) => {}
            Some(Err(_)) => self.end(false),
            None => self.end(true),
        }
        item
    }

    fn end(&mut self, ok: bool) {
        self.finished = true;
        if let Some(guard) = self.guard.take() {
            guard.finish(self.started.elapsed(), ok);
        }
    }

    async fn advance(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        let provider = self.provider.clone();
        loop {
            if let Some(event) = self.framer.next_event() {
                let parsed = match self.instance.parse_stream_event(&event).await {
                    Ok(parsed) => parsed,
                    Err(e) => return Some(Err(adapter_failed(&provider, e))),
                };
                match parsed {
                    Ok(Some(chunk)) => {
                        self.saw_end |= chunk.done || chunk.finish.is_some();
                        return Some(Ok(chunk));
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        return Some(Err(GatewayError::from_adapter(&provider.name, e, None)));
                    }
                }
            }
            if self.body_ended {
                return if self.saw_end {
                    None
                } else {
                    Some(Err(GatewayError::UpstreamStream {
                        provider: provider.name.clone(),
                        message: "upstream closed the stream before it finished".into(),
                    }))
                };
            }
            let timeout = provider.target.timeout;
            match tokio::time::timeout(timeout, self.body.next()).await {
                Err(_) => {
                    return Some(Err(GatewayError::UpstreamTimeout {
                        provider: provider.name.clone(),
                        timeout,
                    }));
                }
                Ok(None) => {
                    self.framer.finish();
                    self.body_ended = true;
                }
                Ok(Some(Err(e))) => {
                    return Some(Err(GatewayError::UpstreamStream {
                        provider: provider.name.clone(),
                        message: crate::upstream::unreachable(&provider.target, &e).to_string(),
                    }));
                }
                Ok(Some(Ok(bytes))) => {
                    if self.framer.feed(&bytes).is_err() {
                        return Some(Err(GatewayError::MalformedResponse {
                            provider: provider.name.clone(),
                            message: "a stream event exceeds the size limit".into(),
                        }));
                    }
                }
            }
        }
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
