//! Adapter errors, and the errors upstream responses stand for.

use crate::prelude::*;
use serde_json::Value;

use crate::json::json_object;
use crate::types::{AdapterError, HttpResponse, RateLimit, UpstreamFailure};

/// Upstream text copied into an error is cut to this many bytes (on a character boundary).
///
/// The cut only bounds what crosses into the host; the host scrubs API keys out of the text
/// and then cuts it to 1000 bytes for the client. Cutting here first, at 500 characters,
/// could split a key the upstream quoted back, and a key cut in two is no longer recognised
/// by the scrubber: its first half reached the client. A cut far beyond the host's final one
/// means a key split here lies well past what the host keeps.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

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

/// What an upstream error says went wrong, in OpenAI's words (`upstream-failure.code`), from
/// its error body (`body`, `Null` when it was not JSON), its message and its status:
///
/// - an OpenAI-style `error.code` string, as it is (`model_not_found`,
///   `context_length_exceeded`, `invalid_api_key`, `insufficient_quota`, ...);
/// - an Anthropic `error.type`, translated (`not_found_error` is `model_not_found`,
///   `authentication_error` `invalid_api_key`, `billing_error` `insufficient_quota`, ...),
///   and OpenAI's `insufficient_quota` type;
/// - else the message, for the errors every upstream words its own way: a model that does
///   not exist (Ollama's `model "x" not found`) and a prompt over the context window;
/// - else a 401, which is always `invalid_api_key`.
pub fn error_code(status: u16, body: &Value, message: &str) -> Option<String> {
    let error = &body["error"];
    if let Some(code) = error["code"].as_str().filter(|code| is_code(code)) {
        return Some(code.to_owned());
    }
    let by_type = match error["type"].as_str() {
        Some("not_found_error") => Some("model_not_found"),
        Some("authentication_error") => Some("invalid_api_key"),
        Some("permission_error") => Some("permission_denied"),
        Some("billing_error" | "insufficient_quota") => Some("insufficient_quota"),
        Some("rate_limit_error") => Some("rate_limit_exceeded"),
        Some("request_too_large") => Some("request_too_large"),
        Some("overloaded_error") => Some("overloaded"),
        _ => None,
    };
    let by_message = || {
        let text = message.to_ascii_lowercase();
        let has = |needle: &str| text.contains(needle);
        if has("model") && (has("not found") || has("does not exist") || has("not_found")) {
            Some("model_not_found")
        } else if has("context length")
            || has("context window")
            || has("context_length")
            || has("maximum context")
            || has("prompt is too long")
            || has("exceeds the context")
        {
            Some("context_length_exceeded")
        } else if has("invalid api key") || has("incorrect api key") || has("invalid x-api-key") {
            Some("invalid_api_key")
        } else {
            None
        }
    };
    by_type
        .or_else(by_message)
        .or((status == 401).then_some("invalid_api_key"))
        .map(str::to_owned)
}

/// Whether an `error.code` string is a code (`model_not_found`), not a sentence or a number.
fn is_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
        && !code.bytes().all(|byte| byte.is_ascii_digit())
}

/// The JSON object of a 2xx response, or the error the response stands for (see
/// [`status_error`]); a 2xx body that is not a JSON object is a malformed response.
pub fn json_body(response: &HttpResponse, shape: ErrorShape) -> Result<Value, AdapterError> {
    if !(200..300).contains(&response.status) {
        return Err(status_error(response, shape));
    }
    json_object(&response.body, "response body")
}

/// The error a non-2xx response stands for: rate limited (with its `retry-after`) for a 429,
/// otherwise an upstream failure with the response's status and [`error_code`]; the message
/// is from [`error_message`].
pub fn status_error(response: &HttpResponse, shape: ErrorShape) -> AdapterError {
    let message = error_message(response.status, &response.body, shape);
    if response.status == 429 {
        return AdapterError::RateLimited(RateLimit {
            message,
            retry_after_secs: retry_after(&response.headers),
        });
    }
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let code = error_code(response.status, &body, &message);
    upstream_with_code(response.status, message, code)
}

/// The most useful error text in an error body, truncated: the message of a JSON error body of
/// `shape`, else the body's trimmed text, else "HTTP <status>".
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
pub fn retry_after(headers: &[(String, String)]) -> Option<u32> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// Cuts upstream text to [`MAX_ERROR_BYTES`] bytes, on a character boundary.
pub fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// An upstream failure without a code; `status` is 0 for a failure reported inside a stream.
pub fn upstream(status: u16, message: String) -> AdapterError {
    upstream_with_code(status, message, None)
}

/// An upstream failure; `status` is 0 for a failure reported inside a stream.
pub fn upstream_with_code(status: u16, message: String, code: Option<String>) -> AdapterError {
    AdapterError::Upstream(UpstreamFailure {
        status,
        message,
        code,
    })
}

/// The request cannot be expressed for the upstream.
pub fn invalid(message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest(message.into())
}

/// The upstream answered with something the adapter cannot understand.
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
        // 2-byte characters: the cut falls between two.
        assert_eq!(
            truncate(&"é".repeat(MAX_ERROR_BYTES)),
            "é".repeat(MAX_ERROR_BYTES / 2)
        );
        // 3-byte characters: the cut backs off to the last whole one.
        let cut = truncate(&"日".repeat(MAX_ERROR_BYTES));
        assert_eq!(cut.len(), MAX_ERROR_BYTES - MAX_ERROR_BYTES % 3);
        assert!(cut.chars().all(|c| c == '日'));
    }

    #[test]
    fn the_cut_leaves_the_host_whole_keys_to_scrub() {
        // The host cuts at 1000 bytes after scrubbing; a key anywhere in the first few KiB must
        // reach it whole.
        let key = "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz";
        let text = format!("{}{key} is not valid", "x".repeat(4000));
        assert!(truncate(&text).contains(key));
        const { assert!(MAX_ERROR_BYTES >= 8 * 1000) };
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
        let long = json!({ "error": "ü".repeat(MAX_ERROR_BYTES) });
        assert_eq!(shape.message(&long), Some("ü".repeat(MAX_ERROR_BYTES / 2)));
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
                error_message(400, "x".repeat(20_000).as_bytes(), shape).len(),
                MAX_ERROR_BYTES
            );
            // Well past the host's own 1000-byte cut, the text is still whole.
            assert_eq!(
                error_message(400, "x".repeat(3000).as_bytes(), shape).len(),
                3000
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
        assert_eq!(failure.code.as_deref(), Some("invalid_api_key"));
        let failure = upstream_failure(Err::<(), _>(status_error(
            &response(
                404,
                r#"{"error":"model \"llama9\" not found, try pulling it first"}"#,
            ),
            ErrorShape::OpenAi,
        )));
        assert_eq!(failure.code.as_deref(), Some("model_not_found"));
        let failure = upstream_failure(Err::<(), _>(status_error(
            &response(500, "oops"),
            ErrorShape::OpenAi,
        )));
        assert_eq!(failure.code, None);
    }

    #[test]
    fn error_codes() {
        let code = |status, body: Value, message: &str| error_code(status, &body, message);
        // OpenAI's own codes pass as they are; numbers and sentences are not codes.
        for name in [
            "model_not_found",
            "context_length_exceeded",
            "insufficient_quota",
        ] {
            let body = json!({"error": {"message": "m", "code": name}});
            assert_eq!(code(400, body, "m").as_deref(), Some(name));
        }
        assert_eq!(code(400, json!({"error": {"code": 400}}), "bad"), None);
        assert_eq!(
            code(400, json!({"error": {"code": "Bad thing"}}), "bad"),
            None
        );
        assert_eq!(code(400, json!({"error": {"code": "123"}}), "bad"), None);
        // OpenAI's quota error is a type.
        let body = json!({"error": {"type": "insufficient_quota", "code": null}});
        assert_eq!(code(429, body, "x").as_deref(), Some("insufficient_quota"));
        // Anthropic's types.
        for (kind, expected) in [
            ("not_found_error", "model_not_found"),
            ("authentication_error", "invalid_api_key"),
            ("billing_error", "insufficient_quota"),
            ("overloaded_error", "overloaded"),
        ] {
            let body = json!({"type": "error", "error": {"type": kind, "message": "m"}});
            assert_eq!(code(400, body, "m").as_deref(), Some(expected), "{kind}");
        }
        // Messages.
        for (message, expected) in [
            (
                "model \"qwen9\" not found, try pulling it first",
                "model_not_found",
            ),
            ("The model `gpt-9` does not exist", "model_not_found"),
            (
                "prompt is too long: 210000 tokens > 200000 maximum",
                "context_length_exceeded",
            ),
            (
                "the input length exceeds the context length",
                "context_length_exceeded",
            ),
            (
                "This model's maximum context length is 8192 tokens",
                "context_length_exceeded",
            ),
            ("Incorrect API key provided", "invalid_api_key"),
        ] {
            assert_eq!(
                code(400, Value::Null, message).as_deref(),
                Some(expected),
                "{message}"
            );
        }
        assert_eq!(code(500, Value::Null, "internal"), None);
        assert_eq!(
            code(401, Value::Null, "who are you").as_deref(),
            Some("invalid_api_key")
        );
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
