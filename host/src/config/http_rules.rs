//! The HTTP rules chatd holds every upstream request to, in one place: which headers belong
//! to the connection and not to a request, what a provider base URL may be, and where an
//! API key may go. Config validation, adapter loading and the upstream client all apply
//! these; none of them imports the others for it.

use http::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

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

/// Whether `name` is one of the [`CONNECTION_HEADERS`].
pub fn is_connection_header(name: &HeaderName) -> bool {
    CONNECTION_HEADERS.contains(&name.as_str())
}

/// Checks that a URL can be a provider base URL: http(s), a host, no query or fragment
/// (paths are appended to it), no credentials (keys go through `key_env`).
pub fn check_base_url(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use key_env".into());
    }
    Ok(())
}

/// The header an adapter declared for its API key, if the key can go there: not a header
/// the HTTP client sets itself (the key would be overwritten, or put in the framing).
pub fn auth_header(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("auth header {name:?} is not a valid header name"))?;
    if is_connection_header(&header) || header == http::header::CONTENT_TYPE {
        return Err(format!(
            "auth header {name:?} is one chatd's HTTP client sets itself; the key cannot go there"
        ));
    }
    Ok(header)
}

/// A provider's static `headers`, parsed: each a valid name and value, none a connection
/// header. Errors name the header (never its value, which may be a credential).
pub fn static_headers<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        if is_connection_header(&parsed) {
            return Err(format!(
                "header {name} cannot be set in headers: chatd's HTTP client sets it (the host \
                 comes from base_url)"
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("header {name} has an invalid value"))?;
        headers.insert(parsed, value);
    }
    Ok(headers)
}
