//! Contract 0.3.0 through the host: adapter settings, declared capabilities, requests an older
//! adapter cannot carry, upstream errors clients can act on, and the API fields 0.3.0 carries
//! (images, JSON schemas, sampling options, passthrough), each against a wiremock upstream.

mod support;

use serde_json::{Value, json};
use support::{TestGateway, component, run_chatd};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk-test-contract03-0123456789";

/// Every built-in adapter pointed at `upstream`, the keys from a `.env` file, plus `extra`
/// (more providers or settings tables).
fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 5
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
        {extra}
        "#
    )
}

fn keys() -> Vec<u8> {
    format!("CHATD_TEST_UNSET_OLLAMA_CLOUD_KEY={KEY}\nCHATD_TEST_UNSET_OPENROUTER_KEY={KEY}\n")
        .into_bytes()
}

async fn gateway(upstream: &MockServer, extra: &str) -> TestGateway {
    TestGateway::start_with_files(&config(&upstream.uri(), extra), &[("keys.env", &keys())]).await
}

fn ollama_answer(content: &str) -> Value {
    json!({"model": "m", "message": {"role": "assistant", "content": content},
           "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2})
}

fn body(req: &Request) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

async fn requests_to(server: &MockServer, to: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == to)
        .collect()
}

// --- settings --------------------------------------------------------------------------------

const CLOUD_CHAT: &str = r#"
        [chatd.providers.cloud]
        adapter = "ollama_cloud"
        base_url = "{upstream}"
        key_env = "CHATD_TEST_UNSET_OLLAMA_CLOUD_KEY"
        key_file = "{dir}/keys.env"
        [chatd.providers.cloud.settings]
        endpoint = "chat"
"#;

fn cloud_chat(upstream: &MockServer) -> String {
    CLOUD_CHAT.replace("{upstream}", &upstream.uri())
}

#[tokio::test]
async fn settings_configure_every_instance_of_their_provider() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(|req: &Request| {
            if body(req)["stream"] == true {
                let lines = [
                    json!({"model": "m", "message": {"role": "assistant", "content": "str"}, "done": false}),
                    json!({"model": "m", "message": {"role": "assistant", "content": "eamed"}, "done": false}),
                    json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop"}),
                ];
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                ResponseTemplate::new(200)
                    .set_body_raw(text, "application/x-ndjson")
                    .set_delay(std::time::Duration::from_millis(30))
            } else {
                ResponseTemplate::new(200).set_body_json(ollama_answer("via chat"))
            }
        })
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream, &cloud_chat(&upstream)).await;
    // Tools reach Ollama Cloud only through /api/chat, which the setting picks.
    let mut request = TestGateway::chat("cloud/gpt-oss:120b");
    request["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let (status, _, reply) = gw.post("/v1/chat", request).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "via chat");
    // A stream answered after the builder was let go: its parser is a fresh instance, which
    // must be configured too (else it would parse /api/generate lines and find no content).
    let mut streamed = TestGateway::chat("cloud/gpt-oss:120b");
    streamed["stream"] = json!(true);
    let (status, _, lines) = gw.post_stream("/v1/chat", streamed).await;
    assert_eq!(status, 200, "{lines:?}");
    let text: String = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "streamed");
    assert!(requests_to(&upstream, "/api/generate").await.is_empty());
    assert_eq!(requests_to(&upstream, "/api/chat").await.len(), 2);
    // The same adapter without the setting keeps its default endpoint and refuses tools.
    let mut request = TestGateway::chat("ollama_cloud/gpt-oss:120b");
    request["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let (status, _, reply) = gw.post("/v1/chat", request).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "unsupported_by_provider");
    let (_, providers) = gw.get("/v1/chat/providers").await;
    let cloud = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cloud")
        .unwrap();
    assert!(
        cloud["adapter"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("settings")),
        "{cloud}"
    );
}

#[tokio::test]
async fn refused_settings_leave_the_provider_unregistered_naming_the_key() {
    let upstream = MockServer::start().await;
    let extra = format!(
        "{}\n[chatd.providers.local]\nadapter = \"ollama\"\nbase_url = \"{}\"\n[chatd.providers.local.settings]\nkeep_alive = \"5m\"\n",
        cloud_chat(&upstream).replace("endpoint = \"chat\"", "endpoint = \"chatt\""),
        upstream.uri()
    );
    let gw = gateway(&upstream, &extra).await;
    let (_, providers) = gw.get("/v1/chat/providers").await;
    let reason = |name: &str| {
        providers["unregistered"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("{name} is registered: {providers}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let cloud = reason("cloud");
    assert!(
        cloud.contains("[chatd.providers.cloud.settings]")
            && cloud.contains("\"endpoint\"")
            && cloud.contains("\"chatt\""),
        "{cloud}"
    );
    // An adapter that takes no settings refuses any.
    let local = reason("local");
    assert!(
        local.contains("\"keep_alive\"") && local.contains("takes no settings"),
        "{local}"
    );
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("cloud/m")).await;
    assert_eq!(status, 404, "{reply}");
    // The providers with good (or no) settings serve.
    assert!(
        providers["providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "ollama_cloud")
    );
}

#[tokio::test]
async fn an_older_adapter_takes_no_settings() {
    let upstream = MockServer::start().await;
    let echo = std::fs::read(component("chatd-fixture-echo_v1")).unwrap();
    let text = format!(
        r#"
        [chatd]
        default_provider = "echo"
        adapters_dir = "{{dir}}/adapters"
        [chatd.providers.echo]
        adapter = "echo"
        base_url = "{}"
        [chatd.providers.echo_set]
        adapter = "echo"
        base_url = "{}"
        [chatd.providers.echo_set.settings]
        mode = "fast"
        "#,
        upstream.uri(),
        upstream.uri()
    );
    let gw = TestGateway::start_with_files(&text, &[("adapters/echo.wasm", &echo)]).await;
    let (_, providers) = gw.get("/v1/chat/providers").await;
    let unregistered = providers["unregistered"].as_array().unwrap();
    assert_eq!(unregistered.len(), 1, "{providers}");
    let reason = unregistered[0]["reason"].as_str().unwrap();
    assert!(
        unregistered[0]["name"] == "echo_set"
            && reason.contains("takes no settings")
            && reason.contains("contract 0.2.0"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_reload_that_brings_refused_settings_is_rejected_and_the_old_config_serves() {
    use chatd::gateway::ReloadScope;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ollama_answer("still here")))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream, &cloud_chat(&upstream)).await;
    let path = gw.dir.path().join("lakehouse.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("endpoint = \"chat\"", "endpoint = 7")).unwrap();
    let report = gw
        .gateway
        .reload(ReloadScope::ConfigAndAdapters, "test")
        .await;
    assert!(!report.ok, "{report:?}");
    let error = report.error.unwrap();
    assert!(
        error.contains("provider cloud") && error.contains("\"endpoint\""),
        "{error}"
    );
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("cloud/m")).await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("still here"))
    );
    // Fixed, the reload goes through.
    std::fs::write(
        &path,
        good.replace("endpoint = \"chat\"", "endpoint = \"generate\""),
    )
    .unwrap();
    let report = gw
        .gateway
        .reload(ReloadScope::ConfigAndAdapters, "test")
        .await;
    assert!(report.ok, "{report:?}");
}

#[test]
fn chatd_check_fails_on_refused_settings() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        "http://127.0.0.1:9",
        &CLOUD_CHAT.replace("{upstream}", "http://127.0.0.1:9"),
    )
    .replace("endpoint = \"chat\"", "endpoint = \"chats\"")
    .replace("{dir}", dir.path().to_str().unwrap());
    std::fs::write(dir.path().join("keys.env"), keys()).unwrap();
    let path = dir.path().join("lakehouse.toml");
    std::fs::write(&path, text).unwrap();
    let (code, out) = run_chatd(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("provider cloud: NOT registered") && out.contains("\"endpoint\""),
        "{out}"
    );
}
