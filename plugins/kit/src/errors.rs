//! Adapter errors, and the errors upstream responses stand for.

use crate::prelude::*;
use serde_json::Value;

use crate::json::json_object;
use crate::types::{AdapterError, HttpResponse, RateLimit, UpstreamFailure};

/// Upstream text copied into an error message is cut to this many characters.
pub const MAX_ERROR_CHARS: usize = 500;

/// How an upstream shapes the message of an error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorShape {
    /// Ollama's `{"error": "..."}` or OpenAI's `{"error": {"message": "..."}}`; an error object
    /// without a string message is shown whole.
    OpenAi,
    /// Anthropic's `{"type": "error", "error": {"type": "...", "message": "..."}}` (or a plain
    /// `{"error": "..."}`); the error type stands in when there is no message.
    Anthropic,
}

impl ErrorShape {
    /// The message of the error in `body`, truncated; `None` when `body` holds no error of
    /// this shape.
    #[inline]
    pub fn message(self, body: &Value) -> Option<String> {
        match self {
            ErrorShape::OpenAi => openai_message(&body["error"]),
            ErrorShape::Anthropic => anthropic_message(&body["error"]),
        }
    }
}

fn openai_message(error: &Value) -> Option<String> {
    match error {
        Value::String(message) => Some(truncate(message)),
        Value::Object(object) => Some(match object.get("message").and_then(Value::as_str) {
            Some(message) => truncate(message),
            None => truncate(&error.to_string()),
        }),
        _ => None,
    }
}

fn anthropic_message(error: &Value) -> Option<String> {
    let message = match error {
        Value::String(message) => message.as_str(),
        _ => error["message"]
            .as_str()
            .or_else(|| error["type"].as_str())?,
    };
    Some(truncate(message))
}

/// The JSON object of a 2xx response, or the error the response stands for (see
/// [`status_error`]); a 2xx body that is not a JSON object is a malformed response.
#[inline]
pub fn json_body(response: &HttpResponse, shape: ErrorShape) -> Result<Value, AdapterError> {
    if !(200..300).contains(&response.status) {
        return Err(status_error(response, shape));
    }
    json_object(&response.body, "response body")
}

/// The error a non-2xx response stands for: rate limited (with its `retry-after`) for a 429,
/// otherwise an upstream failure with the response's status; the message is from
/// [`error_message`].
#[inline]
pub fn status_error(response: &HttpResponse, shape: ErrorShape) -> AdapterError {
    let message = error_message(response.status, &response.body, shape);
    if response.status == 429 {
        AdapterError::RateLimited(RateLimit {
            message,
            retry_after_secs: retry_after(&response.headers),
        })
    } else {
        upstream(response.status, message)
    }
}

/// The most useful error text in an error body, truncated: the message of a JSON error body of
/// `shape`, else the body's trimmed text, else "HTTP <status>".
#[inline]
pub fn error_message(status: u16, body: &[u8], shape: ErrorShape) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|body| shape.message(&body))
        .unwrap_or_else(|| truncate(text.trim()));
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    }
}

/// The `retry-after` header, when it is a whole number of seconds.
#[inline]
pub fn retry_after(headers: &[(String, String)]) -> Option<u32> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// Cuts upstream text to `MAX_ERROR_CHARS` characters.
#[inline]
pub fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// An upstream failure; `status` is 0 for a failure reported inside a stream.
#[inline]
pub fn upstream(status: u16, message: String) -> AdapterError {
    AdapterError::Upstream(UpstreamFailure { status, message })
}

/// The request cannot be expressed for the upstream.
#[inline]
pub fn invalid(message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest(message.into())
}

/// The upstream answered with something the adapter cannot understand.
#[inline]
pub fn malformed(message: impl Into<String>) -> AdapterError {
    AdapterError::MalformedResponse(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{malformed_response, response, upstream_failure};
    use serde_json::json;

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("short"), "short");
        assert_eq!(
            truncate(&"é".repeat(MAX_ERROR_CHARS + 20)),
            "é".repeat(MAX_ERROR_CHARS)
        );
        let cut = truncate(&"日本".repeat(MAX_ERROR_CHARS));
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS);
    }

    #[test]
    fn openai_shape_reads_ollama_and_openai_errors() {
        let shape = ErrorShape::OpenAi;
        assert_eq!(
            shape.message(&json!({"error": "boom"})).as_deref(),
            Some("boom")
        );
        assert_eq!(
            shape
                .message(&json!({"error": {"message": "bad", "code": 1}}))
                .as_deref(),
            Some("bad")
        );
        assert_eq!(
            shape.message(&json!({"error": {"code": 7}})).as_deref(),
            Some(r#"{"code":7}"#)
        );
        assert_eq!(shape.message(&json!({"error": null})), None);
        assert_eq!(shape.message(&json!({"error": 3})), None);
        assert_eq!(shape.message(&json!({"model": "m"})), None);
        let long = json!({ "error": "ü".repeat(MAX_ERROR_CHARS * 2) });
        assert_eq!(shape.message(&long), Some("ü".repeat(MAX_ERROR_CHARS)));
    }

    #[test]
    fn anthropic_shape_falls_back_to_the_error_type() {
        let shape = ErrorShape::Anthropic;
        let body = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(shape.message(&body).as_deref(), Some("Overloaded"));
        let body = json!({"type": "error", "error": {"type": "api_error"}});
        assert_eq!(shape.message(&body).as_deref(), Some("api_error"));
        assert_eq!(
            shape.message(&json!({"error": "plain"})).as_deref(),
            Some("plain")
        );
        assert_eq!(shape.message(&json!({"error": {"code": 7}})), None);
        assert_eq!(shape.message(&json!({"type": "error", "error": 7})), None);
    }

    #[test]
    fn error_message_prefers_the_error_then_the_text_then_the_status() {
        for shape in [ErrorShape::OpenAi, ErrorShape::Anthropic] {
            assert_eq!(error_message(500, br#"{"error":"x"}"#, shape), "x");
            assert_eq!(
                error_message(502, b"  bad gateway \n", shape),
                "bad gateway"
            );
            assert_eq!(error_message(503, b"", shape), "HTTP 503");
            assert_eq!(error_message(503, b"  ", shape), "HTTP 503");
            assert_eq!(
                error_message(400, "x".repeat(2000).as_bytes(), shape)
                    .chars()
                    .count(),
                MAX_ERROR_CHARS
            );
        }
        // A JSON body without an error of the shape is shown as text.
        assert_eq!(
            error_message(500, br#"{"detail":"no"}"#, ErrorShape::OpenAi),
            r#"{"detail":"no"}"#
        );
    }

    #[test]
    fn status_errors() {
        let mut limited = response(429, r#"{"error":"too many requests"}"#);
        limited.headers = vec![("Retry-After".into(), " 7 ".into())];
        match status_error(&limited, ErrorShape::OpenAi) {
            AdapterError::RateLimited(limit) => {
                assert_eq!(limit.message, "too many requests");
                assert_eq!(limit.retry_after_secs, Some(7));
            }
            other => panic!("expected rate-limited, got {other:?}"),
        }
        let failure = upstream_failure(Err::<(), _>(status_error(
            &response(401, ""),
            ErrorShape::Anthropic,
        )));
        assert_eq!(failure.status, 401);
        assert_eq!(failure.message, "HTTP 401");
    }

    #[test]
    fn retry_after_is_whole_seconds_only() {
        let headers = |value: &str| vec![("retry-after".to_owned(), value.to_owned())];
        assert_eq!(retry_after(&headers("30")), Some(30));
        assert_eq!(retry_after(&headers(" 120 ")), Some(120));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2026 07:28:00 GMT")), None);
        assert_eq!(retry_after(&headers("99999999999")), None);
        assert_eq!(retry_after(&[]), None);
    }

    #[test]
    fn json_body_checks_status_and_shape() {
        let body = json_body(&response(200, r#"{"a":1}"#), ErrorShape::OpenAi).unwrap();
        assert_eq!(body, json!({"a": 1}));
        // An error object with a 2xx is left to the adapter.
        assert!(json_body(&response(200, r#"{"error":"x"}"#), ErrorShape::OpenAi).is_ok());
        let message = malformed_response(json_body(&response(200, "<html>"), ErrorShape::OpenAi));
        assert!(
            message.starts_with("response body is not JSON: "),
            "{message}"
        );
        assert_eq!(
            malformed_response(json_body(&response(204, "[1]"), ErrorShape::OpenAi)),
            "response body is not a JSON object"
        );
        let failure = upstream_failure(json_body(&response(500, "{}"), ErrorShape::OpenAi));
        assert_eq!(failure.status, 500);
    }
}
