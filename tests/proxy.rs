//! Egress through the proxy the environment names: `http://` upstreams are forwarded by the
//! proxy (with its credentials), `https://` upstreams are tunnelled with CONNECT so the proxy
//! never sees the provider's key, and `NO_PROXY` hosts are reached directly.

mod support;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::{ChatdProcess, read_request};
use tokio::io::AsyncWriteExt;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-proxy-test-5d1e9c";

fn config(ollama: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 5
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{ollama}"
        [chatd.providers.openrouter]
        adapter = "openai_compat"
        base_url = "https://openrouter.example/api/v1"
        key_env = "CHATD_PROXY_TEST_KEY"
        "#
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "ping"}]})
}

fn ollama_answer() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "model": "qwen3:8b", "message": {"role": "assistant", "content": "via proxy"},
        "done": true, "done_reason": "stop", "prompt_eval_count": 4, "eval_count": 2
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn http_upstreams_are_forwarded_through_the_proxy_with_its_credentials() {
    // The upstream's host does not resolve: only the proxy can answer for it.
    let proxy = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        // user:secret, as in the proxy URL.
        .and(header("proxy-authorization", "Basic dXNlcjpzZWNyZXQ="))
        .respond_with(ollama_answer())
        .mount(&proxy)
        .await;
    let proxy_url = proxy.uri().replace("http://", "http://user:secret@");
    let mut chatd = ChatdProcess::start(
        &config("http://ollama.invalid:11434"),
        &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "")],
    );
    let (status, reply) = chatd.post("/v1/chat", chat("qwen3:8b")).await;
    assert_eq!(status, 200, "{reply}\n{}", chatd.logs());
    assert_eq!(reply["content"], "via proxy");

    let seen = proxy.received_requests().await.unwrap();
    assert_eq!(seen.len(), 1);
    // Absolute-form request line: the proxy learns where to forward from the URL.
    assert_eq!(seen[0].url.as_str(), "http://ollama.invalid:11434/api/chat");
    assert_eq!(seen[0].headers["host"], "ollama.invalid:11434");
    let logs = chatd.stop();
    assert!(
        logs.contains("status=200") && !logs.contains("secret"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_are_tunnelled_and_the_proxy_never_sees_the_key() {
    // A proxy that records each request head and refuses the tunnel.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let head = read_request(&mut socket).await;
            recorded.lock().unwrap().push(head);
            let _ = socket
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let chatd = ChatdProcess::start(
        &config("http://127.0.0.1:9"),
        &[
            ("HTTPS_PROXY", &format!("http://u:p@{proxy_addr}")),
            ("NO_PROXY", ""),
            ("CHATD_PROXY_TEST_KEY", KEY),
        ],
    );
    let (status, reply) = chatd.post("/v1/chat", chat("openrouter/vendor/m")).await;
    assert_eq!(status, 502, "{reply}");
    assert_eq!(reply["error"]["code"], "upstream_unreachable", "{reply}");

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("connect openrouter.example:443 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("proxy-authorization: basic dtpw"), "{head}");
    assert!(!head.contains(&KEY.to_ascii_lowercase()), "{head}");
    assert!(!reply.to_string().contains(KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_proxy_hosts_are_reached_directly() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ollama_answer())
        .expect(1)
        .mount(&upstream)
        .await;
    // The proxy port refuses connections: a request sent there would fail.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let chatd = ChatdProcess::start(
        &config(&upstream.uri()),
        &[
            ("HTTP_PROXY", &format!("http://{dead}")),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    let (status, reply) = chatd.post("/v1/chat", chat("qwen3:8b")).await;
    assert_eq!(status, 200, "{reply}");

    // Without the exception the same request goes to the dead proxy and says so.
    let chatd = ChatdProcess::start(
        &config(&upstream.uri()),
        &[("HTTP_PROXY", &format!("http://{dead}")), ("NO_PROXY", "")],
    );
    let (status, reply) = chatd.post("/v1/chat", chat("qwen3:8b")).await;
    assert_eq!(status, 502, "{reply}");
    assert_eq!(reply["error"]["code"], "upstream_unreachable");
}
