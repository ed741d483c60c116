//! Client keys at the API's edge: the layer that authenticates every API request, the
//! `x-ratelimit-*` headers, errors in the caller's wire format, and
//! `GET /v1/admin/clients`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use serde_json::{Value, json};

use super::AppState;
use super::models::Entry;
use crate::clients::limits::{Verdict, reset_text};
use crate::clients::{self, Caller, Refusal};
use crate::error::GatewayError;

/// Paths that never need a client key: health checks and scrapes (documented as open; bind
/// or filter them), and the admin API, which has its own token.
fn is_open(path: &str) -> bool {
    path == "/healthz" || path == "/metrics" || path.starts_with("/v1/admin/")
}

/// The layer that authenticates API requests when client keys are on; runs the request
/// (handler and response body) with its client in scope, and adds the `x-ratelimit-*`
/// headers. With client keys off a request passes straight through, unboxed.
#[derive(Clone)]
pub struct ClientKeysLayer {
    pub state: AppState,
}

impl<S> tower_layer::Layer<S> for ClientKeysLayer {
    type Service = ClientKeys<S>;

    fn layer(&self, inner: S) -> ClientKeys<S> {
        ClientKeys {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See [`ClientKeysLayer`].
#[derive(Clone)]
pub struct ClientKeys<S> {
    inner: S,
    state: AppState,
}

type Checked = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower_service::Service<Request> for ClientKeys<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Checked>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let snap = self.state.gateway.current();
        if !snap.config.chatd.clients.enabled || is_open(req.uri().path()) {
            return Either::Left(self.inner.call(req));
        }
        let snap = arc_swap::Guard::into_inner(snap);
        // The service that was made ready serves this request; its clone the next.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let state = self.state.clone();
        Either::Right(Box::pin(async move {
            Ok(authenticate(state, snap, req, inner).await)
        }))
    }
}

/// Authenticates `req` against the client table of `snap`, the snapshot that said client
/// keys are on.
async fn authenticate<S>(
    state: AppState,
    snap: Arc<crate::gateway::Snapshot>,
    req: Request,
    mut inner: S,
) -> Response
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    let started = std::time::Instant::now();
    match snap.clients.authenticate(req.headers()) {
        Ok(client) => {
            let caller = Arc::new(Caller::new(client, state.clients.clone()));
            let Ok(mut response) = clients::scope(caller.clone(), inner.call(req)).await;
            if let Some(verdict) = caller.verdict() {
                rate_headers(response.headers_mut(), verdict);
            }
            // A streamed answer's body is polled after the handler returned: its end (where
            // tokens are counted and the stream's log line names the client) runs in scope too.
            response.map(|body| Body::new(InScope { body, caller }))
        }
        Err(refusal) => {
            state.clients.usage.auth_failed();
            let path = req.uri().path().to_owned();
            let err = GatewayError::ApiKey {
                missing: refusal == Refusal::Missing,
            };
            super::log_failure(&path, "-", &err, super::pipeline::ms(started.elapsed()));
            let mut response = error_for_path(&path, &err);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The `x-ratelimit-*` headers (OpenAI's names) of a checked request: the request and token
/// limits with the least left.
fn rate_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    // Names as constants and numbers without a `String`: this runs on every request a
    // limited key makes.
    const REQUESTS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ];
    const TOKENS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ];
    for (window, [limit, remaining, reset]) in
        [(verdict.requests, REQUESTS), (verdict.tokens, TOKENS)]
    {
        let Some(w) = window else { continue };
        headers.insert(limit, HeaderValue::from(w.limit));
        headers.insert(remaining, HeaderValue::from(w.remaining));
        if let Ok(value) = HeaderValue::from_str(&reset_text(w.reset)) {
            headers.insert(reset, value);
        }
    }
    if let Some((_, wait)) = verdict.refused {
        // OpenAI's SDKs read the milliseconds first.
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        headers.insert(
            HeaderName::from_static("retry-after-ms"),
            HeaderValue::from(ms),
        );
    }
}

/// The `x-ratelimit-*` header names, for CORS to expose.
pub const RATE_HEADERS: [&str; 7] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after-ms",
];

/// Renders an error in the wire format of the endpoint at `path` (for failures found before
/// any handler ran), with that format's own error rendering: chatd's native shape for
/// `/v1/chat`, Anthropic's for `/v1/messages`, Ollama's for `/api/*`, OpenAI's for everything
/// else.
pub fn error_for_path(path: &str, err: &GatewayError) -> Response {
    use super::formats::{
        anthropic::Anthropic, native::Native, ollama::OllamaChat, openai::OpenAi,
    };
    use super::pipeline::failed;
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        failed::<Anthropic>(err)
    } else if path.starts_with("/api/") {
        failed::<OllamaChat>(err)
    } else if path == "/v1/chat" {
        failed::<Native>(err)
    } else {
        failed::<OpenAi>(err)
    }
}

/// A response body polled with its client in scope.
struct InScope {
    body: Body,
    caller: Arc<Caller>,
}

impl http_body::Body for InScope {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let caller = this.caller.clone();
        clients::sync_scope(caller, || Pin::new(&mut this.body).poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The entries of a model list the client in scope may use: a client sees only its own
/// models. All of them without client keys.
pub fn visible(state: &AppState, models: Vec<Entry>) -> Vec<Entry> {
    let Some(caller) = clients::current() else {
        return models;
    };
    let snap = state.gateway.snapshot();
    models
        .into_iter()
        .filter(|m| {
            snap.route(&m.id)
                .is_ok_and(|(route, _)| caller.client.may_use(&m.id, &route))
        })
        .collect()
}

/// `GET /v1/admin/clients`: every configured client with its models, limits, what is left
/// of each limit now (from the shared store), and this replica's usage since it started.
pub async fn admin_list(State(state): State<AppState>) -> Response {
    let snap = state.gateway.snapshot();
    let table = &snap.clients;
    let limiter = &state.clients.limiter;
    let usage = state.clients.usage.by_model();
    let refusals = state.clients.usage.refusals();
    let mut listed = Vec::new();
    for (name, client) in &table.clients {
        let limits = client.all_limits();
        let readings = limiter.peek(&limits, &snap.config.chatd.limits).await;
        let current: Vec<Value> = limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut v = json!({
                    "limit": l.kind.name(),
                    "value": l.limit,
                    "models": l.pattern.as_deref(),
                });
                if let Some(r) = readings.as_ref().and_then(|r| r.get(i)) {
                    v["remaining"] = json!(r.remaining);
                    v["used"] = json!(l.limit.saturating_sub(r.remaining));
                    v["reset_secs"] = json!(r.reset.as_secs_f64());
                }
                v
            })
            .collect();
        let models: Vec<Value> = usage
            .iter()
            .find(|(c, _)| &**c == name)
            .map(|(_, models)| {
                models
                    .iter()
                    .map(|(m, u)| {
                        json!({"model": &**m, "requests": u.requests,
                               "input_tokens": u.input_tokens, "output_tokens": u.output_tokens})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let refused: serde_json::Map<String, Value> = refusals
            .iter()
            .find(|(c, _)| &**c == name)
            .map(|(_, r)| r.iter().map(|(k, n)| ((*k).to_owned(), json!(n))).collect())
            .unwrap_or_default();
        listed.push(json!({
            "name": name,
            "keys": client.config.digests.iter()
                .map(|d| format!("sha256:{}…", &clients::keys::hex(d)[..12]))
                .collect::<Vec<_>>(),
            "source": client.config.source.display().to_string(),
            "models": client.config.models,
            "limits": current,
            "usage": models,
            "refused": refused,
        }));
    }
    axum::Json(json!({
        "enabled": snap.config.chatd.clients.enabled,
        "store": {
            "kind": limiter.kind(),
            "location": snap.config.chatd.limits.store_display(),
            "up": limiter.store_up(),
            "fail_open": snap.config.chatd.limits.fail_open,
        },
        "clients": listed,
        "auth_failures": state.clients.usage.auth_failures(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::limits::Window;

    async fn body(response: Response) -> (axum::http::StatusCode, Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_take_the_shape_of_the_endpoint_they_answer() {
        let unknown = GatewayError::ApiKey { missing: false };
        let (status, v) = body(error_for_path("/v1/messages", &unknown)).await;
        assert_eq!(status, 401);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "invalid API key");
        assert_eq!(v["error"]["details"]["error_code"], "invalid_api_key");
        let (_, v) = body(error_for_path("/v1/chat/completions", &unknown)).await;
        assert_eq!(
            v,
            json!({"error": {"message": "invalid API key", "type": "authentication_error", "param": null, "code": "invalid_api_key"}})
        );
        let (_, v) = body(error_for_path("/v1/chat", &unknown)).await;
        assert_eq!(
            v,
            json!({"error": {"code": "invalid_api_key", "message": "invalid API key"}})
        );
        let (_, v) = body(error_for_path("/api/chat", &unknown)).await;
        assert_eq!(v, json!({"error": "invalid API key"}));
        // Not the native endpoint: OpenAI's shape.
        let (_, v) = body(error_for_path("/v1/chatter", &unknown)).await;
        assert_eq!(v["error"]["type"], "authentication_error");

        let forbidden = GatewayError::ModelNotAllowed {
            client: "alice".into(),
            model: "m".into(),
        };
        let (status, v) = body(error_for_path("/v1/messages/count_tokens", &forbidden)).await;
        assert_eq!(status, 403);
        assert_eq!(v["error"]["type"], "permission_error");
        let limited = GatewayError::LimitExceeded {
            client: "alice".into(),
            limit: "requests_per_minute",
            value: 3,
            budget: false,
            retry_after: "20".into(),
            retry_after_ms: 19_500,
        };
        let response = error_for_path("/v1/messages", &limited);
        assert_eq!(response.headers()["retry-after"], "20");
        let (status, v) = body(response).await;
        assert_eq!(status, 429);
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let (_, v) = body(error_for_path("/v1/responses", &limited)).await;
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn rate_headers_carry_openais_names() {
        let mut headers = HeaderMap::new();
        let verdict = Verdict {
            allowed: false,
            requests: Some(Window {
                limit: 3,
                remaining: 0,
                reset: std::time::Duration::from_secs(60),
            }),
            tokens: None,
            refused: Some((
                crate::clients::limits::Kind::RequestsPerMinute,
                std::time::Duration::from_millis(19_500),
            )),
        };
        rate_headers(&mut headers, &verdict);
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
        assert_eq!(headers["x-ratelimit-reset-requests"], "1m0s");
        assert_eq!(headers["retry-after-ms"], "19500");
        assert!(!headers.contains_key("x-ratelimit-limit-tokens"));
    }
}
