//! The real `chatd` binary, listening on a port, with a mock upstream in place of Ollama:
//! the seed's six smoke checks, keys from the process environment, logs that never hold a
//! key, and the command-line tools.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ChatdProcess, run_chatd};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CLOUD_KEY: &str = "sk-cloud-smoke-4f9a8b7c6d5e";

fn dev_config(upstream: &str) -> String {
    format!(
        r#"
        [models]
        fast = "ollama/qwen3:8b"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 5
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{upstream}"
        [chatd.providers.ollama_cloud]
        adapter = "ollama_cloud"
        base_url = "{upstream}"
        key_env = "CHATD_SMOKE_CLOUD_KEY"
        key_file = "{{dir}}/absent.env"
        "#
    )
}

async fn ollama_mock() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .and(wiremock::matchers::body_partial_json(
            json!({"model": "unknown/m"}),
        ))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": "model 'unknown/m' not found"})),
        )
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .and(wiremock::matchers::body_partial_json(
            json!({"model": "broken/m"}),
        ))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"error": "model 'broken/m' crashed"})),
        )
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "qwen3:8b", "message": {"role": "assistant", "content": "pong"},
            "done": true, "done_reason": "stop", "prompt_eval_count": 4, "eval_count": 2
        })))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/generate"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": format!("unauthorized key {CLOUD_KEY}")})),
        )
        .mount(&upstream)
        .await;
    upstream
}

async fn get(chatd: &ChatdProcess, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{}{path}", chatd.url)).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "ping"}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_six_seed_smoke_checks() {
    let upstream = ollama_mock().await;
    let mut chatd = ChatdProcess::start(&dev_config(&upstream.uri()), &[]);

    // 1. /v1/chat/providers lists exactly the registered providers (1 in dev mode).
    let (status, body) = get(&chatd, "/v1/chat/providers").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ollama"]);

    // 2. A bare model goes to the default with content, token counts and latency.
    let (status, body) = chatd.post("/v1/chat", chat("qwen3:8b")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "ollama");
    assert_eq!(body["content"], "pong");
    assert_eq!(
        (
            body["input_tokens"].as_u64(),
            body["output_tokens"].as_u64()
        ),
        (Some(4), Some(2))
    );
    assert!(body["latency_ms"].as_f64().unwrap() > 0.0);

    // 3. An explicit ollama/<m> has its prefix stripped at the upstream.
    let (status, _) = chatd.post("/v1/chat", chat("ollama/qwen3:8b")).await;
    assert_eq!(status, 200);
    let reqs = upstream.received_requests().await.unwrap();
    let last: Value = serde_json::from_slice(&reqs.last().unwrap().body).unwrap();
    assert_eq!(last["model"], "qwen3:8b");

    // 4. <m>:cloud without ollama_cloud registered is a 404, not a fall-through.
    let before = upstream.received_requests().await.unwrap().len();
    let (status, body) = chatd.post("/v1/chat", chat("kimi-k2.6:cloud")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(upstream.received_requests().await.unwrap().len(), before);

    // 5. unknown/<m> falls through to the default unchanged; its upstream's 404 keeps its
    // status (the client asked for a model that does not exist there).
    let (status, body) = chatd.post("/v1/chat", chat("unknown/m")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    let reqs = upstream.received_requests().await.unwrap();
    let last: Value = serde_json::from_slice(&reqs.last().unwrap().body).unwrap();
    assert_eq!(last["model"], "unknown/m");

    // 6. A missing model is a 400.
    let (status, body) = chatd
        .post(
            "/v1/chat",
            json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "model is required");

    // A request that fails validation still logs the model it named.
    let (status, _) = chatd
        .post(
            "/v1/chat/completions",
            json!({"model": "rejected-model", "messages": []}),
        )
        .await;
    assert_eq!(status, 400);

    // One log line per request, naming provider, model, status and latency.
    let logs = chatd.stop();
    assert!(
        logs.lines().any(|l| l.contains("provider=\"ollama\"")
            && l.contains("model=\"qwen3:8b\"")
            && l.contains("status=200")
            && l.contains("latency_ms=")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("model=\"rejected-model\"") && l.contains("status=400")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_from_the_environment_is_sent_and_never_logged_or_returned() {
    let upstream = ollama_mock().await;
    let mut chatd = ChatdProcess::start(
        &dev_config(&upstream.uri()),
        &[("CHATD_SMOKE_CLOUD_KEY", CLOUD_KEY), ("RUST_LOG", "debug")],
    );
    let (_, providers) = get(&chatd, "/v1/chat/providers").await;
    assert_eq!(
        providers["providers"].as_array().unwrap().len(),
        2,
        "{providers}"
    );
    assert_eq!(
        providers["providers"][1]["key_source"],
        "$CHATD_SMOKE_CLOUD_KEY"
    );

    // The mock answers 401 and quotes the key back: chatd must not relay it.
    let (status, body) = chatd.post("/v1/chat", chat("gpt-oss:120b:cloud")).await;
    assert_eq!(status, 502);
    let (_, completions) = chatd
        .post("/v1/chat/completions", chat("ollama_cloud/gpt-oss:120b"))
        .await;

    let reqs = upstream.received_requests().await.unwrap();
    let cloud = reqs
        .iter()
        .find(|r| r.url.path() == "/api/generate")
        .unwrap();
    assert_eq!(
        cloud.headers.get("authorization").unwrap(),
        format!("Bearer {CLOUD_KEY}").as_str()
    );

    let logs = chatd.stop();
    for text in [
        body.to_string(),
        completions.to_string(),
        providers.to_string(),
        logs.clone(),
    ] {
        assert!(!text.contains(CLOUD_KEY), "key leaked into: {text}");
    }
    assert!(
        logs.contains("DEBUG") && logs.contains("status=502"),
        "the requests' log lines were captured: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unregistered_provider_is_logged_once_naming_where_chatd_looked() {
    let upstream = ollama_mock().await;
    let chatd = ChatdProcess::start(&dev_config(&upstream.uri()), &[]);
    let logs = chatd.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("provider not registered"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains("ollama_cloud")
            && lines[0].contains("CHATD_SMOKE_CLOUD_KEY")
            && lines[0].contains("absent.env")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_says_why_a_request_failed_and_when_a_stream_ended() {
    let upstream = ollama_mock().await;
    let mut chatd = ChatdProcess::start(&dev_config(&upstream.uri()), &[]);
    // An upstream 500 (a 404 would be the client's error, kept as a 404 and logged at info).
    let broken = reqwest::Client::new()
        .post(format!("{}/v1/chat", chatd.url))
        .header("x-request-id", "req-broken")
        .json(&chat("broken/m"))
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 502);
    let mut streamed = chat("qwen3:8b");
    streamed["stream"] = json!(true);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat", chatd.url))
        .header("x-request-id", "req-streamed")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("\"done\""));
    chatd.wait_for_log("stream finished", Duration::from_secs(10));
    let logs = chatd.stop();
    let failed = logs
        .lines()
        .find(|l| l.contains("status=502"))
        .unwrap_or_else(|| panic!("no line for the failed request: {logs}"));
    assert!(failed.contains("WARN"), "{failed}");
    assert!(failed.contains("upstream_error"), "{failed}");
    assert!(failed.contains("model 'broken/m' crashed"), "{failed}");
    assert!(
        failed.contains("request{request_id=req-broken}: chatd"),
        "{failed}"
    );
    // The stream's lines name it too: its access line, and its end, written after the
    // handler returned.
    let lines: Vec<_> = logs
        .lines()
        .filter(|l| l.contains("req-streamed"))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(lines[0].contains("endpoint=\"/v1/chat\""), "{}", lines[0]);
    let finished = lines[1];
    assert!(finished.contains("stream finished"), "{finished}");
    assert!(finished.contains("duration_ms="), "{finished}");
    assert!(finished.contains("provider=ollama"), "{finished}");
    // Lines outside any request name none.
    let started = logs.lines().find(|l| l.contains("listening")).unwrap();
    assert!(!started.contains("request"), "{started}");
}

/// With a `RUST_LOG` that filters by span, the request gets a real span: the filter sees it
/// (a debug line inside the request gets through) and its lines name it once.
#[tokio::test(flavor = "multi_thread")]
async fn a_span_filter_still_sees_the_request() {
    let upstream = ollama_mock().await;
    let mut chatd = ChatdProcess::start(
        &dev_config(&upstream.uri()),
        &[("RUST_LOG", "info,chatd[request]=debug")],
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/api/chat", chatd.url))
        .header("x-request-id", "req-spanned")
        .json(
            &json!({"model": "qwen3:8b", "stream": false, "options": {"num_thread": 4},
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let logs = chatd.stop();
    for wanted in ["option=\"num_thread\"", "endpoint=\"/api/chat\""] {
        let line = logs
            .lines()
            .find(|l| l.contains(wanted))
            .unwrap_or_else(|| panic!("no line with {wanted}:\n{logs}"));
        assert_eq!(line.matches("request_id=req-spanned").count(), 1, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_abandoned_before_the_upstream_answers_is_logged_as_cancelled() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_string("{\"message\":{\"content\":\"late\"},\"done\":true}\n"),
        )
        .mount(&upstream)
        .await;
    let mut chatd = ChatdProcess::start(&dev_config(&upstream.uri()), &[]);
    let mut streamed = chat("qwen3:8b");
    streamed["stream"] = json!(true);
    let sent = reqwest::Client::new()
        .post(format!("{}/v1/chat", chatd.url))
        .header("x-request-id", "req-abandoned")
        .timeout(Duration::from_millis(300))
        .json(&streamed)
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up first");
    chatd.wait_for_log(
        "stream cancelled: the client went away",
        Duration::from_secs(10),
    );
    let logs = chatd.stop();
    let line = logs
        .lines()
        .find(|l| l.contains("stream cancelled"))
        .unwrap();
    assert!(line.contains("provider=ollama"), "{line}");
    assert!(line.contains("request_id=req-abandoned"), "{line}");
}

/// chatd with the given shutdown grace, and a request to it that its upstream takes 30 s
/// to answer, in flight (the upstream has it).
async fn request_outlasting_the_upstream(
    grace_secs: u64,
) -> (
    ChatdProcess,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    MockServer,
) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&upstream)
        .await;
    let config = dev_config(&upstream.uri()).replace(
        "timeout_secs = 5",
        &format!("timeout_secs = 60\n        shutdown_grace_secs = {grace_secs}"),
    );
    let chatd = ChatdProcess::start(&config, &[]);
    let url = format!("{}/v1/chat", chatd.url);
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&chat("qwen3:8b"))
            .send()
            .await
    });
    support::eventually(
        "the upstream to get the request",
        Duration::from_secs(10),
        || {
            futures_util::FutureExt::now_or_never(upstream.received_requests())
                .flatten()
                .is_some_and(|r| !r.is_empty())
        },
    )
    .await;
    (chatd, request, upstream)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_ended_by_the_shutdown_grace_is_answered_and_logged_as_such() {
    let (mut chatd, request, _upstream) = request_outlasting_the_upstream(1).await;
    let logs = chatd.stop();
    let line = logs
        .lines()
        .find(|l| l.contains("code=\"shutting_down\""))
        .unwrap_or_else(|| panic!("no log line for the ended request: {logs}"));
    assert!(line.contains("status=503"), "{line}");
    assert!(line.contains("provider=\"ollama\""), "{line}");
    assert!(line.contains("shutdown grace period ended"), "{line}");
    assert!(!logs.contains("client went away"), "{logs}");
    assert!(!logs.contains(" cut: "), "nothing was left to cut: {logs}");
    let answer = request.await.unwrap().expect("answered, not cut");
    assert_eq!(answer.status(), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_gracefully() {
    let upstream = ollama_mock().await;
    let mut chatd = ChatdProcess::start(&dev_config(&upstream.uri()), &[]);
    let logs = chatd.stop();
    assert!(logs.contains("chatd stopped"), "{logs}");
}

#[test]
fn route_command_explains_each_rule() {
    let config = support::workspace().join("lakehouse.toml");
    let config = config.to_str().unwrap();
    let cases = [
        (
            "ollama/qwen3:8b",
            "provider \"ollama\", upstream model \"qwen3:8b\" (provider prefix)",
        ),
        (
            "qwen3:8b",
            "provider \"ollama\", upstream model \"qwen3:8b\" (default provider)",
        ),
        ("fast", "tier \"fast\""),
    ];
    for (model, expected) in cases {
        let (code, out) = run_chatd(&["route", model, "--config", config], &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(expected), "{model}: {out}");
    }
    // Not registered without a key: exit code 2 and the reason.
    let (code, out) = run_chatd(&["route", "kimi-k2.6:cloud", "--config", config], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("ollama_cloud") && out.contains("not registered"),
        "{out}"
    );
}

#[test]
fn check_command_reports_adapters_and_keys_without_printing_keys() {
    let config = support::workspace().join("lakehouse.toml");
    let (code, text) = run_chatd(
        &["check", "--config", config.to_str().unwrap()],
        &[("OPENROUTER_API_KEY", "sk-or-check-secret-123")],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("adapter openai_compat: ok"), "{text}");
    assert!(
        text.contains("provider openrouter: registered")
            && text.contains("key from $OPENROUTER_API_KEY"),
        "{text}"
    );
    assert!(text.contains("provider kimi: NOT registered"), "{text}");
    assert!(
        text.contains("tier fast: \"fast\" → provider \"ollama\", upstream model"),
        "{text}"
    );
    assert!(
        !text.contains("admin API"),
        "disabled in this config: {text}"
    );
    assert!(!text.contains("sk-or-check-secret-123"));

    let (code, out) = run_chatd(&["check", "--config", "/nonexistent/lakehouse.toml"], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("cannot read config /nonexistent/lakehouse.toml"),
        "{out}"
    );
}

#[test]
fn check_fails_when_the_default_provider_cannot_register() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lakehouse.toml");
    std::fs::write(
        &config,
        "[chatd]\ndefault_provider = \"cloud\"\nadapters_dir = \"\"\n\
         [chatd.providers.cloud]\nadapter = \"ollama_cloud\"\nkey_env = \"CHATD_CHECK_UNSET_KEY\"\n\
         [chatd.providers.ollama]\nadapter = \"ollama\"\n\
         [chatd.admin]\nenabled = true\ntoken_env = \"CHATD_CHECK_ADMIN_TOKEN\"\n",
    )
    .unwrap();
    let args = ["check", "--config", config.to_str().unwrap()];
    let (code, out) = run_chatd(&args, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "default provider cloud: NOT registered, so bare model names cannot be served"
        ),
        "{out}"
    );
    assert!(
        out.contains("admin API: enabled but NO token found (looked in environment variable CHATD_CHECK_ADMIN_TOKEN)"),
        "{out}"
    );
    let (code, out) = run_chatd(
        &args,
        &[
            ("CHATD_CHECK_UNSET_KEY", "k"),
            ("CHATD_CHECK_ADMIN_TOKEN", "admin-secret-1234"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("admin API: enabled, token from $CHATD_CHECK_ADMIN_TOKEN"),
        "{out}"
    );
    assert!(!out.contains("admin-secret-1234"), "{out}");
}

#[test]
fn adapters_list_columns_fit_their_longest_cell() {
    let config = support::workspace().join("lakehouse.toml");
    let (code, out) = run_chatd(
        &["adapters", "list", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    let source = lines[0].find("SOURCE").expect("a header line");
    // openai_compat serves three providers: the longest USED BY cell.
    assert!(
        lines.iter().any(|l| l.contains("kimi,opencode,openrouter")),
        "{out}"
    );
    for line in &lines[1..] {
        assert!(
            line[..source].ends_with("  ") && !line[source..].starts_with(' '),
            "SOURCE column misaligned:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_with_a_missing_adapter_fails_check_but_not_serve() {
    // Deleting a drop-in adapter's file unregisters its provider while chatd runs; a
    // restart must not then take the other providers down. `chatd check` catches the typo.
    let upstream = ollama_mock().await;
    let config = format!(
        "{}\n        [chatd.providers.x]\n        adapter = \"nope\"\n        base_url = \"http://h\"\n",
        dev_config(&upstream.uri())
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lakehouse.toml");
    std::fs::write(&path, config.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let (code, out) = run_chatd(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("provider x: unknown adapter \"nope\": no built-in of that name and no nope.wasm in adapters_dir"),
        "{out}"
    );
    assert!(
        out.contains("(known: ollama, ollama_cloud, openai_compat)"),
        "{out}"
    );
    // The other one-shot commands see what serve would serve.
    let (code, out) = run_chatd(
        &["adapters", "list", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("nope "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains(" x ") && row.contains("(missing: no built-in, no nope.wasm in adapters_dir)"),
        "{row}"
    );
    let (code, out) = run_chatd(&["route", "x/m", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not registered"), "{out}");

    let mut chatd = ChatdProcess::start(&config, &[]);
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/chat", chatd.url))
        .json(&chat("x/m"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_not_registered", "{body}");
    let resp = client
        .post(format!("{}/v1/chat", chatd.url))
        .json(&chat("qwen3:8b"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let logs = chatd.stop();
    assert!(
        logs.contains("provider not registered provider=x reason=unknown adapter \"nope\""),
        "{logs}"
    );
}

#[test]
fn invalid_config_fails_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[chatd]\ntimeout_secs = \"soon\"\n").unwrap();
    let (code, out) = run_chatd(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("timeout_secs"), "{out}");
}

#[test]
fn adapters_check_validates_a_component_and_prints_its_description() {
    let good = support::component("chatd-adapter-anthropic");
    let (code, out) = run_chatd(&["adapters", "check", good.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    for needle in [
        "valid adapter",
        "name:              anthropic",
        "contract:          lakehouse:provider@0.3.0",
        "capabilities:      tools, images, image-urls, json-schema, json-object, reasoning, top-k",
        "key in header x-api-key",
        "yes (SSE)",
        "yes (GET /v1/models?limit=1000)",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    let legacy = support::component("chatd-fixture-legacy_v0_1");
    let (code, out) = run_chatd(&["adapters", "check", legacy.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("lakehouse:provider@0.1.0")
            && out.contains("contract 0.1.0 has no model listing")
            && out.contains(
                "capabilities:      tools, json-object, reasoning (implied by its contract)"
            ),
        "{out}"
    );

    let future = support::component("chatd-fixture-future_contract");
    let (code, out) = run_chatd(&["adapters", "check", future.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("rejected: unsupported contract version 9.0.0"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "hello").unwrap();
    let (code, out) = run_chatd(&["adapters", "check", junk.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("not a valid WebAssembly component"), "{out}");
}

#[test]
fn adapters_list_shows_what_a_config_would_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("adapters")).unwrap();
    std::fs::copy(
        support::component("chatd-adapter-anthropic"),
        dir.path().join("adapters/anthropic.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("adapters/broken.wasm"), "nope").unwrap();
    let config = dir.path().join("lakehouse.toml");
    std::fs::write(&config, "[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\n[chatd.providers.claude]\nadapter = \"anthropic\"\nkey_env = \"NOPE\"\n").unwrap();
    let (code, out) = run_chatd(
        &["adapters", "list", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
            .to_owned()
    };
    assert!(
        line("anthropic").contains("claude")
            && line("anthropic").ends_with("adapters/anthropic.wasm"),
        "{out}"
    );
    assert!(line("ollama ").contains("built-in"), "{out}");
    assert!(line("broken").contains("(not loaded)"), "{out}");
    assert!(
        out.contains("rejected") && out.contains("not a valid WebAssembly component"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_are_not_http_get_a_bare_4xx_and_a_log_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = ollama_mock().await;
    let mut chatd = ChatdProcess::start(&dev_config(&upstream.uri()), &[]);
    let addr = chatd.url.trim_start_matches("http://").to_owned();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    // The documented limits of a request head: 100 header fields, 409,600 bytes.
    // A head of `n` header fields: Host, n - 2 of value `value`, Connection.
    let with_headers = |n: usize, value: &str| {
        let mut head = "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned();
        for i in 2..n {
            head.push_str(&format!("x-h{i}: {value}\r\n"));
        }
        head + "Connection: close\r\n\r\n"
    };
    let many_headers = with_headers(101, "v");
    let most_headers = with_headers(100, "v");
    let head_of = |bytes: usize| with_headers(3, &"v".repeat(bytes - with_headers(3, "").len()));
    let big_head = head_of(409_601);
    let biggest_head = head_of(409_600);
    let cases: [(&[u8], &str); 7] = [
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400 "),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (long_uri.as_bytes(), "HTTP/1.1 414 "),
        (many_headers.as_bytes(), "HTTP/1.1 431 "),
        (big_head.as_bytes(), "HTTP/1.1 431 "),
        (most_headers.as_bytes(), "HTTP/1.1 200 "),
        (biggest_head.as_bytes(), "HTTP/1.1 200 "),
    ];
    for (request, status) in cases {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // chatd may answer an oversized head, and close, before it has all of it.
        let _ = conn.write_all(request).await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
            .await
            .expect("the connection was not closed")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(status), "{answer}");
    }
    chatd.wait_for_log("malformed HTTP request", Duration::from_secs(10));
    let logs = chatd.stop();
    let lines = logs
        .lines()
        .filter(|l| l.contains("malformed HTTP request"))
        .count();
    assert_eq!(lines, 5, "{logs}");
    assert!(logs.contains("peer=127.0.0.1:"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_not_reading_its_stream_at_shutdown_is_cut_and_logged() {
    use support::{ScriptedUpstream, Step};
    use tokio::io::AsyncWriteExt;
    // 8 MB of tokens, more than the socket buffers between chatd and a client that reads
    // nothing can hold.
    let line = format!(
        "{{\"model\":\"m\",\"message\":{{\"role\":\"assistant\",\"content\":\"{}\"}},\"done\":false}}\n",
        "x".repeat(1000)
    );
    let upstream = ScriptedUpstream::start(
        "application/x-ndjson",
        vec![Step::Chunk(line.repeat(8000).into_bytes()), Step::Hang],
    )
    .await;
    let config = dev_config(&upstream.url()).replace(
        "timeout_secs = 5",
        "timeout_secs = 60\n        shutdown_grace_secs = 1",
    );
    let mut chatd = ChatdProcess::start(&config, &[]);
    let body = serde_json::to_string(&json!({
        "model": "qwen3:8b", "stream": true, "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    let mut conn = tokio::net::TcpStream::connect(chatd.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    chatd.wait_for_log("status=200", Duration::from_secs(10));
    let logs = chatd.stop();
    assert!(
        logs.contains("closing connections still open after the shutdown grace period"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("requests still in flight after the shutdown grace period")
            .count(),
        1,
        "{logs}"
    );
    drop(conn);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_shutdown_signal_ends_in_flight_requests_at_once() {
    // Neither the upstream nor the grace period would end the request within the test.
    let (mut chatd, request, _upstream) = request_outlasting_the_upstream(60).await;
    chatd.signal("TERM");
    chatd.wait_for_log("shutdown requested", Duration::from_secs(10));
    let logs = chatd.stop();
    assert!(logs.contains("second shutdown signal"), "{logs}");
    let answer = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the request was not ended")
        .unwrap()
        .expect("answered, not cut");
    assert_eq!(answer.status(), 503);
}

#[test]
fn a_memory_limit_below_what_adapters_need_at_start_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lakehouse.toml");
    std::fs::write(
        &config,
        "[chatd]\ndefault_provider = \"ollama\"\nadapters_dir = \"\"\n\
         [chatd.sandbox]\nmemory_mib = 1\n[chatd.providers.ollama]\nadapter = \"ollama\"\n",
    )
    .unwrap();
    let (code, out) = run_chatd(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("adapter ollama: REJECTED <built-in ollama>: needs more memory at start than [chatd.sandbox] memory_mib allows"),
        "{out}"
    );
}
