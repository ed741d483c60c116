//! Providers and the immutable snapshot a request runs on.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Config, ProviderConfig};
use crate::error::GatewayError;
use crate::keys::{self, KeySource, Secret};
use crate::routing::{self, Route, RouteTable};
use crate::runtime::Adapter;
use crate::runtime::bindings::{AdapterError, AuthScheme};
use crate::runtime::library::AdapterSet;
use crate::telemetry::{ProviderStats, StatsRegistry};
use crate::upstream::Target;
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
    /// Maps an adapter's typed error, scrubbing this provider's key from upstream text and
    /// cutting it short.
    pub(super) fn upstream_error(
        &self,
        error: AdapterError,
        retry_after: Option<String>,
    ) -> GatewayError {
        let scrub = |m: String| {
            let m = match &self.secret {
                Some(secret) => secret.redact(m),
                None => m,
            };
            cut_short(m)
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
    /// `adapters_dir`), for `chatd check`: a typo there should fail a deploy's check. `serve`
    /// starts anyway, with that provider unregistered and the reason logged.
    pub fn check_adapters(config: &Config, adapters: &AdapterSet) -> Result<(), String> {
        Self::check_new_adapters(config, None, adapters)
    }

    /// Like [`Snapshot::check_adapters`], but only for providers whose adapter differs from
    /// `previous`: on reload, a provider whose adapter file was deleted is unregistered
    /// (deleting a file is how an operator unloads it) instead of blocking every reload.
    pub(super) fn check_new_adapters(
        config: &Config,
        previous: Option<&Config>,
        adapters: &AdapterSet,
    ) -> Result<(), String> {
        for (name, pc) in &config.chatd.providers {
            let unchanged = previous
                .and_then(|p| p.chatd.providers.get(name))
                .is_some_and(|old| old.adapter == pc.adapter);
            if !unchanged && !adapters.entries.contains_key(&pc.adapter) {
                return Err(format!(
                    "config {}: provider {name}: {}",
                    config.path.display(),
                    unknown_adapter(&pc.adapter, config, adapters)
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

/// Longest upstream error text passed on, in bytes: an error page quoted whole (an HTML
/// 502 from a load balancer runs to kilobytes) would swamp the client's error and the log.
const MAX_ERROR_TEXT: usize = 1000;

/// `text`, cut at [`MAX_ERROR_TEXT`] bytes (on a character boundary) with a note of how much
/// was left out.
fn cut_short(mut text: String) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text;
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({left_out} more bytes)"));
    text
}

/// Why `name` names no adapter: where chatd looked, and which adapters there are.
fn unknown_adapter(name: &str, config: &Config, adapters: &AdapterSet) -> String {
    let known: Vec<&str> = adapters.entries.keys().map(String::as_str).collect();
    let dir = match &config.chatd.adapters_dir {
        Some(dir) => format!("adapters_dir {}", dir.display()),
        None => "adapters_dir (none configured)".to_owned(),
    };
    format!(
        "unknown adapter {name:?}: no built-in of that name and no {name}.wasm in {dir} (known: {})",
        known.join(", ")
    )
}

fn register(
    name: &str,
    pc: &ProviderConfig,
    config: &Config,
    adapters: &AdapterSet,
    stats: &StatsRegistry,
) -> Result<Provider, String> {
    let entry = adapters
        .entries
        .get(&pc.adapter)
        .ok_or_else(|| unknown_adapter(&pc.adapter, config, adapters))?;
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
            if headers.contains_key(&header) {
                tracing::warn!(provider = %name, %header, "the static header is replaced by the API key (remove it from headers)");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_upstream_texts_are_cut_on_a_character_boundary() {
        assert_eq!(cut_short("short".into()), "short");
        // Byte MAX_ERROR_TEXT falls inside a two-byte character.
        let long = format!("a{}", "é".repeat(MAX_ERROR_TEXT));
        let cut = cut_short(long.clone());
        assert!(cut.starts_with(&long[..MAX_ERROR_TEXT - 1]), "{cut}");
        assert!(
            cut.ends_with(&format!(
                "é… ({} more bytes)",
                long.len() - (MAX_ERROR_TEXT - 1)
            )),
            "{cut}"
        );
    }
}
