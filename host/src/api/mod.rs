//! The HTTP API (axum): routes, request-body handling and error rendering.

pub mod admin;
pub mod clients;
pub mod embeddings;
pub mod formats;
pub mod metrics;
pub mod models;
mod pipeline;
pub mod providers;
mod server;
mod types;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::memory::{BodyBudget, BodyBytes};
use formats::anthropic::{self, Anthropic};
use formats::native::Native;
use formats::ollama::{self, OllamaChat, OllamaGenerate};
use formats::openai::OpenAi;
use formats::responses::Responses;

pub use server::serve;
pub use types::{ApiMessage, Content, Stop};

/// Shared state of every handler, behind one reference count: axum clones it for every
/// extractor of every request, on every server thread.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The running gateway.
    pub gateway: Arc<Gateway>,
    /// Client keys, limits and usage (process lifetime).
    pub clients: Arc<crate::clients::Service>,
    /// Request body bytes held now, under `max_inflight_bytes`.
    pub bodies: Arc<BodyBudget>,
}

/// The full router. Connects to the limits store when one is configured (in the background:
/// requests are served meanwhile, per `chatd.limits.fail_open`), so it must be called inside
/// a tokio runtime.
pub fn router(gateway: Arc<Gateway>) -> Result<Router, String> {
    let cors = cors_layer(&gateway.snapshot().config.chatd.cors_origins);
    let service = crate::clients::Service::new(&gateway.snapshot().config.chatd.limits)?;
    let state = AppState(Arc::new(Shared {
        gateway,
        clients: Arc::new(service),
        bodies: BodyBudget::new(),
    }));
    let admin = Router::new()
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1/admin/adapters", get(admin::adapters))
        .route("/v1/admin/clients", get(clients::admin_list))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    let router = Router::new()
        .merge(admin)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/chat", post(pipeline::chat::<Native>))
        .route("/v1/chat/providers", get(providers::providers))
        .route("/v1/chat/completions", post(pipeline::chat::<OpenAi>))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/messages", post(pipeline::chat::<Anthropic>))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(pipeline::chat::<Responses>))
        .route("/api/chat", post(pipeline::chat::<OllamaChat>))
        .route("/api/generate", post(pipeline::chat::<OllamaGenerate>))
        .route("/api/tags", get(ollama::tags).head(json_head))
        .route("/api/show", post(ollama::show))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/version", get(ollama::version))
        .route("/api/ps", get(ollama::ps))
        // A HEAD (health checkers, `curl -I`) need not make every provider list its models.
        .route("/v1/models", get(models::models).head(json_head))
        .route("/v1/models/{*id}", get(models::model))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Client keys (when on): every API request, unknown paths included, needs one.
        .layer(clients::ClientKeysLayer {
            state: state.clone(),
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ));
    // No layer at all unless configured: most deployments serve programs, not browsers.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // Outermost, so that every answer (CORS preflights, panics, 404s) carries the id.
    Ok(router
        .layer(crate::request_id::RequestIdLayer)
        .with_state(state))
}

/// Who served an answer, on every format: `x-chatd-provider` and `x-chatd-model` (the
/// upstream's name for the model).
pub(crate) fn served_by(mut response: Response, provider: &str, model: &str) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [(SERVED_PROVIDER, provider), (SERVED_MODEL, model)] {
        if let Ok(value) = axum::http::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// The response header naming the provider that served the answer.
pub const SERVED_PROVIDER: &str = "x-chatd-provider";
/// The response header naming the upstream model that served the answer.
pub const SERVED_MODEL: &str = "x-chatd-model";

/// CORS for the configured browser origins (validated with the config), answering
/// preflights itself. Request headers are mirrored: SDKs send their own (`x-stainless-*`).
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| o.trim_end_matches('/').parse().ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(
                [
                    header::RETRY_AFTER,
                    header::HeaderName::from_static(crate::request_id::HEADER),
                    header::HeaderName::from_static(SERVED_PROVIDER),
                    header::HeaderName::from_static(SERVED_MODEL),
                ]
                .into_iter()
                .chain(clients::RATE_HEADERS.map(header::HeaderName::from_static))
                .collect::<Vec<_>>(),
            )
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The head of an answer that is always JSON and 200.
async fn json_head() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], ()).into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn not_found(req: Request) -> Response {
    let err = GatewayError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ));
    native_error(&err)
}

async fn method_not_allowed(req: Request) -> Response {
    let body = json!({"error": {
        "code": "method_not_allowed",
        "message": format!("{} is not allowed on {}", req.method(), req.uri().path()),
    }});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    native_error(&GatewayError::Internal("the request handler failed".into()))
}

/// Renders an error in chatd's native shape: `{"error": {"code", "message"}}`.
pub fn native_error(err: &GatewayError) -> Response {
    let body = json!({"error": {"code": err.code(), "message": err.to_string()}});
    with_retry_after(err, (err.status(), axum::Json(body)).into_response())
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        native_error(&self)
    }
}

/// Adds the upstream's `Retry-After` (whole seconds) to an error response, for either shape.
pub(crate) fn with_retry_after(err: &GatewayError, mut response: Response) -> Response {
    if let Some(value) = err.retry_after().and_then(|v| v.parse().ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A JSON body read under the configured size limit; every failure is a typed
/// [`GatewayError`] (413 for size, 503 when the bodies in flight are at their limit, 400
/// naming the problem for bad JSON). The body's share of `max_inflight_bytes` comes with it:
/// keep it until the answer starts.
pub struct JsonBody<T>(pub T, pub BodyBytes);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = GatewayError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // One snapshot for every limit: this runs on every request.
        let snap = state.gateway.snapshot();
        let limit = snap.config.chatd.max_body_bytes;
        let in_flight = snap.config.chatd.max_inflight_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let declared = declared.map_or(0, |n| n as usize);
        // Read as JSON, a gzip body would only be reported as "invalid JSON".
        if let Some(encoding) = req.headers().get(header::CONTENT_ENCODING) {
            let encoding = String::from_utf8_lossy(encoding.as_bytes())
                .trim()
                .to_owned();
            if !encoding.eq_ignore_ascii_case("identity") {
                return Err(GatewayError::UnsupportedEncoding(encoding));
            }
        }
        // Taken before any of the body is read, so refusing a request costs nothing; dropped
        // with the request whichever way it ends.
        let overloaded = |_| GatewayError::Overloaded { limit: in_flight };
        // Bounded in time as well as size: a client that stops halfway through its body would
        // otherwise hold the request (and a graceful shutdown) open forever.
        let patience = snap.config.client_timeout();
        let mut held = match state.bodies.reserve(declared, in_flight) {
            Ok(held) => held,
            Err(over) => {
                // Read and dropped chunk by chunk (nothing held): a client still sending its
                // body when the answer and the close came would see a broken pipe instead
                // of the 503 (Python's http.client does).
                let _ = tokio::time::timeout(patience, discard(req.into_body(), limit)).await;
                return Err(overloaded(over));
            }
        };
        let reading = read_body(req.into_body(), declared, limit, |size| {
            let more = size.saturating_sub(held.bytes());
            held.grow(more, in_flight).map_err(overloaded)
        });
        let bytes = tokio::time::timeout(patience, reading)
            .await
            .map_err(|_| GatewayError::ClientTimeout(patience))??;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(GatewayError::bad_request(
                "request body is empty; send a JSON object",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(|body| JsonBody(body, held))
            .map_err(|e| types::invalid_body::<T>(&bytes, e))
    }
}

/// Reads and drops up to `limit` bytes of a body, a chunk at a time.
async fn discard(mut body: Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut read = 0;
    while read <= limit
        && let Some(Ok(frame)) = body.frame().await
    {
        read += frame.data_ref().map_or(0, |d| d.len());
    }
}

/// Reads a body of at most `limit` bytes into one buffer, sized from its declared length: no
/// list of chunks to join afterwards (a second copy of the whole body) and no regrowth.
/// `hold` is told the size read so far before each chunk is kept; a body with a declared
/// length was held whole before reading, so it is only asked for more if the body is longer.
async fn read_body(
    mut body: Body,
    declared: usize,
    limit: usize,
    mut hold: impl FnMut(usize) -> Result<(), GatewayError>,
) -> Result<Vec<u8>, GatewayError> {
    use http_body_util::BodyExt;
    let mut bytes = Vec::with_capacity(declared);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| GatewayError::bad_request(format!("cannot read request body: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let size = bytes.len() + chunk.len();
        if size > limit {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        if size > declared {
            hold(size)?;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A response that streams `body` with the given content type, unbuffered.
pub(crate) fn streaming_response(content_type: &'static str, body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| {
            native_error(&GatewayError::Internal("building a stream response".into()))
        })
}

/// Turns a request body into what the gateway needs with `convert`, with the body's share of
/// `max_inflight_bytes` (hold it until the answer starts); on failure also returns what to
/// log as its model (see [`named_model`]), read from the body with `model`.
pub(crate) fn checked<B, T>(
    body: Result<JsonBody<B>, GatewayError>,
    model: impl FnOnce(&B) -> Option<&str>,
    convert: impl FnOnce(B) -> Result<T, GatewayError>,
) -> Result<(T, BodyBytes), (GatewayError, String)> {
    let JsonBody(body, held) = body.map_err(|e| (e, named_model(None)))?;
    let named = named_model(model(&body));
    convert(body).map(|t| (t, held)).map_err(|e| (e, named))
}

/// What a request that failed validation logs as its model: the model it named (so an
/// operator can tell which client sent it), cut to 100 characters, or "-".
pub(crate) fn named_model(model: Option<&str>) -> String {
    match model.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m.chars().take(100).collect(),
        None => "-".to_owned(),
    }
}

/// The log line of a request that failed: its status, error code and message, at warn for
/// the gateway's and upstreams' failures (5xx), at info for the client's (4xx).
pub(crate) fn log_failure(endpoint: &str, model: &str, err: &GatewayError, latency_ms: f64) {
    let status = err.status().as_u16();
    let provider = err.provider().unwrap_or("-");
    let latency_ms = format_args!("{latency_ms:.3}");
    let code = err.code();
    let client = crate::clients::current_name();
    let client = client.as_deref().unwrap_or("-");
    if status >= 500 {
        tracing::warn!(endpoint, provider, model, client, status, latency_ms, code, error = %err, "request");
    } else {
        tracing::info!(endpoint, provider, model, client, status, latency_ms, code, error = %err, "request");
    }
}

/// The log line of a request that was answered (for a stream: its first chunk).
pub(crate) fn log_request(endpoint: &str, provider: &str, model: &str, latency_ms: f64) {
    let client = crate::clients::current_name();
    tracing::info!(
        endpoint,
        provider,
        model,
        client = client.as_deref().unwrap_or("-"),
        status = 200,
        latency_ms = format_args!("{latency_ms:.3}"),
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::named_model;

    #[test]
    fn a_rejected_request_logs_the_model_it_named_trimmed_and_cut() {
        assert_eq!(named_model(None), "-");
        assert_eq!(named_model(Some("  ")), "-");
        assert_eq!(named_model(Some(" ollama/m ")), "ollama/m");
        assert_eq!(named_model(Some(&"é".repeat(300))), "é".repeat(100));
    }
}
