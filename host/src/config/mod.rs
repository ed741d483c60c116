//! `lakehouse.toml`: parsed once into typed structs with defaults, then validated.
//!
//! `lakehouse.toml` is shared by the whole lakehouse; chatd reads `[models]` and `[chatd]` and
//! ignores other top-level sections. Inside `[chatd]` unknown keys are errors, so a typo never
//! silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub mod clients;
pub mod http_rules;

pub use clients::{ClientKey, ClientsConfig, Limits, LimitsConfig};
pub use http_rules::check_base_url;

/// Upper bound of `chatd.threads`: each thread is an event loop with its own upstream
/// connections; more than this is a typo, not a tuning.
const MAX_THREADS: usize = 256;

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The parts of `lakehouse.toml` chatd uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config was read from (relative paths in it are relative to its directory).
    pub path: PathBuf,
    /// Tier name → its model IDs, in the order they are tried (`[models]`: a string is a
    /// one-model tier, a list a fallback chain).
    pub tiers: BTreeMap<String, Vec<String>>,
    /// The `[chatd]` section.
    pub chatd: ChatdConfig,
}

/// The `[chatd]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatdConfig {
    /// Listen address of the HTTP API.
    #[serde(default = "defaults::bind")]
    pub bind: SocketAddr,
    /// Default upstream timeout, per request (streams: per gap between chunks).
    #[serde(default = "defaults::timeout_secs")]
    pub timeout_secs: u64,
    /// Bound on everything before a request's answer starts (non-streamed: the whole
    /// answer; streamed: its first chunk), every retry and fallback included. Unset: the
    /// longest upstream timeout configured, so a request that needs no second attempt is
    /// never cut sooner than its provider's own timeout would cut it.
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
    /// Provider for model names no other rule claims.
    #[serde(default = "defaults::default_provider")]
    pub default_provider: String,
    /// Directory of `<name>.wasm` adapters that add to or override the built-in ones
    /// (default `adapters`, next to the config file; `""` turns drop-ins off).
    #[serde(default = "defaults::adapters_dir")]
    pub adapters_dir: Option<PathBuf>,
    /// Largest accepted request body.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Request body bytes held at once, over all requests (from the first byte read until
    /// the answer starts); a request that would exceed it is answered 503 `overloaded`.
    #[serde(default = "defaults::max_inflight_bytes")]
    pub max_inflight_bytes: usize,
    /// Largest upstream response body read for a non-streamed answer.
    #[serde(default = "defaults::max_upstream_body_bytes")]
    pub max_upstream_body_bytes: usize,
    /// How long `GET /v1/models` reuses a provider's upstream model list.
    #[serde(default = "defaults::models_cache_secs")]
    pub models_cache_secs: u64,
    /// How long a client may take to send a request's head, and then its body; also how
    /// long an idle keep-alive connection stays open.
    #[serde(default = "defaults::client_timeout_secs")]
    pub client_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before they are cut.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Browser origins allowed to call the API (CORS), `["*"]` for any; none by default.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Threads serving client connections, each with its own event loop; one per CPU when
    /// unset.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Limits every adapter runs under.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// The admin endpoints (`/v1/admin/*`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Client keys, the models each may use and its limits (off by default).
    #[serde(default)]
    pub clients: ClientsConfig,
    /// Where limit counters live.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Images given by URL to adapters that take them inline only.
    #[serde(default)]
    pub images: ImagesConfig,
    /// OpenTelemetry traces (off by default).
    #[serde(default)]
    pub otel: OtelConfig,
    /// Provider name → provider.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// Resource bounds for adapter instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Linear memory an adapter instance may grow to.
    #[serde(default = "defaults::memory_mib")]
    pub memory_mib: u32,
    /// Time budget of one adapter call (the time it runs, see `runtime/sandbox.rs`).
    #[serde(default = "defaults::cpu_ms")]
    pub cpu_ms: u64,
    /// Adapter instances alive at once (requests in flight, streams included).
    #[serde(default = "defaults::max_instances")]
    pub max_instances: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            memory_mib: defaults::memory_mib(),
            cpu_ms: defaults::cpu_ms(),
            max_instances: defaults::max_instances(),
        }
    }
}

/// `[chatd.admin]`: the admin endpoints are off unless enabled, and then need a bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Environment variable holding the admin bearer token.
    #[serde(default = "defaults::admin_token_env")]
    pub token_env: String,
    /// `.env` file consulted when the variable is unset.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            token_env: defaults::admin_token_env(),
            token_file: None,
        }
    }
}

/// `[chatd.images]`: whether chatd fetches an image given by URL for an adapter that takes
/// images inline only (Ollama's), and the limits of that fetch. Off by default: fetching
/// makes chatd an HTTP client of whatever URL a client names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Fetch image URLs (else such a request is a 400 saying so).
    #[serde(default)]
    pub fetch_urls: bool,
    /// Largest image fetched, in bytes.
    #[serde(default = "defaults::image_max_bytes")]
    pub max_bytes: usize,
    /// Time one image's fetch may take, redirects included.
    #[serde(default = "defaults::image_timeout_secs")]
    pub timeout_secs: u64,
    /// Networks the address guard lets through, as CIDR ranges or single addresses (an
    /// internal image server on 10.0.0.0/8, say). Without them, loopback, private,
    /// link-local, unique-local, CGNAT, multicast, unspecified and reserved addresses are
    /// refused.
    #[serde(default)]
    pub allow_networks: Vec<String>,
    /// `allow_networks`, parsed once when the config is loaded.
    #[serde(skip)]
    pub allowed: Vec<ipnet::IpNet>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            fetch_urls: false,
            max_bytes: defaults::image_max_bytes(),
            timeout_secs: defaults::image_timeout_secs(),
            allow_networks: Vec::new(),
            allowed: Vec::new(),
        }
    }
}

/// `[chatd.otel]`: traces exported over OTLP/HTTP (protobuf). Read at start only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL.
    #[serde(default = "defaults::otel_endpoint")]
    pub endpoint: Url,
    /// `service.name` of the exported spans.
    #[serde(default = "defaults::otel_service_name")]
    pub service_name: String,
    /// Share of traces started here that are kept (0.0 to 1.0); a request carrying a
    /// `traceparent` follows its caller's sampling decision.
    #[serde(default = "defaults::otel_sample_ratio")]
    pub sample_ratio: f64,
    /// Static headers on every export request (a collector's API key, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: defaults::otel_endpoint(),
            service_name: defaults::otel_service_name(),
            sample_ratio: defaults::otel_sample_ratio(),
            headers: BTreeMap::new(),
        }
    }
}

impl ImagesConfig {
    /// How long one image's fetch may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// One deployment of a provider: `[[chatd.providers.<name>.endpoints]]`, or an entry of
/// `base_urls`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub url: Url,
    /// Share of the load relative to the provider's other endpoints.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// This endpoint's own key (otherwise the provider's `key_env` / `key_file`).
    #[serde(default)]
    pub key_env: Option<String>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl ProviderConfig {
    /// Further attempts after a retryable failure: as configured, or one per endpoint beyond
    /// the first, so that each deployment of a provider gets a try and a lone one (a chain's
    /// next candidate aside) no second request chatd was not asked for.
    pub fn retries(&self) -> u32 {
        self.retries_set.unwrap_or_else(|| {
            u32::try_from(self.endpoints.len().saturating_sub(1)).unwrap_or(u32::MAX)
        })
    }
}

/// `[chatd.providers.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Adapter name: a built-in or `<adapters_dir>/<adapter>.wasm`.
    pub adapter: String,
    /// Upstream base URL; the adapter's default when absent.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// Several deployments, equally weighted (instead of `base_url`).
    #[serde(default)]
    pub base_urls: Vec<Url>,
    /// Several deployments with weights and keys of their own (instead of `base_url`). After
    /// loading, `base_urls` are here too.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Further attempts on this provider after a retryable failure, before the next
    /// candidate of a chain. Default: one per endpoint beyond the first (see
    /// [`ProviderConfig::retries`]).
    #[serde(default, rename = "retries")]
    pub retries_set: Option<u32>,
    /// Base of the exponential backoff between attempts (full jitter: a random wait up to
    /// `retry_backoff_ms * 2^n`).
    #[serde(default = "defaults::retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Longest wait before a retry; an upstream `Retry-After` beyond it skips the retries.
    #[serde(default = "defaults::retry_max_wait_ms")]
    pub retry_max_wait_ms: u64,
    /// Requests sent to this provider at once; unlimited when unset.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// How long a request waits for a `max_concurrency` slot before `provider_busy`.
    #[serde(default = "defaults::queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Consecutive failures that eject an endpoint (0: never).
    #[serde(default = "defaults::eject_after_failures")]
    pub eject_after_failures: u32,
    /// How long an ejected endpoint gets no requests before one probe request.
    #[serde(default = "defaults::eject_cooldown_ms")]
    pub eject_cooldown_ms: u64,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// `.env` file consulted when the variable is unset or empty.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Static headers added to every upstream request (e.g. a User-Agent), as written.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `headers`, parsed and checked once when the config is loaded.
    #[serde(skip)]
    pub header_map: http::HeaderMap,
    /// Overrides `chatd.timeout_secs` for this provider.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// `[chatd.providers.<name>.settings]`: adapter-specific settings, as written. The
    /// adapter validates them (its `configure`); chatd only carries them.
    #[serde(default)]
    pub settings: Option<toml::Table>,
    /// `settings` as a JSON object's text, what the adapter receives; `None` for a provider
    /// without settings (or an empty table), whose adapter is never configured.
    #[serde(skip)]
    pub settings_json: Option<std::sync::Arc<str>>,
}

mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn bind() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 3220))
    }
    pub fn timeout_secs() -> u64 {
        120
    }
    pub fn adapters_dir() -> Option<PathBuf> {
        Some(PathBuf::from("adapters"))
    }
    pub fn default_provider() -> String {
        "ollama".into()
    }
    pub fn max_body_bytes() -> usize {
        4 << 20
    }
    /// 64 bodies of the default maximum size.
    pub fn max_inflight_bytes() -> usize {
        256 << 20
    }
    pub fn max_upstream_body_bytes() -> usize {
        32 << 20
    }
    pub fn models_cache_secs() -> u64 {
        60
    }
    pub fn client_timeout_secs() -> u64 {
        30
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn memory_mib() -> u32 {
        64
    }
    pub fn cpu_ms() -> u64 {
        100
    }
    pub fn max_instances() -> u32 {
        1000
    }
    pub fn image_max_bytes() -> usize {
        8 << 20
    }
    pub fn image_timeout_secs() -> u64 {
        10
    }
    pub fn admin_token_env() -> String {
        "CHATD_ADMIN_TOKEN".into()
    }
    pub fn otel_endpoint() -> url::Url {
        url::Url::parse("http://127.0.0.1:4318/v1/traces").expect("a valid URL")
    }
    pub fn otel_service_name() -> String {
        "chatd".into()
    }
    pub fn otel_sample_ratio() -> f64 {
        1.0
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn retry_backoff_ms() -> u64 {
        100
    }
    pub fn retry_max_wait_ms() -> u64 {
        5_000
    }
    pub fn queue_timeout_ms() -> u64 {
        1_000
    }
    pub fn eject_after_failures() -> u32 {
        3
    }
    pub fn eject_cooldown_ms() -> u64 {
        10_000
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    models: BTreeMap<String, toml::Value>,
    chatd: Option<ChatdConfig>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` anchors relative paths and names errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut tiers = BTreeMap::new();
        for (name, value) in raw.models {
            if let Some(chain) = tier_chain(&name, value).map_err(&invalid)? {
                tiers.insert(name, chain);
            }
        }
        let chatd = raw
            .chatd
            .ok_or_else(|| invalid("missing [chatd] section".into()))?;
        let mut config = Config {
            path: path.to_owned(),
            tiers,
            chatd,
        };
        config.resolve_paths();
        config.validate().map_err(&invalid)?;
        config.prepare().map_err(invalid)?;
        // The keys file is read here, so keys reload with the config; its errors name it.
        config
            .chatd
            .clients
            .load(path)
            .map_err(|e| ConfigError::Invalid {
                path: e.path,
                message: e.message,
            })?;
        Ok(config)
    }

    /// The directory relative paths in the config are anchored at.
    pub fn directory(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn resolve_paths(&mut self) {
        let base = self.directory().to_owned();
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if self
            .chatd
            .adapters_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            self.chatd.adapters_dir = None;
        }
        if let Some(dir) = self.chatd.adapters_dir.as_mut() {
            anchor(dir);
        }
        if let Some(file) = self.chatd.admin.token_file.as_mut() {
            anchor(file);
        }
        self.chatd.clients.resolve_paths(&base);
        for provider in self.chatd.providers.values_mut() {
            if let Some(file) = provider.key_file.as_mut() {
                anchor(file);
            }
            for endpoint in &mut provider.endpoints {
                if let Some(file) = endpoint.key_file.as_mut() {
                    anchor(file);
                }
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let c = &self.chatd;
        if c.timeout_secs == 0 {
            return Err("chatd.timeout_secs must be at least 1".into());
        }
        if let Some(secs) = c.request_timeout_secs
            && !(1..=86_400).contains(&secs)
        {
            return Err("chatd.request_timeout_secs must be between 1 and 86400".into());
        }
        check_otel(&c.otel)?;
        // Bounded above too: hyper adds it to `Instant::now()`, which must not overflow.
        if !(1..=86_400).contains(&c.client_timeout_secs) {
            return Err("chatd.client_timeout_secs must be between 1 and 86400".into());
        }
        check_cors_origins(&c.cors_origins)?;
        if let Some(threads) = c.threads
            && !(1..=MAX_THREADS).contains(&threads)
        {
            return Err(format!(
                "chatd.threads must be between 1 and {MAX_THREADS} (leave it out for one per CPU)"
            ));
        }
        if c.max_body_bytes < 1024 {
            return Err("chatd.max_body_bytes must be at least 1024".into());
        }
        if c.max_inflight_bytes < c.max_body_bytes {
            return Err(format!(
                "chatd.max_inflight_bytes ({}) must be at least chatd.max_body_bytes ({}): a \
                 body of the largest size would never be taken",
                c.max_inflight_bytes, c.max_body_bytes
            ));
        }
        if c.max_upstream_body_bytes < 1024 {
            return Err("chatd.max_upstream_body_bytes must be at least 1024".into());
        }
        if c.sandbox.memory_mib == 0 || c.sandbox.memory_mib > 4096 {
            return Err("chatd.sandbox.memory_mib must be between 1 and 4096".into());
        }
        if c.sandbox.cpu_ms == 0 {
            return Err("chatd.sandbox.cpu_ms must be at least 1".into());
        }
        if c.sandbox.max_instances == 0 {
            return Err("chatd.sandbox.max_instances must be at least 1".into());
        }
        if c.images.max_bytes < 1024 {
            return Err("chatd.images.max_bytes must be at least 1024".into());
        }
        if !(1..=600).contains(&c.images.timeout_secs) {
            return Err("chatd.images.timeout_secs must be between 1 and 600".into());
        }
        if c.providers.is_empty() {
            return Err("no providers configured: add a [chatd.providers.<name>] table".into());
        }
        if !c.providers.contains_key(&c.default_provider) {
            return Err(format!(
                "chatd.default_provider = {:?} is not a configured provider (configured: {})",
                c.default_provider,
                self.provider_names()
            ));
        }
        for (name, p) in &c.providers {
            validate_provider(name, p)?;
        }
        c.limits.validate()?;
        Ok(())
    }

    /// Parses what validation proved parseable, once, so no later stage parses it again.
    fn prepare(&mut self) -> Result<(), String> {
        let images = &mut self.chatd.images;
        images.allowed = images
            .allow_networks
            .iter()
            .map(|net| network(net))
            .collect::<Result<_, _>>()?;
        for (name, p) in &mut self.chatd.providers {
            p.header_map = http_rules::static_headers(&p.headers)
                .map_err(|e| format!("provider {name}: {e}"))?;
            let listed = std::mem::take(&mut p.base_urls);
            p.endpoints
                .extend(listed.into_iter().map(|url| EndpointConfig {
                    url,
                    weight: defaults::weight(),
                    key_env: None,
                    key_file: None,
                }));
            p.settings_json = p
                .settings
                .as_ref()
                .filter(|table| !table.is_empty())
                .map(|table| table_json(table).to_string().into());
        }
        http_rules::static_headers(&self.chatd.otel.headers)
            .map_err(|e| format!("chatd.otel: {e}"))?;
        Ok(())
    }

    fn provider_names(&self) -> String {
        let names: Vec<&str> = self.chatd.providers.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// The providers configured with `adapter`, in name order.
    pub fn providers_using(&self, adapter: &str) -> Vec<&str> {
        self.chatd
            .providers
            .iter()
            .filter(|(_, p)| p.adapter == adapter)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// How many threads serve client connections (see `threads`).
    pub fn server_threads(&self) -> usize {
        self.chatd.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
        })
    }

    /// How long a client may take to send a request head or body (see `client_timeout_secs`).
    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.chatd.client_timeout_secs)
    }

    /// How long a shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.chatd.shutdown_grace_secs)
    }

    /// The upstream timeout for a provider.
    pub fn timeout_for(&self, provider: &ProviderConfig) -> Duration {
        Duration::from_secs(provider.timeout_secs.unwrap_or(self.chatd.timeout_secs))
    }

    /// The bound on a request's attempts until its answer starts (see
    /// `request_timeout_secs`).
    pub fn request_timeout(&self) -> Duration {
        let secs = self.chatd.request_timeout_secs.unwrap_or_else(|| {
            let providers = self.chatd.providers.values().filter_map(|p| p.timeout_secs);
            providers.fold(self.chatd.timeout_secs, u64::max)
        });
        Duration::from_secs(secs)
    }
}

/// A `[models]` entry as a tier: a string is a one-model tier, a list of strings a fallback
/// chain. `[models]` is shared with other lakehouse services, which may keep other values
/// there: those are not tiers.
fn tier_chain(name: &str, value: toml::Value) -> Result<Option<Vec<String>>, String> {
    let chain = match value {
        toml::Value::String(target) => vec![target],
        toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
            .into_iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => return Ok(None),
    };
    if chain.is_empty() {
        return Err(format!("[models] {name} is an empty list of model ids"));
    }
    for (i, target) in chain.iter().enumerate() {
        if target.trim().is_empty() {
            return Err(if chain.len() == 1 {
                format!("[models] {name} maps to an empty model id")
            } else {
                format!("[models] {name}[{i}] is an empty model id")
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = chain.iter().find(|t| !seen.insert(t.trim())) {
        return Err(format!(
            "[models] {name} lists {dup:?} twice (a chain tries each model once; raise the \
             provider's retries to try it again)"
        ));
    }
    Ok(Some(chain))
}

fn check_otel(otel: &OtelConfig) -> Result<(), String> {
    if !matches!(otel.endpoint.scheme(), "http" | "https") {
        return Err(format!(
            "chatd.otel.endpoint {}: scheme must be http or https",
            otel.endpoint
        ));
    }
    if !(0.0..=1.0).contains(&otel.sample_ratio) {
        return Err("chatd.otel.sample_ratio must be between 0.0 and 1.0".into());
    }
    if otel.service_name.trim().is_empty() {
        return Err("chatd.otel.service_name must not be empty".into());
    }
    Ok(())
}

/// One `allow_networks` entry: a CIDR range, or a single address.
fn network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!(
                "chatd.images.allow_networks: {text:?} is not a network (want a CIDR range such \
                 as \"10.0.0.0/8\", or an address)"
            )
        })
}

/// A TOML table as the JSON object an adapter's `configure` reads. TOML's dates and times,
/// which JSON lacks, become their RFC 3339 text.
fn table_json(table: &toml::Table) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .iter()
            .map(|(k, v)| (k.clone(), toml_json(v)))
            .collect(),
    )
}

fn toml_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(i) => Json::from(*i),
        // A float JSON cannot hold (nan, inf) becomes null: the adapter refuses it by name.
        toml::Value::Float(f) => Json::from(*f),
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(toml_json).collect()),
        toml::Value::Table(table) => table_json(table),
    }
}

/// Each CORS origin is `*` alone, or `scheme://host[:port]` as a browser sends it in `Origin`.
fn check_cors_origins(origins: &[String]) -> Result<(), String> {
    if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            return Err(
                "chatd.cors_origins: \"*\" allows every origin; list no others with it".into(),
            );
        }
        return Ok(());
    }
    for origin in origins {
        let url = url::Url::parse(origin)
            .map_err(|e| format!("chatd.cors_origins: {origin:?} is not an origin: {e}"))?;
        let bare = url.origin().ascii_serialization();
        if !matches!(url.scheme(), "http" | "https") || bare != origin.trim_end_matches('/') {
            return Err(format!(
                "chatd.cors_origins: {origin:?} is not an origin (want scheme://host[:port], e.g. {bare:?})"
            ));
        }
    }
    Ok(())
}

fn validate_provider(name: &str, p: &ProviderConfig) -> Result<(), String> {
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' || ch == '.');
    if !valid_name {
        return Err(format!(
            "provider name {name:?} must be non-empty and use only letters, digits, '_', '-' or '.' \
             (it is the routing prefix before '/')"
        ));
    }
    if p.adapter.trim().is_empty() {
        return Err(format!("provider {name}: adapter must not be empty"));
    }
    if let Some(url) = &p.base_url {
        check_base_url(url).map_err(|e| format!("provider {name}: base_url {url}: {e}"))?;
    }
    if let Some(var) = &p.key_env
        && (var.is_empty() || var.contains('='))
    {
        return Err(format!(
            "provider {name}: key_env {var:?} is not a variable name"
        ));
    }
    if p.key_file.is_some() && p.key_env.is_none() {
        return Err(format!(
            "provider {name}: key_file needs key_env (the variable to read from the file)"
        ));
    }
    if p.timeout_secs == Some(0) {
        return Err(format!("provider {name}: timeout_secs must be at least 1"));
    }
    validate_endpoints(name, p)?;
    let bounded: [(&str, u64, u64, u64); 5] = [
        ("retries", p.retries_set.unwrap_or(0).into(), 0, 10),
        ("retry_backoff_ms", p.retry_backoff_ms, 0, 60_000),
        ("retry_max_wait_ms", p.retry_max_wait_ms, 0, 600_000),
        ("queue_timeout_ms", p.queue_timeout_ms, 0, 600_000),
        ("eject_cooldown_ms", p.eject_cooldown_ms, 1, 3_600_000),
    ];
    for (key, value, min, max) in bounded {
        if !(min..=max).contains(&value) {
            return Err(format!(
                "provider {name}: {key} must be between {min} and {max}, not {value}"
            ));
        }
    }
    if p.max_concurrency == Some(0) {
        return Err(format!(
            "provider {name}: max_concurrency must be at least 1 (leave it out for no limit)"
        ));
    }
    if p.eject_after_failures > 1000 {
        return Err(format!(
            "provider {name}: eject_after_failures must be at most 1000 (0: never eject)"
        ));
    }
    Ok(())
}

/// `base_url`, `base_urls` and `endpoints` are three ways to say where a provider is: one of
/// them at most, each URL a valid base URL named once.
fn validate_endpoints(name: &str, p: &ProviderConfig) -> Result<(), String> {
    let given: Vec<&str> = [
        ("base_url", p.base_url.is_some()),
        ("base_urls", !p.base_urls.is_empty()),
        ("endpoints", !p.endpoints.is_empty()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if given.len() > 1 {
        return Err(format!(
            "provider {name}: {} are exclusive: give one of them",
            given.join(" and ")
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, url) in p.base_urls.iter().enumerate() {
        check_base_url(url).map_err(|e| format!("provider {name}: base_urls[{i}] {url}: {e}"))?;
        if !seen.insert(url.as_str().trim_end_matches('/')) {
            return Err(format!("provider {name}: base_urls lists {url} twice"));
        }
    }
    for (i, e) in p.endpoints.iter().enumerate() {
        let at = format!("provider {name}: endpoints[{i}]");
        check_base_url(&e.url).map_err(|m| format!("{at}.url {}: {m}", e.url))?;
        if !seen.insert(e.url.as_str().trim_end_matches('/')) {
            return Err(format!("provider {name}: endpoints name {} twice", e.url));
        }
        if !(1..=1000).contains(&e.weight) {
            return Err(format!(
                "{at}.weight must be between 1 and 1000, not {}",
                e.weight
            ));
        }
        if let Some(var) = &e.key_env
            && (var.is_empty() || var.contains('='))
        {
            return Err(format!("{at}.key_env {var:?} is not a variable name"));
        }
        if e.key_file.is_some() && e.key_env.is_none() {
            return Err(format!(
                "{at}.key_file needs key_env (the variable to read from the file)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/lakehouse/lakehouse.toml"))
    }

    const MINIMAL: &str = r#"
        [chatd]
        [chatd.providers.ollama]
        adapter = "ollama"
    "#;

    #[test]
    fn defaults_apply() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.chatd.bind.to_string(), "127.0.0.1:3220");
        assert_eq!(c.chatd.timeout_secs, 120);
        assert_eq!(c.chatd.default_provider, "ollama");
        assert_eq!(c.chatd.sandbox.memory_mib, 64);
        assert!(!c.chatd.admin.enabled);
        assert!(c.chatd.providers["ollama"].base_url.is_none());
        assert_eq!(
            c.chatd.adapters_dir.as_deref(),
            Some(Path::new("/etc/lakehouse/adapters"))
        );
        let off = parse(&MINIMAL.replace("[chatd]", "[chatd]\nadapters_dir = \"\"")).unwrap();
        assert!(off.chatd.adapters_dir.is_none());
    }

    #[test]
    fn the_repository_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lakehouse.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.tiers["judge"], ["kimi-k2.6:cloud"]);
        assert_eq!(
            c.chatd.providers["kimi"]
                .base_url
                .as_ref()
                .unwrap()
                .as_str(),
            "https://api.kimi.com/coding/v1"
        );
    }

    #[test]
    fn image_fetching_is_off_by_default_and_its_networks_are_parsed() {
        let c = parse(MINIMAL).unwrap();
        assert!(!c.chatd.images.fetch_urls);
        assert_eq!(c.chatd.images.max_bytes, 8 << 20);
        assert_eq!(c.chatd.images.timeout(), Duration::from_secs(10));
        let c = parse(&format!(
            "{MINIMAL}\n[chatd.images]\nfetch_urls = true\nallow_networks = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n"
        ))
        .unwrap();
        let allowed: Vec<String> = c
            .chatd
            .images
            .allowed
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(allowed, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        assert!(
            err(&format!(
                "{MINIMAL}\n[chatd.images]\nallow_networks = [\"intranet\"]\n"
            ))
            .contains("chatd.images.allow_networks: \"intranet\" is not a network")
        );
        assert!(
            err(&format!("{MINIMAL}\n[chatd.images]\nmax_bytes = 10\n"))
                .contains("chatd.images.max_bytes")
        );
        assert!(err(&format!("{MINIMAL}\n[chatd.images]\nfetch = true\n")).contains("fetch"));
    }

    #[test]
    fn provider_settings_become_a_json_object() {
        let c = parse(
            r#"
            [chatd]
            [chatd.providers.ollama]
            adapter = "ollama"
            [chatd.providers.cloud]
            adapter = "ollama_cloud"
            [chatd.providers.cloud.settings]
            endpoint = "chat"
            retries = 3
            ratio = 0.5
            flags = [true, false]
            since = 2026-01-02
            nested = { a = "b" }
            [chatd.providers.empty]
            adapter = "ollama"
            settings = {}
            "#,
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(c.chatd.providers["cloud"].settings_json.as_deref().unwrap())
                .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"endpoint": "chat", "retries": 3, "ratio": 0.5,
                "flags": [true, false], "since": "2026-01-02", "nested": {"a": "b"}})
        );
        assert!(c.chatd.providers["ollama"].settings_json.is_none());
        assert!(c.chatd.providers["empty"].settings_json.is_none());
        assert!(
            err("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\nsettings = 3\n")
                .contains("settings")
        );
    }

    #[test]
    fn relative_paths_are_anchored_at_the_config_directory() {
        let c = parse(
            r#"
            [chatd]
            adapters_dir = "adapters"
            [chatd.providers.ollama]
            adapter = "ollama"
            key_env = "K"
            key_file = "keys/k.env"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.chatd.adapters_dir.unwrap(),
            Path::new("/etc/lakehouse/adapters")
        );
        assert_eq!(
            c.chatd.providers["ollama"].key_file.as_deref().unwrap(),
            Path::new("/etc/lakehouse/keys/k.env")
        );
    }

    #[test]
    fn other_lakehouse_sections_are_ignored_and_non_string_tiers_skipped() {
        let c = parse(&format!(
            "[gateway]\nchatd_url = \"http://x\"\n[models]\nfast = \"ollama/q\"\nbudget = 3\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.tiers.len(), 1);
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_are_specific() {
        assert!(err("[chatd]\ntimout_secs = 3\n").contains("unknown field `timout_secs`"));
        assert!(err("[models]\n").contains("missing [chatd]"));
        assert!(err("[chatd]\n").contains("no providers configured"));
        assert!(
            err("[chatd]\ndefault_provider = \"x\"\n[chatd.providers.ollama]\nadapter = \"ollama\"\n")
                .contains("default_provider = \"x\" is not a configured provider (configured: ollama)")
        );
        assert!(
            err(
                "[chatd.providers.ollama]\nadapter = \"ollama\"\nbase_url = \"ftp://h\"\n[chatd]\n"
            )
            .contains("scheme must be http or https")
        );
        assert!(
            err("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\nbase_url = \"not a url\"\n")
                .contains("base_url")
        );
        assert!(
            err("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\n[chatd.providers.ollama]\nadapter = \"x\"\n")
                .contains("duplicate")
        );
        assert!(
            err("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\n[chatd.providers.\"a/b\"]\nadapter = \"ollama\"\n")
                .contains("provider name \"a/b\"")
        );
        assert!(
            err("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\nkey_file = \"/x\"\n")
                .contains("key_file needs key_env")
        );
        assert!(
            err("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\nheaders = { \"bad header\" = \"v\" }\n")
                .contains("not a valid header name")
        );
        assert!(
            err("[chatd]\nmax_upstream_body_bytes = 0\n[chatd.providers.ollama]\nadapter = \"ollama\"\n")
                .contains("max_upstream_body_bytes must be at least 1024")
        );
        assert!(
            err("[chatd]\nmax_body_bytes = 2048\nmax_inflight_bytes = 2047\n[chatd.providers.ollama]\nadapter = \"ollama\"\n")
                .contains("chatd.max_inflight_bytes (2047) must be at least chatd.max_body_bytes (2048)")
        );
        for framing in ["Content-Length", "transfer-encoding", "Host", "Connection"] {
            assert!(
                err(&format!("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\nheaders = {{ \"{framing}\" = \"5\" }}\n"))
                    .contains(&format!("header {framing} cannot be set in headers")),
                "{framing}"
            );
        }
        assert!(
            err("[chatd]\ntimeout_secs = 0\n[chatd.providers.ollama]\nadapter = \"ollama\"\n")
                .contains("timeout_secs must be at least 1")
        );
        assert!(err("[chatd]\nbind = \"nope\"\n").contains("bind"));
        const PROVIDER: &str = "[chatd.providers.ollama]\nadapter = \"ollama\"\n";
        for (origins, wanted) in [
            (r#"["*", "https://a.example"]"#, "list no others"),
            (r#"["https://a.example/app"]"#, "not an origin"),
            (r#"["ftp://a.example"]"#, "not an origin"),
            (r#"["a.example"]"#, "not an origin"),
            (r#"["https://A.example"]"#, "https://a.example"),
        ] {
            let e = err(&format!("[chatd]\ncors_origins = {origins}\n{PROVIDER}"));
            assert!(
                e.contains("cors_origins") && e.contains(wanted),
                "{origins}: {e}"
            );
        }
        for origins in [
            r#"["*"]"#,
            r#"["https://a.example/", "http://localhost:5173"]"#,
        ] {
            let text = format!("[chatd]\ncors_origins = {origins}\n{PROVIDER}");
            assert!(parse(&text).is_ok(), "{origins}");
        }
        for bad in ["0", "86401"] {
            assert!(
                err(&format!("[chatd]\nclient_timeout_secs = {bad}\n"))
                    .contains("client_timeout_secs must be between 1 and 86400"),
                "{bad}"
            );
        }
        for bad in ["0", "257"] {
            assert!(
                err(&format!("[chatd]\nthreads = {bad}\n{PROVIDER}"))
                    .contains("chatd.threads must be between 1 and 256"),
                "{bad}"
            );
        }
        assert!(err("[chatd]\nthreads = -1\n").contains("threads"));
        let two = parse(&format!("[chatd]\nthreads = 2\n{PROVIDER}")).unwrap();
        assert_eq!(two.server_threads(), 2);
        let auto = parse(&format!("[chatd]\n{PROVIDER}")).unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(auto.server_threads(), cpus.min(MAX_THREADS));
    }
    #[test]
    fn tiers_are_strings_or_chains() {
        let c = parse(&format!(
            "[models]\nfast = \"ollama/q\"\ncoder = [\"ollama/a\", \"b:cloud\"]\nother = [1, 2]\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.tiers["fast"], ["ollama/q"]);
        assert_eq!(c.tiers["coder"], ["ollama/a", "b:cloud"]);
        assert!(
            !c.tiers.contains_key("other"),
            "a list of numbers is not a tier"
        );
        for (tier, wanted) in [
            ("[]", "empty list"),
            ("[\"a\", \" \"]", "coder[1] is an empty model id"),
            ("[\"a\", \"a\"]", "lists \"a\" twice"),
        ] {
            let e = err(&format!("[models]\ncoder = {tier}\n{MINIMAL}"));
            assert!(
                e.contains(wanted) && e.contains("lakehouse.toml"),
                "{tier}: {e}"
            );
        }
    }

    #[test]
    fn endpoints_retries_and_limits_have_defaults_and_bounds() {
        let c = parse(MINIMAL).unwrap();
        let p = &c.chatd.providers["ollama"];
        assert_eq!(
            (p.retries(), p.retry_backoff_ms, p.retry_max_wait_ms),
            (0, 100, 5000)
        );
        assert_eq!((p.max_concurrency, p.queue_timeout_ms), (None, 1000));
        assert_eq!((p.eject_after_failures, p.eject_cooldown_ms), (3, 10_000));
        assert!(p.endpoints.is_empty());
        assert_eq!(c.request_timeout(), Duration::from_secs(120));
        assert!(!c.chatd.otel.enabled);

        let c = parse(
            "[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\ntimeout_secs = 300\n\
             base_urls = [\"http://a:1\", \"http://b:1\"]\n",
        )
        .unwrap();
        let urls: Vec<_> = c.chatd.providers["ollama"]
            .endpoints
            .iter()
            .map(|e| (e.url.as_str(), e.weight))
            .collect();
        assert_eq!(urls, [("http://a:1/", 1), ("http://b:1/", 1)]);
        assert_eq!(
            c.chatd.providers["ollama"].retries(),
            1,
            "one per further endpoint"
        );
        assert_eq!(c.request_timeout(), Duration::from_secs(300));

        let c = parse(
            "[chatd]\nrequest_timeout_secs = 30\n[chatd.providers.ollama]\nadapter = \"ollama\"\n\
             [[chatd.providers.ollama.endpoints]]\nurl = \"http://a:1\"\nweight = 3\nkey_env = \"K\"\n\
             key_file = \"k.env\"\n[[chatd.providers.ollama.endpoints]]\nurl = \"http://b:1\"\n",
        )
        .unwrap();
        let e = &c.chatd.providers["ollama"].endpoints;
        assert_eq!((e[0].weight, e[1].weight), (3, 1));
        assert_eq!(
            e[0].key_file.as_deref(),
            Some(Path::new("/etc/lakehouse/k.env"))
        );
        assert_eq!(c.request_timeout(), Duration::from_secs(30));

        const P: &str = "[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\n";
        const EP: &str = "[[chatd.providers.ollama.endpoints]]\nurl = \"http://a:1\"\n";
        for (extra, wanted) in [
            (
                "base_url = \"http://a:1\"\nbase_urls = [\"http://b:1\"]\n",
                "base_url and base_urls are exclusive",
            ),
            ("base_urls = [\"http://a:1\", \"http://a:1/\"]\n", "twice"),
            ("base_urls = [\"ftp://a\"]\n", "base_urls[0] ftp://a"),
            ("retries = 11\n", "retries must be between 0 and 10, not 11"),
            (
                "max_concurrency = 0\n",
                "max_concurrency must be at least 1",
            ),
            (
                "eject_cooldown_ms = 0\n",
                "eject_cooldown_ms must be between 1",
            ),
            ("retry_max_wait_ms = 700000\n", "retry_max_wait_ms"),
            (
                &format!("{EP}weight = 0\n"),
                "endpoints[0].weight must be between 1 and 1000",
            ),
            (
                &format!("{EP}key_file = \"x\"\n"),
                "endpoints[0].key_file needs key_env",
            ),
            (&format!("{EP}colour = 1\n"), "unknown field `colour`"),
        ] {
            let e = err(&format!("{P}{extra}"));
            assert!(
                e.contains(wanted) && e.contains("lakehouse.toml"),
                "{extra}: {e}"
            );
        }
        for (otel, wanted) in [
            ("sample_ratio = 2.0", "sample_ratio must be between"),
            ("endpoint = \"ftp://c\"", "scheme must be http or https"),
            ("headers = { \"bad h\" = \"v\" }", "chatd.otel"),
        ] {
            let e = err(&format!("[chatd.otel]\n{otel}\n{P}"));
            assert!(e.contains(wanted), "{otel}: {e}");
        }
        assert!(
            err("[chatd]\nrequest_timeout_secs = 0\n[chatd.providers.ollama]\nadapter = \"ollama\"\n")
                .contains("request_timeout_secs must be between 1 and 86400")
        );
    }
}
