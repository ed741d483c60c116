//! Fetching an image a client gave by URL, for an adapter that takes images inline only
//! (`[chatd.images] fetch_urls`).
//!
//! The URL is the client's, so the fetch must not become a way into chatd's own network
//! (server-side request forgery): chatd resolves the host itself, refuses every address that
//! is not a public unicast one (loopback, private, link-local, unique-local, CGNAT,
//! multicast, unspecified, reserved; IPv4-mapped and other IPv4-embedding IPv6 forms by
//! their IPv4 address) unless `allow_networks` lists it, and connects to the very address it
//! checked, so a second DNS answer cannot swap in another one. Redirects are followed a few
//! hops, each hop checked the same way. The answer must be an `image/*` of at most
//! `max_bytes`, within `timeout_secs` for the whole fetch. The fetch goes direct, never
//! through the egress proxy (through a proxy chatd could not know the address it reaches),
//! and sends nothing but the request line, `Host`, `Accept` and `User-Agent`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::ImagesConfig;

/// Redirect hops followed at most.
pub const MAX_REDIRECTS: usize = 3;

/// An image as fetched.
#[derive(Debug)]
pub struct FetchedImage {
    /// The answer's media type (`image/png`), lower-case, without parameters.
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Why an image could not be fetched. Every text here is chatd's own or the client's URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL, or a redirect, leads to an address the guard refuses.
    #[error(
        "{host} resolves to {address}, a {kind} address, which chatd does not fetch from (unless [chatd.images] allow_networks lists it)"
    )]
    Forbidden {
        host: String,
        address: IpAddr,
        kind: &'static str,
    },
    #[error("{0}")]
    Failed(String),
    #[error("the answer is {0:?}, not an image")]
    NotAnImage(String),
    #[error("the image is larger than {0} bytes ([chatd.images] max_bytes)")]
    TooLarge(usize),
    #[error("no answer within {0}s ([chatd.images] timeout_secs)")]
    Timeout(u64),
}

/// Fetches images under the address guard; shares the upstream client's trusted roots.
#[derive(Clone)]
pub struct ImageFetcher {
    tls: tokio_rustls::TlsConnector,
}

impl ImageFetcher {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> ImageFetcher {
        ImageFetcher {
            tls: tokio_rustls::TlsConnector::from(tls),
        }
    }

    /// Fetches `url` as `policy` allows.
    pub async fn fetch(
        &self,
        url: &str,
        policy: &ImagesConfig,
    ) -> Result<FetchedImage, FetchError> {
        tokio::time::timeout(policy.timeout(), self.follow(url, policy))
            .await
            .map_err(|_| FetchError::Timeout(policy.timeout_secs))?
    }

    async fn follow(&self, url: &str, policy: &ImagesConfig) -> Result<FetchedImage, FetchError> {
        let mut url =
            url::Url::parse(url).map_err(|e| FetchError::Failed(format!("bad URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            match self.get(&url, policy).await? {
                Hop::Image(image) => return Ok(image),
                Hop::Redirect(location) => {
                    url = url.join(&location).map_err(|e| {
                        FetchError::Failed(format!("redirected to a bad URL {location:?}: {e}"))
                    })?;
                }
            }
        }
        Err(FetchError::Failed(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// One request: to a checked address of `url`'s host.
    async fn get(&self, url: &url::Url, policy: &ImagesConfig) -> Result<Hop, FetchError> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(FetchError::Failed(format!(
                    "{other}: URLs are not fetched (http and https only)"
                )));
            }
        };
        let host = url
            .host()
            .ok_or_else(|| FetchError::Failed("the URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let address = checked_address(&host, port, policy).await?;
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| FetchError::Failed(format!("cannot connect to {address}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let host_header = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let mut target = url.path().to_owned();
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        let request = Request::get(target)
            .header(header::HOST, host_header)
            .header(header::ACCEPT, "image/*")
            .header(
                header::USER_AGENT,
                concat!("chatd/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Failed(format!("cannot build the request: {e}")))?;
        if https {
            let name = match &host {
                url::Host::Domain(d) => ServerName::try_from(d.to_string()),
                url::Host::Ipv4(ip) => Ok(ServerName::from(IpAddr::V4(*ip))),
                url::Host::Ipv6(ip) => Ok(ServerName::from(IpAddr::V6(*ip))),
            }
            .map_err(|e| FetchError::Failed(format!("bad TLS server name: {e}")))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Failed(format!("TLS with {host}: {e}")))?;
            exchange(TokioIo::new(tls), request, policy).await
        } else {
            exchange(TokioIo::new(tcp), request, policy).await
        }
    }
}

/// What one request gave: the image, or where it redirects.
enum Hop {
    Image(FetchedImage),
    Redirect(String),
}

async fn exchange<T>(
    io: T,
    request: Request<Empty<Bytes>>,
    policy: &ImagesConfig,
) -> Result<Hop, FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let failed = |e: hyper::Error| FetchError::Failed(super::describe(&e));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(failed)?;
    // The connection is driven until the answer is read, then dropped with this task.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(failed)?;
        let status = response.status();
        if status.is_redirection() {
            return match response.headers().get(header::LOCATION) {
                Some(location) => Ok(Hop::Redirect(
                    String::from_utf8_lossy(location.as_bytes()).into_owned(),
                )),
                None => Err(FetchError::Failed(format!(
                    "HTTP {status} without a Location"
                ))),
            };
        }
        if status != StatusCode::OK {
            return Err(FetchError::Failed(format!("HTTP {status}")));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !media_type.starts_with("image/") || media_type.len() == "image/".len() {
            return Err(FetchError::NotAnImage(content_type));
        }
        if let Some(encoding) = response.headers().get(header::CONTENT_ENCODING)
            && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            return Err(FetchError::Failed(format!(
                "the image is {}-encoded",
                String::from_utf8_lossy(encoding.as_bytes())
            )));
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > policy.max_bytes) {
            return Err(FetchError::TooLarge(policy.max_bytes));
        }
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(failed)?;
            if let Ok(chunk) = frame.into_data() {
                if bytes.len() + chunk.len() > policy.max_bytes {
                    return Err(FetchError::TooLarge(policy.max_bytes));
                }
                bytes.extend_from_slice(&chunk);
            }
        }
        if bytes.is_empty() {
            return Err(FetchError::Failed("the image is empty".into()));
        }
        Ok(Hop::Image(FetchedImage { media_type, bytes }))
    }
    .await;
    driver.abort();
    result
}

/// The address to connect to for `host`: its first address the guard lets through. The host
/// is resolved here, once, and the connection goes to this address.
async fn checked_address(
    host: &url::Host<&str>,
    port: u16,
    policy: &ImagesConfig,
) -> Result<SocketAddr, FetchError> {
    let addresses: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(*ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(*ip)],
        url::Host::Domain(name) => tokio::net::lookup_host((*name, port))
            .await
            .map_err(|e| FetchError::Failed(format!("cannot resolve {name}: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    let mut refused = None;
    for address in addresses {
        match guard(address, &policy.allowed) {
            Ok(()) => return Ok(SocketAddr::new(address, port)),
            Err(kind) => {
                refused.get_or_insert(FetchError::Forbidden {
                    host: host.to_string(),
                    address,
                    kind,
                });
            }
        }
    }
    Err(refused.unwrap_or_else(|| FetchError::Failed(format!("{host} has no address"))))
}

/// Whether chatd may connect to `address`: a public unicast address, or one `allowed` lists.
/// An IPv6 address that embeds an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by
/// that IPv4 address, since that is where it leads.
pub fn guard(address: IpAddr, allowed: &[ipnet::IpNet]) -> Result<(), &'static str> {
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    };
    if allowed.iter().any(|net| net.contains(&address)) {
        return Ok(());
    }
    match address {
        IpAddr::V4(v4) => v4_kind(v4).map_or(Ok(()), Err),
        IpAddr::V6(v6) => v6_kind(v6, allowed).map_or(Ok(()), Err),
    }
}

/// What kind of non-public address `ip` is, if it is one.
fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            "reserved"
        }
        _ => return None,
    })
}

/// As [`v4_kind`], for IPv6; IPv4-embedding forms are judged by their IPv4 address.
fn v6_kind(ip: Ipv6Addr, allowed: &[ipnet::IpNet]) -> Option<&'static str> {
    let seg = ip.segments();
    let embedded = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    let v4_verdict = |v4: Ipv4Addr| guard(IpAddr::V4(v4), allowed).err();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    match seg {
        // IPv4-compatible (deprecated) ::a.b.c.d and NAT64 64:ff9b::a.b.c.d.
        [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            v4_verdict(embedded(hi, lo))
        }
        // 6to4: 2002:aabb:ccdd::/48 carries a.b.c.d.
        [0x2002, hi, lo, ..] => v4_verdict(embedded(hi, lo)),
        // Teredo hides an IPv4 address and tunnels to it.
        [0x2001, 0, ..] => Some("Teredo (tunnelled)"),
        [0x2001, 0xdb8, ..] => Some("reserved (documentation)"),
        [0x100, 0, 0, 0, ..] => Some("reserved (discard)"),
        _ if seg[0] & 0xfe00 == 0xfc00 => Some("unique-local"),
        _ if seg[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        _ if seg[0] & 0xffc0 == 0xfec0 => Some("site-local"),
        _ if seg[0] & 0xff00 == 0xff00 => Some("multicast"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(address: &str) -> Result<(), &'static str> {
        guard(address.parse().unwrap(), &[])
    }

    #[test]
    fn every_address_that_is_not_public_unicast_is_refused() {
        for (address, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.0.0.2", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "reserved (documentation)"),
            ("2001:0:4136:e378::1", "Teredo (tunnelled)"),
        ] {
            assert_eq!(kind(address), Err(expected), "{address}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(kind(public), Ok(()), "{public}");
        }
    }

    #[test]
    fn allowed_networks_let_their_addresses_through_and_no_others() {
        let allowed: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert_eq!(guard("127.0.0.1".parse().unwrap(), &allowed), Ok(()));
        assert_eq!(guard("::ffff:127.0.0.1".parse().unwrap(), &allowed), Ok(()));
        assert_eq!(
            guard("127.0.0.2".parse().unwrap(), &allowed),
            Err("loopback")
        );
        assert_eq!(guard("::1".parse().unwrap(), &allowed), Err("loopback"));
    }
}
