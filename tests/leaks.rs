//! No key chatd holds reaches a client or a log line, whatever an upstream sends back: the
//! real binary at `RUST_LOG=trace`, upstreams that quote keys in redirects, error bodies,
//! stream error events and model listings, and every response and the whole log searched
//! for each key and for every 8-character piece of it.

mod support;

use serde_json::{Value, json};
use support::ChatdProcess;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const COMPAT_KEY: &str = "sk-compat-7Qm2Lx9Rt4Vb8Nc3Zp6Hd1";
const CLOUD_KEY: &str = "oc-cloud-K3j9Wq5Ev2Ty7Ui4Op8As6";
const ADMIN_TOKEN: &str = "admin-Zx4Cv7Bn1Mq8Wr5Et2Yu9";

fn config(upstream: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "compat"
        timeout_secs = 5
        [chatd.admin]
        enabled = true
        token_env = "LEAKS_ADMIN_TOKEN"
        [chatd.providers.compat]
        adapter = "openai_compat"
        base_url = "{upstream}/v1"
        key_env = "LEAKS_COMPAT_KEY"
        [chatd.providers.ollama_cloud]
        adapter = "ollama_cloud"
        base_url = "{upstream}/cloud"
        key_env = "LEAKS_CLOUD_KEY"
        "#
    )
}

/// Where each model's request goes wrong, upstream.
async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    let login = format!("https://login.example/?api_key={COMPAT_KEY}&next=/v1");
    let on = |model: &str| {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(json!({"model": model})))
    };
    on("redirect")
        .respond_with(ResponseTemplate::new(302).insert_header("location", login.as_str()))
        .mount(&server)
        .await;
    on("quote")
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "message": format!("Incorrect API key provided: {COMPAT_KEY}; also tried {CLOUD_KEY} and {ADMIN_TOKEN}")
        }})))
        .mount(&server)
        .await;
    // Keys straddling where an adapter or the host cuts long upstream text.
    for (model, pad) in [
        ("straddle-500", 490),
        ("straddle-1000", 990),
        ("straddle-8k", 8180),
    ] {
        on(model)
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": format!("{}{COMPAT_KEY} trailing", "x".repeat(pad))
            }})))
            .mount(&server)
            .await;
    }
    on("upper")
        .respond_with(ResponseTemplate::new(403).set_body_string(format!(
            "<html>forbidden for {}</html>",
            COMPAT_KEY.to_uppercase()
        )))
        .mount(&server)
        .await;
    on("stream-error")
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n\
                     data: {{\"error\":{{\"message\":\"key {COMPAT_KEY} revoked\"}}}}\n\n"
                )),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", login.as_str()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/cloud/api/tags"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"error": format!("bad token {CLOUD_KEY}")})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/cloud/api/generate"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": format!(
                "unauthorized: {}",
                &CLOUD_KEY[..20]
            )})),
        )
        .mount(&server)
        .await;
    server
}

/// Every response body chatd gives for the failing models, in every API and both modes.
async fn every_answer(chatd: &ChatdProcess) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for model in [
        "redirect",
        "quote",
        "straddle-500",
        "straddle-1000",
        "straddle-8k",
        "upper",
        "stream-error",
        "gpt-oss:120b:cloud",
    ] {
        for endpoint in ["/v1/chat", "/v1/chat/completions"] {
            for stream in [false, true] {
                let body = json!({"model": model, "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]});
                let resp = client
                    .post(format!("{}{endpoint}", chatd.url))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                assert!(
                    status >= 400 || text.contains("error"),
                    "{endpoint} {model} stream={stream} failed to fail: {status} {text}"
                );
                answers.push(text);
            }
        }
    }
    for path in [
        "/v1/models",
        "/v1/models/compat/anything",
        "/v1/models/ollama_cloud/x",
    ] {
        let text = client
            .get(format!("{}{path}", chatd.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        answers.push(text);
    }
    answers
}

/// Every `MIN`-character piece of `key`, and the key itself.
fn pieces(key: &str) -> Vec<String> {
    const MIN: usize = 8;
    let mut all: Vec<String> = (0..=key.len() - MIN)
        .map(|i| key[i..i + MIN].to_ascii_lowercase())
        .collect();
    all.push(key.to_ascii_lowercase());
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_reaches_a_client_or_the_log_whatever_upstreams_quote() {
    let upstream = upstream().await;
    let mut chatd = ChatdProcess::start(
        &config(&upstream.uri()),
        &[
            ("LEAKS_COMPAT_KEY", COMPAT_KEY),
            ("LEAKS_CLOUD_KEY", CLOUD_KEY),
            ("LEAKS_ADMIN_TOKEN", ADMIN_TOKEN),
            // Everything at trace but the compiler's own traces of the adapters' machine code
            // (millions of lines at start, none about requests).
            (
                "RUST_LOG",
                "trace,cranelift_codegen=off,wasmtime_internal_cranelift=off,regalloc2=off",
            ),
        ],
    );
    let answers = every_answer(&chatd).await;
    let logs = chatd.stop();
    // The upstream did quote them: what chatd wrote is where they must not be.
    assert!(
        answers
            .iter()
            .any(|a| a.contains("redirected to https://login.example/?api_key=***")),
        "the redirect is reported, its key scrubbed: {answers:#?}"
    );
    assert!(
        answers
            .iter()
            .any(|a| a.contains("Incorrect API key provided: ***")),
        "{answers:#?}"
    );
    assert!(logs.contains("TRACE"), "trace logging was on");
    let lower_logs = logs.to_ascii_lowercase();
    for key in [COMPAT_KEY, CLOUD_KEY, ADMIN_TOKEN] {
        for piece in pieces(key) {
            for answer in &answers {
                assert!(
                    !answer.to_ascii_lowercase().contains(&piece),
                    "{piece:?} of a key reached a client: {answer}"
                );
            }
            if let Some(at) = lower_logs.find(&piece) {
                let line = logs[..at].rfind('\n').map_or(0, |n| n + 1);
                let end = logs[at..].find('\n').map_or(logs.len(), |n| at + n);
                panic!("{piece:?} of a key reached the log: {}", &logs[line..end]);
            }
        }
    }
}

#[test]
fn the_pieces_cover_every_window() {
    let p = pieces("abcdefghij");
    assert_eq!(p, ["abcdefgh", "bcdefghi", "cdefghij", "abcdefghij"]);
    let _: Value = json!(p);
}
