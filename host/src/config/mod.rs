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

pub mod http_rules;

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
    /// Tier name → model ID (`[models]`).
    pub tiers: BTreeMap<String, String>,
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
    /// Wall-clock budget of one adapter call.
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

/// `[chatd.providers.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Adapter name: a built-in or `<adapters_dir>/<adapter>.wasm`.
    pub adapter: String,
    /// Upstream base URL; the adapter's default when absent.
    #[serde(default)]
    pub base_url: Option<Url>,
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
    pub fn admin_token_env() -> String {
        "CHATD_ADMIN_TOKEN".into()
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
            // `[models]` is shared with other lakehouse services, which may keep non-string
            // entries there; only string entries are routable tiers.
            if let toml::Value::String(target) = value {
                if target.trim().is_empty() {
                    return Err(invalid(format!(
                        "[models] {name} maps to an empty model id"
                    )));
                }
                tiers.insert(name, target);
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
        for provider in self.chatd.providers.values_mut() {
            if let Some(file) = provider.key_file.as_mut() {
                anchor(file);
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let c = &self.chatd;
        if c.timeout_secs == 0 {
            return Err("chatd.timeout_secs must be at least 1".into());
        }
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
        Ok(())
    }

    /// Parses what validation proved parseable, once, so no later stage parses it again.
    fn prepare(&mut self) -> Result<(), String> {
        for (name, p) in &mut self.chatd.providers {
            p.header_map = http_rules::static_headers(&p.headers)
                .map_err(|e| format!("provider {name}: {e}"))?;
            p.settings_json = p
                .settings
                .as_ref()
                .filter(|table| !table.is_empty())
                .map(|table| table_json(table).to_string().into());
        }
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
        assert_eq!(c.tiers["judge"], "kimi-k2.6:cloud");
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
}
