//! Request ids: every response carries `X-Request-Id`, every log line of the request names
//! it (a field of the request's span), and error bodies include it as `request_id`.
//!
//! A client's own `X-Request-Id` is kept when it is 1–128 characters of letters, digits and
//! `-_.:/+=@~` (what ids in the wild use: UUIDs, ULIDs, base64, `req_...`); anything else —
//! too long, spaces, quotes, control characters that would forge log lines — is replaced by
//! a fresh id, a random UUID (version 4).
//!
//! The same middleware opens the request's span, which OpenTelemetry exports as the server
//! span (continuing an incoming `traceparent`; see `otel.rs`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use tracing::Instrument;
use tracing::field::Empty;

use crate::otel;

/// The header, as sent and answered.
pub const HEADER: &str = "x-request-id";

/// Longest client-chosen id kept.
pub const MAX_LEN: usize = 128;

/// Error bodies larger than this are passed on without a `request_id` (none of chatd's are).
const MAX_ERROR_BODY: usize = 64 * 1024;

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

/// The middleware: opens the request's span, runs the request in it (a streamed body too),
/// and puts the id on the response.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = id_of(&request);
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
        otel::set_attribute(&span, "chatd.request_id", id.clone());
        otel::continue_trace(&span, request.headers());
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    if otel::enabled() {
        otel::set_attribute(
            &span,
            "http.response.status_code",
            i64::from(status.as_u16()),
        );
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
    let mut response = if status.is_client_error() || status.is_server_error() {
        with_request_id(response, &id).await
    } else {
        response
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    // A stream is written after the handler returned: its log lines (how it ended) belong
    // to the request too, and its span ends with it.
    if http_body::Body::is_end_stream(response.body()) || response_is_whole(&response) {
        return response;
    }
    response.map(|body| Body::new(InSpan { body, span }))
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

/// A response body polled (and dropped) inside the request's span.
struct InSpan {
    body: Body,
    span: tracing::Span,
}

impl http_body::Body for InSpan {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        std::pin::Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InSpan {
    fn drop(&mut self) {
        // A stream dropped unfinished (its client left) logs that: inside the span too.
        let _entered = self.span.enter();
        drop(std::mem::take(&mut self.body));
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
