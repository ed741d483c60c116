//! HTTPS upstreams end to end: a local TLS server whose certificate is signed by a test CA
//! (tests/fixtures/tls), trusted through `CHATD_EXTRA_CA_CERTS`. Covers certificate checks,
//! ALPN (h2 when the server offers it), connection reuse and a bad CA file at start.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use support::{ChatdProcess, read_request, run_chatd, workspace};

const KEY: &str = "sk-tls-test-7a3f";

/// What the TLS upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: http::Version,
    path: String,
    authorization: Option<String>,
}

struct TlsUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A TLS acceptor with the test CA's `localhost` certificate, offering `alpn`.
fn acceptor(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let dir = workspace().join("tests/fixtures/tls");
    let chain = vec![CertificateDer::from_pem_file(dir.join("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An OpenAI-compatible upstream over TLS offering `alpn` (e.g. h2 and http/1.1).
async fn tls_upstream(alpn: &[&[u8]]) -> TlsUpstream {
    let acceptor = acceptor(alpn);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, record) = (connections.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        record.lock().unwrap().push(Seen {
                            version: req.version(),
                            path: req.uri().path().to_owned(),
                            authorization: req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned()),
                        });
                        let body = json!({"id": "c", "object": "chat.completion", "model": "m",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "over tls"}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
                        let response = Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = TokioIo::new(tls);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                };
            });
        }
    });
    TlsUpstream {
        addr,
        connections,
        seen,
    }
}

fn config_text(base_url: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "secure"
        timeout_secs = 5
        # Each server thread has its own upstream pool: one thread, so one pooled connection.
        threads = 1
        [chatd.providers.secure]
        adapter = "openai_compat"
        base_url = "{base_url}"
        key_env = "CHATD_TLS_TEST_KEY"
        "#
    )
}

fn ca_file() -> String {
    workspace()
        .join("tests/fixtures/tls/ca.pem")
        .to_string_lossy()
        .into_owned()
}

fn chat() -> Value {
    json!({"model": "secure/m", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_with_an_extra_ca_speaks_h2_over_one_connection() {
    let up = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let chatd = ChatdProcess::start(
        &config_text(&format!("https://localhost:{}/v1", up.addr.port())),
        &[
            ("CHATD_EXTRA_CA_CERTS", &ca_file()),
            ("CHATD_TLS_TEST_KEY", KEY),
            ("NO_PROXY", "*"),
        ],
    );
    for _ in 0..3 {
        let (status, reply) = chatd.post("/v1/chat", chat()).await;
        assert_eq!(status, 200, "{reply}\n{}", chatd.logs());
        assert_eq!(reply["content"], "over tls");
    }
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.version, http::Version::HTTP_2, "{s:?}");
        assert_eq!(s.path, "/v1/chat/completions");
        assert_eq!(s.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_without_alpn_h2_falls_back_to_http1() {
    let up = tls_upstream(&[b"http/1.1"]).await;
    let chatd = ChatdProcess::start(
        &config_text(&format!("https://127.0.0.1:{}/v1", up.addr.port())),
        &[
            ("CHATD_EXTRA_CA_CERTS", &ca_file()),
            ("CHATD_TLS_TEST_KEY", KEY),
            ("NO_PROXY", "*"),
        ],
    );
    let (status, reply) = chatd.post("/v1/chat", chat()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(up.seen.lock().unwrap()[0].version, http::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_a_502_and_nothing_is_sent() {
    let up = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let chatd = ChatdProcess::start(
        &config_text(&format!("https://localhost:{}/v1", up.addr.port())),
        &[("CHATD_TLS_TEST_KEY", KEY), ("NO_PROXY", "*")],
    );
    let (status, reply) = chatd.post("/v1/chat", chat()).await;
    assert_eq!(status, 502, "{reply}");
    assert_eq!(reply["error"]["code"], "upstream_unreachable");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "no request over an untrusted TLS session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_proxy_gets_http1_connect_even_when_it_offers_h2() {
    // A TLS proxy offering h2 first: CONNECT is an HTTP/1.1 request, so chatd must not
    // negotiate h2 with the proxy (only with upstreams, inside the tunnel).
    let acceptor = acceptor(&[b"h2", b"http/1.1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let head = read_request(&mut tls).await;
        let _ = tx.send((alpn, head));
        let reply = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
        let _ = tokio::io::AsyncWriteExt::write_all(&mut tls, reply).await;
    });
    let chatd = ChatdProcess::start(
        &config_text("https://upstream.example/v1"),
        &[
            ("CHATD_EXTRA_CA_CERTS", &ca_file()),
            ("CHATD_TLS_TEST_KEY", KEY),
            ("HTTPS_PROXY", &format!("https://localhost:{port}")),
            ("NO_PROXY", ""),
        ],
    );
    let (status, reply) = chatd.post("/v1/chat", chat()).await;
    assert_eq!(status, 502, "{reply}");
    let (alpn, head) = rx.await.unwrap();
    assert_ne!(alpn.as_deref(), Some(&b"h2"[..]), "{head}");
    assert!(
        head.starts_with("CONNECT upstream.example:443 HTTP/1.1\r\n"),
        "{head}"
    );
}

#[test]
fn a_bad_extra_ca_file_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("lakehouse.toml");
    std::fs::write(&config_path, config_text("https://localhost:1/v1")).unwrap();
    let not_pem = dir.path().join("not-a-bundle.txt");
    std::fs::write(&not_pem, "just text\n").unwrap();
    for (value, expected) in [
        (
            not_pem.to_string_lossy().into_owned(),
            "no certificate in the file",
        ),
        (
            dir.path()
                .join("missing.pem")
                .to_string_lossy()
                .into_owned(),
            "cannot read PEM certificates",
        ),
    ] {
        let (code, stderr) = run_chatd(
            &[
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--config",
                config_path.to_str().unwrap(),
            ],
            &[
                ("CHATD_EXTRA_CA_CERTS", &value),
                ("CHATD_TLS_TEST_KEY", KEY),
            ],
        );
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains("CHATD_EXTRA_CA_CERTS"), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}
