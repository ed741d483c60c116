//! The client formats on the real host and adapters: Anthropic Messages, OpenAI Responses and
//! Ollama, their stream grammars (event order, names, numbering, tool input in deltas),
//! their error shapes before and after a stream began, and the keep-alives of a slow first
//! token. The official clients' own checks are in tests/python.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ScriptedUpstream, Step, TestGateway};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(ollama: &str, openai: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "ollama"
        timeout_secs = 30
        [chatd.providers.ollama]
        adapter = "ollama"
        base_url = "{ollama}"
        [chatd.providers.openrouter]
        adapter = "openai_compat"
        base_url = "{openai}"
        key_env = "CHATD_TEST_FORMATS_KEY"
        key_file = "{{dir}}/k.env"
        [chatd.providers.kimi]
        adapter = "openai_compat"
        key_env = "CHATD_TEST_FORMATS_NEVER_SET"
        "#
    )
}

async fn gateway(ollama: &str, openai: &str) -> TestGateway {
    TestGateway::start_with_files(
        &config(ollama, openai),
        &[("k.env", b"CHATD_TEST_FORMATS_KEY=sk-formats-test-key\n")],
    )
    .await
}

fn chunk(s: &str) -> Step {
    Step::Chunk(s.as_bytes().to_vec())
}

/// An OpenAI-style stream: text, then a tool call whose arguments come in two pieces.
fn openai_tool_stream() -> Vec<Step> {
    let event = |delta: Value, finish: Value| {
        let c = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        chunk(&format!("data: {c}\n\n"))
    };
    vec![
        event(
            json!({"role": "assistant", "content": "Checking. "}),
            Value::Null,
        ),
        event(
            json!({"tool_calls": [{"index": 0, "id": "call_Wx1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
        event(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
            Value::Null,
        ),
        event(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ),
        event(json!({}), json!("tool_calls")),
        chunk(&format!(
            "data: {}\n\n",
            json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 33, "completion_tokens": 7}})
        )),
        chunk("data: [DONE]\n\n"),
    ]
}

/// An Ollama stream: two pieces of text, then the done line.
fn ollama_text_stream(first: Option<Duration>) -> Vec<Step> {
    let line = |v: Value| chunk(&format!("{v}\n"));
    let mut steps: Vec<Step> = first.into_iter().map(Step::Sleep).collect();
    steps.extend([
        line(json!({"model": "q", "message": {"role": "assistant", "content": "Hello, "}, "done": false})),
        line(json!({"model": "q", "message": {"role": "assistant", "content": "world."}, "done": false})),
        line(json!({"model": "q", "message": {"role": "assistant", "content": ""}, "done": true,
                    "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 2})),
    ]);
    steps
}

/// An SSE body's events as (event name, data).
fn sse_events(body: &str) -> Vec<(Option<String>, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).unwrap());
                }
            }
            data.map(|d| (name, d))
        })
        .collect()
}

async fn post(
    gw: &TestGateway,
    path: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = gw.send(path, body).await;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

fn weather_request(model: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": true,
           "messages": [{"role": "user", "content": "Weather in Paris?"}],
           "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]})
}

#[tokio::test]
async fn anthropic_stream_follows_the_messages_grammar() {
    let upstream = ScriptedUpstream::start("text/event-stream", openai_tool_stream()).await;
    let gw = gateway(&upstream.url(), &upstream.url()).await;

    let (status, headers, body) = post(&gw, "/v1/messages", weather_request("openrouter/m")).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-chatd-provider"], "openrouter");
    assert_eq!(headers["x-chatd-model"], "m");
    let events = sse_events(&body);
    for (name, data) in &events {
        assert_eq!(
            name.as_deref(),
            data["type"].as_str(),
            "every event is named by its type"
        );
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, d)| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ],
        "{body}"
    );
    let data: Vec<&Value> = events.iter().map(|(_, d)| d).collect();
    assert_eq!(data[0]["message"]["content"], json!([]));
    assert_eq!(
        data[2]["delta"],
        json!({"type": "text_delta", "text": "Checking. "})
    );
    let tool = &data[4]["content_block"];
    assert_eq!(
        (tool["type"].as_str(), tool["id"].as_str(), &tool["input"]),
        (Some("tool_use"), Some("call_Wx1"), &json!({}))
    );
    assert!(
        data[5..7]
            .iter()
            .all(|d| d["index"] == 1 && d["delta"]["type"] == "input_json_delta")
    );
    let input: String = data[5..7]
        .iter()
        .map(|d| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(data[8]["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        data[8]["usage"],
        json!({"input_tokens": 33, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
}

#[tokio::test]
async fn responses_stream_numbers_every_event_and_closes_every_item() {
    let upstream = ScriptedUpstream::start("text/event-stream", openai_tool_stream()).await;
    let gw = gateway(&upstream.url(), &upstream.url()).await;

    let request = json!({"model": "openrouter/m", "stream": true, "input": "Weather in Paris?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    let (status, _, body) = post(&gw, "/v1/responses", request).await;

    assert_eq!(status, 200, "{body}");
    let events = sse_events(&body);
    let data: Vec<&Value> = events.iter().map(|(_, d)| d).collect();
    for (n, (name, d)) in events.iter().enumerate() {
        assert_eq!(d["sequence_number"], n, "{body}");
        assert_eq!(name.as_deref(), d["type"].as_str());
    }
    let kinds: Vec<&str> = data.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ],
        "{body}"
    );
    let call = &data[12]["item"];
    assert_eq!(
        (
            call["type"].as_str(),
            call["call_id"].as_str(),
            call["status"].as_str()
        ),
        (Some("function_call"), Some("call_Wx1"), Some("completed"))
    );
    assert_eq!(call["arguments"], "{\"city\": \"Paris\"}");
    assert_eq!(
        (
            data[8]["output_index"].as_u64(),
            data[12]["output_index"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let done = &data[13]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"].as_array().unwrap().len(), 2);
    assert_eq!(done["output"][0]["content"][0]["text"], "Checking. ");
    assert_eq!(done["usage"]["total_tokens"], 40);
}

#[tokio::test]
async fn ollama_chat_streams_ndjson_by_default_with_whole_tool_calls() {
    let upstream = ScriptedUpstream::start("text/event-stream", openai_tool_stream()).await;
    let gw = gateway(&upstream.url(), &upstream.url()).await;

    let request = json!({"model": "openrouter/m", "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
    let (status, headers, body) = post(&gw, "/api/chat", request).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done: Vec<bool> = lines.iter().map(|l| l["done"].as_bool().unwrap()).collect();
    assert_eq!(done, [false, false, true], "{body}");
    assert!(lines.iter().all(|l| l["model"] == "openrouter/m"));
    assert_eq!(lines[0]["message"]["content"], "Checking. ");
    assert_eq!(
        lines[1]["message"]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
        "one line with the whole call, arguments an object, no id"
    );
    assert_eq!(lines[2]["done_reason"], "stop");
    assert_eq!(
        (
            lines[2]["prompt_eval_count"].as_u64(),
            lines[2]["eval_count"].as_u64()
        ),
        (Some(33), Some(7))
    );
}

#[tokio::test]
async fn a_failure_after_the_head_is_each_formats_own_error_event() {
    let line = |v: Value| chunk(&format!("{v}\n"));
    let steps = vec![
        line(
            json!({"model": "q", "message": {"role": "assistant", "content": "Partial"}, "done": false}),
        ),
        Step::Sleep(Duration::from_millis(50)),
        line(json!({"error": "model runner crashed"})),
    ];
    let upstream = ScriptedUpstream::start("application/x-ndjson", steps).await;
    let gw = gateway(&upstream.url(), &upstream.url()).await;
    let user = json!([{"role": "user", "content": "hi"}]);

    let (_, _, anthropic) = post(
        &gw,
        "/v1/messages",
        json!({"model": "ollama/q", "max_tokens": 8, "stream": true, "messages": user}),
    )
    .await;
    let (_, _, responses) = post(
        &gw,
        "/v1/responses",
        json!({"model": "ollama/q", "stream": true, "input": "hi"}),
    )
    .await;
    let (_, _, ollama) = post(
        &gw,
        "/api/chat",
        json!({"model": "ollama/q", "messages": user}),
    )
    .await;

    let (name, last) = sse_events(&anthropic).pop().unwrap();
    assert_eq!(name.as_deref(), Some("error"), "{anthropic}");
    assert_eq!(last["error"]["type"], "api_error");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model runner crashed")
    );
    assert!(
        !anthropic.contains("message_stop"),
        "a failed stream never claims a normal end"
    );

    let (_, last) = sse_events(&responses).pop().unwrap();
    assert_eq!(last["type"], "response.failed", "{responses}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "upstream_stream_error");
    assert!(!responses.contains("response.completed"));

    let last: Value = serde_json::from_str(ollama.lines().last().unwrap()).unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("model runner crashed"),
        "{ollama}"
    );
    assert!(!ollama.contains("\"done\":true"));
}

#[tokio::test]
async fn errors_before_the_answer_are_in_each_formats_shape() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(json!({"error": "slow down"})),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream.uri(), &upstream.uri()).await;
    let user = json!([{"role": "user", "content": "hi"}]);

    for stream in [false, true] {
        let (status, headers, body) = post(
            &gw,
            "/v1/messages",
            json!({"model": "ollama/q", "max_tokens": 8, "stream": stream, "messages": user}),
        )
        .await;
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, header(&headers, "retry-after")), (429, "7"));
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["details"]["error_code"], "rate_limited");
        assert!(
            headers.get("x-should-retry").is_none(),
            "a rate limit passes"
        );

        let (status, _, body) = post(
            &gw,
            "/v1/responses",
            json!({"model": "ollama/q", "stream": stream, "input": "hi"}),
        )
        .await;
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (429, Some("rate_limit_error"))
        );

        let (status, _, body) = post(
            &gw,
            "/api/chat",
            json!({"model": "ollama/q", "stream": stream, "messages": user}),
        )
        .await;
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 429);
        assert!(
            body["error"].as_str().unwrap().contains("slow down"),
            "{body}"
        );
    }

    // What a retry cannot fix says so: the agents would otherwise retry for minutes.
    let (status, headers, body) = post(
        &gw,
        "/v1/messages",
        json!({"model": "kimi/k2", "max_tokens": 8, "messages": user}),
    )
    .await;
    assert_eq!(
        (status, header(&headers, "x-should-retry")),
        (404, "false"),
        "{body}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["type"],
        "not_found_error"
    );
    let (status, headers, body) = post(
        &gw,
        "/v1/responses",
        json!({"model": "ollama/q", "input": "hi", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!((status, header(&headers, "x-should-retry")), (400, "false"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["param"],
        "previous_response_id"
    );
    let (status, _, body) = post(
        &gw,
        "/api/generate",
        json!({"model": "ollama/q", "prompt": "x", "suffix": "y"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("suffix")
    );
}

#[tokio::test]
async fn a_slow_first_token_keeps_each_sse_format_alive_and_ollama_waits() {
    let upstream = ScriptedUpstream::start(
        "application/x-ndjson",
        ollama_text_stream(Some(Duration::from_secs(6))),
    )
    .await;
    let gw = gateway(&upstream.url(), &upstream.url()).await;
    let user = json!([{"role": "user", "content": "hi"}]);

    let ((a_status, _, anthropic), (r_status, _, responses), (o_status, _, ollama)) = tokio::join!(
        post(
            &gw,
            "/v1/messages",
            json!({"model": "ollama/q", "max_tokens": 8, "stream": true, "messages": user})
        ),
        post(
            &gw,
            "/v1/responses",
            json!({"model": "ollama/q", "stream": true, "input": "hi"})
        ),
        post(
            &gw,
            "/api/chat",
            json!({"model": "ollama/q", "messages": user})
        ),
    );

    // Anthropic's stream opens with message_start, as Anthropic's own (pings follow every
    // 10 s while the token is awaited), and does not send it again.
    assert_eq!(a_status, 200);
    assert!(
        anthropic.starts_with("event: message_start\n"),
        "{anthropic}"
    );
    let events = sse_events(&anthropic);
    assert_eq!(
        events
            .iter()
            .filter(|(n, _)| n.as_deref() == Some("message_start"))
            .count(),
        1
    );
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello, world.");
    assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));

    assert_eq!(r_status, 200);
    assert!(responses.starts_with(": keep-alive\n\n"), "{responses}");
    assert_eq!(
        sse_events(&responses).last().unwrap().1["type"],
        "response.completed"
    );

    // NDJSON has no comment: the Ollama stream answers when its first line is there.
    assert_eq!(o_status, 200);
    assert!(ollama.starts_with('{'), "{ollama}");
}

#[tokio::test]
async fn ollama_listing_show_version_and_anthropic_token_counts() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"models": [{"name": "qwen3:8b", "model": "qwen3:8b"}]})),
        )
        .mount(&upstream)
        .await;
    let gw = gateway(&upstream.uri(), "http://127.0.0.1:9").await;

    let (status, tags) = gw.get("/api/tags").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ollama/qwen3:8b"), "{tags}");
    assert!(tags["models"][0]["digest"].as_str().unwrap().len() == 64);

    let (status, _, body) = post(&gw, "/api/show", json!({"model": "ollama/qwen3:8b"})).await;
    let show: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(show["model_info"].is_object());
    assert_eq!(
        show["capabilities"],
        json!(["completion", "tools", "vision", "thinking"])
    );
    let (status, _, body) = post(&gw, "/api/show", json!({"model": "ollama/missing"})).await;
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());

    let (status, version) = gw.get("/api/version").await;
    assert_eq!((status, version["version"].is_string()), (200, true));

    let count = |text: &str| json!({"model": "ollama/qwen3:8b", "messages": [{"role": "user", "content": text}]});
    let (_, _, short) = post(&gw, "/v1/messages/count_tokens", count("hi")).await;
    let (_, _, long) = post(
        &gw,
        "/v1/messages/count_tokens",
        count(&"many words here ".repeat(100)),
    )
    .await;
    let tokens = |body: &str| {
        serde_json::from_str::<Value>(body).unwrap()["input_tokens"]
            .as_u64()
            .unwrap()
    };
    assert!(
        tokens(&short) > 0 && tokens(&long) > tokens(&short) + 200,
        "{short} {long}"
    );
    let (status, _, body) = post(
        &gw,
        "/v1/messages/count_tokens",
        json!({"model": "kimi/k", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["type"],
        "not_found_error"
    );
}
