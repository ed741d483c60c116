//! Streaming through the real host and adapters, against a raw-TCP upstream that controls
//! exactly how the body is split and timed: split lines and UTF-8, SSE comments, mid-stream
//! errors, truncation, an upstream that never finishes, client disconnects.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ScriptedUpstream, Step, TestGateway, sse_data};

fn config(ollama: &str, openai: &str, timeout_secs: u64) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "ollama"
        timeout_secs = {timeout_secs}
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{ollama}"
        [chatd.providers.openrouter]
        adapter = "openai_compat"
        base_url = "{openai}"
        key_env = "CHATD_TEST_STREAM_KEY"
        key_file = "{{dir}}/k.env"
        "#
    )
}

async fn gateway(ollama: &str, openai: &str, timeout_secs: u64) -> TestGateway {
    TestGateway::start_with_files(
        &config(ollama, openai, timeout_secs),
        &[("k.env", b"CHATD_TEST_STREAM_KEY=sk-stream-test-key\n")],
    )
    .await
}

/// A provider's counters once none of its requests is in flight.
async fn settled_stats(gw: &TestGateway, provider: &str) -> chatd::telemetry::StatsSnapshot {
    let stats = gw.gateway.stats().provider(provider);
    support::eventually("the requests to end", Duration::from_secs(10), || {
        stats.snapshot().in_flight == 0
    })
    .await;
    stats.snapshot()
}

fn chunk(s: &str) -> Step {
    Step::Chunk(s.as_bytes().to_vec())
}

/// Splits `text` into steps at every `cut` bytes (cutting UTF-8 characters apart).
fn pieces(text: &str, cut: usize) -> Vec<Step> {
    text.as_bytes()
        .chunks(cut)
        .map(|c| Step::Chunk(c.to_vec()))
        .collect()
}

fn ollama_ndjson() -> String {
    [
        json!({"model": "q", "message": {"role": "assistant", "content": "Grüße, "}, "done": false}),
        json!({"model": "q", "message": {"role": "assistant", "content": "日本 🎉"}, "done": false}),
        json!({"model": "q", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 2}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect()
}

fn openai_sse() -> String {
    let chunk = |delta: Value, finish: Value| json!({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    [
        ": OPENROUTER PROCESSING\n\n".to_string(),
        format!("data: {}\n\n", chunk(json!({"role": "assistant", "content": ""}), Value::Null)),
        format!("data: {}\n\n", chunk(json!({"content": "Grüße, "}), Value::Null)),
        ": OPENROUTER PROCESSING\n\n".to_string(),
        format!("data: {}\n\n", chunk(json!({"content": "日本 🎉"}), Value::Null)),
        format!("data: {}\n\n", chunk(json!({}), json!("stop"))),
        format!("data: {}\n\n", json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat()
}

fn native_content(lines: &[String]) -> (String, Value) {
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let content = events
        .iter()
        .filter(|e| e["type"] == "delta")
        .filter_map(|e| e["content"].as_str())
        .collect();
    (content, events.last().cloned().unwrap())
}

fn sse_content(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn ndjson_split_anywhere_reassembles_into_native_and_openai_streams() {
    for cut in [1, 3, 7, 64] {
        let up =
            ScriptedUpstream::start("application/x-ndjson", pieces(&ollama_ndjson(), cut)).await;
        let gw = gateway(&up.url(), &up.url(), 5).await;
        let mut req = TestGateway::chat("ollama/q");
        req["stream"] = json!(true);
        let (status, ct, lines) = gw.post_stream("/v1/chat", req.clone()).await;
        assert_eq!(
            (status, ct.as_str()),
            (200, "application/x-ndjson"),
            "cut {cut}"
        );
        let (content, last) = native_content(&lines);
        assert_eq!(content, "Grüße, 日本 🎉", "cut {cut}");
        assert_eq!(last["type"], "done");
        assert_eq!(
            (
                last["input_tokens"].as_u64(),
                last["output_tokens"].as_u64()
            ),
            (Some(5), Some(2))
        );
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(last["provider"], "ollama");

        let (status, ct, lines) = gw.post_stream("/v1/chat/completions", req).await;
        assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
        let events = sse_data(&lines);
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(sse_content(&events), "Grüße, 日本 🎉");
        assert_eq!(
            events[events.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );
        assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));
        assert!(
            events.iter().all(|e| e.get("usage").is_none()),
            "usage only when asked"
        );
        let sent = up.observed.lock().unwrap().requests[0].clone();
        assert!(sent.contains("\"stream\":true"), "{sent}");
    }
}

#[tokio::test]
async fn sse_with_comments_split_anywhere_and_usage_when_asked() {
    for cut in [1, 5, 50] {
        let up = ScriptedUpstream::start("text/event-stream", pieces(&openai_sse(), cut)).await;
        let gw = gateway(&up.url(), &up.url(), 5).await;
        let req = json!({"model": "openrouter/vendor/m", "stream": true, "stream_options": {"include_usage": true},
                         "messages": [{"role": "user", "content": "hi"}]});
        let (status, _, lines) = gw.post_stream("/v1/chat/completions", req).await;
        assert_eq!(status, 200);
        let events = sse_data(&lines);
        assert_eq!(sse_content(&events), "Grüße, 日本 🎉", "cut {cut}");
        let usage = &events[events.len() - 2];
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        );
        assert_eq!(usage["choices"], json!([]));
        let sent = up.observed.lock().unwrap().requests[0].clone();
        assert!(
            sent.contains("authorization: Bearer sk-stream-test-key"),
            "host adds auth: {sent}"
        );
        assert!(sent.contains("\"include_usage\":true"));
    }
}

#[tokio::test]
async fn finish_reason_goes_out_without_waiting_for_the_upstream_to_end() {
    // The upstream names the finish reason, then stalls before its usage event: the client
    // learns the answer is complete before that, here before the gateway gives up.
    let chunk_of = |delta: Value, finish: Value| {
        let event = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        chunk(&format!("data: {event}\n\n"))
    };
    let up = ScriptedUpstream::start(
        "text/event-stream",
        vec![
            chunk_of(json!({"content": "done soon"}), Value::Null),
            chunk_of(json!({}), json!("length")),
            Step::Hang,
        ],
    )
    .await;
    let gw = gateway(&up.url(), &up.url(), 1).await;
    let req = json!({"model": "openrouter/vendor/m", "stream": true,
                     "stream_options": {"include_usage": true},
                     "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, lines) = gw.post_stream("/v1/chat/completions", req).await;
    assert_eq!(status, 200);
    let events = sse_data(&lines);
    let finish = events
        .iter()
        .position(|e| e["choices"][0]["finish_reason"] == "length")
        .unwrap_or_else(|| panic!("no finish chunk: {events:?}"));
    let error = events
        .iter()
        .position(|e| e.get("error").is_some())
        .unwrap_or_else(|| panic!("the stall ends in an error event: {events:?}"));
    assert!(finish < error, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| !e["choices"][0]["finish_reason"].is_null())
            .count(),
        1,
        "one finish chunk: {events:?}"
    );
}

#[tokio::test]
async fn no_usage_from_upstream_means_no_usage_downstream() {
    let body = [
        json!({"message": {"content": "a"}, "done": false}).to_string(),
        json!({"message": {"content": ""}, "done": true, "done_reason": "stop"}).to_string(),
    ]
    .join("\n");
    let up = ScriptedUpstream::start("application/x-ndjson", vec![chunk(&body)]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    let req = json!({"model": "q", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let (_, _, lines) = gw.post_stream("/v1/chat/completions", req).await;
    let events = sse_data(&lines);
    assert!(
        events.iter().all(|e| e.get("usage").is_none()),
        "never invent counts: {events:?}"
    );
    let (_, _, lines) = gw
        .post_stream(
            "/v1/chat",
            json!({"model": "q", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let (_, last) = native_content(&lines);
    assert!(
        last["input_tokens"].is_null() && last["output_tokens"].is_null(),
        "{last}"
    );
}

#[tokio::test]
async fn mid_stream_error_event_ends_the_stream_with_an_error() {
    let body = format!(
        "data: {}\n\ndata: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "partial"}}]}),
        json!({"error": {"message": "overloaded", "code": 529}})
    );
    let up = ScriptedUpstream::start("text/event-stream", vec![chunk(&body)]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    let req = json!({"model": "openrouter/v/m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, lines) = gw.post_stream("/v1/chat/completions", req.clone()).await;
    assert_eq!(status, 200);
    let events = sse_data(&lines);
    assert_eq!(sse_content(&events), "partial");
    let last = events.last().unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded"),
        "{last}"
    );
    assert!(!lines.iter().any(|l| l.contains("[DONE]")));

    let (_, _, lines) = gw.post_stream("/v1/chat", req).await;
    let (content, last) = native_content(&lines);
    assert_eq!(content, "partial");
    assert_eq!(last["type"], "error");
    // The error event carried a status-like code, so it reads as an upstream failure.
    assert_eq!(last["error"]["code"], "upstream_error");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded"),
        "{last}"
    );
}

#[tokio::test]
async fn truncated_upstream_stream_is_reported_not_passed_off_as_complete() {
    let body = format!(
        "{}\n",
        json!({"message": {"content": "half"}, "done": false})
    );
    let up = ScriptedUpstream::start("application/x-ndjson", vec![chunk(&body), Step::Abort]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    let req =
        json!({"model": "q", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (_, _, lines) = gw.post_stream("/v1/chat", req).await;
    let (content, last) = native_content(&lines);
    assert_eq!(content, "half");
    assert_eq!(last["type"], "error", "{last}");
}

#[tokio::test]
async fn upstream_that_never_finishes_times_out() {
    let body = format!(
        "{}\n",
        json!({"message": {"content": "stuck"}, "done": false})
    );
    let up = ScriptedUpstream::start("application/x-ndjson", vec![chunk(&body), Step::Hang]).await;
    let gw = gateway(&up.url(), &up.url(), 1).await;
    let req =
        json!({"model": "q", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let started = std::time::Instant::now();
    let (_, _, lines) = gw.post_stream("/v1/chat", req).await;
    let (content, last) = native_content(&lines);
    assert_eq!(content, "stuck");
    assert_eq!(last["error"]["code"], "upstream_timeout", "{last}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let mut steps = vec![chunk(&format!(
        "{}\n",
        json!({"message": {"content": "first"}, "done": false})
    ))];
    for _ in 0..200 {
        steps.push(Step::Sleep(Duration::from_millis(50)));
        steps.push(chunk(&format!(
            "{}\n",
            json!({"message": {"content": "more"}, "done": false})
        )));
    }
    let up = ScriptedUpstream::start("application/x-ndjson", steps).await;
    let gw = gateway(&up.url(), &up.url(), 30).await;
    let req =
        json!({"model": "q", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut resp = gw.send("/v1/chat", req).await;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    drop(resp);
    let observed = up.observed.clone();
    support::eventually(
        "the upstream to see the connection closed",
        Duration::from_secs(10),
        || observed.lock().unwrap().client_closed,
    )
    .await;
    // The client's choice, not the provider's failure.
    let s = settled_stats(&gw, "ollama").await;
    assert_eq!((s.requests, s.errors, s.cancelled), (1, 0, 1), "{s:?}");
}

#[tokio::test]
async fn upstream_error_status_before_streaming_is_a_normal_http_error() {
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(429)
                .insert_header("retry-after", "3")
                .set_body_json(json!({"error": "busy"})),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream.uri(), &upstream.uri(), 5).await;
    let req =
        json!({"model": "q", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.send("/v1/chat/completions", req).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // The provider's failure, not a cancellation.
    let s = gw.gateway.stats().provider("ollama").snapshot();
    assert_eq!((s.requests, s.errors, s.cancelled), (1, 1, 0), "{s:?}");
}

#[tokio::test]
async fn a_stream_to_an_unreachable_upstream_counts_as_an_error() {
    let gw = gateway("http://127.0.0.1:9", "http://127.0.0.1:9", 5).await;
    let req =
        json!({"model": "q", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.send("/v1/chat", req).await;
    assert_eq!(resp.status(), 502);
    let s = gw.gateway.stats().provider("ollama").snapshot();
    assert_eq!((s.requests, s.errors, s.cancelled), (1, 1, 0), "{s:?}");
    assert!(s.last_latency_ms.is_some(), "{s:?}");
}

#[tokio::test]
async fn a_stream_abandoned_before_the_upstream_answers_counts_as_cancelled() {
    let up = ScriptedUpstream::start(
        "application/x-ndjson",
        vec![Step::Sleep(Duration::from_secs(5)), chunk("{}\n")],
    )
    .await;
    let gw = gateway(&up.url(), &up.url(), 30).await;
    let req =
        json!({"model": "q", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let sent = tokio::time::timeout(Duration::from_millis(300), gw.send("/v1/chat", req)).await;
    assert!(sent.is_err(), "answered before the upstream did");
    let s = settled_stats(&gw, "ollama").await;
    assert_eq!((s.requests, s.errors, s.cancelled), (1, 0, 1), "{s:?}");
}

#[tokio::test]
async fn reasoning_is_carried_apart_from_content() {
    let body = [
        json!({"message": {"content": "", "thinking": "let me think"}, "done": false}).to_string(),
        json!({"message": {"content": "answer"}, "done": false}).to_string(),
        json!({"message": {"content": ""}, "done": true, "done_reason": "stop"}).to_string(),
    ]
    .join("\n");
    let up = ScriptedUpstream::start("application/x-ndjson", vec![chunk(&body)]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    let req = json!({"model": "q", "stream": true, "think": true, "messages": [{"role": "user", "content": "hi"}]});
    let (_, _, lines) = gw.post_stream("/v1/chat", req).await;
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["reasoning"], "let me think");
    assert!(events[0].get("content").is_none());
    assert_eq!(events[1]["content"], "answer");

    let req = json!({"model": "q", "stream": true, "reasoning_effort": "high", "messages": [{"role": "user", "content": "hi"}]});
    let (_, _, lines) = gw.post_stream("/v1/chat/completions", req).await;
    let events = sse_data(&lines);
    assert_eq!(
        events[1]["choices"][0]["delta"]["reasoning_content"],
        "let me think"
    );
    assert_eq!(sse_content(&events), "answer");
}

#[tokio::test]
async fn upstream_answering_plain_json_to_a_stream_request_is_replayed_as_a_stream() {
    // Some OpenAI-compatible servers ignore `stream: true` and answer one JSON document.
    let body = json!({
        "id": "c", "object": "chat.completion", "model": "vendor/m",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "whole answer"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    })
    .to_string();
    let up = ScriptedUpstream::start("application/json; charset=utf-8", vec![chunk(&body)]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    let req = json!({"model": "openrouter/vendor/m", "stream": true, "stream_options": {"include_usage": true},
                     "messages": [{"role": "user", "content": "hi"}]});
    let (status, ct, lines) = gw.post_stream("/v1/chat/completions", req).await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let events = sse_data(&lines);
    assert_eq!(sse_content(&events), "whole answer");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes: Vec<_> = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finishes, ["length"]);
    assert_eq!(events[events.len() - 2]["usage"]["total_tokens"], 6);
    assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));

    let req = json!({"model": "openrouter/vendor/m", "stream": true,
                     "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, lines) = gw.post_stream("/v1/chat", req).await;
    assert_eq!(status, 200);
    let (content, last) = native_content(&lines);
    assert_eq!(content, "whole answer");
    assert_eq!(
        (last["type"].as_str(), last["output_tokens"].as_u64()),
        (Some("done"), Some(2))
    );
}

#[tokio::test]
async fn a_web_page_answered_to_a_stream_request_is_a_malformed_response() {
    // A login portal, a proxy's error page or a web UI at the base URL: 200, but HTML.
    let page =
        "<!doctype html><html><head><title>Sign in</title></head><body>Sign in</body></html>";
    let up = ScriptedUpstream::start("text/html; charset=utf-8", vec![chunk(page)]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    for (path, model) in [
        ("/v1/chat/completions", "openrouter/vendor/m"),
        ("/v1/chat", "ollama/m"),
    ] {
        let req = json!({"model": model, "stream": true,
                         "messages": [{"role": "user", "content": "hi"}]});
        let (status, _, body) = gw.post(path, req).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_eq!(
            body["error"]["code"], "upstream_malformed_response",
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("text/html"), "{path}: {message}");
    }
}

#[tokio::test]
async fn a_whole_answer_cut_short_is_a_malformed_response_not_a_connection_failure() {
    // The head came and part of the body, then the connection closed: the upstream was
    // reached, its answer is unusable.
    let up = ScriptedUpstream::start(
        "application/json",
        vec![
            chunk("{\"model\": \"m\", \"message\": {\"role\": "),
            Step::Abort,
        ],
    )
    .await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    for (path, model) in [
        ("/v1/chat/completions", "openrouter/vendor/m"),
        ("/v1/chat", "ollama/m"),
    ] {
        let req = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let (status, _, body) = gw.post(path, req).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_eq!(
            body["error"]["code"], "upstream_malformed_response",
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_rate_limit_event_before_any_content_is_a_429() {
    // OpenRouter reports a rate limit met after the stream was accepted as an error event.
    let body = format!(
        "data: {}\n\n",
        json!({"error": {"message": "Rate limit exceeded", "code": 429}})
    );
    let up = ScriptedUpstream::start("text/event-stream", vec![chunk(&body)]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    let req = json!({"model": "openrouter/v/m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for path in ["/v1/chat/completions", "/v1/chat"] {
        let (status, _, lines) = gw.post_stream(path, req.clone()).await;
        let body: Value = serde_json::from_str(&lines.concat()).unwrap();
        assert_eq!(status, 429, "{path}: {body}");
        assert_eq!(body["error"]["code"], "rate_limited", "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("Rate limit exceeded"), "{message}");
    }
}

#[tokio::test]
async fn error_event_before_any_content_is_a_normal_http_error() {
    let body = format!(
        ": OPENROUTER PROCESSING\n\ndata: {}\n\n",
        json!({"error": {"message": "overloaded", "code": 529}})
    );
    let up = ScriptedUpstream::start("text/event-stream", vec![chunk(&body)]).await;
    let gw = gateway(&up.url(), &up.url(), 5).await;
    let req = json!({"model": "openrouter/v/m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, ct, lines) = gw.post_stream("/v1/chat/completions", req.clone()).await;
    assert_eq!((status, ct.as_str()), (502, "application/json"));
    let body: Value = serde_json::from_str(&lines.concat()).unwrap();
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded"),
        "{body}"
    );

    let (status, _, lines) = gw.post_stream("/v1/chat", req).await;
    assert_eq!(status, 502);
    let body: Value = serde_json::from_str(&lines.concat()).unwrap();
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
}

/// POSTs a streamed chat to the OpenAI endpoint; returns the status and the raw body.
async fn raw_sse(gw: &TestGateway, model: &str) -> (u16, String) {
    let mut req = TestGateway::chat(model);
    req["stream"] = json!(true);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&req)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn a_slow_first_token_gets_the_head_and_keep_alive_comments_first() {
    // The model takes longer than chatd's 5 s patience to its first token: the client (or
    // a proxy in between) sees the response and SSE comments instead of nothing at all. A
    // failure after the head went out is the stream's error event.
    let mut steps = vec![Step::Sleep(Duration::from_secs(6))];
    steps.extend(pieces(&ollama_ndjson(), 64));
    let slow = ScriptedUpstream::start("application/x-ndjson", steps).await;
    let failing = ScriptedUpstream::start(
        "application/x-ndjson",
        vec![
            Step::Sleep(Duration::from_secs(6)),
            chunk("{\"error\":\"model is overloaded\"}\n"),
        ],
    )
    .await;
    let slow = gateway(&slow.url(), &slow.url(), 30).await;
    let failing = gateway(&failing.url(), &failing.url(), 30).await;
    let ((status, body), (failed_status, failed_body)) =
        tokio::join!(raw_sse(&slow, "ollama/q"), raw_sse(&failing, "ollama/q"));

    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(": keep-alive\n\n"), "{body}");
    let lines: Vec<String> = body.lines().map(str::to_owned).collect();
    assert_eq!(sse_content(&sse_data(&lines)), "Grüße, 日本 🎉", "{body}");
    assert_eq!(
        lines.iter().rev().find(|l| !l.is_empty()).unwrap(),
        "data: [DONE]"
    );

    assert_eq!(failed_status, 200, "{failed_body}");
    assert!(failed_body.starts_with(": keep-alive\n\n"), "{failed_body}");
    let lines: Vec<String> = failed_body.lines().map(str::to_owned).collect();
    let last = sse_data(&lines).pop().unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("model is overloaded")),
        "{failed_body}"
    );
    let stats = settled_stats(&failing, "ollama").await;
    assert_eq!((stats.requests, stats.errors), (1, 1));
}
