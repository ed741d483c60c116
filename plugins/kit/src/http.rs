//! Building the HTTP requests adapters hand to the host.

use crate::prelude::*;
use serde_json::{Map, Value};

use crate::json::{object_len, write_object};
use crate::types::{HttpRequest, StreamFraming};

/// The `accept` header of a request whose answer streams in `framing` when `stream` is set and
/// is one JSON document otherwise.
pub fn accept(stream: bool, framing: StreamFraming) -> &'static str {
    match (stream, framing) {
        (false, _) => "application/json",
        (true, StreamFraming::Ndjson) => "application/x-ndjson",
        (true, StreamFraming::Sse) => "text/event-stream",
    }
}

/// A `POST` of the JSON object `body`, with the headers `content-type: application/json`, then
/// `extra_headers`, then `accept`.
pub fn post_json(
    path: &str,
    extra_headers: &[(&str, &str)],
    accept: &str,
    body: Map<String, Value>,
) -> HttpRequest {
    let mut headers = Vec::with_capacity(extra_headers.len() + 2);
    headers.push(("content-type".to_owned(), "application/json".to_owned()));
    push_all(&mut headers, extra_headers);
    headers.push(("accept".to_owned(), accept.to_owned()));
    HttpRequest {
        method: "POST".into(),
        path: path.into(),
        headers,
        body: {
            // A 1/16 margin covers ordinary text's escapes (quotes, newlines).
            let estimate = object_len(&body);
            let mut bytes = Vec::with_capacity(estimate + estimate / 16);
            write_object(&mut bytes, &body);
            bytes
        },
    }
}

/// A `GET` without a body that accepts JSON, with the headers `extra_headers`, then
/// `accept: application/json`.
pub fn get_json(path: &str, extra_headers: &[(&str, &str)]) -> HttpRequest {
    let mut headers = Vec::with_capacity(extra_headers.len() + 1);
    push_all(&mut headers, extra_headers);
    headers.push(("accept".to_owned(), "application/json".to_owned()));
    HttpRequest {
        method: "GET".into(),
        path: path.into(),
        headers,
        body: Vec::new(),
    }
}

/// `text` percent-encoded for a URL path segment or query value: everything but RFC 3986's
/// unreserved characters (letters, digits, `-`, `.`, `_`, `~`) is escaped. The host escapes
/// nothing in a built path, so an adapter that puts a model name or a cursor into one must.
pub fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

fn push_all(headers: &mut Vec<(String, String)>, extra_headers: &[(&str, &str)]) {
    for (name, value) in extra_headers {
        headers.push(((*name).to_owned(), (*value).to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
        headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }

    #[test]
    fn accept_follows_stream_and_framing() {
        assert_eq!(accept(false, StreamFraming::Ndjson), "application/json");
        assert_eq!(accept(false, StreamFraming::Sse), "application/json");
        assert_eq!(accept(true, StreamFraming::Ndjson), "application/x-ndjson");
        assert_eq!(accept(true, StreamFraming::Sse), "text/event-stream");
    }

    #[test]
    fn posts_carry_content_type_extra_headers_and_accept_in_order() {
        let mut body = Map::new();
        body.insert("model".into(), "m".into());
        let built = post_json("/v1/x", &[("x-version", "1")], "text/event-stream", body);
        assert_eq!(built.method, "POST");
        assert_eq!(built.path, "/v1/x");
        assert_eq!(
            pairs(&built.headers),
            [
                ("content-type", "application/json"),
                ("x-version", "1"),
                ("accept", "text/event-stream"),
            ]
        );
        assert_eq!(built.body, br#"{"model":"m"}"#);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("claude-3.5_x~y"), "claude-3.5_x~y");
        assert_eq!(
            percent_encode("a b?c/d&e=f#g%"),
            "a%20b%3Fc%2Fd%26e%3Df%23g%25"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn gets_have_no_body_and_accept_json() {
        let built = get_json("/models", &[]);
        assert_eq!(built.method, "GET");
        assert_eq!(built.path, "/models");
        assert_eq!(pairs(&built.headers), [("accept", "application/json")]);
        assert!(built.body.is_empty());
        let built = get_json("/v1/models", &[("x-version", "1")]);
        assert_eq!(
            pairs(&built.headers),
            [("x-version", "1"), ("accept", "application/json")]
        );
    }
}
