//! Request ids: every response carries `X-Request-Id`, every log line of the request names
//! it, and error bodies include it as `request_id`.
//!
//! A client's own `X-Request-Id` is kept when it is 1–128 characters of letters, digits and
//! `-_.:/+=@~` (what ids in the wild use: UUIDs, ULIDs, base64, `req_...`); anything else —
//! too long, spaces, quotes, control characters that would forge log lines — is replaced by
//! a fresh id, a random UUID (version 4).
//!
//! Every request is polled with its id in scope on its thread, and so is its response body
//! (a stream is written after the handler returned: how it ended belongs to the request too).
//! The log format prints the id in scope ([`crate::log_format`]). When traces are exported,
//! or `RUST_LOG` filters by span, a real span is opened instead, which OpenTelemetry exports
//! as the server span (continuing an incoming `traceparent`; see `otel.rs`): entering a span
//! on every poll costs the registry's bookkeeping, a thread-local pointer does not.

use std::cell::Cell;
use std::convert::Infallible;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use tracing::field::Empty;

use crate::otel;

/// The header, as sent and answered.
pub const HEADER: &str = "x-request-id";

/// Longest client-chosen id kept.
pub const MAX_LEN: usize = 128;

/// Error bodies larger than this are passed on without a `request_id` (none of chatd's are).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Set when `RUST_LOG` filters by span or field: the request then needs its span.
static SPANS: AtomicBool = AtomicBool::new(false);

/// Requests get a real span (see the module notes). Call once, before serving.
pub fn open_spans() {
    SPANS.store(true, Ordering::Relaxed);
}

fn spans() -> bool {
    SPANS.load(Ordering::Relaxed) || otel::enabled()
}

thread_local! {
    /// The id of the request being polled on this thread.
    static CURRENT: Cell<Option<NonNull<str>>> = const { Cell::new(None) };
}

/// Runs `f` with the id of the request being polled on this thread, if any.
pub fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    // SAFETY: `CURRENT` holds a pointer only inside `in_scope`, which borrows the id it
    // points to for that long; `f` cannot keep the reference past its call.
    f(CURRENT.with(Cell::get).map(|id| unsafe { id.as_ref() }))
}

/// Runs `f` with `id` as the request in scope on this thread (restored after, even on a
/// panic).
fn in_scope<R>(id: &str, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<NonNull<str>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| current.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|current| current.replace(Some(NonNull::from(id)))));
    f()
}

#[cfg(test)]
pub(crate) fn in_scope_for_tests<R>(id: &str, f: impl FnOnce() -> R) -> R {
    in_scope(id, f)
}

/// Whether a client's id can be kept as it is.
pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@~".contains(&b))
}

/// A fresh id: 128 random bits as a UUID (version 4).
pub fn generate() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The client's id when valid, else a fresh one.
fn id_of(request: &Request) -> String {
    request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_valid(id))
        .map_or_else(generate, str::to_owned)
}

/// The request's id, and its span when it has one.
struct Scope {
    id: String,
    span: Option<tracing::Span>,
}

impl Scope {
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.span {
            Some(span) => span.in_scope(f),
            None => in_scope(&self.id, f),
        }
    }
}

/// The layer that gives every request its id (outermost: every answer, CORS preflights,
/// panics and 404s included, carries it).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds { inner }
    }
}

/// See [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S> tower_service::Service<Request> for RequestIds<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let id = id_of(&request);
        let span = spans().then(|| request_span(&id, &request));
        let scope = Scope { id, span };
        let answer = scope.run(|| self.inner.call(request));
        Box::pin(async move {
            let (Ok(response), scope) = Scoped::new(answer, scope).await;
            Ok(finish(response, scope).await)
        })
    }
}

/// A future polled, and dropped, with its request in scope: an answer dropped unfinished
/// (its client left) logs that in scope too. Yields the scope back with the output.
struct Scoped<F> {
    work: ManuallyDrop<F>,
    /// Taken when `work` is done.
    scope: Option<Scope>,
}

impl<F> Scoped<F> {
    fn new(work: F, scope: Scope) -> Self {
        Scoped {
            work: ManuallyDrop::new(work),
            scope: Some(scope),
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = (F::Output, Scope);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `work` is pinned with `self` (never moved out; dropped in place), `scope`
        // is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let work = unsafe { Pin::new_unchecked(&mut *this.work) };
        let scope = this.scope.as_ref().expect("polled after it was done");
        let out = std::task::ready!(scope.run(|| work.poll(cx)));
        Poll::Ready((out, this.scope.take().expect("present until done")))
    }
}

impl<F> Drop for Scoped<F> {
    fn drop(&mut self) {
        let work = &mut self.work;
        // SAFETY: `work` is dropped once, here, in place.
        let mut drop_work = || unsafe { ManuallyDrop::drop(work) };
        match &self.scope {
            Some(scope) => scope.run(drop_work),
            None => drop_work(),
        }
    }
}

/// The request's span: the server span of its trace.
fn request_span(id: &str, request: &Request) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
    );
    if otel::enabled() {
        let (method, path) = (request.method().as_str(), request.uri().path());
        span.record("otel.name", format!("{method} {path}"));
        span.record("otel.kind", "server");
        otel::set_attribute(&span, "http.request.method", method.to_owned());
        otel::set_attribute(&span, "url.path", path.to_owned());
        otel::set_attribute(&span, "chatd.request_id", id.to_owned());
        otel::continue_trace(&span, request.headers());
    }
    span
}

/// The answer with its id: in the header, in an error's body, and in scope while a streamed
/// body is written.
async fn finish(response: Response, scope: Scope) -> Response {
    let status = response.status();
    if let Some(span) = scope.span.as_ref().filter(|_| otel::enabled()) {
        otel::set_attribute(
            span,
            "http.response.status_code",
            i64::from(status.as_u16()),
        );
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
    let mut response = if status.is_client_error() || status.is_server_error() {
        with_request_id(response, &scope.id).await
    } else {
        response
    };
    if let Ok(value) = HeaderValue::from_str(&scope.id) {
        response.headers_mut().insert(HEADER, value);
    }
    if http_body::Body::is_end_stream(response.body()) || response_is_whole(&response) {
        return response;
    }
    response.map(|body| Body::new(InScope { body, scope }))
}

fn response_is_whole(response: &Response) -> bool {
    http_body::Body::size_hint(response.body())
        .exact()
        .is_some()
}

/// An error's JSON body with `request_id` beside its `error` (where Anthropic's API puts
/// it; OpenAI's SDKs read only `error` and ignore what is beside it).
async fn with_request_id(response: Response, id: &str) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json || !response_is_whole(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        // Unreadable: what chatd would answer instead carries the id in its header.
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    let bytes = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut body)) => {
            body.insert("request_id".into(), serde_json::Value::String(id.into()));
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
        }
        _ => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// A response body polled (and dropped) with its request in scope.
struct InScope {
    body: Body,
    scope: Scope,
}

impl http_body::Body for InScope {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        this.scope.run(|| Pin::new(&mut this.body).poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InScope {
    fn drop(&mut self) {
        // A stream dropped unfinished (its client left) logs that: in scope too.
        let body = std::mem::take(&mut self.body);
        self.scope.run(|| drop(body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_only_when_safe_to_log() {
        for ok in [
            "a",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "req_01HZX",
            "abc+/=",
            &"x".repeat(MAX_LEN),
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "quote\"",
            "new\nline",
            "é",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        let a = generate();
        assert_ne!(a, generate());
        assert!(is_valid(&a));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}
