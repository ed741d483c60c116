//! A registered provider: its adapter, its upstream target with the key in place, and the one
//! place where what its adapter built and what its upstream answered become chatd's
//! requests and errors (checked, and scrubbed of every key chatd holds).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;

use crate::config::{Config, ProviderConfig, http_rules};
use crate::contract::{AdapterError, AuthScheme, HttpRequest, HttpResponse};
use crate::error::{AdapterFailure, GatewayError};
use crate::keys::{KeySource, Lookup};
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
    /// Prepared upstream target (URL, timeout, headers incl. auth).
    pub target: Target,
    /// Scrubs every key chatd holds (not only this provider's) from what reaches clients.
    scrubber: Scrubber,
}

impl Provider {
    /// A fresh instance of this provider's adapter.
    pub(super) async fn instance(&self) -> Result<AdapterInstance, GatewayError> {
        self.adapter
            .instance()
            .await
            .map_err(|e| self.call_failed(e))
    }

    /// The HTTP request the adapter built, checked: a valid method, a path under the base
    /// URL, valid headers (those the host owns dropped, the operator's and the key's added).
    pub(super) fn request(&self, built: HttpRequest) -> Result<Request<Full<Bytes>>, GatewayError> {
        let bad = |message: String| self.call_failed(CallError::BadOutput(message));
        let method = Method::from_bytes(built.method.as_bytes())
            .map_err(|_| bad(format!("invalid HTTP method {:?}", built.method)))?;
        if !built.path.starts_with('/') || built.path.contains(['\r', '\n', '#']) {
            return Err(bad(format!(
                "request path {:?} must start with '/' and hold no CR, LF or '#'",
                built.path
            )));
        }
        let uri = self
            .target
            .uri_for(&built.path)
            .map_err(|e| bad(format!("request path {:?}: {e}", built.path)))?;
        let headers = self.target.request_headers(built.headers).map_err(bad)?;
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
            },
            AdapterError::Upstream(u) => GatewayError::UpstreamStatus {
                provider,
                status: u.status,
                message: self.scrub(&u.message),
                retry_after: retry_after.filter(|_| u.status == 503),
            },
            AdapterError::MalformedResponse(message) => GatewayError::MalformedResponse {
                provider,
                message: self.scrub(&message),
            },
        }
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
}

impl Registration<'_> {
    /// Registers `name` if its adapter loaded and its key (when its adapter needs one) was
    /// found; otherwise says why not.
    pub fn register(
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
        let base = match &pc.base_url {
            Some(url) => url.clone(),
            None => url::Url::parse(&adapter.info.default_base_url)
                .map_err(|e| format!("adapter default base URL is invalid: {e}"))?,
        };
        let mut headers = pc.header_map.clone();
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
        Ok(Provider {
            name: name.to_owned(),
            target: Target {
                base,
                timeout: self.config.timeout_for(pc),
                headers,
                reserved,
            },
            adapter,
            key_source,
            stats: self.stats.provider(name),
            scrubber: self.scrubber.clone(),
        })
    }
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
