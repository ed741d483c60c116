//! The registered providers and one chat exchange end to end:
//! route → adapter builds the request → host adds auth and sends → adapter parses.
//!
//! Everything a request needs is in one immutable [`Snapshot`] (config, adapters, providers),
//! swapped atomically on reload: a request keeps the snapshot it started with.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Config, ProviderConfig};
use crate::error::GatewayError;
use crate::keys::{self, KeySource, Secret};
use crate::routing::{self, Route, RouteTable};
use crate::runtime::bindings::{
    AdapterError, AuthScheme, ChatRequest, ChatResponse, HttpResponse, ModelInfo, StreamChunk,
};
use crate::runtime::library::AdapterSet;
use crate::runtime::{Adapter, AdapterInstance, CallError, Runtime, RuntimeConfig};
use crate::telemetry::{ProviderStats, RequestGuard, StatsRegistry};
use crate::upstream::{Framer, Opened, Target, Upstream};
use tokio::sync::watch;

/// A provider that can take requests.
#[derive(Debug)]
pub struct Provider {
    /// Its name (the routing prefix).
    pub name: String,
    /// The adapter serving it, pinned for this snapshot.
    pub adapter: Arc<Adapter>,
    /// Where its key came from (never the key).
    pub key_source: Option<KeySource>,
    /// The key itself, kept only to scrub it from upstream error text.
    secret: Option<Secret>,
    /// Request counters.
    pub stats: Arc<ProviderStats>,
    /// Prepared upstream target (URL, timeout, headers incl. auth).
    pub target: Target,
}

impl Provider {
    /// Maps an adapter's typed error, scrubbing this provider's key from upstream text.
    fn upstream_error(&self, error: AdapterError, retry_after: Option<String>) -> GatewayError {
        let scrub = |m: String| match &self.secret {
            Some(secret) => secret.redact(m),
            None => m,
        };
        let error = match error {
            AdapterError::InvalidRequest(m) => AdapterError::InvalidRequest(scrub(m)),
            AdapterError::MalformedResponse(m) => AdapterError::MalformedResponse(scrub(m)),
            AdapterError::RateLimited(mut r) => {
                r.message = scrub(r.message);
                AdapterError::RateLimited(r)
            }
            AdapterError::Upstream(mut u) => {
                u.message = scrub(u.message);
                AdapterError::Upstream(u)
            }
        };
        GatewayError::from_adapter(&self.name, error, retry_after)
    }
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
    /// The admin bearer token, when the admin API is enabled and a token was found.
    pub admin_token: Option<Secret>,
}

impl Snapshot {
    /// Checks that every provider names an adapter that exists (built-in or a file in
    /// `adapters_dir`): a typo there is a config error, not a silently missing provider.
    pub fn check_adapters(config: &Config, adapters: &AdapterSet) -> Result<(), String> {
        Self::check_new_adapters(config, None, adapters)
    }

    /// Like [`Snapshot::check_adapters`], but only for providers whose adapter differs from
    /// `previous`: on reload, a provider whose adapter file was deleted is unregistered
    /// (deleting a file is how an operator unloads it) instead of blocking every reload.
    fn check_new_adapters(
        config: &Config,
        previous: Option<&Config>,
        adapters: &AdapterSet,
    ) -> Result<(), String> {
        for (name, pc) in &config.chatd.providers {
            let unchanged = previous
                .and_then(|p| p.chatd.providers.get(name))
                .is_some_and(|old| old.adapter == pc.adapter);
            if !unchanged && !adapters.entries.contains_key(&pc.adapter) {
                let known: Vec<&str> = adapters.entries.keys().map(String::as_str).collect();
                return Err(format!(
                    "config {}: provider {name}: unknown adapter {:?} (known: {})",
                    config.path.display(),
                    pc.adapter,
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

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
        let admin = &config.chatd.admin;
        let admin_token = if admin.enabled {
            match keys::resolve(&admin.token_env, admin.token_file.as_deref()) {
                Ok((token, _)) => Some(token),
                Err(missing) => {
                    tracing::warn!(looked = %missing.looked, "admin API enabled but no token found: it refuses every request");
                    None
                }
            }
        } else {
            None
        };
        Snapshot {
            config,
            adapters,
            providers,
            unregistered,
            routes,
            admin_token,
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
    let entry = adapters.entries.get(&pc.adapter).ok_or_else(|| {
        format!(
            "adapter {:?} is not loaded (no built-in of that name and no {}.wasm in adapters_dir)",
            pc.adapter, pc.adapter
        )
    })?;
    let adapter = entry.active.clone().ok_or_else(|| {
        let why = entry
            .last_error
            .as_ref()
            .map(|f| f.error.to_string())
            .unwrap_or_default();
        format!("adapter {:?} failed to load: {why}", pc.adapter)
    })?;
    let base = match &pc.base_url {
        Some(url) => url.clone(),
        None => {
            let url = url::Url::parse(&adapter.info.default_base_url)
                .map_err(|e| format!("adapter default base URL is invalid: {e}"))?;
            crate::config::check_base_url(&url)
                .map_err(|e| format!("adapter default base URL {url}: {e}"))?;
            url
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
    let (key_source, secret) = match &adapter.info.auth {
        AuthScheme::None => (None, None),
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
            (Some(source), Some(key))
        }
    };
    Ok(Provider {
        name: name.to_owned(),
        target: Target {
            provider: name.to_owned(),
            adapter: adapter.name.clone(),
            base,
            timeout: config.timeout_for(pc),
            headers,
            reserved,
        },
        adapter,
        key_source,
        secret,
        stats: stats.provider(name),
    })
}

impl ReloadReport {
    fn new(
        trigger: &str,
        before: &Snapshot,
        after: &Snapshot,
        error: Option<String>,
        started: Instant,
    ) -> Self {
        let mut swapped = Vec::new();
        let mut versions = Vec::new();
        for (name, entry) in &after.adapters.entries {
            let Some(new) = entry.active.as_ref() else {
                continue;
            };
            let old = before.adapters.get(name);
            if old.is_some_and(|old| Arc::ptr_eq(old, new)) {
                continue;
            }
            swapped.push(name.clone());
            versions.push(match old {
                Some(old) => format!("{name} {} -> {}", old.info.version, new.info.version),
                None => format!("{name} {} (new)", new.info.version),
            });
        }
        let removed = before
            .adapters
            .entries
            .iter()
            .filter(|(name, entry)| entry.active.is_some() && after.adapters.get(name).is_none())
            .map(|(name, _)| name.clone())
            .collect();
        let rejected = after
            .adapters
            .entries
            .iter()
            .filter_map(|(name, entry)| {
                let f = entry.last_error.as_ref()?;
                Some(RejectedAdapter {
                    adapter: name.clone(),
                    path: f.path.display().to_string(),
                    error: f.error.to_string(),
                })
            })
            .collect();
        ReloadReport {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            trigger: trigger.to_owned(),
            ok: error.is_none(),
            error,
            swapped,
            versions,
            removed,
            rejected,
            providers: after.providers.keys().cloned().collect(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// Settings fixed at start: say so when a reloaded config differs from what is running.
fn warn_restart_only_changes(old: &Config, new: &Config) {
    if old.chatd.bind != new.chatd.bind {
        tracing::warn!(old = %old.chatd.bind, new = %new.chatd.bind, "chatd.bind changed: takes effect after a restart");
    }
    if old.chatd.cors_origins != new.chatd.cors_origins {
        tracing::warn!("chatd.cors_origins changed: takes effect after a restart");
    }
    if old.server_threads() != new.server_threads() {
        tracing::warn!(
            running = old.server_threads(),
            new = new.server_threads(),
            "chatd.threads changed: takes effect after a restart"
        );
    }
    let (a, b) = (&old.chatd.sandbox, &new.chatd.sandbox);
    if (a.memory_mib, a.cpu_ms, a.max_instances) != (b.memory_mib, b.cpu_ms, b.max_instances) {
        tracing::warn!("chatd.sandbox changed: takes effect after a restart");
    }
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
    #[error("{0}")]
    Config(String),
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

/// What a reload re-reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadScope {
    /// Only `adapters_dir` (a file changed there).
    Adapters,
    /// `lakehouse.toml` and `adapters_dir` (SIGHUP, `POST /v1/admin/reload`).
    ConfigAndAdapters,
}

/// The outcome of one reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// Unix seconds when it finished.
    pub at: u64,
    /// What triggered it.
    pub trigger: String,
    /// False when the new config was rejected (the previous one stays).
    pub ok: bool,
    /// Why the config was rejected.
    pub error: Option<String>,
    /// Adapters now serving a different version (`name`).
    pub swapped: Vec<String>,
    /// The same swaps with their versions: `name old -> new`, or `name version (new)`.
    pub versions: Vec<String>,
    /// Adapters no longer loaded (their file was removed).
    pub removed: Vec<String>,
    /// Adapter files that failed validation (the previous version keeps serving).
    pub rejected: Vec<RejectedAdapter>,
    /// Registered providers after the reload.
    pub providers: Vec<String>,
    /// How long the reload took, in milliseconds.
    pub took_ms: f64,
}

/// An adapter file that failed validation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectedAdapter {
    pub adapter: String,
    pub path: String,
    pub error: String,
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
        Snapshot::check_adapters(&config, &adapters).map_err(StartError::Config)?;
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

    /// Ends the chat exchanges still in flight because the shutdown grace period is over:
    /// each answers a `shutting_down` error (a stream ends with one) instead of losing its
    /// connection mid-answer. Exchanges that start later end the same way at once.
    pub fn cut_in_flight(&self) {
        self.cut.send_replace(true);
    }

    /// Starts the bookkeeping of one exchange.
    fn in_flight(
        &self,
        provider: &Arc<Provider>,
        model: &str,
        started: Instant,
        kind: Kind,
    ) -> InFlight {
        InFlight {
            stats: Some(provider.stats.start()),
            provider: provider.clone(),
            model: model.to_owned(),
            started,
            kind,
            cut: self.cut.subscribe(),
        }
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

    /// Re-reads adapters (and the config, for [`ReloadScope::ConfigAndAdapters`]) and swaps
    /// the result in atomically. New components are compiled and validated off the request
    /// path; requests already running keep the snapshot they started with. A config that
    /// fails to parse or validate is rejected whole; an adapter file that fails validation is
    /// rejected alone and its previous version keeps serving.
    pub async fn reload(&self, scope: ReloadScope, trigger: &str) -> ReloadReport {
        let _serial = self.reload_lock.lock().await;
        let started = Instant::now();
        let current = self.snapshot();
        let config = match scope {
            ReloadScope::Adapters => Ok(current.config.clone()),
            ReloadScope::ConfigAndAdapters => Config::load(&self.config_path)
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        };
        let outcome = match config {
            Ok(config) => {
                warn_restart_only_changes(&self.initial, &config);
                let adapters = AdapterSet::load(
                    &self.runtime,
                    config.chatd.adapters_dir.as_deref(),
                    &current.adapters,
                )
                .await;
                match Snapshot::check_new_adapters(&config, Some(&current.config), &adapters) {
                    Ok(()) => Ok(Snapshot::build(config, Arc::new(adapters), &self.stats)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let report = match outcome {
            Ok(next) => {
                let report = ReloadReport::new(trigger, &current, &next, None, started);
                self.adapters_dir
                    .send_replace(next.config.chatd.adapters_dir.clone());
                self.state.store(Arc::new(next));
                report
            }
            Err(error) => ReloadReport::new(trigger, &current, &current, Some(error), started),
        };
        if report.ok {
            tracing::info!(
                trigger,
                swapped = ?report.versions,
                removed = ?report.removed,
                rejected = report.rejected.len(),
                took_ms = format_args!("{:.1}", report.took_ms),
                "reloaded"
            );
        } else {
            tracing::error!(
                trigger,
                error = report.error.as_deref().unwrap_or("-"),
                "reload rejected; previous config stays active"
            );
        }
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        report
    }

    /// The outcome of the most recent reload, if any.
    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Follows `adapters_dir` across config reloads.
    pub fn watch_adapters_dir(&self) -> tokio::sync::watch::Receiver<Option<PathBuf>> {
        self.adapters_dir.subscribe()
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
        let mut exchange = self.in_flight(&provider, &request.model, started, Kind::Request);
        let result = tokio::select! {
            biased;
            result = self.exchange(&provider, &request) => result,
            () = exchange.cut() => Err(exchange.cut_error()),
        };
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

    /// Starts a streamed chat exchange. Errors before the upstream starts streaming are
    /// returned here (and become normal HTTP errors); later ones come from the stream.
    pub async fn chat_stream(&self, mut request: ChatRequest) -> Result<ChatStream, GatewayError> {
        let started = Instant::now();
        let (route, provider) = self.snapshot().route(&request.model)?;
        request.model = route.model.clone();
        request.stream = true;
        let mut exchange = self.in_flight(&provider, &request.model, started, Kind::Stream);
        let opened = tokio::select! {
            biased;
            opened = self.start_stream(&provider, &request) => opened,
            () = exchange.cut() => Err(exchange.cut_error()),
        };
        let (body, pending, kept) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                exchange.finish(false);
                return Err(e);
            }
        };
        let framing = provider.adapter.info.stream_framing;
        let mut stream = ChatStream {
            route,
            framer: Framer::new(framing),
            body_ended: !pending.is_empty(),
            saw_end: !pending.is_empty(),
            pending,
            body,
            // The first events usually arrive with the response head.
            instance: kept,
            idle_since: Instant::now(),
            instance_events: 0,
            exchange,
        };
        // Wait for the first chunk before answering. The client then gets the response head
        // and the first token in one write (one wake-up less on its side), and a failure
        // before any content (an error event first thing) is a normal HTTP error.
        if stream.pending.is_empty() {
            match stream.advance_unless_cut().await {
                Some(Ok(first)) => stream.pending.push_back(first),
                Some(Err(e)) => {
                    // Not answered yet: the handler logs this as the request's error.
                    stream.close(false);
                    return Err(e);
                }
                None => {}
            }
        }
        Ok(stream)
    }

    /// Builds the upstream request and opens the stream: the body still to read, chunks
    /// already known (an answer that came whole), and the instance kept for parsing.
    async fn start_stream(
        &self,
        provider: &Arc<Provider>,
        request: &ChatRequest,
    ) -> Result<(ByteStream, VecDeque<StreamChunk>, Option<AdapterInstance>), GatewayError> {
        if !provider.adapter.info.supports_streaming {
            return Err(GatewayError::Unsupported {
                provider: provider.name.clone(),
                message: format!(
                    "adapter {} does not support streaming",
                    provider.adapter.name
                ),
            });
        }
        let mut builder = instance(provider).await?;
        let http_request = builder
            .build_request(request)
            .await
            .map_err(|e| adapter_failed(provider, e))?
            .map_err(|e| provider.upstream_error(e, None))?;
        let framing = provider.adapter.info.stream_framing;
        let open = self
            .upstream
            .open_stream(&provider.target, http_request, framing);
        let (opened, mut kept) =
            hold_while(builder, Instant::now() + KEEP_INSTANCE_IDLE, open).await;
        let mut parser = async || match kept.take() {
            Some(instance) => Ok(instance),
            None => instance(provider).await,
        };
        let (body, pending): (ByteStream, _) = match opened? {
            Opened::Stream(open) => (Box::pin(open.into_body()), VecDeque::new()),
            Opened::Whole(response) => {
                let retry_after = retry_after(&response);
                let whole = parser()
                    .await?
                    .parse_response(&response)
                    .await
                    .map_err(|e| adapter_failed(provider, e))?
                    .map_err(|e| provider.upstream_error(e, retry_after))?;
                (Box::pin(futures_util::stream::empty()), chunks_of(whole))
            }
            Opened::Refused(error_response) => {
                let retry_after = retry_after(&error_response);
                let parsed = parser()
                    .await?
                    .parse_response(&error_response)
                    .await
                    .map_err(|e| adapter_failed(provider, e))?;
                return Err(match parsed {
                    Err(e) => provider.upstream_error(e, retry_after),
                    // The adapter accepted a non-2xx answer; it is still not a stream.
                    Ok(_) => GatewayError::UpstreamStatus {
                        provider: provider.name.clone(),
                        status: error_response.status,
                        message: "upstream refused the stream".into(),
                    },
                });
            }
        };
        Ok((body, pending, kept))
    }
}

/// A whole answer replayed as a stream: its content (if any), then a terminal chunk with the
/// tool calls, finish reason and token counts.
fn chunks_of(response: ChatResponse) -> VecDeque<StreamChunk> {
    let empty = StreamChunk {
        content: None,
        reasoning: None,
        tool_calls: None,
        model: Some(response.model),
        done_reason: None,
        finish: None,
        input_tokens: None,
        output_tokens: None,
        done: false,
    };
    let mut chunks = VecDeque::with_capacity(2);
    if !response.content.is_empty() || response.reasoning.is_some() {
        chunks.push_back(StreamChunk {
            content: Some(response.content).filter(|c| !c.is_empty()),
            reasoning: response.reasoning,
            ..empty.clone()
        });
    }
    chunks.push_back(StreamChunk {
        tool_calls: response.tool_calls,
        done_reason: response.done_reason,
        finish: response.finish,
        input_tokens: response.input_tokens,
        output_tokens: response.output_tokens,
        done: true,
        ..empty
    });
    chunks
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = hyper::Result<bytes::Bytes>> + Send>>;

/// A streamed answer in progress. Dropping it (the client went away) drops the upstream
/// connection, which cancels the upstream request.
pub struct ChatStream {
    /// How the model name was routed.
    pub route: Route,
    exchange: InFlight,
    /// Parses the stream's events (at first the request's builder). Kept between events only
    /// while they come quickly: once it has been idle for [`KEEP_INSTANCE_IDLE`] it is
    /// dropped, so a stream holds no sandbox slot while the model thinks.
    instance: Option<AdapterInstance>,
    /// When `instance` last finished a call.
    idle_since: Instant,
    /// Events `instance` has parsed.
    instance_events: u32,
    framer: Framer,
    body: ByteStream,
    body_ended: bool,
    /// Chunks ready before any body is read (a whole answer replayed as a stream).
    pending: VecDeque<StreamChunk>,
    /// Whether the upstream signalled the end (a `done` event or a finish reason).
    saw_end: bool,
}

impl ChatStream {
    /// The provider serving this stream.
    pub fn provider(&self) -> &str {
        &self.exchange.provider.name
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.exchange.started.elapsed()
    }

    /// The next chunk; `None` once the stream is complete. After an error, the stream ends.
    pub async fn next(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        if self.exchange.is_finished() {
            return None;
        }
        let item = self.advance_unless_cut().await;
        match &item {
            Some(Ok(chunk)) if chunk.done => self.end(None),
            Some(Ok(_)) => {}
            Some(Err(e)) => self.end(Some(e)),
            None => self.end(None),
        }
        item
    }

    /// Ends a stream that was answered: the handler logged its start, so its end gets a line
    /// of its own (how long it ran, and why it failed if it did).
    fn end(&mut self, error: Option<&GatewayError>) {
        self.close(error.is_none());
        let duration_ms = format_args!("{:.3}", elapsed_ms(self.exchange.started));
        match error {
            None => tracing::info!(
                provider = %self.exchange.provider.name,
                model = %self.route.model,
                duration_ms,
                "stream finished"
            ),
            Some(e) => tracing::warn!(
                provider = %self.exchange.provider.name,
                model = %self.route.model,
                duration_ms,
                code = e.code(),
                error = %e,
                "stream failed"
            ),
        }
    }

    fn close(&mut self, ok: bool) {
        if let Some(instance) = self.instance.take() {
            instance.release();
        }
        self.exchange.finish(ok);
    }

    /// The next chunk, or a `shutting_down` error once the shutdown grace period is over.
    async fn advance_unless_cut(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        let cut = self.exchange.cut();
        tokio::select! {
            biased;
            item = self.advance() => item,
            () = cut => Some(Err(self.exchange.cut_error())),
        }
    }

    async fn advance(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        if let Some(chunk) = self.pending.pop_front() {
            return Some(Ok(chunk));
        }
        let provider = self.exchange.provider.clone();
        loop {
            if let Some(event) = self.framer.next_event() {
                let mut parser = match self.take_instance() {
                    Some(instance) => instance,
                    None => match instance(&provider).await {
                        Ok(instance) => {
                            self.instance_events = 0;
                            instance
                        }
                        Err(e) => return Some(Err(e)),
                    },
                };
                // A failed call drops the instance: a trapped instance is not used again.
                let parsed = match parser.parse_stream_event(&event).await {
                    Ok(parsed) => parsed,
                    Err(e) => return Some(Err(adapter_failed(&provider, e))),
                };
                self.instance_events += 1;
                if parser.may_idle() {
                    self.instance = Some(parser);
                    self.idle_since = Instant::now();
                }
                match parsed {
                    Ok(Some(chunk)) => {
                        self.saw_end |= chunk.done || chunk.finish.is_some();
                        return Some(Ok(chunk));
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        return Some(Err(provider.upstream_error(e, None)));
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
            let read = tokio::time::timeout(timeout, self.body.next());
            // An instance still held here is kept only while the next bytes come quickly.
            let read = match self.instance.take() {
                Some(held) => {
                    let (read, kept) =
                        hold_while(held, self.idle_since + KEEP_INSTANCE_IDLE, read).await;
                    self.instance = kept;
                    read
                }
                None => read.await,
            };
            match read {
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
                        message: crate::upstream::describe(&e),
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

/// How long a request keeps an idle adapter instance for its next call: the builder while the
/// upstream works (so a quick answer is parsed by the same instance), a stream's parser
/// between events.
///
/// An instance costs ~8 µs of CPU to create and drop (the memory reset included) at 64
/// concurrent requests, a tenth of a request's CPU; reusing it for the answer saves one of
/// the two per request, and a fast stream (tokens a few ms apart) parses all its events in
/// one instance instead of one per upstream read. The bound keeps what the
/// one-instance-per-call design gave: a request that waits longer for its model (most LLM
/// calls, most gaps between tokens) holds no sandbox slot and no instance memory while it
/// waits, and gets a fresh instance when the answer comes. All calls on one instance serve
/// the same request, so nothing can leak between requests either way.
pub const KEEP_INSTANCE_IDLE: Duration = Duration::from_millis(10);

/// Events one instance parses before a stream takes a fresh one, so that a guest that leaks
/// a little memory per event cannot reach its memory limit on a long stream.
pub const EVENTS_PER_INSTANCE: u32 = 1000;

impl ChatStream {
    /// The kept parser, unless it has been idle too long (the client was slow to take the
    /// last chunk) or has parsed [`EVENTS_PER_INSTANCE`] events.
    fn take_instance(&mut self) -> Option<AdapterInstance> {
        let instance = self.instance.take()?;
        (self.idle_since.elapsed() <= KEEP_INSTANCE_IDLE
            && self.instance_events < EVENTS_PER_INSTANCE)
            .then_some(instance)
    }
}

/// Awaits `work` while holding `instance` until `deadline` at most; the instance comes back
/// only if `work` finished by then. When slots are scarce (see
/// [`AdapterInstance::may_idle`]) it is dropped at once.
async fn hold_while<T>(
    instance: AdapterInstance,
    deadline: Instant,
    work: impl std::future::Future<Output = T>,
) -> (T, Option<AdapterInstance>) {
    if !instance.may_idle() {
        drop(instance);
        return (work.await, None);
    }
    let mut held = Some(instance);
    let release = tokio::time::sleep_until(deadline.into());
    tokio::pin!(work, release);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return (out, held),
            () = &mut release, if held.is_some() => held = None,
        }
    }
}

/// Milliseconds since `started`, for log lines.
fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// What kind of exchange an [`InFlight`] tracks, for its log lines.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Request,
    Stream,
}

/// One chat exchange from routing to its end: counts it in its provider's stats, tells when
/// the shutdown cuts it ([`Gateway::cut_in_flight`]), and logs it if it is dropped unfinished
/// (its client went away, or chatd exited with it still running): the handler that would
/// have logged it is gone then.
struct InFlight {
    provider: Arc<Provider>,
    model: String,
    started: Instant,
    kind: Kind,
    /// Present until the exchange finishes.
    stats: Option<RequestGuard>,
    cut: watch::Receiver<bool>,
}

impl InFlight {
    /// Records the outcome; returns the exchange's latency.
    fn finish(&mut self, ok: bool) -> Duration {
        let latency = self.started.elapsed();
        if let Some(stats) = self.stats.take() {
            stats.finish(latency, ok);
        }
        latency
    }

    /// How an exchange ended by the shutdown fails.
    fn cut_error(&self) -> GatewayError {
        GatewayError::ShuttingDown {
            provider: self.provider.name.clone(),
        }
    }

    fn is_finished(&self) -> bool {
        self.stats.is_none()
    }

    /// Resolves once the shutdown grace period is over (never if the gateway is gone).
    /// Owns what it needs, so the exchange stays usable while it waits.
    fn cut(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut cut = self.cut.clone();
        async move {
            if cut.wait_for(|cut| *cut).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.is_finished() {
            return;
        }
        let after_ms = format_args!("{:.3}", elapsed_ms(self.started));
        let (provider, model) = (&self.provider.name, &self.model);
        // Cut exchanges answer an error and finish; one still here was cut with its
        // connection as chatd exited.
        match (*self.cut.borrow(), self.kind) {
            (true, Kind::Request) => {
                tracing::warn!(%provider, %model, after_ms, "request cut: chatd exited before it finished");
            }
            (true, Kind::Stream) => {
                tracing::warn!(%provider, %model, after_ms, "stream cut: chatd exited before it finished");
            }
            (false, Kind::Request) => {
                tracing::info!(%provider, %model, after_ms, "request cancelled: the client went away");
            }
            (false, Kind::Stream) => {
                tracing::info!(%provider, %model, after_ms, "stream cancelled: the client went away");
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
