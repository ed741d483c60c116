//! The HTTP API's contract: validation errors, routing errors, listings, the OpenAI shapes.

mod support;

use std::time::Duration;

use serde_json::json;
use support::TestGateway;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(upstream: &str) -> String {
    format!(
        r#"
        [models]
        fast = "ollama/qwen3:8b"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 2
        max_body_bytes = 2048
        models_cache_secs = 60
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{upstream}"
        [chatd.providers.ollama_cloud]
        adapter = "ollama_cloud"
        key_env = "CHATD_TEST_NEVER_SET_1"
        [chatd.providers.kimi]
        adapter = "openai_compat"
        base_url = "https://api.kimi.com/coding/v1"
        key_env = "CHATD_TEST_NEVER_SET_2"
        key_file = "{{dir}}/missing.env"
        "#
    )
}

async fn ollama_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "qwen3:8b", "message": {"role": "assistant", "content": "ok"},
            "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 1
        })))
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"models": [{"name": "qwen3:8b", "model": "qwen3:8b"}]})),
        )
        .mount(&upstream)
        .await;
    upstream
}

#[tokio::test]
async fn providers_lists_exactly_the_registered_ones() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let (status, body) = gw.get("/v1/chat/providers").await;
    assert_eq!(status, 200);
    let providers = body["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{body}");
    let p = &providers[0];
    assert_eq!(p["name"], "ollama");
    assert_eq!(p["default"], true);
    assert_eq!(p["base_url"], upstream.uri());
    assert_eq!(p["adapter"]["name"], "ollama");
    assert_eq!(p["adapter"]["source"], "built-in");
    assert_eq!(p["adapter"]["contract"], "0.3.0");
    assert_eq!(p["adapter"]["sha256"].as_str().unwrap().len(), 64);
    let unregistered = body["unregistered"].as_array().unwrap();
    let names: Vec<&str> = unregistered
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kimi", "ollama_cloud"]);
    let kimi = unregistered[0]["reason"].as_str().unwrap();
    assert!(
        kimi.contains("CHATD_TEST_NEVER_SET_2") && kimi.contains("missing.env"),
        "{kimi}"
    );
}

#[tokio::test]
async fn telemetry_counts_requests_errors_and_latency() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_partial_json(
            json!({"model": "broken"}),
        ))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .mount(&upstream)
        .await;
    for _ in 0..3 {
        let (status, _, _) = gw.post("/v1/chat", TestGateway::chat("qwen3:8b")).await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = gw.post("/v1/chat", TestGateway::chat("broken")).await;
    assert_eq!(status, 502);
    let (_, body) = gw.get("/v1/chat/providers").await;
    let t = &body["providers"][0]["telemetry"];
    assert_eq!(
        (
            t["requests"].as_u64(),
            t["errors"].as_u64(),
            t["in_flight"].as_u64()
        ),
        (Some(4), Some(1), Some(0))
    );
    assert!(t["last_latency_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn unregistered_and_unconfigured_routes_are_404_not_fall_throughs() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    for model in ["kimi-k2.6:cloud", "kimi/kimi-for-coding", "ollama_cloud/x"] {
        let (status, _, body) = gw.post("/v1/chat", TestGateway::chat(model)).await;
        assert_eq!(status, 404, "{model}: {body}");
        assert_eq!(body["error"]["code"], "provider_not_registered");
        assert!(body["error"]["message"].as_str().unwrap().contains(model));
    }
    let (status, _, body) = gw
        .post("/v1/chat/completions", TestGateway::chat("kimi/x"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // OpenAI's word for it, which SDKs and error mappers know.
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(
        upstream.received_requests().await.unwrap().is_empty(),
        "nothing reached the default upstream"
    );
}

#[tokio::test]
async fn bad_requests_are_400_with_a_json_error_naming_the_problem() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model is required",
        ),
        (
            json!({"model": "", "messages": [{"role": "user", "content": "x"}]}),
            "model is required",
        ),
        (json!({"model": "m"}), "messages is required"),
        (
            json!({"model": "m", "messages": []}),
            "messages must not be empty",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "format": "yaml"}),
            "format must be",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9}),
            "temperature must be between 0 and 2, got 9.0",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 1e308}),
            "top_p must be between 0 and 1, got 1e308",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "ollama/", "messages": [{"role": "user", "content": "x"}]}),
            "no model after the prefix",
        ),
        (
            json!({"model": 5, "messages": []}),
            "model: invalid type: integer `5`, expected a string",
        ),
        (
            json!([1, 2]),
            "request body: invalid type: array, expected a JSON object",
        ),
    ];
    for (request, needle) in cases {
        let (status, _, body) = gw.post("/v1/chat", request.clone()).await;
        assert_eq!(status, 400, "{request}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{request}: {message}");
        assert!(body["error"]["code"].is_string());
    }
    for path in ["/v1/chat", "/v1/chat/completions"] {
        let (status, body) = gw.post_raw(path, b"{\"model\": \"m\", ".to_vec()).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(
            body["error"]["message"],
            "invalid JSON body: EOF while parsing a value at line 1 column 15",
            "{path}: {body}"
        );
        let (status, body) = gw.post_raw(path, b"{\"model\": \"m\"} x".to_vec()).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["error"]["message"], "invalid JSON body: trailing characters at line 1 column 16",
            "{path}: {body}"
        );
    }
    let (status, body) = gw.post_raw("/v1/chat", Vec::new()).await;
    assert_eq!(status, 400, "{body}");
    assert!(upstream.received_requests().await.unwrap().is_empty());
}

/// A valid chat request with `value` set at JSON pointer `at` (an array index one past the
/// end appends).
fn with(at: &str, value: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    let (parent, key) = at.rsplit_once('/').unwrap();
    match body.pointer_mut(parent).unwrap() {
        serde_json::Value::Array(list) => {
            let index: usize = key.parse().unwrap();
            list.truncate(index);
            list.push(value);
        }
        object => object[key] = value,
    }
    body
}

/// Posts `body` to both endpoints and checks the 400 names `param` and reads `message`
/// (OpenAI's shape also carries `param`); nothing may reach the upstream.
async fn assert_rejected(
    gw: &TestGateway,
    upstream: &MockServer,
    body: serde_json::Value,
    param: Option<&str>,
    message: &str,
) {
    for path in ["/v1/chat", "/v1/chat/completions"] {
        let (status, _, reply) = gw.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        let error = &reply["error"];
        assert_eq!(error["code"], "invalid_request", "{path} {body}: {reply}");
        assert_eq!(error["message"], message, "{path} {body}: {reply}");
        if path == "/v1/chat/completions" {
            assert_eq!(error["type"], "invalid_request_error");
            assert_eq!(error["param"], json!(param), "{path} {body}: {reply}");
        }
    }
    assert!(upstream.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_json_type_names_the_field_and_what_it_must_hold() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let cases = [
        (
            "/temperature",
            json!("0.5"),
            "temperature",
            r#"temperature: invalid type: string "0.5", expected a number"#,
        ),
        (
            "/top_p",
            json!(true),
            "top_p",
            "top_p: invalid type: boolean `true`, expected a number",
        ),
        (
            "/max_tokens",
            json!("10"),
            "max_tokens",
            r#"max_tokens: invalid type: string "10", expected a positive integer"#,
        ),
        (
            "/max_tokens",
            json!(-1),
            "max_tokens",
            "max_tokens: invalid value: integer `-1`, expected a positive integer",
        ),
        (
            "/max_tokens",
            json!(2.5),
            "max_tokens",
            "max_tokens: invalid type: floating point `2.5`, expected a positive integer",
        ),
        (
            "/stream",
            json!("true"),
            "stream",
            r#"stream: invalid type: string "true", expected a boolean"#,
        ),
        (
            "/stop",
            json!(1),
            "stop",
            "stop: expected a string or an array of strings",
        ),
        (
            "/stop",
            json!(["END", 2]),
            "stop",
            "stop: expected a string or an array of strings",
        ),
        (
            "/messages",
            json!("hi"),
            "messages",
            r#"messages: invalid type: string "hi", expected an array of messages"#,
        ),
        (
            "/messages/0/content",
            json!(1),
            "messages[0].content",
            "messages[0].content: expected a string or an array of content parts",
        ),
        (
            "/messages/0/name",
            json!(5),
            "messages[0].name",
            "messages[0].name: invalid type: integer `5`, expected a string",
        ),
        (
            "/messages/0/role",
            json!({}),
            "messages[0].role",
            "messages[0].role: invalid type: object, expected a string",
        ),
    ];
    for (at, value, param, message) in cases {
        assert_rejected(&gw, &upstream, with(at, value), Some(param), message).await;
    }
    // A later message is named by its index.
    let body = json!({"model": "fast", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
        {"role": "user", "content": [{"type": "text", "text": "a"}], "tool_call_id": 7},
    ]});
    assert_rejected(
        &gw,
        &upstream,
        body,
        Some("messages[2].tool_call_id"),
        "messages[2].tool_call_id: invalid type: integer `7`, expected a string",
    )
    .await;
    // Missing required field inside a message.
    assert_rejected(
        &gw,
        &upstream,
        with("/messages/0", json!({"content": "hi"})),
        Some("messages[0]"),
        "messages[0]: missing field `role`",
    )
    .await;
}

#[tokio::test]
async fn arrays_are_not_read_as_objects() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    // serde would read a struct from an array of its field values in order.
    assert_rejected(
        &gw,
        &upstream,
        json!(["fast", [["user", "hi"]]]),
        None,
        "request body: invalid type: array, expected a JSON object",
    )
    .await;
    assert_rejected(
        &gw,
        &upstream,
        with("/messages", json!([["user", "hi"]])),
        Some("messages[0]"),
        "messages[0]: invalid type: array, expected a JSON object",
    )
    .await;
    assert_rejected(
        &gw,
        &upstream,
        with("/messages/1", json!("hi")),
        Some("messages[1]"),
        r#"messages[1]: invalid type: string "hi", expected a JSON object"#,
    )
    .await;
    assert_rejected(
        &gw,
        &upstream,
        json!("hi"),
        None,
        r#"request body: invalid type: string "hi", expected a JSON object"#,
    )
    .await;
}

#[tokio::test]
async fn the_native_endpoint_rejects_unknown_fields_by_name() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let mut body = TestGateway::chat("fast");
    body["temprature"] = json!(0.2);
    let (status, _, reply) = gw.post("/v1/chat", body.clone()).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_request");
    assert_eq!(
        reply["error"]["message"],
        r#"unrecognized request field "temprature""#
    );
    body["max_token"] = json!(5);
    let (status, _, reply) = gw.post("/v1/chat", body).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        reply["error"]["message"],
        r#"unrecognized request field "max_token""#
    );
    // Null is no excuse: the field is still not one chatd reads.
    let mut body = TestGateway::chat("fast");
    body["n"] = json!(null);
    let (status, _, reply) = gw.post("/v1/chat", body).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        reply["error"]["message"],
        r#"unrecognized request field "n""#
    );
    assert!(upstream.received_requests().await.unwrap().is_empty());
    // Every documented field is still accepted.
    let mut body = TestGateway::chat("fast");
    for (field, value) in [
        ("max_tokens", json!(64)),
        ("temperature", json!(0.2)),
        ("top_p", json!(1)),
        ("stop", json!(["END"])),
        ("format", json!("json")),
        ("think", json!(false)),
        ("stream", json!(false)),
        ("tools", json!(null)),
        ("tool_choice", json!(null)),
    ] {
        body[field] = value;
    }
    let (status, _, reply) = gw.post("/v1/chat", body).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn oversized_bodies_are_413_json() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, _, body) = gw.post("/v1/chat", big.clone()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
    let (status, _, body) = gw.post("/v1/chat/completions", big).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn compressed_bodies_are_415_json() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let client = reqwest::Client::new();
    for path in ["/v1/chat", "/v1/chat/completions"] {
        let resp = client
            .post(format!("{}{path}", gw.url))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(vec![0x1f, 0x8b, 0x08, 0x00])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 415, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "unsupported_media_type",
            "{path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"gzip\""),
            "{body}"
        );
    }
    // "identity" is no encoding at all.
    let resp = client
        .post(format!("{}/v1/chat", gw.url))
        .header("content-encoding", "identity")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn browsers_of_configured_origins_pass_cors() {
    let upstream = ollama_upstream().await;
    let text = config(&upstream.uri()).replace(
        "models_cache_secs = 60",
        "models_cache_secs = 60\ncors_origins = [\"https://app.example\"]",
    );
    let gw = TestGateway::start(&text).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", gw.url);
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-stainless-os",
            )
            .send()
    };
    let resp = preflight("https://app.example").await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-stainless-os")
    );
    let resp = preflight("https://evil.example").await.unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));

    let resp = client
        .post(&url)
        .header("origin", "https://app.example")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn without_cors_origins_no_cors_headers_are_sent() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/chat", gw.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let (status, body) = gw.get("/v2/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = gw.get("/v1/chat").await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, body) = gw.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn openai_completion_object_shape() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let (status, headers, body) = gw
        .post("/v1/chat/completions", json!({"model": "fast", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    // The model that served the tier, as a routable id.
    assert_eq!(body["model"], "ollama/qwen3:8b");
    assert_eq!(headers["x-chatd-provider"], "ollama");
    assert_eq!(headers["x-chatd-model"], "qwen3:8b");
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": "ok"})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
    );
}

#[tokio::test]
async fn openai_endpoint_rejects_answer_changing_fields_by_name() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    for (field, value) in [
        ("n", json!(3)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(2)),
        // json_schema is carried now (contract 0.3.0); a format no API has is still refused.
        ("response_format", json!({"type": "xml"})),
    ] {
        let mut req = TestGateway::chat("qwen3:8b");
        req[field] = value;
        let (status, _, body) = gw.post("/v1/chat/completions", req).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["param"], field, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn models_lists_tiers_and_upstream_models_cached() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    for _ in 0..2 {
        let (status, body) = gw.get("/v1/models").await;
        assert_eq!(status, 200);
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fast", "ollama/qwen3:8b"]);
        assert_eq!(body["errors"], json!([]));
    }
    let fetches = upstream
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/tags")
        .count();
    assert_eq!(fetches, 1, "the second listing came from the cache");

    // One entry, as the OpenAI SDK's models.retrieve asks for it.
    let (status, body) = gw.get("/v1/models/ollama/qwen3:8b").await;
    assert_eq!(
        (status, body["id"].as_str()),
        (200, Some("ollama/qwen3:8b")),
        "{body}"
    );
    let (status, body) = gw.get("/v1/models/fast").await;
    assert_eq!(
        (status, body["target"].as_str()),
        (200, Some("ollama/qwen3:8b")),
        "{body}"
    );
    let (status, body) = gw.get("/v1/models/ollama/nope").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in the model list")
    );
}

#[tokio::test]
async fn a_hung_provider_holds_the_model_list_once() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&upstream)
        .await;
    // timeout_secs = 2 in this config: the listing gives up then, not after a minute.
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    // Concurrent first calls wait for one fetch; later ones get the remembered failure.
    let first = futures_util::future::join_all((0..4).map(|_| gw.get("/v1/models"))).await;
    for (status, body) in first {
        assert_eq!(status, 200);
        assert_eq!(body["errors"][0]["code"], "upstream_timeout", "{body}");
    }
    for _ in 0..3 {
        let (status, body) = gw.get("/v1/models").await;
        assert_eq!(status, 200);
        assert_eq!(body["errors"][0]["provider"], "ollama", "{body}");
        assert_eq!(body["errors"][0]["code"], "upstream_timeout", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("did not answer within 2s"),
            "{body}"
        );
    }
    // A model of that provider cannot be found: its listing's failure is the answer.
    let (status, body) = gw.get("/v1/models/ollama/qwen3:8b").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout", "{body}");
    let fetches = upstream.received_requests().await.unwrap().len();
    assert_eq!(
        fetches, 1,
        "the failure was remembered, not retried on every call"
    );
}

#[tokio::test]
async fn one_failing_provider_does_not_fail_the_model_list() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&upstream)
        .await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        1,
        "the tier is still listed: {body}"
    );
    assert_eq!(body["errors"][0]["provider"], "ollama");
}

#[tokio::test]
async fn a_redirecting_upstream_is_named_with_where_it_points() {
    // A plain-http base_url that the upstream redirects to https is a common mistake;
    // chatd follows no redirect (the body and key must not go where a 3xx points).
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(
            ResponseTemplate::new(301).insert_header("location", "https://ollama.example/api/chat"),
        )
        .mount(&upstream)
        .await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    fails_streamed_or_not(
        &gw,
        "upstream_error",
        "HTTP 301: redirected to https://ollama.example/api/chat",
    )
    .await;
}

#[tokio::test]
async fn an_encoded_upstream_body_is_reported_as_such() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-encoding", "gzip")
                .set_body_bytes(vec![0x1f, 0x8b, 0x08, 0x00]),
        )
        .mount(&upstream)
        .await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    fails_streamed_or_not(&gw, "upstream_malformed_response", "gzip-encoded").await;
}

/// Asserts that a chat request fails with a 502 of `code` whose message holds `needle`,
/// whether it asks for a stream or not.
async fn fails_streamed_or_not(gw: &TestGateway, code: &str, needle: &str) {
    for stream in [false, true] {
        let mut body = TestGateway::chat("ollama/m");
        body["stream"] = json!(stream);
        let (status, _, body) = gw.post("/v1/chat/completions", body).await;
        assert_eq!(status, 502, "stream={stream}: {body}");
        assert_eq!(body["error"]["code"], code, "stream={stream}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "stream={stream}: {message}");
    }
}

#[tokio::test]
async fn an_upstream_503_passes_its_retry_after_on() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "3")
                .set_body_json(json!({"error": "down for maintenance"})),
        )
        .mount(&upstream)
        .await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let (status, headers, body) = gw
        .post("/v1/chat/completions", TestGateway::chat("ollama/m"))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("down for maintenance"),
        "{body}"
    );
    assert_eq!(headers.get("retry-after").unwrap(), "3");
}

#[tokio::test]
async fn head_of_the_model_list_asks_no_provider() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let resp = reqwest::Client::new()
        .head(format!("{}/v1/models", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let asked = upstream.received_requests().await.unwrap().len();
    assert_eq!(asked, 0, "a HEAD made the providers list their models");
}

#[tokio::test]
async fn metrics_count_requests_per_provider_for_prometheus() {
    let upstream = ollama_upstream().await;
    let gw = TestGateway::start(&config(&upstream.uri())).await;
    let (status, _, _) = gw
        .post("/v1/chat/completions", TestGateway::chat("ollama/qwen3:8b"))
        .await;
    assert_eq!(status, 200);
    // A request rejected before it was routed counts for no provider.
    let mut bad = TestGateway::chat("ollama/qwen3:8b");
    bad["messages"] =
        json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
    let (status, _, body) = gw.post("/v1/chat/completions", bad).await;
    assert_eq!(status, 400, "{body}");

    let resp = reqwest::get(format!("{}/metrics", gw.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    for line in [
        "# TYPE chatd_requests counter",
        "chatd_requests_total{provider=\"ollama\"} 1",
        "chatd_request_errors_total{provider=\"ollama\"} 0",
        "chatd_requests_in_flight{provider=\"ollama\"} 0",
        "# TYPE chatd_request_duration_seconds histogram",
        "chatd_request_duration_seconds_count{provider=\"ollama\"} 1",
        "chatd_request_duration_seconds_bucket{le=\"+Inf\",provider=\"ollama\"} 1",
        "chatd_provider_registered{provider=\"ollama\"} 1",
        "chatd_provider_registered{provider=\"kimi\"} 0",
        "chatd_adapter_instances_max 1000",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn tiers_whose_provider_cannot_serve_are_not_listed() {
    let upstream = ollama_upstream().await;
    let text = config(&upstream.uri()).replace(
        "fast = \"ollama/qwen3:8b\"",
        "fast = \"ollama/qwen3:8b\"\n        judge = \"kimi/k2\"",
    );
    let gw = TestGateway::start(&text).await;
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"fast") && !ids.contains(&"judge"), "{ids:?}");
    let (status, _) = gw.get("/v1/models/judge").await;
    assert_eq!(status, 404);
}

/// A JSON chat body of exactly `bytes` bytes (as `serde_json` writes it) for `model`.
fn body_of_size(model: &str, bytes: usize) -> serde_json::Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": ""}]});
    let pad = bytes - body.to_string().len();
    body["messages"][0]["content"] = json!("x".repeat(pad));
    body
}

/// What `chatd_request_body_bytes_in_flight` says now.
/// A chat request whose body is sent in `chunks`, without a declared length.
async fn post_chunked(
    gw: &TestGateway,
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat", gw.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap()
}

async fn bodies_in_flight(gw: &TestGateway) -> u64 {
    let text = gw.client_get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("chatd_request_body_bytes_in_flight "))
        .unwrap_or_else(|| panic!("no body gauge in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until no request body is held any more (each step of the tests below frees what it
/// held, or the next step is refused).
async fn until_no_body_is_held(gw: &TestGateway, after: &str) {
    let start = std::time::Instant::now();
    loop {
        let held = bodies_in_flight(gw).await;
        if held == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{held} body bytes still held after {after}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway allowing 3000 body bytes in flight, with a healthy upstream (`ollama`) and one
/// that takes requests and never answers (`hang`).
async fn gateway_with_inflight_limit(
    healthy: &MockServer,
    hanging: &support::ScriptedUpstream,
) -> TestGateway {
    TestGateway::start(&format!(
        r#"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 60
        max_body_bytes = 2048
        max_inflight_bytes = 3000
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{}"
        [chatd.providers.hang]
        adapter = "ollama"
        base_url = "{}"
        "#,
        healthy.uri(),
        hanging.url()
    ))
    .await
}

/// Sends `body` to `path` from a task of its own, so the test can hang up on it.
fn spawn_request(
    gw: &TestGateway,
    path: &str,
    body: serde_json::Value,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let url = format!("{}{path}", gw.url);
    tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await })
}

#[tokio::test]
async fn bodies_beyond_max_inflight_bytes_are_503_in_each_format_until_some_are_done() {
    use support::{ScriptedUpstream, Step};
    let healthy = ollama_upstream().await;
    let hanging = ScriptedUpstream::start("application/x-ndjson", vec![Step::Hang]).await;
    let gw = gateway_with_inflight_limit(&healthy, &hanging).await;
    assert_eq!(bodies_in_flight(&gw).await, 0);

    // One request of 1800 bytes waits on the upstream that never answers: its body stays held.
    let waiting = spawn_request(&gw, "/v1/chat", body_of_size("hang/m", 1800));
    let observed = hanging.observed.clone();
    support::eventually(
        "the first request to reach its upstream",
        Duration::from_secs(30),
        || !observed.lock().unwrap().requests.is_empty(),
    )
    .await;
    assert_eq!(bodies_in_flight(&gw).await, 1800);

    // Another of that size would exceed 3000: refused at once, in the caller's own shape.
    let (status, headers, body) = gw.post("/v1/chat", body_of_size("ollama/m", 1800)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("overloaded"))
    );
    assert_eq!(headers["retry-after"], "1");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_inflight_bytes = 3000"), "{body}");

    let (status, headers, body) = gw
        .post("/v1/chat/completions", body_of_size("ollama/m", 1800))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(body["error"]["type"], "api_error", "{body}");

    let mut anthropic = body_of_size("ollama/m", 1800);
    anthropic["max_tokens"] = json!(16);
    let (status, headers, body) = gw.post("/v1/messages", anthropic).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    assert_eq!(
        body["error"]["details"]["error_code"], "overloaded",
        "{body}"
    );

    let (status, headers, body) = gw.post("/api/chat", body_of_size("ollama/m", 1800)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("max_inflight_bytes"),
        "{body}"
    );

    let mut embed = json!({"model": "ollama/m", "input": ""});
    embed["input"] = json!("x".repeat(1800 - embed.to_string().len()));
    let (status, headers, body) = gw.post("/v1/embeddings", embed).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("overloaded"))
    );
    assert_eq!(headers["retry-after"], "1");

    // A body without a declared length is counted as it arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body_of_size("ollama/m", 1800)
        .to_string()
        .into_bytes()
        .chunks(300)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = post_chunked(&gw, chunks).await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // None of the refused requests kept anything.
    assert_eq!(bodies_in_flight(&gw).await, 1800);

    // What fits next to the waiting request is served, and given back.
    let (status, _, body) = gw.post("/v1/chat", body_of_size("ollama/m", 1000)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bodies_in_flight(&gw).await, 1800);

    // Once the waiting request's client hangs up, its bytes are given back and the same
    // request that was refused is served.
    waiting.abort();
    let _ = waiting.await;
    until_no_body_is_held(&gw, "the waiting client hung up").await;
    let (status, _, body) = gw.post("/v1/chat", body_of_size("ollama/m", 1800)).await;
    assert_eq!(status, 200, "{body}");
    let mut anthropic = body_of_size("ollama/m", 1800);
    anthropic["max_tokens"] = json!(16);
    let (status, _, body) = gw.post("/v1/messages", anthropic).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bodies_in_flight(&gw).await, 0);
}

#[tokio::test]
async fn a_body_is_given_back_however_its_request_ends() {
    use support::{ScriptedUpstream, Step};
    let healthy = ollama_upstream().await;
    Mock::given(method("POST"))
        .and(path("/api/embed"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&healthy)
        .await;
    let hanging = ScriptedUpstream::start("application/x-ndjson", vec![Step::Hang]).await;
    let gw = gateway_with_inflight_limit(&healthy, &hanging).await;
    let big = |model: &str| body_of_size(model, 1800);

    // Every failure before or after the gateway: each must leave nothing held.
    let mut not_json = big("ollama/m").to_string().into_bytes();
    not_json[0] = b'[';
    let (status, _) = gw.post_raw("/v1/chat", not_json).await;
    assert_eq!(status, 400);
    assert_eq!(bodies_in_flight(&gw).await, 0, "after invalid JSON");

    let mut bad_role = big("ollama/m");
    bad_role["messages"][0]["role"] = json!("nobody");
    let (status, _, body) = gw.post("/v1/chat/completions", bad_role).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        bodies_in_flight(&gw).await,
        0,
        "after a request chatd refused"
    );

    let (status, _, body) = gw.post("/v1/chat", big("ollama/")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(bodies_in_flight(&gw).await, 0, "after an unroutable model");

    let mut embed = json!({"model": "ollama/m", "input": ""});
    embed["input"] = json!("x".repeat(1800 - embed.to_string().len()));
    let (status, _, body) = gw.post("/v1/embeddings", embed.clone()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(bodies_in_flight(&gw).await, 0, "after an upstream error");
    let (status, _, body) = gw.post("/api/embed", embed).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(bodies_in_flight(&gw).await, 0, "after an upstream error");

    // Too long without a declared length: 413 once past max_body_bytes.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 1500]), Ok(vec![b' '; 1500])];
    let resp = post_chunked(&gw, chunks).await;
    assert_eq!(resp.status(), 413);
    until_no_body_is_held(&gw, "a body over max_body_bytes").await;

    // A client that goes away halfway through sending its body.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let url = format!("{}/v1/chat", gw.url);
    let sending = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(
                tokio_stream_from(rx), // never ends until dropped
            ))
            .send()
            .await
    });
    tx.send(Ok(vec![b' '; 1200])).await.unwrap();
    let start = std::time::Instant::now();
    while bodies_in_flight(&gw).await != 1200 {
        assert!(start.elapsed() < Duration::from_secs(60), "body never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sending.abort();
    let _ = sending.await;
    drop(tx);
    until_no_body_is_held(&gw, "a client hung up while sending its body").await;

    // A client that goes away while its stream waits for the first event, in each framing
    // (OpenAI's head goes out early with keep-alives; the native one waits).
    for path in ["/v1/chat/completions", "/v1/chat", "/v1/messages"] {
        let mut body = big("hang/m");
        body["stream"] = json!(true);
        body["max_tokens"] = json!(16);
        let before = hanging.observed.lock().unwrap().requests.len();
        let waiting = spawn_request(&gw, path, body);
        let observed = hanging.observed.clone();
        support::eventually(
            "the stream request to reach its upstream",
            Duration::from_secs(30),
            || observed.lock().unwrap().requests.len() > before,
        )
        .await;
        assert!(bodies_in_flight(&gw).await > 1700, "{path}");
        // Hang up (a head that went out early with keep-alives is dropped with the task's
        // result).
        waiting.abort();
        let _ = waiting.await;
        until_no_body_is_held(&gw, &format!("a {path} stream client hung up")).await;
    }

    // And the bytes really are free: a request of the largest size that fits is served.
    let (status, _, body) = gw.post("/v1/chat", body_of_size("ollama/m", 2048)).await;
    assert_eq!(status, 200, "{body}");
}

/// A stream of what `rx` receives, ending when its sender is dropped.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}
