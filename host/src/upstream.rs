//! Upstream HTTP: one shared client, requests built by adapters sent with host-owned auth,
//! and the framing of streamed bodies into events for the adapter.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::error::GatewayError;
use crate::runtime::CallError;
use crate::runtime::bindings::{HttpRequest, HttpResponse, StreamEvent, StreamFraming};

/// Whether a response declares a JSON body (`application/json`, `application/...+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Longest single NDJSON line or SSE event accepted from an upstream stream.
const MAX_EVENT_BYTES: usize = 8 << 20;

/// Headers an adapter may not set: the host owns auth, framing and connection handling.
const HOST_OWNED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// Where and how to send one provider's requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// Provider name, for error messages.
    pub provider: String,
    /// Adapter name, for error messages.
    pub adapter: String,
    /// The base URL, parsed once at load: per request only the path is set, the scheme and
    /// host (IDNA processing included) are not parsed again.
    pub base: url::Url,
    /// Bound on one exchange (streams: on each gap between chunks).
    pub timeout: Duration,
    /// Static headers and the auth header (marked sensitive), prepared at load.
    pub headers: HeaderMap,
    /// Header names the adapter must not override (the auth header, if any).
    pub reserved: Vec<HeaderName>,
}

impl Target {
    /// The base URL as configured, without a trailing slash (for logs, listings, cache keys).
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `path` (absolute, maybe with a query) under the base URL: the base's path,
    /// then `path`, as `format!("{}{path}", self.base_url())` would parse.
    pub fn url_for(&self, path: &str) -> url::Url {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.base.clone();
        let full = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&full);
        url.set_query(query);
        url
    }
}

/// The shared upstream client.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    max_body_bytes: usize,
}

/// A streamed exchange: a 2xx response whose body is read incrementally.
pub struct OpenStream {
    /// The response, body not yet read.
    pub response: reqwest::Response,
}

/// What an upstream answered to a request for a stream.
pub enum Opened {
    /// A 2xx stream, body not yet read.
    Stream(OpenStream),
    /// A 2xx answer that is one JSON document, not a stream: some OpenAI-compatible servers
    /// ignore `stream: true`. Read whole, for the adapter's `parse-response`.
    Whole(HttpResponse),
    /// A non-2xx answer, read whole: an error document for the adapter.
    Refused(HttpResponse),
}

impl Upstream {
    /// Builds the client. One client (one connection pool) serves every provider.
    pub fn new(max_body_bytes: usize) -> Result<Upstream, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // A provider's redirect is an error to surface, not something to follow with
            // the key attached.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chatd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Upstream {
            client,
            max_body_bytes,
        })
    }

    /// Sends a request and reads the whole response, all within the target's timeout.
    pub async fn send(
        &self,
        target: &Target,
        req: HttpRequest,
    ) -> Result<HttpResponse, GatewayError> {
        let request = self.prepare(target, req)?;
        let exchange = async {
            let response = request.send().await.map_err(|e| unreachable(target, &e))?;
            self.read_whole(target, response).await
        };
        tokio::time::timeout(target.timeout, exchange)
            .await
            .map_err(|_| timeout(target))?
    }

    /// Sends a request whose answer is streamed. A non-2xx answer, or an SSE request answered
    /// with plain JSON, is read whole instead (see [`Opened`]).
    pub async fn open_stream(
        &self,
        target: &Target,
        req: HttpRequest,
        framing: StreamFraming,
    ) -> Result<Opened, GatewayError> {
        let request = self.prepare(target, req)?;
        let response = tokio::time::timeout(target.timeout, request.send())
            .await
            .map_err(|_| timeout(target))?
            .map_err(|e| unreachable(target, &e))?;
        let success = response.status().is_success();
        if success && !(framing == StreamFraming::Sse && is_json(response.headers())) {
            return Ok(Opened::Stream(OpenStream { response }));
        }
        let whole = tokio::time::timeout(target.timeout, self.read_whole(target, response))
            .await
            .map_err(|_| timeout(target))??;
        Ok(if success {
            Opened::Whole(whole)
        } else {
            Opened::Refused(whole)
        })
    }

    fn prepare(
        &self,
        target: &Target,
        req: HttpRequest,
    ) -> Result<reqwest::RequestBuilder, GatewayError> {
        let bad = |message: String| GatewayError::Adapter {
            provider: target.provider.clone(),
            adapter: target.adapter.clone(),
            error: CallError::BadOutput(message),
        };
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| bad(format!("invalid HTTP method {:?}", req.method)))?;
        if !req.path.starts_with('/') || req.path.contains(['\r', '\n', '#']) {
            return Err(bad(format!(
                "request path {:?} must start with '/' and hold no CR, LF or '#'",
                req.path
            )));
        }
        let url = target.url_for(&req.path);
        let mut headers = target.headers.clone();
        for (name, value) in req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("invalid header name {name:?}")))?;
            if HOST_OWNED.contains(&name.as_str()) || target.reserved.contains(&name) {
                continue;
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| bad(format!("invalid value for header {name}")))?;
            // Operator-configured headers win over the adapter's.
            if !target.headers.contains_key(&name) {
                headers.insert(name, value);
            }
        }
        Ok(self
            .client
            .request(method, url)
            .headers(headers)
            .body(req.body))
    }

    async fn read_whole(
        &self,
        target: &Target,
        mut response: reqwest::Response,
    ) -> Result<HttpResponse, GatewayError> {
        let status = response.status().as_u16();
        let headers = header_pairs(response.headers());
        // Sized from content-length when the upstream sends one: one allocation, no regrowth.
        let expected = response.content_length().unwrap_or(0) as usize;
        let mut body = Vec::with_capacity(expected.min(self.max_body_bytes));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(target, &e))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(GatewayError::MalformedResponse {
                    provider: target.provider.clone(),
                    message: format!("response body exceeds {} bytes", self.max_body_bytes),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Header pairs with lower-case names, as the contract promises.
pub fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}

fn timeout(target: &Target) -> GatewayError {
    GatewayError::UpstreamTimeout {
        provider: target.provider.clone(),
        timeout: target.timeout,
    }
}

/// An I/O failure talking to the upstream. The message is built from the error chain
/// (URL and cause), which never contains a header value, so no key can leak through it.
pub(crate) fn unreachable(target: &Target, e: &reqwest::Error) -> GatewayError {
    if e.is_timeout() {
        return timeout(target);
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    GatewayError::UpstreamUnreachable {
        provider: target.provider.clone(),
        message,
    }
}

/// Splits a streamed body into events. Input may be cut anywhere, including inside a UTF-8
/// character: lines are split on the `\n` byte (which never occurs inside a multi-byte
/// character) and decoded only once complete.
#[derive(Debug)]
pub struct Framer {
    framing: StreamFraming,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    /// SSE only: the event being assembled.
    event: Option<String>,
    data: Option<String>,
    ready: VecDeque<StreamEvent>,
}

/// A framing failure (an event longer than the limit).
#[derive(Debug, thiserror::Error)]
#[error("stream event longer than {MAX_EVENT_BYTES} bytes")]
pub struct FrameTooLong;

impl Framer {
    /// A framer for the given format.
    pub fn new(framing: StreamFraming) -> Framer {
        Framer {
            framing,
            buf: BytesMut::new(),
            scanned: 0,
            event: None,
            data: None,
            ready: VecDeque::new(),
        }
    }

    /// Feeds bytes; complete events become available from [`Framer::next_event`].
    pub fn feed(&mut self, bytes: &Bytes) -> Result<(), FrameTooLong> {
        self.buf.extend_from_slice(bytes);
        while let Some(offset) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let pos = self.scanned + offset;
            self.scanned = 0;
            let line = self.buf.split_to(pos + 1);
            let line = String::from_utf8_lossy(&line[..pos]);
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            self.line(line);
        }
        self.scanned = self.buf.len();
        let pending = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if pending > MAX_EVENT_BYTES {
            return Err(FrameTooLong);
        }
        Ok(())
    }

    /// Flushes what is left at the end of the body (a last line without a newline, or an
    /// SSE event without its blank line).
    pub fn finish(&mut self) {
        if !self.buf.is_empty() {
            self.scanned = 0;
            let rest = self.buf.split();
            let line = String::from_utf8_lossy(&rest);
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            self.line(line);
        }
        self.dispatch();
    }

    /// Whether a complete event is waiting.
    pub fn has_event(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<StreamEvent> {
        self.ready.pop_front()
    }

    fn line(&mut self, line: String) {
        match self.framing {
            StreamFraming::Ndjson => {
                if !line.trim().is_empty() {
                    self.ready.push_back(StreamEvent {
                        event: None,
                        data: line,
                    });
                }
            }
            StreamFraming::Sse => self.sse_line(line),
        }
    }

    /// One SSE line, per the WHATWG event-stream rules chatd needs: `data`, `event`, blank
    /// line dispatch, `:` comments (e.g. OpenRouter's keep-alives) ignored.
    fn sse_line(&mut self, line: String) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            self.ready.push_back(StreamEvent { event, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_under_the_base_match_plain_concatenation() {
        for base in [
            "http://127.0.0.1:11434",
            "http://127.0.0.1:11434/",
            "https://openrouter.ai/api/v1",
            "https://openrouter.ai/api/v1/",
            "http://[::1]:8080/x%20y",
        ] {
            let target = Target {
                provider: "p".into(),
                adapter: "a".into(),
                base: url::Url::parse(base).unwrap(),
                timeout: Duration::from_secs(1),
                headers: HeaderMap::new(),
                reserved: Vec::new(),
            };
            for path in [
                "/chat/completions",
                "/api/tags",
                "/models?limit=100&after=a%2Fb",
                "/v1/a b/ü",
                "/",
                "/x?",
            ] {
                let expected = url::Url::parse(&format!("{}{path}", target.base_url())).unwrap();
                assert_eq!(target.url_for(path), expected, "{base} + {path}");
            }
        }
    }

    #[test]
    fn json_content_types_are_recognised() {
        let is = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_str(ct).unwrap(),
            );
            is_json(&h)
        };
        assert!(is("application/json"));
        assert!(is("Application/JSON; charset=utf-8"));
        assert!(is("application/problem+json"));
        assert!(!is("text/event-stream"));
        assert!(!is("application/x-ndjson"));
        assert!(!is("application/jsonl"));
        assert!(!is_json(&HeaderMap::new()));
    }

    fn frame(framing: StreamFraming, pieces: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut f = Framer::new(framing);
        let mut out = Vec::new();
        for p in pieces {
            f.feed(&Bytes::copy_from_slice(p)).unwrap();
            while let Some(e) = f.next_event() {
                out.push((e.event, e.data));
            }
        }
        f.finish();
        while let Some(e) = f.next_event() {
            out.push((e.event, e.data));
        }
        out
    }

    fn data(items: &[&str]) -> Vec<(Option<String>, String)> {
        items.iter().map(|d| (None, d.to_string())).collect()
    }

    #[test]
    fn ndjson_lines_split_anywhere_even_inside_utf8() {
        let text = "{\"a\":\"é\"}\n\n{\"b\":\"日本\"}\r\n{\"c\":1}";
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let got = frame(StreamFraming::Ndjson, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(
                got,
                data(&["{\"a\":\"é\"}", "{\"b\":\"日本\"}", "{\"c\":1}"]),
                "cut at {cut}"
            );
        }
        let one_byte_at_a_time: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frame(StreamFraming::Ndjson, &one_byte_at_a_time).len(), 3);
    }

    #[test]
    fn sse_events_comments_names_and_multiline_data() {
        let text = ": OPENROUTER PROCESSING\n\ndata: {\"x\":1}\n\nevent: error\ndata: {\"e\":\"boom\"}\n\ndata: a\ndata: b\n\ndata:[DONE]\n\n";
        let bytes = text.as_bytes();
        let expected = vec![
            (None, "{\"x\":1}".to_string()),
            (Some("error".to_string()), "{\"e\":\"boom\"}".to_string()),
            (None, "a\nb".to_string()),
            (None, "[DONE]".to_string()),
        ];
        for cut in 1..bytes.len() {
            assert_eq!(
                frame(StreamFraming::Sse, &[&bytes[..cut], &bytes[cut..]]),
                expected,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn sse_tolerates_crlf_and_a_missing_final_blank_line() {
        let got = frame(StreamFraming::Sse, &[b"data: one\r\n\r\ndata: two"]);
        assert_eq!(got, data(&["one", "two"]));
    }

    #[test]
    fn oversized_events_are_rejected() {
        let mut f = Framer::new(StreamFraming::Ndjson);
        let big = Bytes::from(vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert!(f.feed(&big).is_err());
    }
}
