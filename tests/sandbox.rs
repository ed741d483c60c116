//! Adapters as untrusted drop-in plugins: bad components are contained (trap, spin, memory,
//! snooping), invalid files are rejected at load, older contract versions are served, and a
//! drop-in adapter for a new provider works end to end (Anthropic's Messages API).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ScriptedUpstream, Step, TestGateway, component};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A config with a healthy built-in provider and one provider per drop-in adapter file.
fn config(upstream: &str, dropins: &[&str]) -> String {
    let mut text = format!(
        r#"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 5
        adapters_dir = "{{dir}}/adapters"
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{upstream}"
        "#
    );
    for name in dropins.iter().filter(|n| **n != "ollama") {
        text.push_str(&format!(
            "[chatd.providers.{name}]\nadapter = \"{name}\"\nbase_url = \"{upstream}\"\nkey_env = \"CHATD_TEST_NO_SUCH_VAR\"\nkey_file = \"{{dir}}/keys.env\"\n"
        ));
    }
    text
}

/// Starts a gateway whose `adapters_dir` holds the given (file stem, fixture package) pairs.
async fn gateway(upstream: &MockServer, files: &[(&str, &str)]) -> TestGateway {
    gateway_with(upstream, files, "").await
}

async fn gateway_with(upstream: &MockServer, files: &[(&str, &str)], extra: &str) -> TestGateway {
    gateway_at(&upstream.uri(), files, extra).await
}

/// Like [`gateway_with`], for an upstream at `base_url`.
async fn gateway_at(base_url: &str, files: &[(&str, &str)], extra: &str) -> TestGateway {
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let mut contents = vec![(
        "keys.env".to_owned(),
        b"CHATD_TEST_NO_SUCH_VAR=sk-dropin-key-123456\n".to_vec(),
    )];
    for (name, package) in files {
        let bytes = match *package {
            "garbage" => b"\0asm this is not a component".to_vec(),
            "empty" => Vec::new(),
            p => std::fs::read(component(p)).unwrap(),
        };
        contents.push((format!("adapters/{name}.wasm"), bytes));
    }
    let contents: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    TestGateway::start_with_files(&format!("{}\n{extra}", config(base_url, &names)), &contents)
        .await
}

async fn ollama_ok(upstream: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "m", "message": {"role": "assistant", "content": "healthy"}, "done": true, "done_reason": "stop"
        })))
        .mount(upstream)
        .await;
}

async fn echo_body_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|req: &Request| ResponseTemplate::new(200).set_body_bytes(req.body.clone()))
        .mount(&upstream)
        .await;
    upstream
}

#[tokio::test]
async fn a_panicking_adapter_fails_its_request_only() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = gateway(&upstream, &[("bad", "chatd-fixture-panics")]).await;
    for _ in 0..3 {
        let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("bad/m")).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "adapter_trap");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("fixture panic: boom"),
            "the panic message is surfaced: {message}"
        );
        // One line (it goes into a log line too), without std's advice to set an
        // environment variable the sandbox does not have.
        assert!(!message.contains('\n'), "{message:?}");
        assert!(!message.contains("RUST_BACKTRACE"), "{message}");
        let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("ollama/m")).await;
        assert_eq!((status, body["content"].as_str()), (200, Some("healthy")));
    }
}

#[tokio::test]
async fn a_panic_after_debug_output_is_the_message_reported() {
    // 20 lines (~5 KiB) on stderr before the panic: more than the sandbox keeps of it, and
    // far more than a message quotes. The panic is why the call failed; it must be reported.
    let upstream = MockServer::start().await;
    let gw = gateway(&upstream, &[("bad", "chatd-fixture-panics")]).await;
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("bad/chatty")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "adapter_trap", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("panicked at") && message.contains("fixture panic after 20 debug lines"),
        "the panic is reported, not the log lines before it: {message}"
    );
    assert!(!message.contains("building the request"), "{message}");
    assert!(!message.contains('\n'), "{message:?}");
}

#[tokio::test]
async fn a_spinning_adapter_is_stopped_with_adapter_timeout() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = gateway(&upstream, &[("spin", "chatd-fixture-spins")]).await;
    let started = std::time::Instant::now();
    let (status, _, body) = gw
        .post("/v1/chat/completions", TestGateway::chat("spin/m"))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "adapter_timeout");
    // Generous: the point is that it ends, not how fast (the budget is 100 ms).
    assert!(started.elapsed() < Duration::from_secs(20));
    let (status, _, _) = gw.post("/v1/chat", TestGateway::chat("ollama/m")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_adapter_parked_on_a_host_timer_is_stopped_with_adapter_timeout() {
    // Sleeping uses no CPU, so no epoch tick interrupts it: the wait itself is timed.
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = gateway(&upstream, &[("sleepy", "chatd-fixture-sleeps")]).await;
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(20),
        gw.post("/v1/chat/completions", TestGateway::chat("sleepy/m")),
    )
    .await
    .expect("the sleeping adapter was never stopped");
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "adapter_timeout", "{body}");
    let (status, _, _) = gw.post("/v1/chat", TestGateway::chat("ollama/m")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_memory_hog_hits_its_limit_with_a_clear_error() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    // A generous time budget: on a loaded machine, touching 64 MiB could otherwise hit the
    // time budget first and end as adapter_timeout.
    let gw = gateway_with(
        &upstream,
        &[("hog", "chatd-fixture-hog")],
        "[chatd.sandbox]\ncpu_ms = 10000\n",
    )
    .await;
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("hog/m")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "adapter_memory_limit");
    let (status, _, _) = gw.post("/v1/chat", TestGateway::chat("ollama/m")).await;
    assert_eq!(status, 200);

    // Each hog request touches its full 64 MiB; if instance memory were not bounded and
    // given back, 24 of them would add ~1.5 GiB to this process.
    let before = rss_kib();
    for _ in 0..24 {
        let (_, _, body) = gw.post("/v1/chat", TestGateway::chat("hog/m")).await;
        assert_eq!(body["error"]["code"], "adapter_memory_limit");
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 256,
        "RSS grew by {grown_mib} MiB over 24 memory hogs"
    );
}

/// Sandbox slots bound adapter calls, not requests: with a single slot, requests whose
/// upstream is still working (a stream between events, a plain request awaiting its answer)
/// leave it free for everyone else. LLM calls last seconds to minutes; holding an instance
/// for that long would cap concurrent requests at `max_instances`.
#[tokio::test]
async fn requests_waiting_on_their_upstream_hold_no_adapter_slot() {
    let first = format!(
        "{}\n",
        json!({"model": "m", "message": {"role": "assistant", "content": "first"}, "done": false})
    );
    // Sends one event, then keeps the connection open without finishing the body.
    let hanging = ScriptedUpstream::start(
        "application/x-ndjson",
        vec![Step::Chunk(first.into_bytes()), Step::Hang],
    )
    .await;
    let healthy = MockServer::start().await;
    ollama_ok(&healthy).await;
    let config = format!(
        r#"
        [chatd]
        default_provider = "healthy"
        timeout_secs = 60
        adapters_dir = "{{dir}}/adapters"
        [chatd.sandbox]
        max_instances = 1
        [chatd.providers.hanging]
        adapter = "ollama"
        base_url = "{}"
        [chatd.providers.healthy]
        adapter = "ollama"
        base_url = "{}"
        "#,
        hanging.url(),
        healthy.uri()
    );
    // A file in adapters_dir gives this gateway its own runtime, with the one slot.
    let gw = TestGateway::start_with_files(&config, &[("adapters/README", b"none here")]).await;
    let client = reqwest::Client::new();
    let mut stream = gw
        .send(
            "/v1/chat",
            json!({"model": "hanging/m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(stream.status(), 200);
    let event = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&event).contains("first"));
    let waiting = tokio::spawn(
        client
            .post(format!("{}/v1/chat", gw.url))
            .json(&TestGateway::chat("hanging/m"))
            .send(),
    );
    let observed = hanging.observed.clone();
    support::eventually(
        "the plain request to reach the upstream",
        Duration::from_secs(10),
        || observed.lock().unwrap().requests.len() == 2,
    )
    .await;

    for _ in 0..3 {
        let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("healthy/m")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"], "healthy");
    }
    assert!(
        !waiting.is_finished(),
        "the plain request should still be waiting"
    );
    drop(stream);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_adapter_sees_no_environment_files_or_network() {
    let upstream = echo_body_upstream().await;
    let gw = gateway(&upstream, &[("snoop", "chatd-fixture-snoop")]).await;
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("snoop/m")).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(body["content"].as_str().unwrap()).unwrap();
    assert_eq!(seen["env_count"], 0, "{seen}");
    assert!(seen["home"].is_null());
    assert!(seen["file"].as_str().unwrap().starts_with("err:"), "{seen}");
    assert!(seen["tcp"].as_str().unwrap().starts_with("err:"), "{seen}");
    // The adapter never saw the key it is deployed with, though the host sent it upstream.
    assert!(!body.to_string().contains("sk-dropin-key"));
    let reqs = upstream.received_requests().await.unwrap();
    assert!(
        reqs[0].headers.get("authorization").is_none(),
        "snoop declares no auth"
    );
}

#[tokio::test]
async fn invalid_components_are_rejected_at_load_with_the_reason() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let files = [
        ("garbage", "garbage"),
        ("empty", "empty"),
        ("traps", "chatd-fixture-describe_traps"),
        ("future", "chatd-fixture-future_contract"),
        ("missing", "chatd-fixture-missing_exports"),
        ("mistyped", "chatd-fixture-wrong_types"),
        ("hostauth", "chatd-fixture-host_auth"),
    ];
    let gw = gateway(&upstream, &files).await;
    let (_, body) = gw.get("/v1/chat/providers").await;
    let registered: Vec<&str> = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(registered, ["ollama"], "{body}");
    let reasons: std::collections::HashMap<&str, &str> = body["unregistered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["reason"].as_str().unwrap()))
        .collect();
    assert!(
        reasons["garbage"].contains("not a valid WebAssembly component"),
        "{}",
        reasons["garbage"]
    );
    assert!(
        reasons["empty"].contains("not a valid WebAssembly component"),
        "{}",
        reasons["empty"]
    );
    assert!(
        reasons["traps"].contains("describe() failed"),
        "{}",
        reasons["traps"]
    );
    assert!(
        reasons["hostauth"].contains(
            "unusable description: auth header \"Host\" is one chatd's HTTP client sets itself"
        ),
        "{}",
        reasons["hostauth"]
    );
    assert!(
        reasons["future"].contains("unsupported contract version 9.0.0")
            && reasons["future"].contains("0.1.0, 0.2.0"),
        "{}",
        reasons["future"]
    );
    assert!(
        reasons["missing"].contains("exports do not match contract 0.2.0")
            && reasons["missing"].contains("no function `build-request`"),
        "{}",
        reasons["missing"]
    );
    // Calls skip the per-instance type check, so a type mismatch must be caught at load.
    assert!(
        reasons["mistyped"].contains("exports do not match contract 0.2.0")
            && reasons["mistyped"].contains("function `describe` has the wrong type"),
        "{}",
        reasons["mistyped"]
    );
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("future/m")).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_drop_in_file_overrides_the_builtin_of_the_same_name() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = gateway(&upstream, &[("ollama", "chatd-fixture-echo_v1")]).await;
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("m")).await;
    assert_eq!(
        (status, body["content"].as_str()),
        (200, Some("echo v1")),
        "{body}"
    );
    let (_, body) = gw.get("/v1/chat/providers").await;
    let adapter = &body["providers"][0]["adapter"];
    assert_eq!(adapter["version"], "1.0.0");
    assert!(
        adapter["source"]
            .as_str()
            .unwrap()
            .ends_with("adapters/ollama.wasm"),
        "{adapter}"
    );
}

#[tokio::test]
async fn a_broken_override_falls_back_to_the_builtin_and_says_why() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = gateway(&upstream, &[("ollama", "garbage")]).await;
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("m")).await;
    assert_eq!((status, body["content"].as_str()), (200, Some("healthy")));
    let (_, body) = gw.get("/v1/chat/providers").await;
    let adapter = &body["providers"][0]["adapter"];
    assert_eq!(adapter["source"], "built-in");
    assert!(
        adapter["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{adapter}"
    );
}

#[tokio::test]
async fn contract_0_1_adapters_are_served_without_model_listing() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = gateway(&upstream, &[("legacy", "chatd-fixture-legacy_v0_1")]).await;
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("legacy/m")).await;
    assert_eq!(
        (status, body["content"].as_str()),
        (200, Some("legacy ok")),
        "{body}"
    );
    let (_, body) = gw.get("/v1/chat/providers").await;
    let legacy = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "legacy")
        .unwrap();
    assert_eq!(legacy["adapter"]["contract"], "0.1.0");
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["provider"] != "legacy"),
        "{body}"
    );
}

#[tokio::test]
async fn drop_in_adapters_get_their_declared_auth_from_the_host() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-dropin-key-123456"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream, &[("bearer_echo", "chatd-fixture-bearer_echo")]).await;
    let (status, _, body) = gw
        .post("/v1/chat", TestGateway::chat("bearer_echo/m"))
        .await;
    assert_eq!(
        (status, body["content"].as_str()),
        (200, Some("bearer echo")),
        "{body}"
    );
}

#[tokio::test]
async fn faulty_adapters_do_not_fail_requests_to_other_providers_under_load() {
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = std::sync::Arc::new(
        gateway(
            &upstream,
            &[
                ("bad", "chatd-fixture-panics"),
                ("spin", "chatd-fixture-spins"),
            ],
        )
        .await,
    );
    let mut tasks = Vec::new();
    for worker in 0..24 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let model = match worker % 3 {
                0 => "bad/m",
                1 => "spin/m",
                _ => "ollama/m",
            };
            let mut outcomes = Vec::new();
            for _ in 0..10 {
                let (status, _, body) = gw.post("/v1/chat", TestGateway::chat(model)).await;
                outcomes.push((model, status, body["error"]["code"].clone()));
            }
            outcomes
        }));
    }
    let mut healthy = 0;
    for t in tasks {
        for (model, status, code) in t.await.unwrap() {
            match model {
                "ollama/m" => {
                    assert_eq!(status, 200, "healthy provider failed: {code}");
                    healthy += 1;
                }
                "bad/m" => assert_eq!(code, "adapter_trap"),
                _ => assert_eq!(code, "adapter_timeout"),
            }
        }
    }
    assert_eq!(healthy, 80);
}

fn anthropic_config(upstream: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "claude"
        adapters_dir = "{{dir}}/adapters"
        [chatd.providers.claude]
        adapter = "anthropic"
        base_url = "{upstream}"
        key_env = "CHATD_TEST_NO_SUCH_VAR"
        key_file = "{{dir}}/keys.env"
        "#
    )
}

async fn anthropic_gateway(upstream: &MockServer) -> TestGateway {
    let wasm = std::fs::read(component("chatd-adapter-anthropic")).unwrap();
    let files: [(&str, &[u8]); 2] = [
        ("adapters/anthropic.wasm", &wasm),
        (
            "keys.env",
            b"CHATD_TEST_NO_SUCH_VAR=sk-ant-test-key-987654\n",
        ),
    ];
    TestGateway::start_with_files(&anthropic_config(&upstream.uri()), &files).await
}

#[tokio::test]
async fn anthropic_messages_api_from_adapters_dir() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant-test-key-987654"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": "Bonjour"}, {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 6}
        })))
        .mount(&upstream)
        .await;
    let gw = anthropic_gateway(&upstream).await;
    let request = json!({
        "model": "claude-sonnet-4", "max_tokens": 200,
        "messages": [{"role": "system", "content": "Be French"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    });
    let (status, _, body) = gw.post("/v1/chat/completions", request).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["content"], "Bonjour");
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":\"x\"}"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    let sent: Value =
        serde_json::from_slice(&upstream.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["system"], "Be French");
    assert_eq!(sent["max_tokens"], 200);
    assert_eq!(sent["messages"][0]["role"], "user");
    assert_eq!(sent["tools"][0]["name"], "lookup");
    let req = &upstream.received_requests().await.unwrap()[0];
    assert!(
        req.headers.get("authorization").is_none(),
        "the key goes in x-api-key only"
    );
}

#[tokio::test]
async fn anthropic_errors_map_like_every_other_adapter() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "9").set_body_json(json!({
            "type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"}
        })))
        .mount(&upstream)
        .await;
    let gw = anthropic_gateway(&upstream).await;
    let (status, headers, body) = gw.post("/v1/chat", TestGateway::chat("claude-x")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "9");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Number of requests exceeded")
    );
}

/// The built-in adapters and the anthropic drop-in are `no_std`: they import nothing but the
/// contract's type-only interface, so an instance carries no WASI state or import trampolines
/// (instantiating one costs about half what a std component does). A dependency that pulls std
/// back in shows up here.
#[test]
fn no_std_adapters_import_nothing() {
    use chatd::runtime::library::BUILTIN;
    use chatd::runtime::{Runtime, RuntimeConfig};
    use wasmtime::component::Component;

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let engine = runtime.engine();
    let anthropic = std::fs::read(component("chatd-adapter-anthropic")).unwrap();
    let adapters = BUILTIN
        .iter()
        .map(|(name, bytes)| (*name, *bytes))
        .chain([("anthropic", anthropic.as_slice())]);
    for (name, bytes) in adapters {
        let component = Component::new(engine, bytes).unwrap();
        let imports: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(import, _)| import.to_owned())
            .filter(|import| !import.starts_with("lakehouse:provider/types@"))
            .collect();
        assert!(imports.is_empty(), "{name} imports {imports:?}");
    }
    // A std fixture does import WASI, so the assertion above can fail.
    let std_fixture = Component::from_file(engine, component("chatd-fixture-echo_v1")).unwrap();
    assert!(
        std_fixture
            .component_type()
            .imports(engine)
            .any(|(import, _)| import.starts_with("wasi:")),
        "the std fixture should import WASI"
    );
}

/// An upstream answering `/api/chat` after `delay`: a plain body, or three NDJSON lines (the
/// last one "done") when the request asks for a stream.
async fn tally_upstream(delay: Duration) -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(move |req: &Request| {
            let streamed = String::from_utf8_lossy(&req.body).contains("\"stream\":true");
            let body = if streamed { "a\nb\ndone\n" } else { "ok" };
            ResponseTemplate::new(200)
                .set_body_string(body)
                .set_delay(delay)
        })
        .mount(&upstream)
        .await;
    upstream
}

/// The numbers after each `label` ("built=", "parsed=") in `texts`, in order.
fn numbers_after<S: AsRef<str>>(texts: impl IntoIterator<Item = S>, label: &str) -> Vec<u32> {
    let mut numbers = Vec::new();
    for text in texts {
        let text = text.as_ref();
        for (at, _) in text.match_indices(label) {
            let digits: String = text[at + label.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            numbers.push(digits.parse::<u32>().unwrap());
        }
    }
    numbers
}

/// The "built=N" counts a tally answer reports, checked to be 0 or 1: the instance that
/// parsed built this request (1) or none (0); more would mean state kept between requests.
fn tally_counts(texts: impl IntoIterator<Item = String>) -> Vec<u32> {
    let counts = numbers_after(texts, "built=");
    assert!(
        counts.iter().all(|n| *n <= 1),
        "an instance built two requests: {counts:?}"
    );
    counts
}

#[tokio::test]
async fn a_quick_answer_is_parsed_by_the_instance_that_built_the_request() {
    let upstream = tally_upstream(Duration::ZERO).await;
    let gw = gateway(&upstream, &[("tally", "chatd-fixture-tally")]).await;
    let mut answers = Vec::new();
    for _ in 0..20 {
        let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("tally/m")).await;
        assert_eq!(status, 200, "{body}");
        answers.push(body["content"].as_str().unwrap().to_owned());
    }
    let counts = tally_counts(answers.clone());
    assert_eq!(counts.len(), 20, "{answers:?}");
    // Answered within the hold time the builder parses; a loaded test machine may make the
    // odd answer late (a fresh instance then parses it), never every one.
    assert!(
        counts.contains(&1),
        "no answer was parsed by its builder: {answers:?}"
    );

    let mut streamed = Vec::new();
    for _ in 0..5 {
        let mut body = TestGateway::chat("tally/m");
        body["stream"] = json!(true);
        let (status, _, lines) = gw.post_stream("/v1/chat", body).await;
        assert_eq!(status, 200, "{lines:?}");
        streamed.extend(lines);
    }
    let counts = tally_counts(streamed.clone());
    assert!(counts.len() >= 15, "{streamed:?}");
    assert!(
        counts.contains(&1),
        "no stream event was parsed by the builder: {streamed:?}"
    );
    // Instances are released once their requests are answered (the last one just after).
    let runtime = gw.gateway.runtime().clone();
    support::eventually(
        "every instance to be released",
        Duration::from_secs(3),
        || runtime.instances_in_use() == 0,
    )
    .await;
}

#[tokio::test]
async fn a_request_waiting_on_its_upstream_holds_no_instance() {
    // Far beyond the hold time (10 ms): the builder is dropped while the upstream works and a
    // fresh instance parses.
    let upstream = tally_upstream(Duration::from_millis(300)).await;
    let gw = gateway(&upstream, &[("tally", "chatd-fixture-tally")]).await;
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("tally/m")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"], "built=0");

    let mut request = TestGateway::chat("tally/m");
    request["stream"] = json!(true);
    let (status, _, lines) = gw.post_stream("/v1/chat", request).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(tally_counts(lines.clone()), [0, 0, 0], "{lines:?}");
}

/// The "parsed=N" counts of a tally stream's events, in order: how many events the instance
/// that parsed each one had parsed by then.
fn parsed_counts(lines: &[String]) -> Vec<u32> {
    numbers_after(lines, "parsed=")
}

/// An NDJSON upstream sending `lines` lines `gap` apart (one upstream read each), then "done".
async fn paced_stream(gap: Duration, lines: usize) -> ScriptedUpstream {
    let mut steps = Vec::new();
    for i in 0..lines {
        steps.push(Step::Chunk(format!("line{i}\n").into_bytes()));
        steps.push(Step::Sleep(gap));
    }
    steps.push(Step::Chunk(b"done\n".to_vec()));
    ScriptedUpstream::start("application/x-ndjson", steps).await
}

/// Streams `tally/m` from `gw` and returns the answer's lines.
async fn tally_stream(gw: &TestGateway) -> Vec<String> {
    let mut body = TestGateway::chat("tally/m");
    body["stream"] = json!(true);
    let (status, _, lines) = gw.post_stream("/v1/chat", body).await;
    assert_eq!(status, 200, "{lines:?}");
    tally_counts(lines.clone());
    lines
}

#[tokio::test]
async fn a_fast_stream_parses_its_events_in_one_instance() {
    // Lines 1 ms apart, each its own upstream read: the instance that parsed one is still
    // kept (idle < 10 ms) for the next.
    let upstream = paced_stream(Duration::from_millis(1), 6).await;
    let gw = gateway_at(&upstream.url(), &[("tally", "chatd-fixture-tally")], "").await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let lines = tally_stream(&gw).await;
        let counts = parsed_counts(&lines);
        assert_eq!(counts.len(), 7, "{lines:?}");
        seen.push(counts);
    }
    // A loaded machine may stall the odd gap past the hold time (a fresh instance then
    // continues), never every one.
    assert!(
        seen.iter().flatten().any(|n| *n >= 4),
        "no instance parsed more than one read's events: {seen:?}"
    );
}

#[tokio::test]
async fn a_slow_stream_holds_no_instance_between_events() {
    // Far beyond the hold time: every event is parsed by a fresh instance.
    let upstream = paced_stream(Duration::from_millis(150), 3).await;
    let gw = gateway_at(&upstream.url(), &[("tally", "chatd-fixture-tally")], "").await;
    let lines = tally_stream(&gw).await;
    assert_eq!(parsed_counts(&lines), [1, 1, 1, 1], "{lines:?}");
    // The first line comes with the response head (its builder may parse it); the others
    // come after 150 ms each.
    assert_eq!(tally_counts(lines.clone())[1..], [0, 0, 0], "{lines:?}");
}

#[tokio::test]
async fn a_stream_waiting_on_its_upstream_releases_its_instance() {
    // One line, then the upstream goes quiet: the instance that parsed the line is kept at
    // most 10 ms into the wait, then its slot is free again.
    let upstream = ScriptedUpstream::start(
        "application/x-ndjson",
        vec![Step::Chunk(b"line0\n".to_vec()), Step::Hang],
    )
    .await;
    let gw = gateway_at(
        &upstream.url(),
        &[("tally", "chatd-fixture-tally")],
        "[chatd.sandbox]\nmax_instances = 4\n",
    )
    .await;
    let mut request = TestGateway::chat("tally/m");
    request["stream"] = json!(true);
    let mut stream = gw.send("/v1/chat", request).await;
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("parsed=1"));
    let runtime = gw.gateway.runtime().clone();
    // Well before the upstream timeout (5 s), which would end the stream and free it too.
    support::eventually(
        "the idle instance to be released",
        Duration::from_secs(3),
        || runtime.instances_in_use() == 0,
    )
    .await;
    drop(stream);
}

#[tokio::test]
async fn a_stream_takes_a_fresh_instance_after_many_events() {
    // Bounds what a guest leaking a little per event can accumulate on a long stream.
    let mut body = String::new();
    for i in 0..1100 {
        body.push_str(&format!("line{i}\n"));
    }
    body.push_str("done\n");
    let upstream =
        ScriptedUpstream::start("application/x-ndjson", vec![Step::Chunk(body.into_bytes())]).await;
    let gw = gateway_at(&upstream.url(), &[("tally", "chatd-fixture-tally")], "").await;
    let lines = tally_stream(&gw).await;
    let counts = parsed_counts(&lines);
    assert_eq!(counts.len(), 1101);
    // Each event is parsed by the previous event's instance or by a fresh one.
    for pair in counts.windows(2) {
        assert!(
            pair[1] == pair[0] + 1 || pair[1] == 1,
            "{pair:?} in {counts:?}"
        );
    }
    // Unhurried, the first instance parses exactly 1000 events and the 1001st gets a fresh
    // one; on a busy machine a pause over the 10 ms idle bound renews it earlier. Either way
    // no instance may go past 1000.
    assert!(
        counts.iter().all(|&n| n <= 1000),
        "an instance parsed more than 1000 events: {counts:?}"
    );
}

#[tokio::test]
async fn no_instance_is_kept_idle_when_slots_are_scarce() {
    // One slot: keeping the builder for the answer could make another request wait for it.
    let upstream = tally_upstream(Duration::ZERO).await;
    let gw = gateway_with(
        &upstream,
        &[("tally", "chatd-fixture-tally")],
        "[chatd.sandbox]\nmax_instances = 1\n",
    )
    .await;
    for _ in 0..3 {
        let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("tally/m")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"], "built=0");
    }
    let upstream = paced_stream(Duration::from_millis(1), 4).await;
    let gw = gateway_at(
        &upstream.url(),
        &[("tally", "chatd-fixture-tally")],
        "[chatd.sandbox]\nmax_instances = 1\n",
    )
    .await;
    let lines = tally_stream(&gw).await;
    assert_eq!(parsed_counts(&lines), [1, 1, 1, 1, 1], "{lines:?}");
}

#[tokio::test]
async fn the_epoch_clock_rests_while_no_instance_is_alive() {
    // Its own runtime: the shared one is in use by the other tests of this binary.
    let runtime = chatd::runtime::Runtime::new(chatd::runtime::RuntimeConfig::default()).unwrap();
    let adapters = chatd::runtime::library::AdapterSet::load(
        &runtime,
        None,
        &chatd::runtime::library::AdapterSet::default(),
    )
    .await;
    let adapter = adapters.get("ollama").unwrap().clone();
    // Loading used instances; once they are gone the clock parks after its next tick.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = runtime.epoch_ticks();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = runtime.epoch_ticks() - before;
    // Ticking, 300 ms would be ~60 ticks; parked, at most its once-a-second check.
    assert!(idle <= 2, "{idle} epoch ticks while no instance was alive");

    let instance = adapter.instance().await.unwrap();
    let before = runtime.epoch_ticks();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = runtime.epoch_ticks() - before;
    assert!(
        busy >= 5,
        "only {busy} epoch ticks while an instance was alive"
    );
    drop(instance);
}

#[tokio::test(flavor = "multi_thread")]
async fn time_a_call_waits_for_its_thread_does_not_count_against_its_budget() {
    // One server thread and many requests whose adapter calls each take a few epoch ticks
    // of guest time: a call yields at every tick and then waits behind the other requests.
    // Only the time it runs may count against the 100 ms budget, or the calls fail at
    // random under load (they did: adapter_timeout for a request that takes 15 ms alone).
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let gw = TestGateway::start(&format!(
        "[chatd]\ndefault_provider = \"ollama\"\nadapters_dir = \"\"\nthreads = 1\n\
         [chatd.providers.ollama]\nadapter = \"ollama\"\nbase_url = \"{}\"\n",
        upstream.uri()
    ))
    .await;
    // 4,000 messages: ~20 ms of CPU per call in a debug build (four or five ticks), well
    // inside the budget alone; 48 of them on one thread wait ~1 s each for their turns.
    let messages: Vec<Value> = (0..4_000)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let body = json!({"model": "ollama/m", "messages": messages});
    let requests: Vec<_> = (0..48)
        .map(|_| {
            let (gw_url, body) = (gw.url.clone(), body.clone());
            tokio::spawn(async move {
                let resp = reqwest::Client::new()
                    .post(format!("{gw_url}/v1/chat"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spinning_adapter_does_not_hold_up_other_requests_on_its_thread() {
    // One server thread, and on it an adapter that spins until its 2 s budget is spent. It
    // yields at every 5 ms tick; requests to another provider and health checks on the same
    // thread must be served between its slices, so all of them finish while it still spins
    // (with the runtime polling its sockets only every 61 slices, a round of them took ~1 s).
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let spins = std::fs::read(component("chatd-fixture-spins")).unwrap();
    let gw = TestGateway::start_with_files(
        &format!(
            "[chatd]\ndefault_provider = \"ollama\"\nadapters_dir = \"{{dir}}/adapters\"\n\
             threads = 1\ntimeout_secs = 60\n[chatd.sandbox]\ncpu_ms = 2000\n\
             [chatd.providers.ollama]\nadapter = \"ollama\"\nbase_url = \"{0}\"\n\
             [chatd.providers.spin]\nadapter = \"spin\"\nbase_url = \"{0}\"\n",
            upstream.uri()
        ),
        &[("adapters/spin.wasm", &spins)],
    )
    .await;
    let spinning = {
        let url = gw.url.clone();
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{url}/v1/chat"))
                .json(&TestGateway::chat("spin/m"))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        })
    };
    let runtime = gw.gateway.runtime().clone();
    support::eventually("the spinner to start", Duration::from_secs(30), || {
        runtime.instances_in_use() > 0
    })
    .await;
    let client = reqwest::Client::new();
    for round in 0..10 {
        let health = client
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("ollama/m")).await;
        assert_eq!((status, body["content"].as_str()), (200, Some("healthy")));
        assert!(
            !spinning.is_finished(),
            "the spinning call ended before round {round} of the other requests did"
        );
    }
    let (status, body) = spinning.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "adapter_timeout", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pausing_chatd_charges_no_adapter_call_for_the_pause() {
    // A stopped process (SIGSTOP, a paused VM, a host out of CPU) does not run its adapters:
    // requests whose calls need a few milliseconds of a 100 ms budget must not fail with
    // adapter_timeout because chatd stood still for 200 ms in the middle of one.
    let upstream = MockServer::start().await;
    ollama_ok(&upstream).await;
    let chatd = support::ChatdProcess::start(
        &format!(
            "[chatd]\ndefault_provider = \"ollama\"\nadapters_dir = \"\"\nthreads = 2\n\
             [chatd.providers.ollama]\nadapter = \"ollama\"\nbase_url = \"{}\"\n",
            upstream.uri()
        ),
        &[],
    );
    // Big but quick: 1 MiB of content to parse and serialise, a few ms of adapter work.
    let body = json!({"model": "ollama/m",
                      "messages": [{"role": "user", "content": "x".repeat(1 << 20)}]});
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (url, body, stop) = (chatd.url.clone(), body.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let resp = client
                        .post(format!("{url}/v1/chat"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let answer: Value = resp.json().await.unwrap();
                    answers.push((status, answer["error"]["code"].clone()));
                }
                answers
            })
        })
        .collect();
    for pause in 0..20u64 {
        // Uneven gaps, so the pauses fall at different points of the requests.
        tokio::time::sleep(Duration::from_millis(60 + (pause * 37) % 90)).await;
        chatd.signal("STOP");
        tokio::time::sleep(Duration::from_millis(200)).await;
        chatd.signal("CONT");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert!(answers.len() >= 20, "too few requests: {}", answers.len());
}
