//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when `[chatd.otel]` enables
//! them.
//!
//! chatd's spans are `tracing` spans; `tracing-opentelemetry` turns them into OpenTelemetry
//! spans. Per request: the server span (made by the request-id middleware, continuing an
//! incoming `traceparent`), then `attempt` per upstream attempt (so retries and fallbacks show
//! as siblings), with `adapter.build`, `upstream` and `adapter.parse` under each, and `stream`
//! while a stream runs. Attributes follow the GenAI semantic conventions (`gen_ai.*`).
//!
//! Off, it costs next to nothing: the child spans are at `debug` level, so with the default
//! `info` log filter they are disabled at their call site (one cached check each), and the
//! attributes only these traces need are set through [`answered`] and the middleware only
//! when [`enabled`].
//!
//! Export requests go through chatd's own upstream client (hyper, rustls, the egress proxy
//! settings) on a thread of their own, so neither a second HTTP stack nor the request path's
//! event loops carry them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::OtelConfig;
use crate::upstream::{Target, Upstream};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Bound on one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether traces are exported (set once at start).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes the spans not yet exported and stops the exporter when dropped.
#[must_use = "dropping the guard stops exporting traces"]
pub struct OtelGuard {
    provider: SdkTracerProvider,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("chatd: flushing traces at exit failed: {e}");
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `tracing` layer that exports spans as `config` says, and its guard. Call once, at
/// start.
pub fn layer<S>(
    config: &OtelConfig,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        OtelGuard,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let (runtime, stop) = export_thread()?;
    let client = ExportClient {
        upstream: Upstream::new(4 << 20)?,
        runtime,
    };
    let headers: HashMap<String, String> = config.headers.clone().into_iter().collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(config.endpoint.as_str())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(headers)
        .build()
        .map_err(|e| format!("chatd.otel: cannot build the OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("chatd");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_tracked_inactivity(false);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        layer,
        OtelGuard {
            provider,
            stop: Some(stop),
        },
    ))
}

/// A thread running a small event loop for export requests; it ends when the sender is
/// used or dropped.
fn export_thread() -> Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("chatd.otel: cannot start the exporter's event loop: {e}"))?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("chatd-otel".into())
        .spawn(move || {
            let _ = runtime.block_on(stopped);
        })
        .map_err(|e| format!("chatd.otel: cannot start the exporter's thread: {e}"))?;
    Ok((handle, stop))
}

/// The exporter's HTTP client: chatd's upstream client, driven by the export thread.
struct ExportClient {
    upstream: Upstream,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportClient")
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let target = Target {
            base: url::Url::parse(&parts.uri.to_string())?,
            timeout: EXPORT_TIMEOUT,
            headers: http::HeaderMap::new(),
            reserved: Vec::new(),
        };
        let request = http::Request::from_parts(parts, Full::new(body));
        let upstream = self.upstream.clone();
        let sent = self
            .runtime
            .spawn(async move { upstream.send(&target, request).await })
            .await?
            .map_err(|e| format!("exporting traces: {e:?}"))?;
        let mut response = http::Response::builder().status(sent.status);
        for (name, value) in sent.headers {
            response = response.header(name, value);
        }
        Ok(response.body(Bytes::from(sent.body))?)
    }
}

/// Continues the trace an incoming request names in its `traceparent` header.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    use opentelemetry::propagation::TextMapPropagator;
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let parent = propagator.extract(&opentelemetry_http::HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Sets an attribute on `span`'s OpenTelemetry span (not a `tracing` field, so it stays out
/// of log lines).
pub fn set_attribute(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

/// The current span, when traces are exported (a span that does nothing otherwise: looking
/// it up costs a reference count on the request path).
pub fn current_span() -> Span {
    if enabled() {
        Span::current()
    } else {
        Span::none()
    }
}

/// Names the request span's answer: who served it and its token counts.
pub fn answered(
    span: &Span,
    provider: &str,
    model: &str,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
) {
    if !enabled() {
        return;
    }
    span.set_attribute("gen_ai.provider.name", provider.to_owned());
    span.set_attribute("gen_ai.response.model", model.to_owned());
    if let Some(n) = input_tokens {
        span.set_attribute("gen_ai.usage.input_tokens", i64::from(n));
    }
    if let Some(n) = output_tokens {
        span.set_attribute("gen_ai.usage.output_tokens", i64::from(n));
    }
}
