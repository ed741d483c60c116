//! Images given by URL to an adapter that takes them inline only (Ollama): refused while
//! `[chatd.images] fetch_urls` is off; fetched by chatd when it is on, under an address guard
//! that refuses loopback, private, link-local and other non-public addresses (directly and
//! through redirects) unless `allow_networks` lists them. The image server here is a
//! wiremock on 127.0.0.1 over plain http, let through by `allow_networks = ["127.0.0.1"]`.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::TestGateway;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xfc, 0xff, 0x9f, 0xa1,
    0x1e, 0x00, 0x07, 0x82, 0x02, 0x7f, 0x3d, 0xc8, 0x48, 0xef, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn config(upstream: &str, images: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 10
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{upstream}"
        {images}
        "#
    )
}

const FETCHING: &str = r#"
        [chatd.images]
        fetch_urls = true
        max_bytes = 4096
        timeout_secs = 2
        allow_networks = ["127.0.0.1"]
"#;

async fn ollama() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "llava", "message": {"role": "assistant", "content": "a cat"},
            "done": true, "done_reason": "stop"
        })))
        .mount(&upstream)
        .await;
    upstream
}

/// Serves the PNG at /cat.png, a page at /page, a large image at /huge.png, a slow one at
/// /slow.png, and redirects: /to?url=<target> answers 302 to <target>.
async fn image_server() -> MockServer {
    let images = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/cat.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(PNG, "image/png"))
        .mount(&images)
        .await;
    Mock::given(method("GET"))
        .and(path("/page"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html></html>", "text/html"))
        .mount(&images)
        .await;
    Mock::given(method("GET"))
        .and(path("/huge.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(vec![0u8; 8192], "image/png"))
        .mount(&images)
        .await;
    Mock::given(method("GET"))
        .and(path("/slow.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(PNG, "image/png")
                .set_delay(Duration::from_secs(6)),
        )
        .mount(&images)
        .await;
    Mock::given(method("GET"))
        .and(path("/to"))
        .respond_with(|req: &Request| {
            let target = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "url")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            ResponseTemplate::new(302).insert_header("location", target.as_str())
        })
        .mount(&images)
        .await;
    images
}

fn with_image(url: &str) -> Value {
    json!({"model": "ollama/llava", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]})
}

async fn chat_requests(upstream: &MockServer) -> Vec<Value> {
    upstream
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/chat")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn image_urls_are_refused_saying_why_while_fetching_is_off() {
    let upstream = ollama().await;
    let gw = TestGateway::start(&config(&upstream.uri(), "")).await;
    let (status, _, reply) = gw
        .post(
            "/v1/chat/completions",
            with_image("https://images.example/cat.png"),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "unsupported_by_provider");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("provider ollama")
            && message.contains("fetch_urls")
            && message.contains("data: URL"),
        "{message}"
    );
    assert!(chat_requests(&upstream).await.is_empty());
    // A data: URL always works.
    let data = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(PNG)
    );
    let (status, _, reply) = gw.post("/v1/chat/completions", with_image(&data)).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn fetched_images_reach_the_upstream_inline() {
    let upstream = ollama().await;
    let images = image_server().await;
    let gw = TestGateway::start(&config(&upstream.uri(), FETCHING)).await;
    let direct = format!("{}/cat.png", images.uri());
    let redirected = format!("{}/to?url={}", images.uri(), direct);
    for url in [&direct, &redirected] {
        let (status, _, reply) = gw.post("/v1/chat/completions", with_image(url)).await;
        assert_eq!(status, 200, "{url}: {reply}");
        let sent = chat_requests(&upstream).await.pop().unwrap();
        assert_eq!(
            sent["messages"][0]["images"],
            json!([base64::engine::general_purpose::STANDARD.encode(PNG)]),
            "{url}"
        );
        assert_eq!(sent["messages"][0]["content"], "what is this?");
    }
    let fetched = images.received_requests().await.unwrap();
    assert!(
        fetched
            .iter()
            .all(|r| r.headers.get("authorization").is_none())
    );
    assert_eq!(fetched[0].headers.get("accept").unwrap(), "image/*");
}

#[tokio::test]
async fn what_is_not_an_image_or_too_large_or_too_slow_is_a_400_naming_the_part() {
    let upstream = ollama().await;
    let images = image_server().await;
    let gw = TestGateway::start(&config(&upstream.uri(), FETCHING)).await;
    let mut chain = format!("{}/cat.png", images.uri());
    for _ in 0..4 {
        chain = format!(
            "{}/to?url={}",
            images.uri(),
            url::form_urlencoded::byte_serialize(chain.as_bytes()).collect::<String>()
        );
    }
    for (what, expected) in [
        ("/page", "\"text/html\", not an image"),
        ("/huge.png", "larger than 4096 bytes"),
        ("/slow.png", "no answer within 2s"),
        ("/missing.png", "HTTP 404"),
    ] {
        let url = format!("{}{what}", images.uri());
        let (status, _, reply) = gw.post("/v1/chat/completions", with_image(&url)).await;
        assert_eq!(status, 400, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_image_url");
        assert_eq!(
            reply["error"]["param"],
            "messages[0].content[1].image_url.url"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(expected) && message.contains(&url),
            "{what}: {message}"
        );
    }
    let (status, _, reply) = gw.post("/v1/chat/completions", with_image(&chain)).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 redirects")
    );
    assert!(chat_requests(&upstream).await.is_empty());
}

/// A listener on `address` that must never see a connection.
fn bystander(address: &str) -> Option<TcpListener> {
    let listener = TcpListener::bind(address).ok()?;
    listener.set_nonblocking(true).unwrap();
    Some(listener)
}

fn untouched(listener: &TcpListener) -> bool {
    matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test]
async fn the_address_guard_refuses_internal_addresses_directly_and_through_redirects() {
    let upstream = ollama().await;
    let images = image_server().await;
    let gw = TestGateway::start(&config(&upstream.uri(), FETCHING)).await;
    // Loopback addresses other than the allowed 127.0.0.1, with something listening, to
    // prove no connection is even attempted.
    let loopback2 = bystander("127.0.0.2:0").expect("127.0.0.2 is loopback on Linux");
    let v6 = bystander("[::1]:0");
    let mut targets = vec![
        (
            format!("http://{}/x.png", loopback2.local_addr().unwrap()),
            "127.0.0.2",
            "loopback",
        ),
        ("http://10.1.2.3/x.png".to_owned(), "10.1.2.3", "private"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254",
            "link-local",
        ),
        ("http://100.64.0.1/x.png".to_owned(), "100.64.0.1", "CGNAT"),
        (
            "http://[::ffff:169.254.169.254]/x.png".to_owned(),
            "::ffff:169.254.169.254",
            "link-local",
        ),
        (
            "http://[fd00::1]/x.png".to_owned(),
            "fd00::1",
            "unique-local",
        ),
    ];
    match &v6 {
        Some(listener) => targets.push((
            format!("http://{}/x.png", listener.local_addr().unwrap()),
            "::1",
            "loopback",
        )),
        None => targets.push(("http://[::1]/x.png".to_owned(), "::1", "loopback")),
    }
    for (target, address, kind) in &targets {
        let redirect = format!(
            "{}/to?url={}",
            images.uri(),
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        );
        for url in [target, &redirect] {
            let (status, _, reply) = gw.post("/v1/chat/completions", with_image(url)).await;
            assert_eq!(status, 400, "{url}: {reply}");
            assert_eq!(reply["error"]["code"], "invalid_image_url", "{url}");
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("resolves to {address}")) && message.contains(kind),
                "{url}: {message}"
            );
        }
    }
    assert!(untouched(&loopback2), "a connection reached 127.0.0.2");
    if let Some(listener) = &v6 {
        assert!(untouched(listener), "a connection reached [::1]");
    }
    assert!(chat_requests(&upstream).await.is_empty());

    // Without the allowlist, 127.0.0.1 itself is refused (and by name, through DNS).
    let before = images.received_requests().await.unwrap().len();
    let strict = FETCHING.replace("allow_networks = [\"127.0.0.1\"]", "");
    let gw = TestGateway::start(&config(&upstream.uri(), &strict)).await;
    let port = url::Url::parse(&images.uri()).unwrap().port().unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/cat.png"),
        format!("http://localhost:{port}/cat.png"),
    ] {
        let (status, _, reply) = gw.post("/v1/chat/completions", with_image(&url)).await;
        assert_eq!(status, 400, "{url}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("loopback"),
            "{url}: {reply}"
        );
    }
    assert_eq!(
        images.received_requests().await.unwrap().len(),
        before,
        "nothing reached the image server"
    );
}
