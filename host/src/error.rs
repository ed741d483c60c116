//! Every way a request can fail, and the one place that maps a failure to an HTTP status and
//! a stable error code.

use std::time::Duration;

use http::StatusCode;

use crate::contract::{Capability, ContractVersion};
use crate::routing::RouteError;
use crate::runtime::CallError;
use crate::scrub::Scrubbed;

/// A failed request. Every text in it that came from an upstream or an adapter is
/// [`Scrubbed`], so a failure can be shown to a client or logged as it is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The client's request is malformed or asks for something unsupported.
    #[error("{message}")]
    BadRequest {
        message: String,
        /// The offending request field, when there is one.
        param: Option<String>,
    },
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    /// The request body is compressed (a `Content-Encoding` chatd does not decode).
    #[error("request bodies with Content-Encoding {0:?} are not supported; send it uncompressed")]
    UnsupportedEncoding(String),
    /// The client did not send its whole request body within `client_timeout_secs`.
    #[error("request body not received within {}s", .0.as_secs())]
    ClientTimeout(Duration),
    #[error("{0}")]
    Route(#[from] RouteError),
    /// The adapter says the request cannot be expressed for its upstream.
    #[error("provider {provider}: {message}")]
    Unsupported { provider: String, message: Scrubbed },
    /// An image the client gave by URL could not be fetched (for an adapter that takes
    /// images inline only): the client's URL is at fault, as OpenAI answers it.
    #[error("{param}: the image at {url} could not be fetched: {reason}")]
    ImageFetch {
        param: String,
        url: String,
        reason: String,
    },
    /// The request needs a capability the provider's adapter does not declare.
    #[error("provider {provider} cannot carry {}: {}", capability.feature(), not_declared(adapter, *contract, *capability))]
    NotCapable {
        provider: String,
        adapter: String,
        contract: ContractVersion,
        capability: Capability,
    },
    #[error("provider {provider} is rate limited upstream: {message}")]
    RateLimited {
        provider: String,
        message: Scrubbed,
        /// `Retry-After`, from the upstream when it sent one.
        retry_after: Option<Scrubbed>,
    },
    /// The upstream answered an error status. One that says the request itself is wrong
    /// ([`KEPT_STATUSES`]) keeps its status, so clients raise their typed errors and do not
    /// retry it; any other is a 502.
    #[error("provider {provider}: upstream answered HTTP {status}: {message}")]
    UpstreamStatus {
        provider: String,
        status: u16,
        message: Scrubbed,
        /// What the upstream's error says, in OpenAI's words (`model_not_found`), when the
        /// adapter could tell.
        code: Option<Box<str>>,
        /// The upstream's `Retry-After` on a 503 (it is down for maintenance, say): passed
        /// on so clients back off as the upstream asked.
        retry_after: Option<Scrubbed>,
    },
    /// The upstream refused chatd's own credentials (401/403): the operator's key is wrong,
    /// not the client's request, so it stays a 502.
    #[error(
        "provider {provider}: the upstream refused chatd's credentials (HTTP {status}: {message}); \
         {}",
        match key_source {
            Some(source) => format!("check the provider's API key (from {source})"),
            None => "the provider sends no API key (its adapter declares no auth)".to_owned(),
        }
    )]
    UpstreamAuth {
        provider: String,
        status: u16,
        message: Scrubbed,
        /// Where the provider's key came from (never the key).
        key_source: Option<String>,
    },
    #[error("provider {provider}: upstream stream failed: {message}")]
    UpstreamStream {
        provider: String,
        message: Scrubbed,
        /// The failure's code, as for [`GatewayError::UpstreamStatus`].
        code: Option<Box<str>>,
    },
    #[error("provider {provider}: upstream unreachable: {message}")]
    UpstreamUnreachable { provider: String, message: Scrubbed },
    #[error("provider {provider}: upstream did not answer within {}s", timeout.as_secs())]
    UpstreamTimeout { provider: String, timeout: Duration },
    #[error("provider {provider}: upstream response is malformed: {message}")]
    MalformedResponse { provider: String, message: Scrubbed },
    #[error("provider {provider}: adapter {adapter}: {failure}")]
    Adapter {
        provider: String,
        adapter: String,
        failure: AdapterFailure,
    },
    /// Client keys are on and the request carries no key, or one chatd does not know. The
    /// message is the same for every unknown key, well-formed or not.
    #[error("{}", if *missing {
        "missing API key: send it as Authorization: Bearer <key> (or x-api-key: <key>)"
    } else {
        "invalid API key"
    })]
    ApiKey { missing: bool },
    /// The client's key does not allow the model.
    #[error("client {client:?} may not use model {model:?}")]
    ModelNotAllowed { client: String, model: String },
    /// One of the client's limits is reached.
    #[error("client {client:?} reached its {limit} limit ({value}); retry in {retry_after} s")]
    LimitExceeded {
        client: String,
        /// The limit's config key (`requests_per_minute`, `tokens_per_day`, ...).
        limit: &'static str,
        value: u64,
        /// A day's or month's token budget (rather than a per-minute rate).
        budget: bool,
        /// Whole seconds (rounded up, at least 1) until a request would be admitted, as
        /// `Retry-After` says it.
        retry_after: String,
        retry_after_ms: u64,
    },
    /// The Redis limits store is unreachable and `chatd.limits.fail_open` is false.
    #[error(
        "the limits store is unreachable and chatd.limits.fail_open is false; try again shortly"
    )]
    LimitsUnavailable,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// `GET /v1/models/{id}` for an id the model list does not have.
    #[error("model {0:?} is not in the model list (GET /v1/models); it may still be routable")]
    ModelNotListed(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(
        "chatd is shutting down: the shutdown grace period ended before this answer was complete"
    )]
    ShuttingDown { provider: String },
    /// Taking this request's body would exceed `max_inflight_bytes`.
    #[error(
        "chatd holds as many request body bytes as it may (max_inflight_bytes = {limit}); retry shortly"
    )]
    Overloaded { limit: usize },
    /// The provider's `max_concurrency` requests are running and none ended within its
    /// queue timeout.
    #[error(
        "provider {provider} is busy: {limit} requests are running (max_concurrency) and none \
         finished within {}ms",
        waited.as_millis()
    )]
    ProviderBusy {
        provider: String,
        limit: u32,
        waited: Duration,
    },
    /// Every endpoint of the provider is ejected after failing (the circuit breaker): why a
    /// chain skipped it. A request's last candidate is tried all the same, so clients do not
    /// get this one.
    #[error(
        "provider {provider} is unavailable: its endpoints failed repeatedly and are out of \
         service for {retry_after}s more"
    )]
    ProviderUnavailable {
        provider: String,
        /// Whole seconds until one of them gets a probe request (at least 1).
        retry_after: String,
    },
}

/// Upstream statuses that say the client's request is wrong (bad request, unknown model,
/// conflict, too large, unprocessable): passed on as they are.
pub const KEPT_STATUSES: [u16; 5] = [400, 404, 409, 413, 422];

/// Why an adapter call produced no result ([`CallError`]), its detail scrubbed: a trap's
/// message carries what the adapter wrote to stderr, which may quote an upstream's body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdapterFailure {
    #[error("adapter trapped: {0}")]
    Trap(Scrubbed),
    #[error("adapter exceeded its time budget")]
    Timeout,
    #[error("adapter exceeded its memory limit")]
    MemoryLimit,
    #[error("no adapter instance slot free")]
    Capacity,
    #[error("adapter returned an unusable value: {0}")]
    BadOutput(Scrubbed),
}

impl AdapterFailure {
    /// `error` with its text scrubbed by `scrub`.
    pub fn new(error: CallError, scrub: impl Fn(&str) -> Scrubbed) -> AdapterFailure {
        match error {
            CallError::Trap(m) => AdapterFailure::Trap(scrub(&m)),
            CallError::Timeout => AdapterFailure::Timeout,
            CallError::MemoryLimit => AdapterFailure::MemoryLimit,
            CallError::Capacity => AdapterFailure::Capacity,
            CallError::BadOutput(m) => AdapterFailure::BadOutput(scrub(&m)),
        }
    }
}

/// Why an adapter lacks a capability, for [`GatewayError::NotCapable`].
fn not_declared(adapter: &str, contract: ContractVersion, capability: Capability) -> String {
    if contract < ContractVersion::V0_3 {
        format!(
            "its adapter {adapter} is built against contract {contract}, which carries text, \
             tools, a JSON mode and reasoning on/off only"
        )
    } else {
        format!(
            "its adapter {adapter} does not declare the {:?} capability",
            capability.name()
        )
    }
}

impl GatewayError {
    /// A 400 without a specific field.
    pub fn bad_request(message: impl Into<String>) -> GatewayError {
        GatewayError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    /// A 400 naming the offending field.
    pub fn bad_param(param: &str, message: impl Into<String>) -> GatewayError {
        GatewayError::BadRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest { .. }
            | GatewayError::ImageFetch { .. }
            | GatewayError::Unsupported { .. }
            | GatewayError::NotCapable { .. } => StatusCode::BAD_REQUEST,
            GatewayError::Route(RouteError::NotRegistered { .. }) => StatusCode::NOT_FOUND,
            GatewayError::Route(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::UpstreamStatus { status, .. } if KEPT_STATUSES.contains(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            GatewayError::UpstreamStatus { .. }
            | GatewayError::UpstreamAuth { .. }
            | GatewayError::UpstreamStream { .. }
            | GatewayError::UpstreamUnreachable { .. }
            | GatewayError::MalformedResponse { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Adapter {
                failure: AdapterFailure::Capacity,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Adapter { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Unauthorized(_) | GatewayError::ApiKey { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) | GatewayError::ModelNotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            GatewayError::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::LimitsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::NotFound(_) | GatewayError::ModelNotListed(_) => StatusCode::NOT_FOUND,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::ShuttingDown { .. }
            | GatewayError::ProviderBusy { .. }
            | GatewayError::ProviderUnavailable { .. }
            | GatewayError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable, machine-readable error code: chatd's, or for an upstream's error the code
    /// its adapter read from it (`model_not_found`, `context_length_exceeded`, ...).
    pub fn code(&self) -> &str {
        match self {
            GatewayError::UpstreamStatus {
                code: Some(code), ..
            }
            | GatewayError::UpstreamStream {
                code: Some(code), ..
            } => code,
            GatewayError::BadRequest { .. } => "invalid_request",
            GatewayError::ImageFetch { .. } => "invalid_image_url",
            GatewayError::Unsupported { .. } | GatewayError::NotCapable { .. } => {
                "unsupported_by_provider"
            }
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::ClientTimeout(_) => "request_timeout",
            GatewayError::UnsupportedEncoding(_) => "unsupported_media_type",
            GatewayError::Route(RouteError::NotRegistered { .. }) => "provider_not_registered",
            GatewayError::Route(_) => "invalid_model",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::UpstreamStatus { .. } => "upstream_error",
            GatewayError::UpstreamAuth { .. } => "upstream_auth",
            GatewayError::UpstreamStream { .. } => "upstream_stream_error",
            GatewayError::UpstreamUnreachable { .. } => "upstream_unreachable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::MalformedResponse { .. } => "upstream_malformed_response",
            GatewayError::Adapter { failure, .. } => match failure {
                AdapterFailure::Trap(_) => "adapter_trap",
                AdapterFailure::Timeout => "adapter_timeout",
                AdapterFailure::MemoryLimit => "adapter_memory_limit",
                AdapterFailure::Capacity => "adapter_capacity",
                AdapterFailure::BadOutput(_) => "adapter_bad_output",
            },
            GatewayError::ApiKey { .. } => "invalid_api_key",
            GatewayError::ModelNotAllowed { .. } => "model_not_allowed",
            GatewayError::LimitExceeded { budget: false, .. } => "rate_limit_exceeded",
            GatewayError::LimitExceeded { budget: true, .. } => "token_budget_exceeded",
            GatewayError::LimitsUnavailable => "limits_unavailable",
            GatewayError::Unauthorized(_) => "unauthorized",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::ModelNotListed(_) => "model_not_found",
            GatewayError::Internal(_) => "internal_error",
            GatewayError::ShuttingDown { .. } => "shutting_down",
            GatewayError::Overloaded { .. } => "overloaded",
            GatewayError::ProviderBusy { .. } => "provider_busy",
            GatewayError::ProviderUnavailable { .. } => "provider_unavailable",
        }
    }

    /// The `code` of this failure in OpenAI's error shape: [`GatewayError::code`], but a
    /// model routed to no registered provider is `model_not_found`, as OpenAI's own API
    /// calls an unknown model (SDKs and error mappers such as LiteLLM's key on it). The
    /// native shape keeps chatd's more precise `provider_not_registered`.
    pub fn openai_code(&self) -> &str {
        match self {
            GatewayError::Route(RouteError::NotRegistered { .. }) => "model_not_found",
            _ => self.code(),
        }
    }

    /// OpenAI's error `type` for this failure.
    pub fn openai_type(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::NOT_FOUND
            | StatusCode::CONFLICT
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::REQUEST_TIMEOUT => "invalid_request_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            _ => "api_error",
        }
    }

    /// Anthropic's error `type` for this failure (its SDKs and Claude Code read it).
    pub fn anthropic_type(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// Whether sending the same request again could be answered otherwise. When not, answers
    /// say `x-should-retry: false`, which the OpenAI and Anthropic SDKs (and the agents built
    /// on them) obey instead of retrying a 400 or an upstream's refusal for minutes.
    pub fn worth_retrying(&self) -> bool {
        match self {
            GatewayError::BadRequest { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::UnsupportedEncoding(_)
            | GatewayError::Route(_)
            | GatewayError::Unsupported { .. }
            | GatewayError::Unauthorized(_)
            | GatewayError::Forbidden(_)
            | GatewayError::NotFound(_) => false,
            // An upstream that refused the request (a bad key, an unknown model, a context
            // too long) refuses it again; its 408, 409 and 429 pass with time.
            GatewayError::UpstreamStatus { status, .. } => {
                !(400..500).contains(status) || matches!(status, 408 | 409 | 429)
            }
            _ => true,
        }
    }

    /// The request field at fault, if known.
    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::BadRequest { param, .. } => param.as_deref(),
            GatewayError::ImageFetch { param, .. } => Some(param),
            GatewayError::Route(_) => Some("model"),
            _ => None,
        }
    }

    /// The `Retry-After` value to send: a rate limit's, an upstream 503's, or a second when
    /// every adapter instance slot is busy or the request bodies in flight are at their limit
    /// (a burst that is usually over by then), or the limits store is unreachable.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            GatewayError::LimitExceeded { retry_after, .. } => Some(retry_after),
            GatewayError::LimitsUnavailable => Some("1"),
            GatewayError::RateLimited { retry_after, .. }
            | GatewayError::UpstreamStatus { retry_after, .. } => {
                retry_after.as_ref().map(Scrubbed::as_str)
            }
            GatewayError::Adapter {
                failure: AdapterFailure::Capacity,
                ..
            }
            | GatewayError::ProviderBusy { .. }
            | GatewayError::Overloaded { .. } => Some("1"),
            GatewayError::ProviderUnavailable { retry_after, .. } => Some(retry_after),
            _ => None,
        }
    }

    /// The provider the failure concerns, if any.
    pub fn provider(&self) -> Option<&str> {
        match self {
            GatewayError::Unsupported { provider, .. }
            | GatewayError::NotCapable { provider, .. }
            | GatewayError::RateLimited { provider, .. }
            | GatewayError::UpstreamStatus { provider, .. }
            | GatewayError::UpstreamAuth { provider, .. }
            | GatewayError::UpstreamStream { provider, .. }
            | GatewayError::UpstreamUnreachable { provider, .. }
            | GatewayError::UpstreamTimeout { provider, .. }
            | GatewayError::MalformedResponse { provider, .. }
            | GatewayError::Adapter { provider, .. }
            | GatewayError::ShuttingDown { provider }
            | GatewayError::ProviderBusy { provider, .. }
            | GatewayError::ProviderUnavailable { provider, .. } => Some(provider),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_documented_table() {
        let p = "ollama";
        let up = GatewayError::UpstreamStatus {
            provider: p.into(),
            status: 500,
            message: Scrubbed::fixed("m"),
            code: None,
            retry_after: None,
        };
        assert_eq!(up.status(), StatusCode::BAD_GATEWAY);
        assert!(up.to_string().contains("HTTP 500"));
        assert!(up.to_string().contains("ollama"));
        let limited = GatewayError::RateLimited {
            provider: p.into(),
            message: Scrubbed::fixed("slow"),
            retry_after: Some(Scrubbed::fixed("7")),
        };
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.retry_after(), Some("7"));
        let timeout = GatewayError::UpstreamTimeout {
            provider: p.into(),
            timeout: Duration::from_secs(3),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let trap = GatewayError::Adapter {
            provider: p.into(),
            adapter: "a".into(),
            failure: AdapterFailure::Timeout,
        };
        assert_eq!(
            (trap.status(), trap.code()),
            (StatusCode::BAD_GATEWAY, "adapter_timeout")
        );
        let busy = GatewayError::Adapter {
            provider: p.into(),
            adapter: "a".into(),
            failure: AdapterFailure::Capacity,
        };
        assert_eq!(
            (busy.status(), busy.retry_after()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        assert_eq!(trap.retry_after(), None);
        let limit = GatewayError::LimitExceeded {
            client: "alice".into(),
            limit: "tokens_per_day",
            value: 10,
            budget: true,
            retry_after: "1".into(),
            retry_after_ms: 300,
        };
        assert_eq!(
            (limit.status(), limit.code(), limit.retry_after()),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "token_budget_exceeded",
                Some("1")
            )
        );
        assert_eq!(
            GatewayError::ModelNotAllowed {
                client: "a".into(),
                model: "m".into()
            }
            .openai_type(),
            "permission_error"
        );
        let full = GatewayError::Overloaded { limit: 1 };
        assert_eq!(
            (
                full.status(),
                full.code(),
                full.retry_after(),
                full.anthropic_type()
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                Some("1"),
                "overloaded_error"
            )
        );
        assert!(full.worth_retrying());
        let nr = GatewayError::Route(RouteError::NotRegistered {
            model: "m".into(),
            provider: "kimi".into(),
            configured: true,
        });
        assert_eq!(
            (nr.status(), nr.code()),
            (StatusCode::NOT_FOUND, "provider_not_registered")
        );
        assert_eq!(
            GatewayError::Route(RouteError::EmptyModel).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            GatewayError::PayloadTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn upstream_errors_keep_the_statuses_that_blame_the_request() {
        let status = |status: u16, code: Option<&str>| GatewayError::UpstreamStatus {
            provider: "openrouter".into(),
            status,
            message: Scrubbed::fixed("m"),
            code: code.map(Box::from),
            retry_after: None,
        };
        for kept in KEPT_STATUSES {
            let e = status(kept, None);
            assert_eq!(e.status().as_u16(), kept);
            assert_eq!(
                (e.code(), e.openai_type()),
                ("upstream_error", "invalid_request_error")
            );
        }
        let missing = status(404, Some("model_not_found"));
        assert_eq!(missing.code(), "model_not_found");
        assert_eq!(missing.openai_code(), "model_not_found");
        let overflow = status(400, Some("context_length_exceeded"));
        assert_eq!(overflow.code(), "context_length_exceeded");
        for other in [402, 410, 451, 500, 503] {
            assert_eq!(
                status(other, None).status(),
                StatusCode::BAD_GATEWAY,
                "{other}"
            );
        }
        let auth = GatewayError::UpstreamAuth {
            provider: "openrouter".into(),
            status: 401,
            message: Scrubbed::fixed("bad key"),
            key_source: Some("env OPENROUTER_API_KEY".into()),
        };
        assert_eq!(
            (auth.status(), auth.code()),
            (StatusCode::BAD_GATEWAY, "upstream_auth")
        );
        let text = auth.to_string();
        assert!(
            text.contains("openrouter")
                && text.contains("HTTP 401")
                && text.contains("env OPENROUTER_API_KEY"),
            "{text}"
        );
        let unrouted = GatewayError::Route(RouteError::NotRegistered {
            model: "kimi/k2".into(),
            provider: "kimi".into(),
            configured: true,
        });
        assert_eq!(
            (unrouted.code(), unrouted.openai_code()),
            ("provider_not_registered", "model_not_found")
        );
        let stream = GatewayError::UpstreamStream {
            provider: "p".into(),
            message: Scrubbed::fixed("m"),
            code: Some("content_filter".into()),
        };
        assert_eq!(
            (stream.status(), stream.code()),
            (StatusCode::BAD_GATEWAY, "content_filter")
        );
    }

    #[test]
    fn anthropic_types_and_retry_advice_follow_the_status() {
        let upstream = |status| GatewayError::UpstreamStatus {
            provider: "p".into(),
            status,
            message: Scrubbed::fixed("m"),
            code: None,
            retry_after: None,
        };
        let busy = GatewayError::Adapter {
            provider: "p".into(),
            adapter: "a".into(),
            failure: AdapterFailure::Capacity,
        };
        assert_eq!(
            GatewayError::bad_request("x").anthropic_type(),
            "invalid_request_error"
        );
        assert_eq!(
            GatewayError::NotFound("x".into()).anthropic_type(),
            "not_found_error"
        );
        assert_eq!(busy.anthropic_type(), "overloaded_error");
        assert_eq!(upstream(500).anthropic_type(), "api_error");
        assert!(!GatewayError::bad_request("x").worth_retrying());
        assert!(!upstream(401).worth_retrying());
        assert!(upstream(429).worth_retrying() && upstream(503).worth_retrying());
        assert!(busy.worth_retrying());
    }
}
