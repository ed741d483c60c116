//! Each built-in adapter, through the real wasm component and the real host, against a
//! wiremock upstream: what goes on the wire, how answers and failures come back.

mod support;

use serde_json::{Value, json};
use support::TestGateway;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk-test-0123456789abcdef";

/// A config with every adapter pointed at `upstream`; cloud/openrouter keys come from a
/// `.env` file (the fallback path), since tests must not mutate the process environment.
fn config(upstream: &str) -> String {
    format!(
        r#"
        [models]
        fast = "ollama/qwen3:8b"
        judge = "kimi-k2.6:cloud"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 2
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{upstream}"
        [chatd.providers.ollama_cloud]
        adapter = "ollama_cloud"
        base_url = "{upstream}"
        key_env = "CHATD_TEST_UNSET_OLLAMA_CLOUD_KEY"
        key_file = "{{dir}}/keys.env"
        [chatd.providers.openrouter]
        adapter = "openai_compat"
        base_url = "{upstream}/api/v1"
        key_env = "CHATD_TEST_UNSET_OPENROUTER_KEY"
        key_file = "{{dir}}/keys.env"
        headers = {{ "X-Title" = "chatd-tests" }}
        "#
    )
}

async fn gateway(upstream: &MockServer) -> TestGateway {
    let keys = format!(
        "CHATD_TEST_UNSET_OLLAMA_CLOUD_KEY={KEY}\nexport CHATD_TEST_UNSET_OPENROUTER_KEY=\"{KEY}\"\n"
    );
    TestGateway::start_with_files(&config(&upstream.uri()), &[("keys.env", keys.as_bytes())]).await
}

fn ollama_answer(content: &str) -> Value {
    json!({
        "model": "qwen3:8b", "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": true, "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 7
    })
}

fn openai_answer(content: &str) -> Value {
    json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "anthropic/claude-x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
    })
}

async fn only_request(server: &MockServer) -> Request {
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(
        reqs.len(),
        1,
        "expected exactly one upstream request, got {}",
        reqs.len()
    );
    reqs.into_iter().next().unwrap()
}

fn body(req: &Request) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

#[tokio::test]
async fn ollama_happy_path_strips_prefix_sends_think_false_and_no_auth() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ollama_answer("Hi!")))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw
        .post("/v1/chat", TestGateway::chat("ollama/qwen3:8b"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "Hi!");
    assert_eq!(reply["provider"], "ollama");
    assert_eq!(reply["input_tokens"], 11);
    assert_eq!(reply["output_tokens"], 7);
    assert_eq!(reply["done_reason"], "stop");
    assert!(reply["latency_ms"].as_f64().unwrap() > 0.0);

    let req = only_request(&upstream).await;
    let sent = body(&req);
    assert_eq!(sent["model"], "qwen3:8b", "prefix stripped at the upstream");
    assert_eq!(sent["think"], false, "think=false on the wire by default");
    assert_eq!(sent["stream"], false);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
    assert!(
        req.headers.get("authorization").is_none(),
        "ollama needs no auth header"
    );
}

#[tokio::test]
async fn ollama_json_mode_options_and_explicit_think() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ollama_answer("{\"a\":1}")))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let request = json!({
        "model": "qwen3:8b", "messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "json please"}],
        "format": "json", "think": true, "max_tokens": 10, "temperature": 0.2, "top_p": 0.9, "stop": ["END"]
    });
    let (status, _, reply) = gw.post("/v1/chat", request).await;
    assert_eq!(status, 200, "{reply}");
    let sent = body(&only_request(&upstream).await);
    assert_eq!(
        sent["model"], "qwen3:8b",
        "bare names reach the default provider unchanged"
    );
    assert_eq!(sent["format"], "json");
    assert_eq!(sent["think"], true);
    assert_eq!(
        sent["options"],
        json!({"temperature": 0.2, "top_p": 0.9, "num_predict": 10, "stop": ["END"]})
    );
}

#[tokio::test]
async fn tiers_resolve_to_their_model_ids() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ollama_answer("tiered")))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/generate"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"model": "kimi-k2.6", "response": "cloud", "done": true})),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("fast")).await;
    assert_eq!((status, reply["provider"].as_str()), (200, Some("ollama")));
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("judge")).await;
    assert_eq!(
        (status, reply["provider"].as_str()),
        (200, Some("ollama_cloud")),
        "{reply}"
    );
    let reqs = upstream.received_requests().await.unwrap();
    assert_eq!(body(&reqs[0])["model"], "qwen3:8b");
    assert_eq!(
        body(&reqs[1])["model"],
        "kimi-k2.6",
        ":cloud suffix stripped"
    );
}

#[tokio::test]
async fn ollama_cloud_flattens_messages_with_bearer_key_from_env_file() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/generate"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "gpt-oss:120b", "response": "flat", "done": true, "done_reason": "stop",
            "prompt_eval_count": 30, "eval_count": 3
        })))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let request = json!({"model": "gpt-oss:120b:cloud", "format": "json", "messages": [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"}
    ]});
    let (status, _, reply) = gw.post("/v1/chat", request).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "flat");
    assert_eq!(reply["input_tokens"], 30);
    let sent = body(&only_request(&upstream).await);
    assert_eq!(sent["model"], "gpt-oss:120b");
    assert_eq!(
        sent["prompt"],
        "Be brief\n\nUser: hi\n\nAssistant: hello\n\nUser: bye"
    );
    assert_eq!(sent["think"], false);
    assert_eq!(sent["format"], "json");
}

#[tokio::test]
async fn openai_compat_happy_path_json_mode_auth_and_static_headers() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer("{\"ok\":true}")))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let mut request = TestGateway::chat("openrouter/anthropic/claude-x");
    request["format"] = json!("json");
    let (status, _, reply) = gw.post("/v1/chat", request).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "{\"ok\":true}");
    assert_eq!(reply["provider"], "openrouter");
    assert_eq!(
        (
            reply["input_tokens"].as_u64(),
            reply["output_tokens"].as_u64()
        ),
        (Some(21), Some(9))
    );
    let req = only_request(&upstream).await;
    let sent = body(&req);
    assert_eq!(
        sent["model"], "anthropic/claude-x",
        "only the routing prefix is stripped"
    );
    assert_eq!(sent["response_format"], json!({"type": "json_object"}));
    assert_eq!(
        req.headers.get("authorization").unwrap(),
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(req.headers.get("x-title").unwrap(), "chatd-tests");
}

#[tokio::test]
async fn upstream_500_becomes_502_naming_provider_and_status() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": "model exploded"})))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw
        .post("/v1/chat", TestGateway::chat("ollama/qwen3:8b"))
        .await;
    assert_eq!(status, 502);
    assert_eq!(reply["error"]["code"], "upstream_error");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ollama") && message.contains("500") && message.contains("model exploded"),
        "{message}"
    );
}

#[tokio::test]
async fn upstream_429_passes_through_with_retry_after() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "17")
                .set_body_json(json!({"error": {"message": "slow down", "type": "rate_limit"}})),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, headers, reply) = gw
        .post("/v1/chat", TestGateway::chat("openrouter/x/y"))
        .await;
    assert_eq!(status, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "17");
    assert_eq!(reply["error"]["code"], "rate_limited");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("slow down")
    );
}

#[tokio::test]
async fn zero_choices_is_a_502_malformed_response() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "x", "choices": []})))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw
        .post("/v1/chat", TestGateway::chat("openrouter/x/y"))
        .await;
    assert_eq!(status, 502);
    assert_eq!(reply["error"]["code"], "upstream_malformed_response");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("zero choices")
    );
}

#[tokio::test]
async fn non_json_2xx_body_is_a_502() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("qwen3:8b")).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (502, Some("upstream_malformed_response"))
    );
}

#[tokio::test]
async fn unknown_prefix_falls_through_to_default_unchanged() {
    // Seed smoke check 5: no prefix rewrite; the default upstream's 404 keeps its status,
    // with the code the adapter read from the upstream's words.
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": "model \"unknown/m\" not found"})),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("unknown/m")).await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["error"]["code"], "model_not_found");
    assert!(reply["error"]["message"].as_str().unwrap().contains("404"));
    assert_eq!(body(&only_request(&upstream).await)["model"], "unknown/m");
}

#[tokio::test]
async fn upstream_slower_than_the_timeout_is_a_504() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(ollama_answer("late"))
                .set_delay(std::time::Duration::from_secs(5)),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("qwen3:8b")).await;
    assert_eq!(status, 504, "{reply}");
    assert_eq!(reply["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn refused_connection_is_a_502_unreachable() {
    // Bind then drop a listener: its port now refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::start(&config(&format!("http://127.0.0.1:{port}"))).await;
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("qwen3:8b")).await;
    assert_eq!(status, 502);
    assert_eq!(reply["error"]["code"], "upstream_unreachable");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ollama")
    );
}

#[tokio::test]
async fn a_key_quoted_back_by_the_upstream_is_scrubbed() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": format!("invalid key {KEY}")}})),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    let (status, _, reply) = gw
        .post("/v1/chat", TestGateway::chat("openrouter/x/y"))
        .await;
    assert_eq!(status, 502);
    let text = reply.to_string();
    assert!(!text.contains(KEY), "key leaked: {text}");
    assert!(text.contains("invalid key ***"), "{text}");
}

/// Megabytes of text with characters that need escaping, both ways through each adapter: the
/// guest's request-body writer must keep every byte, within the default 64 MiB of instance
/// memory.
#[tokio::test]
async fn megabyte_messages_and_answers_cross_the_sandbox_intact() {
    let text = "line \"one\"\n\ttab \\ back, Grüße 日本 🎉 \u{1} end. ".repeat(40_000);
    assert!(text.len() > 2_000_000);
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ollama_answer(&text)))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(&text)))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream).await;
    for model in ["ollama/m", "openrouter/v/m"] {
        let request = json!({"model": model, "messages": [
            {"role": "system", "content": text},
            {"role": "user", "content": "summarise"},
        ]});
        let (status, _, reply) = gw.post("/v1/chat", request).await;
        assert_eq!(status, 200, "{model}: {}", reply["error"]);
        assert!(reply["content"] == text, "{model}: answer altered");
    }
    for req in upstream.received_requests().await.unwrap() {
        let sent = body(&req);
        assert!(
            sent["messages"][0]["content"] == text,
            "request text altered"
        );
        assert_eq!(sent["messages"][1]["content"], "summarise");
    }
}
