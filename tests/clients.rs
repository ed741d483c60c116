//! Client keys, per-client limits and usage, through the real router (in process) and the
//! real binary: 401/403 in each wire format's shape, each limit kind hit and recovered,
//! budgets, usage in /metrics and the admin listing, keys reloaded under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{ChatdProcess, TestGateway, eventually};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ALICE: &str = "chatd_alice0000000000000000000000000000000000000000000000000000000";
const BOB: &str = "chatd_bob00000000000000000000000000000000000000000000000000000000000";
const ADMIN: &str = "admin-token-clients-7731";

fn digest(key: &str) -> String {
    chatd::clients::keys::hex(&chatd::clients::keys::digest(key.as_bytes()))
}

/// An Ollama upstream whose every answer reports 30 input + 20 output tokens, as one JSON
/// document or as an NDJSON stream.
async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(|req: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let done = json!({"model": "q", "message": {"role": "assistant", "content": "ok"},
                "done": true, "done_reason": "stop", "prompt_eval_count": 30, "eval_count": 20});
            if body["stream"] == json!(true) {
                let first = json!({"model": "q", "message": {"role": "assistant", "content": "o"}, "done": false});
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/x-ndjson")
                    .set_body_string(format!("{first}\n{done}\n"))
            } else {
                ResponseTemplate::new(200).set_body_json(done)
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/embed"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"model": "q", "embeddings": [[0.5, 0.25]], "prompt_eval_count": 7}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"models": [{"name": "q", "model": "q"}]})),
        )
        .mount(&server)
        .await;
    server
}

/// A config with client keys on: alice may use the `fast` tier and `ollama/*` with the given
/// extra lines in her entry; bob may use only `fast`.
fn config(upstream: &str, alice_extra: &str) -> String {
    format!(
        r#"
        [models]
        fast = "ollama/q"
        [chatd]
        [chatd.admin]
        enabled = true
        token_env = "CLIENTS_TEST_ADMIN_TOKEN"
        token_file = "{{dir}}/admin.env"
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{upstream}"
        [chatd.clients]
        enabled = true
        [chatd.clients.keys.bob]
        sha256 = "{bob}"
        models = ["fast"]
        [chatd.clients.keys.alice]
        sha256 = "{alice}"
        models = ["fast", "ollama/*"]
        {alice_extra}
        "#,
        alice = digest(ALICE),
        bob = digest(BOB),
    )
}

async fn start(alice_extra: &str) -> (TestGateway, MockServer) {
    let up = upstream().await;
    let admin_env = format!("CLIENTS_TEST_ADMIN_TOKEN={ADMIN}\n");
    let gw = TestGateway::start_with_files(
        &config(&up.uri(), alice_extra),
        &[("admin.env", admin_env.as_bytes())],
    )
    .await;
    (gw, up)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// What a request got back.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut req = client().request(method, format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(gw: &str, path: &str, key: &str, body: Value) -> Answer {
    let auth = bearer(key);
    send(
        gw,
        reqwest::Method::POST,
        path,
        &[("authorization", &auth)],
        Some(body),
    )
    .await
}

/// Sends `key`'s chat to `/v1/chat` until it is answered `status` (a limit's window moving
/// on, a reload taking effect), for at most 30 s.
async fn until_answered(gw: &str, key: &str, status: u16, what: &str) {
    let start = std::time::Instant::now();
    while post(gw, "/v1/chat", key, chat("fast")).await.status != status {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn missing_unknown_and_malformed_keys_are_401_in_the_callers_wire_format() {
    let (gw, _up) = start("").await;
    let url = &gw.url;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("missing", &[]),
        ("unknown", &[("authorization", "Bearer chatd_nobody")]),
        (
            "malformed",
            &[("authorization", "Bearer {not a key} with spaces")],
        ),
        ("wrong scheme", &[("authorization", "Basic YWxpY2U6eA==")]),
    ];
    for (what, headers) in cases {
        // Native.
        let a = send(
            url,
            reqwest::Method::POST,
            "/v1/chat",
            headers,
            Some(chat("fast")),
        )
        .await;
        assert_eq!(a.status, 401, "{what}: {:?}", a.body);
        assert_eq!(a.body["error"]["code"], "invalid_api_key", "{what}");
        assert!(
            a.body["error"].get("type").is_none(),
            "native shape: {}",
            a.body
        );
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        // OpenAI.
        let a = send(
            url,
            reqwest::Method::POST,
            "/v1/chat/completions",
            headers,
            Some(chat("fast")),
        )
        .await;
        assert_eq!(a.status, 401, "{what}");
        assert_eq!(a.body["error"]["type"], "authentication_error");
        assert_eq!(a.body["error"]["code"], "invalid_api_key");
        assert!(a.body["error"].as_object().unwrap().contains_key("param"));
        let a = send(url, reqwest::Method::GET, "/v1/models", headers, None).await;
        assert_eq!(a.status, 401, "{what}");
        // Anthropic: refused before routing, so in its shape whatever serves the path.
        let a = send(
            url,
            reqwest::Method::POST,
            "/v1/messages",
            headers,
            Some(json!({"model": "fast", "max_tokens": 5, "messages": []})),
        )
        .await;
        assert_eq!(a.status, 401, "{what}");
        assert_eq!(a.body["type"], "error");
        assert_eq!(a.body["error"]["type"], "authentication_error");
        // Ollama.
        let a = send(url, reqwest::Method::GET, "/api/tags", headers, None).await;
        assert_eq!(
            (a.status, a.body["error"].is_string()),
            (401, true),
            "{what}"
        );
    }
    // Unknown and malformed keys get the same answer: nothing tells them apart.
    let unknown = post(url, "/v1/chat/completions", "chatd_nobody", chat("fast")).await;
    let malformed = post(url, "/v1/chat/completions", "x", chat("fast")).await;
    // (Each carries its own request id.)
    assert_eq!(unknown.body["error"], malformed.body["error"]);
    assert_eq!(unknown.body["error"]["message"], "invalid API key");

    // Open paths stay open; the admin API keeps its own token.
    let a = send(url, reqwest::Method::GET, "/healthz", &[], None).await;
    assert_eq!(a.status, 200);
    let a = send(url, reqwest::Method::GET, "/metrics", &[], None).await;
    assert_eq!(a.status, 200);
    let alice = bearer(ALICE);
    let a = send(
        url,
        reqwest::Method::GET,
        "/v1/admin/clients",
        &[("authorization", &alice)],
        None,
    )
    .await;
    assert_eq!(a.status, 403, "a client key is not the admin token");

    // A known key, as Bearer or as x-api-key (Anthropic clients).
    let ok = post(url, "/v1/chat", ALICE, chat("fast")).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let ok = send(
        url,
        reqwest::Method::POST,
        "/v1/chat/completions",
        &[("x-api-key", ALICE)],
        Some(chat("fast")),
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let a = send(
        url,
        reqwest::Method::GET,
        "/v1/models",
        &[("authorization", &alice)],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn a_model_the_key_may_not_use_is_403_in_the_callers_wire_format() {
    let (gw, _up) = start("").await;
    // Model lists show each client what it may use.
    let ids = |key: &'static str| {
        let url = gw.url.clone();
        async move {
            let a = send(
                &url,
                reqwest::Method::GET,
                "/v1/models",
                &[("authorization", &bearer(key))],
                None,
            )
            .await;
            assert_eq!(a.status, 200, "{}", a.body);
            a.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(BOB).await, ["fast"]);
    assert_eq!(ids(ALICE).await, ["fast", "ollama/q"]);
    let a = send(
        &gw.url,
        reqwest::Method::GET,
        "/v1/models/ollama/q",
        &[("authorization", &bearer(BOB))],
        None,
    )
    .await;
    assert_eq!(a.status, 404);
    // bob may use the tier, not what it points to under another name.
    assert_eq!(
        post(&gw.url, "/v1/chat", BOB, chat("fast")).await.status,
        200
    );
    let a = post(&gw.url, "/v1/chat", BOB, chat("ollama/q")).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body["error"],
        json!({"code": "model_not_allowed", "message": "client \"bob\" may not use model \"ollama/q\""})
    );
    let a = post(&gw.url, "/v1/chat/completions", BOB, chat("q")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body["error"]["type"], "permission_error");
    assert_eq!(a.body["error"]["code"], "model_not_allowed");
    // Streams are refused the same way, before anything is streamed.
    let mut streamed = chat("q");
    streamed["stream"] = json!(true);
    let a = post(&gw.url, "/v1/chat/completions", BOB, streamed).await;
    assert_eq!(a.status, 403);
    // alice's ollama/* covers a bare name routed to the default provider ollama.
    assert_eq!(
        post(&gw.url, "/v1/chat", ALICE, chat("q")).await.status,
        200
    );
}

#[tokio::test]
async fn requests_per_minute_are_refused_with_headers_then_recover() {
    let (gw, _up) = start("requests_per_minute = 20").await;
    let mut last_ok: Option<Answer> = None;
    let mut successes = 0;
    let refused = loop {
        let a = post(&gw.url, "/v1/chat/completions", ALICE, chat("fast")).await;
        if a.status != 200 {
            break a;
        }
        successes += 1;
        assert_eq!(a.header("x-ratelimit-limit-requests"), Some("20"));
        last_ok = Some(a);
        assert!(successes <= 40, "never limited");
    };
    assert!(successes >= 20, "{successes}");
    let last_ok = last_ok.unwrap();
    assert_eq!(last_ok.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    assert_eq!(refused.body["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert!(refused.header("retry-after-ms").is_some());
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    // bob is not limited by alice's limit.
    assert_eq!(
        post(&gw.url, "/v1/chat", BOB, chat("fast")).await.status,
        200
    );
    // One request's worth comes back every 3 s.
    until_answered(&gw.url, ALICE, 200, "the request limit to recover").await;
}

#[tokio::test]
async fn tokens_per_minute_count_usage_when_answers_end_streams_included() {
    // Each answer is 50 tokens: the first (a stream) spends the minute's allowance.
    let (gw, _up) = start("tokens_per_minute = 50").await;
    let mut streamed = chat("fast");
    streamed["stream"] = json!(true);
    let first = send(
        &gw.url,
        reqwest::Method::POST,
        "/v1/chat",
        &[("authorization", &bearer(ALICE))],
        Some(streamed),
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("50"));
    assert_eq!(first.header("x-ratelimit-remaining-tokens"), Some("50"));
    assert!(first.body.as_str().unwrap().contains("\"done\""));
    let refused = post(&gw.url, "/v1/chat/completions", ALICE, chat("fast")).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.header("x-ratelimit-remaining-tokens"), Some("0"));
    until_answered(&gw.url, ALICE, 200, "the token limit to recover").await;
}

#[tokio::test]
async fn day_and_month_budgets_refuse_until_their_window_ends() {
    for (limit, extra) in [
        ("tokens_per_day", "tokens_per_day = 60"),
        ("tokens_per_month", "tokens_per_month = 60"),
    ] {
        let (gw, _up) = start(extra).await;
        for _ in 0..2 {
            let a = post(&gw.url, "/v1/chat", ALICE, chat("fast")).await;
            assert_eq!(a.status, 200, "{limit}: {:?}", a.body);
        }
        let a = post(&gw.url, "/v1/chat", ALICE, chat("fast")).await;
        assert_eq!(a.status, 429, "{limit}");
        assert_eq!(a.body["error"]["code"], "token_budget_exceeded");
        assert!(
            a.body["error"]["message"].as_str().unwrap().contains(limit),
            "{}",
            a.body
        );
        let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
        let max = if limit == "tokens_per_day" {
            86_400
        } else {
            31 * 86_400
        };
        assert!((1..=max).contains(&retry), "{limit}: {retry}");
        assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("0"));
    }
}

#[tokio::test]
async fn per_model_limits_count_the_models_their_pattern_matches() {
    let (gw, _up) =
        start("[chatd.clients.keys.alice.model_limits.\"fast\"]\nrequests_per_minute = 1").await;
    assert_eq!(
        post(&gw.url, "/v1/chat", ALICE, chat("fast")).await.status,
        200
    );
    let a = post(&gw.url, "/v1/chat", ALICE, chat("fast")).await;
    assert_eq!(a.status, 429);
    // Another model of the same client is not limited by it.
    assert_eq!(
        post(&gw.url, "/v1/chat", ALICE, chat("ollama/q"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn usage_shows_in_metrics_and_the_admin_listing() {
    let (gw, _up) = start("tokens_per_day = 100000").await;
    for model in ["fast", "fast", "ollama/q"] {
        assert_eq!(
            post(&gw.url, "/v1/chat", ALICE, chat(model)).await.status,
            200
        );
    }
    assert_eq!(post(&gw.url, "/v1/chat", BOB, chat("q")).await.status, 403);
    let _ = post(&gw.url, "/v1/chat", "chatd_nobody", chat("q")).await;
    let metrics = send(&gw.url, reqwest::Method::GET, "/metrics", &[], None).await;
    let text = metrics.body.as_str().unwrap();
    for line in [
        "chatd_client_requests_total{client=\"alice\",model=\"fast\"} 2",
        "chatd_client_requests_total{client=\"alice\",model=\"ollama/q\"} 1",
        "chatd_client_tokens_total{client=\"alice\",model=\"fast\",type=\"input\"} 60",
        "chatd_client_tokens_total{client=\"alice\",model=\"fast\",type=\"output\"} 40",
        "chatd_client_refused_total{client=\"bob\",reason=\"model_not_allowed\"} 1",
        "chatd_client_auth_failures_total 1",
        "chatd_limits_store_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    let admin = bearer(ADMIN);
    let a = send(
        &gw.url,
        reqwest::Method::GET,
        "/v1/admin/clients",
        &[("authorization", &admin)],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["store"]["kind"], "memory");
    let clients = a.body["clients"].as_array().unwrap();
    let alice = clients.iter().find(|c| c["name"] == "alice").unwrap();
    assert_eq!(alice["models"], json!(["fast", "ollama/*"]));
    assert_eq!(alice["limits"][0]["limit"], "tokens_per_day");
    assert_eq!(alice["limits"][0]["used"], 150);
    assert_eq!(alice["limits"][0]["remaining"], 100_000 - 150);
    let fast = alice["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["model"] == "fast")
        .unwrap();
    assert_eq!(fast["requests"], 2);
    assert!(alice["keys"][0].as_str().unwrap().starts_with("sha256:"));
    assert!(
        !a.body.to_string().contains(&digest(ALICE)),
        "whole digests are not listed"
    );
}

#[tokio::test]
async fn embeddings_are_admitted_and_metered_like_chat() {
    let (gw, _up) = start("tokens_per_day = 100000").await;
    let body = json!({"model": "ollama/q", "input": "hello"});
    let a = post(&gw.url, "/v1/embeddings", BOB, body.clone()).await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert_eq!(a.body["error"]["code"], "model_not_allowed");
    let a = post(&gw.url, "/v1/embeddings", ALICE, body).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = post(
        &gw.url,
        "/api/embed",
        ALICE,
        json!({"model": "ollama/q", "input": "hello"}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let metrics = send(&gw.url, reqwest::Method::GET, "/metrics", &[], None).await;
    let text = metrics.body.as_str().unwrap();
    for line in [
        "chatd_client_requests_total{client=\"alice\",model=\"ollama/q\"} 2",
        "chatd_client_tokens_total{client=\"alice\",model=\"ollama/q\",type=\"input\"} 14",
        "chatd_client_refused_total{client=\"bob\",reason=\"model_not_allowed\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
}

/// A limits store that cannot be reached: `fail_open` decides.
#[tokio::test]
async fn an_unreachable_limits_store_is_skipped_or_refused_per_fail_open() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for fail_open in [true, false] {
        let up = upstream().await;
        let text = config(&up.uri(), "requests_per_minute = 100")
            + &format!(
                "\n[chatd.limits]\nstore = \"redis://127.0.0.1:{port}/0\"\nfail_open = {fail_open}\ntimeout_ms = 200\n"
            );
        let gw = TestGateway::start(&text).await;
        let a = post(&gw.url, "/v1/chat/completions", ALICE, chat("fast")).await;
        if fail_open {
            assert_eq!(a.status, 200, "{:?}", a.body);
            assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("99"));
        } else {
            assert_eq!(a.status, 503, "{:?}", a.body);
            assert_eq!(a.body["error"]["code"], "limits_unavailable");
            assert_eq!(a.header("retry-after"), Some("1"));
        }
        let metrics = send(&gw.url, reqwest::Method::GET, "/metrics", &[], None).await;
        assert!(
            metrics
                .body
                .as_str()
                .unwrap()
                .lines()
                .any(|l| l == "chatd_limits_store_up 0"),
            "{}",
            metrics.body
        );
        // bob has no limits: nothing to check, so nothing to refuse.
        assert_eq!(
            post(&gw.url, "/v1/chat", BOB, chat("fast")).await.status,
            200
        );
    }
}

/// Keys added and removed by a reload while requests run: none of the requests with a key
/// that stays valid fails, and every log line names its client.
#[tokio::test]
async fn keys_reload_under_load_without_a_failed_request() {
    let up = upstream().await;
    let without_bob = config(&up.uri(), "").replace(
        &format!(
            "[chatd.clients.keys.bob]\n        sha256 = \"{}\"\n        models = [\"fast\"]\n",
            digest(BOB)
        ),
        "",
    );
    assert!(!without_bob.contains(&digest(BOB)));
    let mut chatd = ChatdProcess::start(&without_bob, &[]);
    let config_path = chatd.dir.path().join("lakehouse.toml");
    let url = chatd.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let a = post(&url, "/v1/chat/completions", ALICE, chat("fast")).await;
                if a.status == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed under reload: {} {}", a.status, a.body);
                }
            }
        }));
    }
    eventually("load running", Duration::from_secs(30), || {
        ok.load(Ordering::SeqCst) > 20
    })
    .await;
    assert_eq!(post(&url, "/v1/chat", BOB, chat("fast")).await.status, 401);
    // Add bob (and reload a few times, under load).
    std::fs::write(
        &config_path,
        config(&up.uri(), "").replace("{dir}", chatd.dir.path().to_str().unwrap()),
    )
    .unwrap();
    for _ in 0..3 {
        chatd.signal("HUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_answered(&url, BOB, 200, "bob's key to work after the reload").await;
    // Remove bob again.
    std::fs::write(
        &config_path,
        without_bob.replace("{dir}", chatd.dir.path().to_str().unwrap()),
    )
    .unwrap();
    chatd.signal("HUP");
    until_answered(&url, BOB, 401, "bob's key to stop working").await;
    let before = ok.load(Ordering::SeqCst);
    eventually(
        "more load after the reloads",
        Duration::from_secs(30),
        || ok.load(Ordering::SeqCst) > before + 20,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );
    let logs = chatd.stop();
    assert!(logs.contains("client=\"alice\""), "{logs}");
    assert!(logs.contains("client=\"bob\""), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("status=401") && l.contains("client=\"-\"")),
        "{logs}"
    );
}

#[test]
fn keys_add_prints_a_key_once_and_the_lines_that_configure_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lakehouse.toml");
    std::fs::write(
        &config,
        "[chatd]\n[chatd.clients]\nenabled = true\n[chatd.providers.ollama]\nadapter = \"ollama\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out) = support::run_chatd(
        &[
            "keys",
            "add",
            "carol",
            "--models",
            "fast,ollama/*",
            "--tokens-per-day",
            "5000",
            "--config",
            cfg,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("chatd_"))
        .unwrap()
        .to_owned();
    let lines = &out[out.find("[chatd.clients.keys.carol]").unwrap()..];
    assert!(lines.contains(&digest(&key)), "{out}");
    assert!(lines.contains("models = [\"fast\", \"ollama/*\"]"), "{out}");
    assert!(lines.contains("tokens_per_day = 5000"), "{out}");
    // Pasted into the config, the key works: `chatd check` accepts it.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(lines);
    std::fs::write(&config, text).unwrap();
    let (code, out) = support::run_chatd(&["keys", "add", "carol", "--config", cfg], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("exists") && out.contains(&digest(&key)),
        "{out}"
    );
    let (code, out) = support::run_chatd(&["keys", "add", "no/slash", "--config", cfg], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("client name"), "{out}");
}

#[test]
fn serve_warns_when_it_listens_beyond_loopback_without_client_keys() {
    let addr: std::net::SocketAddr = "0.0.0.0:3220".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lakehouse.toml");
    std::fs::write(
        &path,
        "[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\n",
    )
    .unwrap();
    let off = chatd::config::Config::load(&path).unwrap();
    assert!(
        chatd::clients::exposure_warning(addr, &off)
            .unwrap()
            .contains("without client keys")
    );
    assert!(chatd::clients::exposure_warning("127.0.0.1:1".parse().unwrap(), &off).is_none());
    std::fs::write(
        &path,
        "[chatd]\n[chatd.clients]\nenabled = true\n[chatd.providers.ollama]\nadapter = \"ollama\"\n",
    )
    .unwrap();
    let on = chatd::config::Config::load(&path).unwrap();
    assert!(chatd::clients::exposure_warning(addr, &on).is_none());
}

/// A `redis-server` of the test's own on a free loopback port, without persistence. `None`
/// (the test skips, saying why) when the binary is not installed, except under CI, which
/// installs it: there its absence fails the test.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let probe = std::process::Command::new("redis-server")
            .arg("--version")
            .output();
        if probe.is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed; .ci/run installs it (apt-get install redis-server)"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some(RedisServer::on(port))
    }

    fn on(port: u16) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let server = RedisServer { child, port };
        let start = std::time::Instant::now();
        while !server.answers() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends a signal (`STOP` makes it hang, `CONT` resumes it).
    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills it outright (SIGKILL), as a crash would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn store_up(url: &str) -> Option<bool> {
    let m = send(url, reqwest::Method::GET, "/metrics", &[], None).await;
    let text = m.body.as_str()?.to_owned();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("chatd_limits_store_up "))?;
    Some(value.trim() == "1")
}

async fn wait_store(replicas: &[&ChatdProcess], up: bool) {
    let start = std::time::Instant::now();
    for r in replicas {
        while store_up(&r.url).await != Some(up) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "limits store never showed up={up}:\n{}",
                r.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `n` requests to the replicas in turn; returns how many were admitted.
async fn admitted(replicas: &[&ChatdProcess], n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let a = post(
            &replicas[i % replicas.len()].url,
            "/v1/chat",
            ALICE,
            chat("fast"),
        )
        .await;
        match a.status {
            200 => ok += 1,
            429 => assert_eq!(a.body["error"]["code"], "rate_limit_exceeded"),
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    ok
}

/// Two replicas share one client's limit through Redis: 5 requests a minute in total, not 5
/// each. Redis hung, then killed mid-test: both keep serving (fail_open), each limiting
/// alone; Redis back: they share the limit again.
#[tokio::test]
async fn two_replicas_share_a_limit_through_redis_and_survive_its_loss() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().await;
    // 5 a minute: one request's worth comes back every 12 s, far longer than a round of
    // requests takes, so the counts below are exact.
    let text = config(&up.uri(), "requests_per_minute = 5")
        + &format!(
            "\n[chatd.limits]\nstore = \"{}\"\ntimeout_ms = 1000\n",
            redis.url()
        );
    let a = ChatdProcess::start(&text, &[]);
    let b = ChatdProcess::start(&text, &[]);
    let replicas = [&a, &b];
    wait_store(&replicas, true).await;
    assert_eq!(admitted(&replicas, 12).await, 5, "shared: 5 in total");

    // A Redis that hangs (stopped, its connections open): requests wait at most timeout_ms,
    // then each replica counts alone; when it answers again, the limit is shared again.
    redis.signal("STOP");
    for r in replicas {
        let answer = post(&r.url, "/v1/chat", ALICE, chat("fast")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    wait_store(&replicas, false).await;
    redis.signal("CONT");
    wait_store(&replicas, true).await;
    // The shared allowance is still spent (a request's worth refills every 12 s); each
    // replica's own count would still admit 4.
    assert!(
        admitted(&replicas, 4).await <= 1,
        "shared again after a hang"
    );

    redis.kill();
    // Both keep serving; each now limits alone.
    for r in replicas {
        let answer = post(&r.url, "/v1/chat", ALICE, chat("fast")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    wait_store(&replicas, false).await;
    for r in replicas {
        // 2 of its own 5 are spent (plus what refilled since): limited, alone.
        let alone = admitted(&[r], 10).await;
        assert!(
            (3..=5).contains(&alone),
            "replica alone admitted {alone} of 10"
        );
        assert!(
            r.logs().contains("limits store unreachable"),
            "{}",
            r.logs()
        );
    }

    let _redis = RedisServer::on(redis.port);
    wait_store(&replicas, true).await;
    // The new Redis starts empty: one shared allowance of 5 again.
    assert_eq!(admitted(&replicas, 12).await, 5, "shared again");
    for r in replicas {
        assert!(
            r.logs().contains("limits store reachable again"),
            "{}",
            r.logs()
        );
    }
}

/// The Lua scripts and the in-process store agree, step by step, on a manual clock.
#[tokio::test]
async fn the_redis_store_and_the_memory_store_agree() {
    use chatd::clients::limits::{Kind, Limit, ManualClock};
    use chatd::clients::store::Limiter;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let t0 = 1_767_225_600_000_000 + 86_400_000_000 * 31 - 5_000_000; // 5 s before January ends
    let memory_clock = ManualClock::at(t0);
    let redis_clock = ManualClock::at(t0);
    let memory_config = chatd::config::LimitsConfig::default();
    let redis_config = chatd::config::LimitsConfig {
        store: redis.url(),
        timeout_ms: 2000,
        ..Default::default()
    };
    let memory = Limiter::new(&memory_config, memory_clock.clone()).unwrap();
    let shared = Limiter::new(&redis_config, redis_clock.clone()).unwrap();
    let start = std::time::Instant::now();
    while !shared.store_up() {
        assert!(start.elapsed() < Duration::from_secs(30), "redis never up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let limit = |kind: Kind, n: u64, pattern: Option<&str>| Limit {
        client: "alice".into(),
        id: format!("alice:{}:{pattern:?}", kind.tag()).into(),
        kind,
        limit: n,
        pattern: pattern.map(Into::into),
    };
    let limits = vec![
        limit(Kind::RequestsPerMinute, 4, None),
        limit(Kind::TokensPerMinute, 90, None),
        limit(Kind::TokensPerDay, 200, None),
        limit(Kind::TokensPerMonth, 260, Some("ollama/*")),
    ];
    // (advance by ms, tokens of the answer if admitted)
    let steps = [
        (0, 40),
        (10, 40),
        (10, 40),
        (100, 0),
        (1_000, 5),
        (15_000, 30),
        (30_000, 30),
        (200, 1),
        (3_000, 50),
        (60_000, 50),
        (60_000, 50),
        (1, 0),
    ];
    for (i, (advance, tokens)) in steps.into_iter().enumerate() {
        memory_clock.advance(Duration::from_millis(advance));
        redis_clock.advance(Duration::from_millis(advance));
        let m = memory.check(&limits, &memory_config).await.unwrap();
        let r = shared.check(&limits, &redis_config).await.unwrap();
        assert!(shared.store_up());
        assert_eq!(m, r, "step {i}");
        if m.allowed {
            memory.debit_now(&limits, tokens, &memory_config).await;
            shared.debit_now(&limits, tokens, &redis_config).await;
        }
        eprintln!("step {i}: {m:?}");
    }
    let m = memory.peek(&limits, &memory_config).await.unwrap();
    let r = shared.peek(&limits, &redis_config).await.unwrap();
    assert_eq!(m, r);
}
