//! A registered provider: its adapter, its upstream target with the key in place, and the one
//! place where what its adapter built and what its upstream answered become chatd's
//! requests and errors (checked, and scrubbed of every key chatd holds).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;

use super::admission::{Admission, Slot};
use super::endpoints::{self, Endpoint, HealthPolicy, Lasting, Picked};
use super::failover::RetryPolicy;
use crate::config::{Config, ImagesConfig, ProviderConfig, http_rules};
use crate::contract::{AdapterError, AuthScheme, Capability, HttpRequest, HttpResponse};
use crate::error::{AdapterFailure, GatewayError};
use crate::keys::{Credentials, KeySource, Lookup};
use crate::runtime::library::AdapterSet;
use crate::runtime::{Adapter, AdapterInstance, CallError};
use crate::scrub::{Scrubbed, Scrubber};
use crate::telemetry::{ProviderStats, StatsRegistry};
use crate::upstream::{Target, UpstreamError};

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
    /// Prepared upstream target (URL, timeout, headers incl. auth) of its first endpoint:
    /// where its model list comes from, and the timeout of every endpoint.
    pub target: Target,
    /// Its deployments (at least one), balanced and health-checked per attempt.
    pub endpoints: Vec<Endpoint>,
    /// Retries after a retryable failure.
    pub retry: RetryPolicy,
    /// When an endpoint is ejected.
    pub health: HealthPolicy,
    /// Its concurrency limit.
    pub admission: Admission,
    /// Its `settings` as JSON, handed to every instance of its adapter first thing.
    settings: Option<Arc<str>>,
    /// Whether and how images by URL are fetched for its adapter (`[chatd.images]`).
    pub(super) images: ImagesConfig,
    /// Scrubs every key chatd holds (not only this provider's) from what reaches clients.
    scrubber: Scrubber,
}

impl Provider {
    /// A fresh instance of this provider's adapter, configured with its settings.
    pub(super) async fn instance(&self) -> Result<AdapterInstance, GatewayError> {
        let mut instance = self
            .adapter
            .instance()
            .await
            .map_err(|e| self.call_failed(e))?;
        if let Some(settings) = &self.settings {
            // Accepted when the provider registered; an adapter that now refuses them is
            // not behaving as a pure function of its input.
            instance
                .configure(settings)
                .await
                .map_err(|e| self.call_failed(e))?
                .map_err(|refused| {
                    self.call_failed(CallError::BadOutput(format!(
                        "configure refused the settings it accepted at registration: {refused}"
                    )))
                })?;
        }
        Ok(instance)
    }

    /// Whether the provider's adapter declares `capability`.
    pub fn can(&self, capability: Capability) -> bool {
        self.adapter.capabilities.contains(capability)
    }

    /// The endpoint for an attempt (see [`endpoints::pick`]); an error when every endpoint
    /// is ejected, unless `last_resort` (nothing else can take the request).
    pub(super) fn pick(&self, tried: &[usize], last_resort: bool) -> Result<Picked, GatewayError> {
        endpoints::pick(&self.endpoints, tried, last_resort).map_err(|all| {
            GatewayError::ProviderUnavailable {
                provider: self.name.clone(),
                retry_after: all.retry_in.as_secs().max(1).to_string(),
            }
        })
    }

    /// A concurrency slot, waiting up to the queue timeout.
    pub(super) async fn admit(&self) -> Result<Slot, GatewayError> {
        self.admission.enter().await.map_err(|busy| {
            self.stats.refused_busy();
            GatewayError::ProviderBusy {
                provider: self.name.clone(),
                limit: busy.limit,
                waited: busy.waited,
            }
        })
    }

    /// The HTTP request the adapter built, for the first endpoint (see [`Provider::request_to`]).
    pub(super) fn request(&self, built: HttpRequest) -> Result<Request<Full<Bytes>>, GatewayError> {
        self.request_to(&self.target, built)
    }

    /// The HTTP request the adapter built, checked: a valid method, a path under the base
    /// URL of `target`, valid headers (those the host owns dropped, the operator's and the
    /// key's added).
    pub(super) fn request_to(
        &self,
        target: &Target,
        built: HttpRequest,
    ) -> Result<Request<Full<Bytes>>, GatewayError> {
        let bad = |message: String| self.call_failed(CallError::BadOutput(message));
        let method = Method::from_bytes(built.method.as_bytes())
            .map_err(|_| bad(format!("invalid HTTP method {:?}", built.method)))?;
        if !built.path.starts_with('/') || built.path.contains(['\r', '\n', '#']) {
            return Err(bad(format!(
                "request path {:?} must start with '/' and hold no CR, LF or '#'",
                built.path
            )));
        }
        let uri = target
            .uri_for(&built.path)
            .map_err(|e| bad(format!("request path {:?}: {e}", built.path)))?;
        let headers = target.request_headers(built.headers).map_err(bad)?;
        let mut request = Request::new(Full::new(Bytes::from(built.body)));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Upstream-derived text, made safe to show.
    fn scrub(&self, text: impl AsRef<str>) -> Scrubbed {
        self.scrubber.scrub(text)
    }

    /// A failed adapter call.
    pub(super) fn call_failed(&self, error: CallError) -> GatewayError {
        GatewayError::Adapter {
            provider: self.name.clone(),
            adapter: self.adapter.name.clone(),
            failure: AdapterFailure::new(error, |text| self.scrub(text)),
        }
    }

    /// What the adapter made of a failure (`retry_after`: the response's header, if any).
    pub(super) fn adapter_error(
        &self,
        error: AdapterError,
        retry_after: Option<&str>,
    ) -> GatewayError {
        let provider = self.name.clone();
        let retry_after = retry_after.map(|v| self.scrub(v));
        match error {
            AdapterError::InvalidRequest(message) => GatewayError::Unsupported {
                provider,
                message: self.scrub(&message),
            },
            AdapterError::RateLimited(r) => GatewayError::RateLimited {
                provider,
                message: self.scrub(&r.message),
                retry_after: retry_after
                    .or_else(|| r.retry_after_secs.map(|s| self.scrub(s.to_string()))),
            },
            // An upstream that says "rate limited" inside a body (an error event first thing
            // in a stream, an error object sent with a 200) is rate limited all the same.
            AdapterError::Upstream(u) if u.status == 429 => GatewayError::RateLimited {
                provider,
                message: self.scrub(&u.message),
                retry_after,
            },
            AdapterError::Upstream(u) if u.status == 0 => GatewayError::UpstreamStream {
                provider,
                message: self.scrub(&u.message),
                code: self.error_code(u.code),
            },
            AdapterError::Upstream(u) if matches!(u.status, 401 | 403) => {
                GatewayError::UpstreamAuth {
                    provider,
                    status: u.status,
                    message: self.scrub(&u.message),
                    key_source: self.key_source.as_ref().map(ToString::to_string),
                }
            }
            AdapterError::Upstream(u) => GatewayError::UpstreamStatus {
                provider,
                status: u.status,
                message: self.scrub(&u.message),
                code: self.error_code(u.code),
                retry_after: retry_after.filter(|_| u.status == 503),
            },
            AdapterError::MalformedResponse(message) => GatewayError::MalformedResponse {
                provider,
                message: self.scrub(&message),
            },
        }
    }

    /// An adapter's `upstream-failure.code`, if it can be a client's error code: a short
    /// snake_case word (`model_not_found`) holding nothing the scrubber would take out.
    /// Anything else (a sentence, a key an upstream echoed into its code field) is dropped
    /// rather than shown: the message carries the upstream's words anyway.
    fn error_code(&self, code: Option<String>) -> Option<Box<str>> {
        let code = code?;
        let is_code = (1..=64).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        (is_code && self.scrub(&code).as_str() == code).then(|| code.into())
    }

    /// A failed exchange with the upstream.
    pub(super) fn upstream_failed(&self, error: UpstreamError) -> GatewayError {
        let provider = self.name.clone();
        match error {
            UpstreamError::Timeout => GatewayError::UpstreamTimeout {
                provider,
                timeout: self.target.timeout,
            },
            UpstreamError::Unreachable(message) => GatewayError::UpstreamUnreachable {
                provider,
                message: self.scrub(&message),
            },
            UpstreamError::BodyBroken(message) => GatewayError::MalformedResponse {
                provider,
                message: self.scrub(format!("the body broke off: {message}")),
            },
            UpstreamError::Redirect { status, location } => GatewayError::UpstreamStatus {
                provider,
                status,
                message: self.scrub(format!(
                    "redirected to {}; chatd does not follow redirects: set base_url to the \
                     address the upstream redirects to",
                    location.as_deref().unwrap_or("nowhere named")
                )),
                code: None,
                retry_after: None,
            },
            UpstreamError::Encoded(encoding) => GatewayError::MalformedResponse {
                provider,
                message: self.scrub(format!(
                    "the body is {encoding}-encoded and chatd decodes no content encoding (do \
                     not send Accept-Encoding to this upstream)"
                )),
            },
            UpstreamError::TooLarge(limit) => GatewayError::MalformedResponse {
                provider,
                message: self.scrub(format!("response body exceeds {limit} bytes")),
            },
            UpstreamError::NotAStream(content_type) => GatewayError::MalformedResponse {
                provider,
                message: self.scrub(format!(
                    "answered a stream request with a {content_type} page, not a stream (is \
                     base_url the API's address?)"
                )),
            },
        }
    }

    /// A request needing `capability`, which the adapter does not declare.
    pub(super) fn not_capable(&self, capability: Capability) -> GatewayError {
        GatewayError::NotCapable {
            provider: self.name.clone(),
            adapter: self.adapter.name.clone(),
            contract: self.adapter.contract,
            capability,
        }
    }

    /// A request the provider cannot serve, as the host found it.
    pub(super) fn unsupported(&self, message: &str) -> GatewayError {
        GatewayError::Unsupported {
            provider: self.name.clone(),
            message: self.scrub(message),
        }
    }

    /// A stream that failed after it began.
    pub(super) fn stream_failed(&self, message: &str) -> GatewayError {
        GatewayError::UpstreamStream {
            provider: self.name.clone(),
            message: self.scrub(message),
            code: None,
        }
    }

    /// An answer that is not what the adapter can parse, as the host found it.
    pub(super) fn malformed(&self, message: &str) -> GatewayError {
        GatewayError::MalformedResponse {
            provider: self.name.clone(),
            message: self.scrub(message),
        }
    }
}

/// The `Retry-After` header of an upstream response.
pub(super) fn retry_after(response: &HttpResponse) -> Option<&str> {
    response
        .headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.as_str())
}

/// What a provider needs to register beyond its own config.
pub(super) struct Registration<'a> {
    pub config: &'a Config,
    pub adapters: &'a AdapterSet,
    pub stats: &'a StatsRegistry,
    pub scrubber: &'a Scrubber,
    pub credentials: &'a Credentials,
    pub lasting: &'a Lasting,
}

impl Registration<'_> {
    /// Registers `name` if its adapter loaded, its key (when its adapter needs one) was found
    /// and its adapter accepts its settings; otherwise says why not.
    pub async fn register(
        &self,
        name: &str,
        pc: &ProviderConfig,
        key: Option<&Lookup>,
    ) -> Result<Provider, Unregistered> {
        let provider = self.prepare(name, pc, key).map_err(Unregistered::Other)?;
        if let Some(settings) = &provider.settings {
            configure(&provider.adapter, settings)
                .await
                .map_err(|why| {
                    Unregistered::Settings(format!(
                        "[chatd.providers.{name}.settings] refused by adapter {}: {}",
                        provider.adapter.name,
                        self.scrubber.scrub(why)
                    ))
                })?;
        }
        Ok(provider)
    }

    /// The provider as its config describes it, its key in place.
    fn prepare(
        &self,
        name: &str,
        pc: &ProviderConfig,
        key: Option<&Lookup>,
    ) -> Result<Provider, String> {
        let adapters = self.adapters;
        let entry = adapters
            .entries
            .get(&pc.adapter)
            .ok_or_else(|| unknown_adapter(&pc.adapter, self.config, adapters))?;
        let adapter = entry.active.clone().ok_or_else(|| {
            let why = entry
                .last_error
                .as_ref()
                .map(|f| f.error.to_string())
                .unwrap_or_default();
            format!("adapter {:?} failed to load: {why}", pc.adapter)
        })?;
        // The adapter's default URL and auth header were checked when it loaded.
        let default_base = || {
            url::Url::parse(&adapter.info.default_base_url)
                .map_err(|e| format!("adapter default base URL is invalid: {e}"))
        };
        let timeout = self.config.timeout_for(pc);
        let mut endpoints = Vec::new();
        let mut key_source = None;
        if pc.endpoints.is_empty() {
            let base = match &pc.base_url {
                Some(url) => url.clone(),
                None => default_base()?,
            };
            let (target, source) = self.target(
                name,
                &adapter,
                pc.key_env.as_deref(),
                key,
                base,
                timeout,
                pc,
            )?;
            key_source = source;
            endpoints.push((target, 1));
        }
        for (i, e) in pc.endpoints.iter().enumerate() {
            let (var, lookup) = match &e.key_env {
                Some(var) => (
                    Some(var.as_str()),
                    self.credentials.endpoints.get(&(name.to_owned(), i)),
                ),
                None => (pc.key_env.as_deref(), key),
            };
            let (target, source) = self
                .target(name, &adapter, var, lookup, e.url.clone(), timeout, pc)
                .map_err(|why| format!("endpoint {}: {why}", e.url))?;
            if key_source.is_none() {
                key_source = source;
            }
            endpoints.push((target, e.weight));
        }
        let endpoints: Vec<Endpoint> = endpoints
            .into_iter()
            .map(|(target, weight)| Endpoint {
                state: self.lasting.endpoint(name, target.base_url()),
                target,
                weight,
            })
            .collect();
        let admission = match pc.max_concurrency {
            Some(max) => Admission::new(
                Some((max, self.lasting.limit(name, max))),
                std::time::Duration::from_millis(pc.queue_timeout_ms),
            ),
            None => Admission::unlimited(),
        };
        Ok(Provider {
            name: name.to_owned(),
            target: endpoints[0].target.clone(),
            endpoints,
            retry: RetryPolicy {
                retries: pc.retries(),
                backoff: std::time::Duration::from_millis(pc.retry_backoff_ms),
                max_wait: std::time::Duration::from_millis(pc.retry_max_wait_ms),
            },
            health: HealthPolicy {
                eject_after: pc.eject_after_failures,
                cooldown: std::time::Duration::from_millis(pc.eject_cooldown_ms),
            },
            admission,
            adapter,
            key_source,
            stats: self.stats.provider(name),
            settings: pc.settings_json.clone(),
            images: self.config.chatd.images.clone(),
            scrubber: self.scrubber.clone(),
        })
    }

    /// One endpoint's target: its URL, the provider's headers, and the key (looked up as
    /// `var`) in the header the adapter declared.
    #[allow(clippy::too_many_arguments)]
    fn target(
        &self,
        name: &str,
        adapter: &Adapter,
        var: Option<&str>,
        key: Option<&Lookup>,
        base: url::Url,
        timeout: std::time::Duration,
        pc: &ProviderConfig,
    ) -> Result<(Target, Option<KeySource>), String> {
        let mut headers = pc.header_map.clone();
        let mut reserved = Vec::new();
        let key_source = match &adapter.info.auth {
            AuthScheme::None => None,
            scheme => {
                let var = var.ok_or_else(|| {
                    format!(
                        "adapter {} needs an API key but no key_env is configured",
                        adapter.name
                    )
                })?;
                let (key, source) = match key {
                    Some(Ok((key, source))) => (key, source),
                    Some(Err(missing)) => {
                        return Err(format!("no API key: looked in {}", missing.looked));
                    }
                    None => return Err(format!("no API key: {var} was not looked up")),
                };
                let (header, value) = match scheme {
                    AuthScheme::Header(h) => (
                        http_rules::auth_header(h)?,
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
                reserved.push(HeaderName::clone(&header));
                headers.insert(header, value);
                Some(source.clone())
            }
        };
        Ok((
            Target {
                base,
                timeout,
                headers,
                reserved,
            },
            key_source,
        ))
    }
}

/// Why a configured provider is not registered.
#[derive(Debug, Clone)]
pub(super) enum Unregistered {
    /// Its adapter refused its settings (the message names the setting).
    Settings(String),
    /// Anything else: no adapter, no key, ...
    Other(String),
}

/// Hands `settings` to a fresh instance of `adapter`: its refusal, or the failed call.
async fn configure(adapter: &Adapter, settings: &str) -> Result<(), String> {
    let mut instance = adapter.instance().await.map_err(|e| e.to_string())?;
    instance
        .configure(settings)
        .await
        .map_err(|e| e.to_string())?
}

/// Why `name` names no adapter: where chatd looked, and which adapters there are.
pub(super) fn unknown_adapter(name: &str, config: &Config, adapters: &AdapterSet) -> String {
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
