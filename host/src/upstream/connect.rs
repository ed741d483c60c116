//! Connections to upstreams: TCP, TLS with ALPN (h2 or HTTP/1.1), either direct or through
//! the proxy the environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`,
//! upper or lower case, read once at start, the rules curl uses). `https://` upstreams are
//! reached through a CONNECT tunnel, so the proxy never sees a key; `http://` upstreams are
//! forwarded by the proxy (absolute-form requests, see [`Proxies::forward_auth`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Uri, uri::Scheme};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long establishing a connection may take: TCP, proxy tunnel and TLS handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle TCP connections are probed after this long, so a dead peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// The proxies from the environment, and which upstreams bypass them.
#[derive(Debug)]
pub struct Proxies(Matcher);

impl Proxies {
    /// Reads the proxy variables of the process environment (not the `.env` file: they
    /// configure the process, like `RUST_LOG`).
    pub fn from_env() -> Proxies {
        Proxies(Matcher::from_env())
    }

    /// The `Proxy-Authorization` value for a request forwarded (not tunnelled) through a
    /// proxy whose URL has credentials; `None` for direct and tunnelled requests.
    pub fn forward_auth(&self, uri: &Uri) -> Option<HeaderValue> {
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        self.0.intercept(uri)?.basic_auth().cloned()
    }
}

/// The connector behind the upstream client's pool.
#[derive(Clone)]
pub struct Connector {
    /// Direct TCP or TLS to an upstream (ALPN h2 or HTTP/1.1).
    direct: HttpsConnector<HttpConnector>,
    /// TCP or TLS to a proxy: HTTP/1.1 only, the protocol of CONNECT and of forwarding.
    to_proxy: HttpsConnector<HttpConnector>,
    /// TLS inside a CONNECT tunnel (same roots and ALPN as `direct`).
    tls: tokio_rustls::TlsConnector,
    proxies: Arc<Proxies>,
}

impl Connector {
    /// A connector verifying servers against `roots`, offering h2 and HTTP/1.1.
    pub fn new(proxies: Arc<Proxies>, roots: rustls::RootCertStore) -> Connector {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let mut tls = tls_config(roots);
        let direct = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp.clone());
        let to_proxy = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Connector {
            direct,
            to_proxy,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            proxies,
        }
    }

    async fn connect(mut self, dst: Uri) -> Result<Conn, BoxError> {
        let Some(proxy) = self.proxies.0.intercept(&dst) else {
            let io = self.direct.call(dst).await?;
            let connected = io.connected();
            return Ok(Conn::new(io, connected));
        };
        if dst.scheme() != Some(&Scheme::HTTPS) {
            // Forwarding: the proxy gets absolute-form requests on this connection.
            let io = self.to_proxy.call(proxy.uri().clone()).await?;
            let connected = io.connected().proxy(true);
            return Ok(Conn::new(io, connected));
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.to_proxy.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let tunneled = tunnel.call(dst.clone()).await?;
        let host = dst.host().ok_or("the upstream URL has no host")?;
        // An IPv6 literal is bracketed in a URI, not in a server name.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())?;
        let tls = self.tls.connect(name, TokioIo::new(tunneled)).await?;
        let connected = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        };
        Ok(Conn::new(TokioIo::new(tls), connected))
    }
}

/// Protocol versions and `roots`, with the ring provider chosen explicitly so the choice does
/// not depend on which other crates enable which rustls features.
pub(super) fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The variable naming a PEM file of extra root certificates (an internal CA, or the CA of a
/// TLS-inspecting egress proxy), trusted besides the bundled webpki roots.
const EXTRA_CA_VAR: &str = "CHATD_EXTRA_CA_CERTS";

/// The bundled webpki roots, plus the certificates of the file `CHATD_EXTRA_CA_CERTS` names
/// when it is set. Every certificate in that file must be a usable trust anchor: a typo'd
/// bundle fails the start instead of leaving upstreams to fail one by one.
pub fn roots_from_env() -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let Some(path) = std::env::var_os(EXTRA_CA_VAR).filter(|p| !p.is_empty()) else {
        return Ok(roots);
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{EXTRA_CA_VAR}={shown}: cannot read PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{EXTRA_CA_VAR}={shown}: no certificate in the file (expected PEM \"BEGIN CERTIFICATE\" blocks)"
        ));
    }
    let total = certs.len();
    let (_, unusable) = roots.add_parsable_certificates(certs);
    if unusable > 0 {
        return Err(format!(
            "{EXTRA_CA_VAR}={shown}: {unusable} of {total} certificates cannot be trust anchors"
        ));
    }
    Ok(roots)
}

/// The connect deadline passed, as the error chain reports it.
#[derive(Debug, thiserror::Error)]
#[error("connecting took longer than {}s", CONNECT_TIMEOUT.as_secs())]
pub struct ConnectTimeout;

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.clone().connect(dst);
        Box::pin(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| ConnectTimeout)?
        })
    }
}

/// Any transport the client may hold: boxed so direct, forwarded and tunnelled connections
/// share one pool. One allocation per connection, not per request.
pub struct Conn {
    io: Box<dyn Io>,
    /// Whether requests on this connection go in absolute form to a forward proxy.
    proxied: bool,
    /// Whether ALPN chose h2.
    h2: bool,
}

trait Io: Read + Write + Send + Unpin {}
impl<T: Read + Write + Send + Unpin> Io for T {}

impl Conn {
    fn new(io: impl Io + 'static, connected: Connected) -> Conn {
        Conn {
            io: Box::new(io),
            proxied: connected.is_proxied(),
            h2: connected.is_negotiated_h2(),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = Connected::new().proxy(self.proxied);
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}
