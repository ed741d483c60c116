//! Upstream HTTP: hyper's pooled client (TLS by rustls, proxies from the environment, one
//! connection pool per thread), requests built by adapters sent with host-owned auth, and the
//! framing of streamed bodies into events for the adapter.

mod connect;
mod fetch;
mod framing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;

pub use fetch::{FetchError, FetchedImage, ImageFetcher, MAX_REDIRECTS};
pub use framing::{FrameTooLong, Framer};

use connect::Proxies;

use crate::config::http_rules::is_connection_header;
use crate::contract::{HttpResponse, StreamFraming};

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

/// The content type of a response that is a document for people (an HTML or XML page: a
/// login portal, a proxy's error page, a web UI at the wrong base URL), not a stream.
fn page_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::CONTENT_TYPE)?;
    let value = String::from_utf8_lossy(value.as_bytes());
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html" | "application/xhtml+xml" | "text/xml" | "application/xml"
    )
    .then_some(essence)
}

/// Where and how to send one provider's requests.
#[derive(Debug, Clone)]
pub struct Target {
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
                || is_connection_header(&name)
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
    /// Fetches images given by URL (see `fetch.rs`), with the same trusted roots.
    images: ImageFetcher,
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

/// Why an exchange with an upstream failed. Text in it is the network's or the upstream's,
/// not yet scrubbed: the gateway maps it to the client's error (naming the provider).
#[derive(Debug)]
pub enum UpstreamError {
    /// No answer (or, for a whole body, not all of it) within the target's timeout.
    Timeout,
    /// Connection refused, DNS, TLS, reset before an answer: the message says which.
    Unreachable(String),
    /// The answer's body broke off (a reset or a short body) after its head had come.
    BodyBroken(String),
    /// A 3xx: chatd follows no redirect (a request body and an API key must not go wherever
    /// a 3xx points).
    Redirect {
        status: u16,
        location: Option<String>,
    },
    /// A body with a `Content-Encoding`, although chatd asked for none.
    Encoded(String),
    /// A whole body larger than the limit.
    TooLarge(usize),
    /// A 2xx answer to a request for a stream that is a page for people, with this content
    /// type: no stream event can come of it.
    NotAStream(String),
}

impl Upstream {
    /// Builds the client; every provider shares its pools. Redirects are not followed: a
    /// provider's redirect is an answer to surface, not something to follow with the key
    /// attached.
    pub fn new(max_body_bytes: usize) -> Result<Upstream, String> {
        let roots = connect::roots_from_env()?;
        let proxies = Arc::new(Proxies::from_env());
        let mut images_tls = connect::tls_config(roots.clone());
        images_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Upstream {
            clients: Arc::new(ThreadLocal::new()),
            connector: connect::Connector::new(proxies.clone(), roots),
            proxies,
            max_body_bytes,
            images: ImageFetcher::new(Arc::new(images_tls)),
        })
    }

    /// Fetches an image a client gave by URL, under `policy`'s address guard and limits.
    pub async fn fetch_image(
        &self,
        url: &str,
        policy: &crate::config::ImagesConfig,
    ) -> Result<FetchedImage, FetchError> {
        self.images.fetch(url, policy).await
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
        request: Request<Full<Bytes>>,
    ) -> Result<HttpResponse, UpstreamError> {
        let request = self.with_proxy_auth(request);
        let exchange = async {
            let response = self
                .client()
                .request(request)
                .await
                .map_err(|e| unreachable(target, &e))?;
            check_head(&response)?;
            self.read_whole(response).await
        };
        tokio::time::timeout(target.timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    /// Sends a request whose answer is streamed. A non-2xx answer, or an SSE request answered
    /// with plain JSON, is read whole instead (see [`Opened`]).
    pub async fn open_stream(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
        framing: StreamFraming,
    ) -> Result<Opened, UpstreamError> {
        let request = self.with_proxy_auth(request);
        let response = tokio::time::timeout(target.timeout, self.client().request(request))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| unreachable(target, &e))?;
        check_head(&response)?;
        let success = response.status().is_success();
        if success && let Some(content_type) = page_type(response.headers()) {
            return Err(UpstreamError::NotAStream(content_type));
        }
        if success && !(framing == StreamFraming::Sse && is_json(response.headers())) {
            return Ok(Opened::Stream(OpenStream { response }));
        }
        let whole = tokio::time::timeout(target.timeout, self.read_whole(response))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        Ok(if success {
            Opened::Whole(whole)
        } else {
            Opened::Refused(whole)
        })
    }

    /// A forward proxy's credentials, when the request goes through one that needs them.
    fn with_proxy_auth(&self, mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
        if let Some(auth) = self.proxies.forward_auth(request.uri()) {
            request
                .headers_mut()
                .insert(header::PROXY_AUTHORIZATION, auth);
        }
        request
    }

    async fn read_whole(
        &self,
        response: Response<Incoming>,
    ) -> Result<HttpResponse, UpstreamError> {
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
            let frame = frame.map_err(|e| UpstreamError::BodyBroken(describe(&e)))?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(UpstreamError::TooLarge(self.max_body_bytes));
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
/// follows none) and a body encoded although chatd asked for no encoding.
fn check_head(response: &Response<Incoming>) -> Result<(), UpstreamError> {
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
        return Err(UpstreamError::Redirect {
            status: status.as_u16(),
            location,
        });
    }
    if let Some(encoding) = response.headers().get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(UpstreamError::Encoded(
            String::from_utf8_lossy(encoding.as_bytes()).into_owned(),
        ));
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

/// An I/O failure talking to the upstream: a timeout if connecting took too long, otherwise
/// unreachable, described by [`describe`].
fn unreachable(target: &Target, e: &(dyn std::error::Error + 'static)) -> UpstreamError {
    if chain(e).any(|cause| cause.is::<connect::ConnectTimeout>()) {
        return UpstreamError::Timeout;
    }
    UpstreamError::Unreachable(format!("{}: {}", target.base_url(), describe(e)))
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

    #[test]
    fn pages_are_told_from_streams() {
        let page = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_str(ct).unwrap(),
            );
            page_type(&h)
        };
        assert_eq!(
            page("text/html; charset=UTF-8").as_deref(),
            Some("text/html")
        );
        assert_eq!(
            page("Application/XHTML+XML").as_deref(),
            Some("application/xhtml+xml")
        );
        for stream in [
            "text/event-stream",
            "application/x-ndjson",
            "application/json",
            "text/plain",
        ] {
            assert_eq!(page(stream), None, "{stream}");
        }
        assert_eq!(page_type(&HeaderMap::new()), None);
    }
}
