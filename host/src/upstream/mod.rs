//! Upstream HTTP: hyper's pooled client (TLS by rustls, proxies from the environment, one
//! connection pool per thread), requests built by adapters sent with host-owned auth, and the
//! framing of streamed bodies into events for the adapter.

mod connect;
mod framing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;

pub use framing::{FrameTooLong, Framer};

use connect::Proxies;

use crate::error::GatewayError;
use crate::runtime::CallError;
use crate::runtime::bindings::{HttpRequest, HttpResponse, StreamFraming};

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

/// Headers that describe the connection and the message's framing, not the request: the HTTP
/// client sets them (`host` from the base URL, a proxy's authorization from the environment).
/// Neither an adapter nor a provider's static `headers` may set them.
pub const CONNECTION_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
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

    /// The headers of one request: the operator's and the key's (prepared at load), then the
    /// adapter's except those the host owns or the key reserves, then chatd's `User-Agent`
    /// unless the adapter named one. Operator-configured headers win over the adapter's.
    pub fn request_headers(
        &self,
        from_adapter: Vec<(String, String)>,
    ) -> Result<HeaderMap, String> {
        let mut headers = self.headers.clone();
        for (name, value) in from_adapter {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            // Auth is the host's too: the key goes in the header the adapter declared.
            if name == header::AUTHORIZATION
                || CONNECTION_HEADERS.contains(&name.as_str())
                || self.reserved.contains(&name)
            {
                continue;
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("invalid value for header {name}"))?;
            if !self.headers.contains_key(&name) {
                headers.insert(name, value);
            }
        }
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(header::USER_AGENT, USER_AGENT);
        }
        Ok(headers)
    }

    /// The request URI for `path`: the same URL as [`Target::url_for`], without going
    /// through the URL parser when `path` holds nothing it would rewrite (percent-encoding,
    /// dot segments), which is every path the bundled adapters build.
    pub fn uri_for(&self, path: &str) -> Result<Uri, http::uri::InvalidUri> {
        if is_plain_path(path) {
            Uri::try_from(format!("{}{path}", self.base_url()))
        } else {
            Uri::try_from(self.url_for(path).as_str())
        }
    }
}

/// Whether the URL parser would keep `path` (with its query) byte for byte.
fn is_plain_path(path: &str) -> bool {
    const KEPT: &[u8] = b"-._~/?=&%+,:@!$()*;";
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || KEPT.contains(&b))
        && !path.contains("/.")
        // An encoded dot is a dot segment to the URL parser.
        && !path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'e'))
}

type PooledClient = Client<connect::Connector, Full<Bytes>>;

/// The upstream client: connection pools, proxies, limits.
#[derive(Clone)]
pub struct Upstream {
    /// One pool per thread: each server thread runs its own event loop (see
    /// [`crate::api::serve`]), and a connection driven by another thread's loop would make
    /// every exchange wake that thread. Idle connections per upstream: up to one set per thread.
    clients: Arc<ThreadLocal<PooledClient>>,
    connector: connect::Connector,
    proxies: Arc<Proxies>,
    max_body_bytes: usize,
}

/// Sent when the adapter names no `User-Agent`.
const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("chatd/", env!("CARGO_PKG_VERSION")));

/// A streamed body, read chunk by chunk.
pub type BodyStream = BodyDataStream<Incoming>;

/// A streamed exchange: a 2xx response whose body is read incrementally.
pub struct OpenStream {
    response: Response<Incoming>,
}

impl OpenStream {
    /// The body as a stream of chunks.
    pub fn into_body(self) -> BodyStream {
        BodyDataStream::new(self.response.into_body())
    }
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
    /// Builds the client; every provider shares its pools. Redirects are not followed: a
    /// provider's redirect is an answer to surface, not something to follow with the key
    /// attached.
    pub fn new(max_body_bytes: usize) -> Result<Upstream, String> {
        let roots = connect::roots_from_env()?;
        let proxies = Arc::new(Proxies::from_env());
        Ok(Upstream {
            clients: Arc::new(ThreadLocal::new()),
            connector: connect::Connector::new(proxies.clone(), roots),
            proxies,
            max_body_bytes,
        })
    }

    /// This thread's client (created on first use).
    fn client(&self) -> &PooledClient {
        self.clients.get_or(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(self.connector.clone())
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
            let response = self
                .client()
                .request(request)
                .await
                .map_err(|e| unreachable(target, &e))?;
            check_head(target, &response)?;
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
        let response = tokio::time::timeout(target.timeout, self.client().request(request))
            .await
            .map_err(|_| timeout(target))?
            .map_err(|e| unreachable(target, &e))?;
        check_head(target, &response)?;
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
    ) -> Result<Request<Full<Bytes>>, GatewayError> {
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
        let uri = target
            .uri_for(&req.path)
            .map_err(|e| bad(format!("request path {:?}: {e}", req.path)))?;
        let mut headers = target.request_headers(req.headers).map_err(bad)?;
        if let Some(auth) = self.proxies.forward_auth(&uri) {
            headers.insert(header::PROXY_AUTHORIZATION, auth);
        }
        let mut request = Request::new(Full::new(Bytes::from(req.body)));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    async fn read_whole(
        &self,
        target: &Target,
        response: Response<Incoming>,
    ) -> Result<HttpResponse, GatewayError> {
        let status = response.status().as_u16();
        let headers = header_pairs(response.headers());
        // Sized from content-length when the upstream sends one: one allocation, no regrowth.
        let expected = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = Vec::with_capacity(expected.min(self.max_body_bytes));
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| unreachable(target, &e))?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
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

/// Answers no adapter can make sense of, told apart from the host's side: a redirect (chatd
/// follows none: a request body and an API key must not go wherever a 3xx points) and a
/// body encoded although chatd asked for no encoding.
fn check_head(target: &Target, response: &Response<Incoming>) -> Result<(), GatewayError> {
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("nowhere named");
        return Err(GatewayError::UpstreamStatus {
            provider: target.provider.clone(),
            status: status.as_u16(),
            message: format!(
                "redirected to {location}; chatd does not follow redirects: set base_url to \
                 the address the upstream redirects to"
            ),
            retry_after: None,
        });
    }
    if let Some(encoding) = response.headers().get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(GatewayError::MalformedResponse {
            provider: target.provider.clone(),
            message: format!(
                "the body is {}-encoded and chatd decodes no content encoding (do not send \
                 Accept-Encoding to this upstream)",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        });
    }
    Ok(())
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

/// An I/O failure talking to the upstream: a timeout if connecting took too long, otherwise
/// unreachable, described by [`describe`].
fn unreachable(target: &Target, e: &(dyn std::error::Error + 'static)) -> GatewayError {
    if chain(e).any(|cause| cause.is::<connect::ConnectTimeout>()) {
        return timeout(target);
    }
    GatewayError::UpstreamUnreachable {
        provider: target.provider.clone(),
        message: format!("{}: {}", target.base_url(), describe(e)),
    }
}

/// An error and its causes on one line, each said once. The chain of a transport error
/// never contains a header value, so no key can leak through it.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = String::new();
    for cause in chain(e) {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
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
                "/v1/models/gpt-4.1:free",
                "/a/../b",
                "/a/%2E%2e/b",
                "/a/./b?x=1",
                "/q?text='hi'&n=\"2\"",
                "/a\\b",
                "/p{x}|y`z^",
            ] {
                let expected = url::Url::parse(&format!("{}{path}", target.base_url())).unwrap();
                assert_eq!(target.url_for(path), expected, "{base} + {path}");
                // The shortcut past the URL parser gives the URI the parser would.
                let uri = target.uri_for(path).unwrap();
                assert_eq!(uri.to_string(), expected.as_str(), "{base} + {path}");
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
}
