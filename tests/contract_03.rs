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

// --- errors clients can act on ----------------------------------------------------------------

/// Answers every `/api/v1/chat/completions` request for `model` with `status` and `body`.
async fn openai_fails(upstream: &MockServer, model: &str, status: u16, body: Value) {
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .and(wiremock::matchers::body_partial_json(
            json!({"model": model}),
        ))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(upstream)
        .await;
}

fn completions(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn upstream_statuses_that_blame_the_request_are_kept_with_their_code() {
    let upstream = MockServer::start().await;
    openai_fails(
        &upstream,
        "gone",
        404,
        json!({"error": {"message": "The model `gone` does not exist", "type": "invalid_request_error", "code": "model_not_found"}}),
    )
    .await;
    openai_fails(
        &upstream,
        "long",
        400,
        json!({"error": {"message": format!("This model's maximum context length is 8192 tokens (key {KEY})"), "type": "invalid_request_error"}}),
    )
    .await;
    openai_fails(
        &upstream,
        "busy",
        409,
        json!({"error": {"message": "conflict"}}),
    )
    .await;
    openai_fails(
        &upstream,
        "huge",
        413,
        json!({"error": {"message": "too large"}}),
    )
    .await;
    openai_fails(
        &upstream,
        "odd",
        422,
        json!({"error": {"message": "unprocessable"}}),
    )
    .await;
    openai_fails(
        &upstream,
        "broken",
        500,
        json!({"error": {"message": "boom", "code": "server_error"}}),
    )
    .await;
    openai_fails(
        &upstream,
        "payment",
        402,
        json!({"error": {"message": "pay up"}}),
    )
    .await;
    let gw = gateway(&upstream, "").await;

    let (status, _, reply) = gw
        .post("/v1/chat/completions", completions("openrouter/gone"))
        .await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["error"]["code"], "model_not_found");
    assert_eq!(reply["error"]["type"], "invalid_request_error");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    let (status, _, reply) = gw
        .post("/v1/chat", TestGateway::chat("openrouter/gone"))
        .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    let (status, _, reply) = gw
        .post("/v1/chat/completions", completions("openrouter/long"))
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "context_length_exceeded");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("maximum context length") && !message.contains(KEY),
        "{message}"
    );

    for (model, kept) in [("busy", 409), ("huge", 413), ("odd", 422)] {
        let (status, _, reply) = gw
            .post(
                "/v1/chat/completions",
                completions(&format!("openrouter/{model}")),
            )
            .await;
        assert_eq!(status, kept, "{reply}");
        assert_eq!(reply["error"]["code"], "upstream_error");
        assert_eq!(reply["error"]["type"], "invalid_request_error");
    }
    let (status, _, reply) = gw
        .post("/v1/chat/completions", completions("openrouter/broken"))
        .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (502, Some("server_error"))
    );
    let (status, _, reply) = gw
        .post("/v1/chat/completions", completions("openrouter/payment"))
        .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (502, Some("upstream_error"))
    );
}

#[tokio::test]
async fn an_upstream_refusing_the_key_is_a_502_naming_where_the_key_came_from() {
    let upstream = MockServer::start().await;
    openai_fails(
        &upstream,
        "m",
        401,
        json!({"error": {"message": format!("Incorrect API key provided: {KEY}"), "code": "invalid_api_key"}}),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/api/generate"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": "forbidden"})))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream, "").await;
    for (model, status_text) in [("openrouter/m", "HTTP 401"), ("ollama_cloud/m", "HTTP 403")] {
        let (status, _, reply) = gw.post("/v1/chat/completions", completions(model)).await;
        assert_eq!(status, 502, "{reply}");
        assert_eq!(reply["error"]["code"], "upstream_auth");
        let message = reply["error"]["message"].as_str().unwrap();
        let provider = model.split('/').next().unwrap();
        assert!(
            message.contains(&format!("provider {provider}"))
                && message.contains(status_text)
                && message.contains("keys.env")
                && !message.contains(KEY),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_model_routed_to_no_registered_provider_is_model_not_found_in_openai_shape() {
    let upstream = MockServer::start().await;
    for (listing, empty) in [
        ("/api/v1/models", json!({"object": "list", "data": []})),
        ("/api/tags", json!({"models": []})),
    ] {
        Mock::given(method("GET"))
            .and(path(listing))
            .respond_with(ResponseTemplate::new(200).set_body_json(empty))
            .mount(&upstream)
            .await;
    }
    let extra = "[chatd.providers.kimi]\nadapter = \"openai_compat\"\nkey_env = \"CHATD_TEST_KIMI_KEY_UNSET\"\n";
    let gw = gateway(&upstream, extra).await;
    let (status, _, reply) = gw
        .post("/v1/chat/completions", completions("kimi/k2"))
        .await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["error"]["code"], "model_not_found");
    assert_eq!(reply["error"]["param"], "model");
    // The native shape keeps chatd's own, more precise code.
    let (status, _, reply) = gw.post("/v1/chat", TestGateway::chat("kimi/k2")).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("provider_not_registered"))
    );
    // A model id the list does not have, as OpenAI's models.retrieve answers it.
    let (status, reply) = gw.get("/v1/models/openrouter/nope").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
}

#[tokio::test]
async fn streamed_tool_call_indices_count_from_zero_whatever_the_upstream_numbers() {
    let upstream = MockServer::start().await;
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let events = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 2, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ];
    let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    sse.push_str("data: [DONE]\n\n");
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream, "").await;
    let mut request = completions("openrouter/m");
    request["stream"] = json!(true);
    let (status, _, lines) = gw.post_stream("/v1/chat/completions", request).await;
    assert_eq!(status, 200, "{lines:?}");
    let indices: Vec<(u64, Option<String>)> = support::sse_data(&lines)
        .iter()
        .flat_map(|e| {
            e["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| {
            (
                c["index"].as_u64().unwrap(),
                c["id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        indices,
        [
            (0, Some("call_a".to_owned())),
            (0, None),
            (1, Some("call_b".to_owned()))
        ]
    );
    // The native stream gets the same numbers.
    let mut request = TestGateway::chat("openrouter/m");
    request["stream"] = json!(true);
    let (_, _, lines) = gw.post_stream("/v1/chat", request).await;
    let native: Vec<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| v["tool_calls"].as_array().cloned().unwrap_or_default())
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(native, [0, 0, 1]);
}

#[tokio::test]
async fn the_model_listing_follows_pages_and_shows_context_lengths() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/models"))
        .and(wiremock::matchers::query_param("after", "b/two"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "data": [{"id": "c/three", "object": "model"}], "has_more": false
        })))
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "has_more": true, "last_id": "b/two",
            "data": [{"id": "a/one", "object": "model", "context_length": 131072},
                     {"id": "b/two", "object": "model"}]
        })))
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"models": []})))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream, "").await;
    let (status, list) = gw.get("/v1/models").await;
    assert_eq!(status, 200, "{list}");
    let openrouter: Vec<(String, Option<u64>)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"].as_str().unwrap().starts_with("openrouter/"))
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["context_length"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        openrouter,
        [
            ("openrouter/a/one".to_owned(), Some(131072)),
            ("openrouter/b/two".to_owned(), None),
            ("openrouter/c/three".to_owned(), None)
        ]
    );
    assert_eq!(requests_to(&upstream, "/api/v1/models").await.len(), 2);
}

// --- what the API carries ---------------------------------------------------------------------

/// A small PNG's bytes, base64 (what a client puts into a data: URL).
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn data_url() -> String {
    format!("data:image/png;base64,{PNG_B64}")
}

fn openai_answer(content: &str) -> Value {
    json!({"id": "x", "object": "chat.completion", "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
}

/// An upstream answering Ollama's `/api/chat` and OpenAI's `/api/v1/chat/completions`.
async fn chat_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ollama_answer("{\"a\": 1}")))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer("{\"a\": 1}")))
        .mount(&upstream)
        .await;
    upstream
}

async fn last_body(upstream: &MockServer, to: &str) -> Value {
    body(requests_to(upstream, to).await.last().expect("no request"))
}

#[tokio::test]
async fn json_schemas_reach_each_upstream_in_its_native_form() {
    let upstream = chat_upstream().await;
    let gw = gateway(&upstream, "").await;
    let schema =
        json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
    let mut request = completions("ollama/qwen3:8b");
    request["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "Thing", "schema": schema, "strict": true}});
    let (status, _, reply) = gw.post("/v1/chat/completions", request.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(last_body(&upstream, "/api/chat").await["format"], schema);

    request["model"] = json!("openrouter/x/y");
    let (status, _, reply) = gw.post("/v1/chat/completions", request).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        last_body(&upstream, "/api/v1/chat/completions").await["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "Thing", "schema": schema, "strict": true}})
    );

    // The native API takes the schema as its `format`, as Ollama's API does.
    let mut native = TestGateway::chat("ollama/qwen3:8b");
    native["format"] = schema.clone();
    let (status, _, reply) = gw.post("/v1/chat", native).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(last_body(&upstream, "/api/chat").await["format"], schema);
}

#[tokio::test]
async fn images_reach_each_upstream_in_its_native_form() {
    let upstream = chat_upstream().await;
    let gw = gateway(&upstream, "").await;
    let content = json!([
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": data_url(), "detail": "low"}},
    ]);
    let request = |model: &str, content: &Value| json!({"model": model, "messages": [{"role": "user", "content": content}]});
    let (status, _, reply) = gw
        .post("/v1/chat/completions", request("ollama/llava", &content))
        .await;
    assert_eq!(status, 200, "{reply}");
    let sent = last_body(&upstream, "/api/chat").await;
    assert_eq!(sent["messages"][0]["content"], "What is in this picture?");
    assert_eq!(sent["messages"][0]["images"], json!([PNG_B64]));

    let (status, _, reply) = gw
        .post(
            "/v1/chat/completions",
            request("openrouter/x/vision", &content),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let sent = last_body(&upstream, "/api/v1/chat/completions").await;
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"type": "image_url", "image_url": {"url": data_url(), "detail": "low"}})
    );
    // A URL goes on as a URL to an adapter that takes image URLs.
    let by_url = json!([{"type": "text", "text": "and this?"},
                        {"type": "image_url", "image_url": {"url": "https://images.example/cat.png"}}]);
    let (status, _, reply) = gw
        .post(
            "/v1/chat/completions",
            request("openrouter/x/vision", &by_url),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let sent = last_body(&upstream, "/api/v1/chat/completions").await;
    assert_eq!(
        sent["messages"][0]["content"][1]["image_url"]["url"],
        "https://images.example/cat.png"
    );
    // Native content parts are the same.
    let (status, _, reply) = gw.post("/v1/chat", request("ollama/llava", &content)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        last_body(&upstream, "/api/chat").await["messages"][0]["images"],
        json!([PNG_B64])
    );
    // Ollama Cloud's default endpoint cannot carry images: its adapter says so.
    let (status, _, reply) = gw
        .post("/v1/chat/completions", request("ollama_cloud/m", &content))
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "unsupported_by_provider");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ollama_cloud") && message.contains("image"),
        "{message}"
    );
}

#[tokio::test]
async fn sampling_options_reach_each_upstream_under_its_names() {
    let upstream = chat_upstream().await;
    let gw = gateway(&upstream, "").await;
    let mut request = completions("ollama/qwen3:8b");
    for (f, v) in [
        ("seed", json!(42)),
        ("top_k", json!(20)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(0.25)),
        ("repetition_penalty", json!(1.1)),
        ("temperature", json!(0.3)),
    ] {
        request[f] = v;
    }
    let (status, _, reply) = gw.post("/v1/chat/completions", request.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let options = &last_body(&upstream, "/api/chat").await["options"];
    assert_eq!(
        (
            &options["seed"],
            &options["top_k"],
            &options["presence_penalty"],
            &options["frequency_penalty"],
            &options["repeat_penalty"]
        ),
        (
            &json!(42),
            &json!(20),
            &json!(0.5),
            &json!(0.25),
            &json!(1.1)
        )
    );
    request["model"] = json!("openrouter/x/y");
    let (status, _, reply) = gw.post("/v1/chat/completions", request).await;
    assert_eq!(status, 200, "{reply}");
    let sent = last_body(&upstream, "/api/v1/chat/completions").await;
    assert_eq!(
        (&sent["seed"], &sent["top_k"], &sent["repetition_penalty"]),
        (&json!(42), &json!(20), &json!(1.1))
    );
    // Native options, Ollama's names; an option chatd has no field for joins them through
    // passthrough.
    let mut native = TestGateway::chat("ollama/qwen3:8b");
    native["options"] =
        json!({"seed": 7, "top_k": 5, "num_predict": 64, "num_ctx": 8192, "repeat_penalty": 1.2});
    let (status, _, reply) = gw.post("/v1/chat", native).await;
    assert_eq!(status, 200, "{reply}");
    let options = &last_body(&upstream, "/api/chat").await["options"];
    assert_eq!(
        options,
        &json!({"seed": 7, "top_k": 5, "num_predict": 64, "num_ctx": 8192, "repeat_penalty": 1.2})
    );
    let mut clash = TestGateway::chat("ollama/qwen3:8b");
    clash["max_tokens"] = json!(10);
    clash["options"] = json!({"num_predict": 20});
    let (status, _, reply) = gw.post("/v1/chat", clash).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn extra_fields_reach_adapters_that_forward_them_and_are_named_elsewhere() {
    let upstream = chat_upstream().await;
    let anthropic = std::fs::read(component("chatd-adapter-anthropic")).unwrap();
    let extra = format!(
        "[chatd.providers.claude]\nadapter = \"anthropic\"\nbase_url = \"{}\"\nkey_env = \"CHATD_TEST_UNSET_OPENROUTER_KEY\"\nkey_file = \"{{dir}}/keys.env\"\n",
        upstream.uri()
    );
    let text = config(&upstream.uri(), &extra).replace(
        "[chatd]",
        "[chatd]\n        adapters_dir = \"{dir}/adapters\"",
    );
    let gw = TestGateway::start_with_files(
        &text,
        &[
            ("keys.env", &keys()),
            ("adapters/anthropic.wasm", &anthropic),
        ],
    )
    .await;
    let mut request = completions("openrouter/x/y");
    request["provider"] = json!({"order": ["Fireworks"], "allow_fallbacks": false});
    request["transforms"] = json!(["middle-out"]);
    let (status, _, reply) = gw.post("/v1/chat/completions", request.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let sent = last_body(&upstream, "/api/v1/chat/completions").await;
    assert_eq!(
        sent["provider"],
        json!({"order": ["Fireworks"], "allow_fallbacks": false})
    );
    assert_eq!(sent["transforms"], json!(["middle-out"]));

    // Ollama's keep_alive, and an options object merged into the adapter's own.
    let mut ollama = completions("ollama/qwen3:8b");
    ollama["keep_alive"] = json!("10m");
    ollama["options"] = json!({"num_ctx": 4096});
    ollama["temperature"] = json!(0.2);
    let (status, _, reply) = gw.post("/v1/chat/completions", ollama).await;
    assert_eq!(status, 200, "{reply}");
    let sent = last_body(&upstream, "/api/chat").await;
    assert_eq!(sent["keep_alive"], "10m");
    assert_eq!(
        sent["options"],
        json!({"num_ctx": 4096, "temperature": 0.2})
    );

    // The anthropic adapter forwards nothing: a field it would drop is named, as a typo is.
    let before = upstream.received_requests().await.unwrap().len();
    let mut typo = completions("claude/claude-x");
    typo["temprature"] = json!(0.5);
    let (status, _, reply) = gw.post("/v1/chat/completions", typo).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["param"], "temprature");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unrecognized request field \"temprature\""),
        "{reply}"
    );
    // And a sampling option it does not declare is refused naming the feature and provider.
    let mut seeded = completions("claude/claude-x");
    seeded["seed"] = json!(1);
    let (status, _, reply) = gw.post("/v1/chat/completions", seeded).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "unsupported_by_provider");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("provider claude")
            && message.contains("seed")
            && message.contains("\"seed\" capability"),
        "{message}"
    );
    assert_eq!(
        upstream.received_requests().await.unwrap().len(),
        before,
        "nothing went upstream"
    );
    // What no adapter can do is refused whatever the provider.
    let mut two = completions("openrouter/x/y");
    two["n"] = json!(2);
    let (status, _, reply) = gw.post("/v1/chat/completions", two).await;
    assert_eq!((status, reply["error"]["param"].as_str()), (400, Some("n")));
}

#[tokio::test]
async fn a_0_2_adapter_serves_text_unchanged_and_refuses_images_by_name() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&upstream)
        .await;
    let echo = std::fs::read(component("chatd-fixture-echo_v1")).unwrap();
    let text = format!(
        "[chatd]\ndefault_provider = \"echo\"\nadapters_dir = \"{{dir}}/adapters\"\n[chatd.providers.echo]\nadapter = \"echo\"\nbase_url = \"{}\"\n",
        upstream.uri()
    );
    let gw = TestGateway::start_with_files(&text, &[("adapters/echo.wasm", &echo)]).await;
    let (status, _, reply) = gw.post("/v1/chat/completions", completions("echo/m")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["message"]["content"], "echo v1");
    // Text parts are joined for it (the echo fixture sends only the model; the answer is the
    // proof the 0.2.0 call went through).
    let parts = json!({"model": "echo/m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
    let (status, _, _) = gw.post("/v1/chat/completions", parts).await;
    assert_eq!(status, 200);
    let before = upstream.received_requests().await.unwrap().len();
    for image in [data_url(), "https://images.example/cat.png".to_owned()] {
        let request = json!({"model": "echo/m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": image}}]}]});
        let (status, _, reply) = gw.post("/v1/chat/completions", request).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["code"], "unsupported_by_provider");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("provider echo")
                && message.contains("images")
                && message.contains("contract 0.2.0"),
            "{message}"
        );
    }
    let mut seeded = completions("echo/m");
    seeded["seed"] = json!(3);
    let (status, _, reply) = gw.post("/v1/chat/completions", seeded).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("seed"));
    assert_eq!(upstream.received_requests().await.unwrap().len(), before);
}

// --- embeddings -------------------------------------------------------------------------------

async fn embeddings_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/embed"))
        .respond_with(|req: &Request| {
            let n = body(req)["input"].as_array().unwrap().len();
            let vectors: Vec<Value> = (0..n)
                .map(|i| json!([i as f32 + 0.5, -1.25, 0.1]))
                .collect();
            ResponseTemplate::new(200).set_body_json(
                json!({"model": "nomic-embed-text", "embeddings": vectors, "prompt_eval_count": 7}),
            )
        })
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/embeddings"))
        .respond_with(|req: &Request| {
            let n = body(req)["input"].as_array().unwrap().len();
            // Out of order: the adapter puts them back by `index`.
            let data: Vec<Value> = (0..n)
                .rev()
                .map(|i| json!({"object": "embedding", "index": i, "embedding": [i as f32 + 0.5, -1.25, 0.1]}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({
                "object": "list", "data": data, "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 9, "total_tokens": 9}
            }))
        })
        .mount(&upstream)
        .await;
    upstream
}

#[tokio::test]
async fn embeddings_through_ollama_and_openai_compat_as_floats_and_base64() {
    let upstream = embeddings_upstream().await;
    let gw = gateway(&upstream, "").await;
    for (model, to, tokens) in [
        ("ollama/nomic-embed-text", "/api/embed", 7),
        (
            "openrouter/openai/text-embedding-3-small",
            "/api/v1/embeddings",
            9,
        ),
    ] {
        let (status, _, reply) = gw
            .post(
                "/v1/embeddings",
                json!({"model": model, "input": ["first", "second"], "dimensions": 3}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["object"], "list");
        assert_eq!(reply["model"], model);
        assert_eq!(
            reply["usage"],
            json!({"prompt_tokens": tokens, "total_tokens": tokens})
        );
        let data = reply["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(
            data[1],
            json!({"object": "embedding", "index": 1, "embedding": [1.5, -1.25, 0.1]})
        );
        let sent = last_body(&upstream, to).await;
        assert_eq!(sent["input"], json!(["first", "second"]));
        assert_eq!(sent["dimensions"], 3);
        assert_eq!(sent["model"], model.split_once('/').unwrap().1);

        let (status, _, reply) = gw
            .post(
                "/v1/embeddings",
                json!({"model": model, "input": "one", "encoding_format": "base64"}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        let b64 = reply["data"][0]["embedding"].as_str().unwrap();
        // 0.5, -1.25, 0.1 as little-endian f32s.
        let expected: Vec<u8> = [0.5f32, -1.25, 0.1]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        use base64::Engine;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            expected
        );
    }
    // An adapter without embeddings is refused by name; token arrays are refused.
    let (status, _, reply) = gw
        .post(
            "/v1/embeddings",
            json!({"model": "ollama_cloud/m", "input": "x"}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "unsupported_by_provider");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embeddings")
    );
    let (status, _, reply) = gw
        .post(
            "/v1/embeddings",
            json!({"model": "ollama/m", "input": [[1, 2, 3]]}),
        )
        .await;
    assert_eq!(
        (status, reply["error"]["param"].as_str()),
        (400, Some("input[0]"))
    );
}
