use super::*;
use chatd_adapter_kit::MAX_ERROR_CHARS;
use chatd_adapter_kit::testing::{
    body_json, chat_request, invalid_request, malformed_response, message, response, stream_event,
    upstream_failure,
};
use chatd_adapter_kit::types::FinishReason;
use serde_json::json;

fn request() -> ChatRequest {
    chat_request("llama3.2")
}

fn body_of(request: &ChatRequest) -> Value {
    body_json(&build_request(request).expect("request builds"))
}

fn line(data: &str) -> Option<StreamChunk> {
    parse_stream_event(&stream_event(None, data)).expect("line parses")
}

#[test]
fn describes_a_local_ndjson_adapter_without_auth() {
    let info = describe();
    assert_eq!(info.name, "ollama");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(matches!(info.auth, AuthScheme::None));
    assert_eq!(info.default_base_url, "http://127.0.0.1:11434");
    assert!(info.supports_streaming);
    assert!(matches!(info.stream_framing, StreamFraming::Ndjson));
}

#[test]
fn minimal_request_sends_stream_and_think_false_and_nothing_optional() {
    let built = build_request(&request()).unwrap();
    assert_eq!(built.method, "POST");
    assert_eq!(built.path, "/api/chat");
    assert_eq!(
        built.headers,
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ]
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&built.body).unwrap(),
        json!({
            "model": "llama3.2",
            "messages": [{ "role": "user", "content": "hi" }],
            "stream": false,
            "think": false,
        })
    );
}

#[test]
fn streaming_request_asks_for_ndjson() {
    let mut request = request();
    request.stream = true;
    let built = build_request(&request).unwrap();
    assert!(
        built
            .headers
            .contains(&("accept".to_owned(), "application/x-ndjson".to_owned()))
    );
    assert_eq!(body_of(&request)["stream"], true);
}

#[test]
fn think_is_passed_when_set() {
    let mut request = request();
    request.think = Some(true);
    assert_eq!(body_of(&request)["think"], true);
    request.think = Some(false);
    assert_eq!(body_of(&request)["think"], false);
}

#[test]
fn json_mode_and_options_are_sent() {
    let mut request = request();
    request.json_mode = true;
    request.temperature = Some(0.5);
    request.top_p = Some(0.9);
    request.max_tokens = Some(128);
    request.stop = vec!["END".into(), "\n\n".into()];
    let body = body_of(&request);
    assert_eq!(body["format"], "json");
    assert_eq!(
        body["options"],
        json!({ "temperature": 0.5, "top_p": 0.9, "num_predict": 128, "stop": ["END", "\n\n"] })
    );
}

#[test]
fn options_hold_only_the_fields_that_are_set() {
    let mut request = request();
    request.max_tokens = Some(64);
    assert_eq!(body_of(&request)["options"], json!({ "num_predict": 64 }));
}

#[test]
fn non_finite_temperature_is_an_invalid_request() {
    let mut request = request();
    request.temperature = Some(f64::NAN);
    let message = invalid_request(build_request(&request));
    assert!(message.contains("temperature"), "{message}");
}

#[test]
fn tools_are_passed_in_openai_shape() {
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } }]);
    let mut request = request();
    request.tools = Some(tools.to_string());
    request.tool_choice = Some("\"required\"".into());
    assert_eq!(body_of(&request)["tools"], tools);
}

#[test]
fn tool_choice_none_drops_the_tools() {
    let mut request = request();
    request.tools = Some(r#"[{"type":"function","function":{"name":"f"}}]"#.into());
    request.tool_choice = Some("\"none\"".into());
    assert!(body_of(&request).get("tools").is_none());
}

#[test]
fn invalid_tool_json_names_the_field() {
    let mut request = request();
    request.tools = Some("[{".into());
    assert!(invalid_request(build_request(&request)).starts_with("tools "));

    let mut request = self::request();
    request.tools = Some("{}".into());
    assert_eq!(
        invalid_request(build_request(&request)),
        "tools must be a JSON array"
    );

    let mut request = self::request();
    request.tools = Some("[]".into());
    request.tool_choice = Some("none".into());
    assert!(invalid_request(build_request(&request)).starts_with("tool_choice "));
}

#[test]
fn assistant_tool_calls_are_converted_to_ollama_shape() {
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some(
        json!([{
            "id": "call_1",
            "type": "function",
            "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" }
        }])
        .to_string(),
    );
    let mut tool = message("tool", "sunny");
    tool.tool_call_id = Some("call_1".into());
    tool.name = Some("get_weather".into());
    let mut request = request();
    request.messages = vec![message("user", "weather?"), assistant, tool];
    assert_eq!(
        body_of(&request)["messages"],
        json!([
            { "role": "user", "content": "weather?" },
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{ "function": { "name": "get_weather", "arguments": { "city": "Paris" } } }]
            },
            { "role": "tool", "content": "sunny", "tool_name": "get_weather" },
        ])
    );
}

#[test]
fn empty_tool_call_arguments_become_an_empty_object() {
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some(r#"[{"function":{"name":"now","arguments":""}}]"#.into());
    let mut request = request();
    request.messages = vec![assistant];
    assert_eq!(
        body_of(&request)["messages"][0]["tool_calls"][0]["function"]["arguments"],
        json!({})
    );
}

#[test]
fn invalid_tool_call_arguments_name_the_field() {
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some(r#"[{"function":{"name":"f","arguments":"{oops"}}]"#.into());
    let mut request = request();
    request.messages = vec![message("user", "x"), assistant];
    let message = invalid_request(build_request(&request));
    assert!(
        message.starts_with("messages[1].tool_calls[0].function.arguments is not valid JSON"),
        "{message}"
    );
}

#[test]
fn parses_a_complete_answer() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"llama3.2","message":{"role":"assistant","content":"Hello!","thinking":"greet"},
            "done":true,"done_reason":"stop","prompt_eval_count":12,"eval_count":3}"#,
    ))
    .unwrap();
    assert_eq!(parsed.content, "Hello!");
    assert_eq!(parsed.reasoning.as_deref(), Some("greet"));
    assert_eq!(parsed.model, "llama3.2");
    assert_eq!(parsed.input_tokens, Some(12));
    assert_eq!(parsed.output_tokens, Some(3));
    assert_eq!(parsed.done_reason.as_deref(), Some("stop"));
    assert_eq!(parsed.finish, Some(FinishReason::Stop));
    assert_eq!(parsed.tool_calls, None);
}

#[test]
fn empty_thinking_is_no_reasoning_and_length_maps() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"m","message":{"content":"cut","thinking":""},"done_reason":"length"}"#,
    ))
    .unwrap();
    assert_eq!(parsed.reasoning, None);
    assert_eq!(parsed.finish, Some(FinishReason::Length));
    assert_eq!(parsed.input_tokens, None);
}

#[test]
fn answer_tool_calls_are_converted_to_openai_shape() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"m","message":{"content":"","tool_calls":[
            {"function":{"name":"get_weather","arguments":{"city":"Paris"}}},
            {"id":"abc","function":{"name":"now","arguments":{}}}
        ]},"done_reason":"stop"}"#,
    ))
    .unwrap();
    let calls: Value = serde_json::from_str(parsed.tool_calls.as_deref().unwrap()).unwrap();
    assert_eq!(
        calls,
        json!([
            { "id": "call_0", "type": "function", "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" } },
            { "id": "abc", "type": "function", "function": { "name": "now", "arguments": "{}" } },
        ])
    );
    assert_eq!(parsed.done_reason.as_deref(), Some("stop"));
    assert_eq!(parsed.finish, Some(FinishReason::ToolCalls));
}

#[test]
fn rate_limit_carries_retry_after() {
    let mut limited = response(429, r#"{"error":"too many requests"}"#);
    limited.headers = vec![("retry-after".into(), "7".into())];
    match parse_response(&limited) {
        Err(AdapterError::RateLimited(limit)) => {
            assert_eq!(limit.message, "too many requests");
            assert_eq!(limit.retry_after_secs, Some(7));
        }
        other => panic!("expected rate-limited, got {other:?}"),
    }
}

#[test]
fn rate_limit_ignores_a_date_retry_after() {
    let mut limited = response(429, "");
    limited.headers = vec![("retry-after".into(), "Wed, 21 Oct 2026 07:28:00 GMT".into())];
    match parse_response(&limited) {
        Err(AdapterError::RateLimited(limit)) => {
            assert_eq!(limit.message, "HTTP 429");
            assert_eq!(limit.retry_after_secs, None);
        }
        other => panic!("expected rate-limited, got {other:?}"),
    }
}

#[test]
fn server_errors_take_the_message_from_any_body_shape() {
    for (body, expected) in [
        (r#"{"error":"model 'x' not found"}"#, "model 'x' not found"),
        (
            r#"{"error":{"message":"boom","type":"server_error"}}"#,
            "boom",
        ),
        ("  upstream exploded \n", "upstream exploded"),
        ("", "HTTP 500"),
    ] {
        let failure = upstream_failure(parse_response(&response(500, body)));
        assert_eq!(failure.status, 500);
        assert_eq!(failure.message, expected);
    }
}

#[test]
fn long_error_bodies_are_truncated_on_a_char_boundary() {
    let body = "é".repeat(MAX_ERROR_CHARS + 20);
    let failure = upstream_failure(parse_response(&response(502, &body)));
    assert_eq!(failure.message, "é".repeat(MAX_ERROR_CHARS));
}

#[test]
fn error_body_with_a_2xx_status_is_an_upstream_failure() {
    let failure = upstream_failure(parse_response(&response(
        200,
        r#"{"error":"out of memory"}"#,
    )));
    assert_eq!(failure.status, 200);
    assert_eq!(failure.message, "out of memory");
}

#[test]
fn garbage_2xx_bodies_are_malformed() {
    assert!(malformed_response(parse_response(&response(200, "<html>"))).contains("not JSON"));
    assert_eq!(
        malformed_response(parse_response(&response(200, "[1]"))),
        "response body is not a JSON object"
    );
    for body in [
        r#"{"model":"m"}"#,
        r#"{"message":"hi"}"#,
        r#"{"message":[1]}"#,
    ] {
        assert_eq!(
            malformed_response(parse_response(&response(200, body))),
            "response has no \"message\" object",
            "{body}"
        );
    }
    assert_eq!(
        malformed_response(parse_response(&response(
            200,
            r#"{"message":{"content":1}}"#
        ))),
        "message.content is not a string"
    );
    assert_eq!(
        malformed_response(parse_response(&response(
            200,
            r#"{"message":{"content":"","tool_calls":[{"function":{}}]}}"#
        ))),
        "message.tool_calls[0].function.name is missing"
    );
}

#[test]
fn stream_content_line() {
    let chunk = line(
        r#"{"model":"llama3.2","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"Hel"},"done":false}"#,
    )
    .unwrap();
    assert_eq!(chunk.content.as_deref(), Some("Hel"));
    assert_eq!(chunk.reasoning, None);
    assert_eq!(chunk.model.as_deref(), Some("llama3.2"));
    assert!(!chunk.done);
    assert_eq!(chunk.finish, None);
}

#[test]
fn stream_thinking_line() {
    let chunk =
        line(r#"{"model":"m","message":{"role":"assistant","content":"","thinking":"hmm"},"done":false}"#)
            .unwrap();
    assert_eq!(chunk.content, None);
    assert_eq!(chunk.reasoning.as_deref(), Some("hmm"));
}

#[test]
fn stream_tool_call_line_becomes_an_openai_delta() {
    let chunk = line(
        r#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[
            {"function":{"index":1,"name":"get_weather","arguments":{"city":"Oslo"}}}
        ]},"done":false}"#,
    )
    .unwrap();
    let calls: Value = serde_json::from_str(chunk.tool_calls.as_deref().unwrap()).unwrap();
    assert_eq!(
        calls,
        json!([{
            "index": 1,
            "id": "call_1",
            "type": "function",
            "function": { "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}" }
        }])
    );
}

#[test]
fn stream_final_line_carries_usage_and_done() {
    let chunk = line(
        r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"length",
            "total_duration":1,"prompt_eval_count":26,"eval_count":290}"#,
    )
    .unwrap();
    assert!(chunk.done);
    assert_eq!(chunk.content, None);
    assert_eq!(chunk.done_reason.as_deref(), Some("length"));
    assert_eq!(chunk.finish, Some(FinishReason::Length));
    assert_eq!(chunk.input_tokens, Some(26));
    assert_eq!(chunk.output_tokens, Some(290));
}

#[test]
fn stream_line_with_nothing_is_none() {
    assert!(
        line(r#"{"model":"m","message":{"role":"assistant","content":""},"done":false}"#).is_none()
    );
    assert!(line("   ").is_none());
}

#[test]
fn stream_error_line_is_an_upstream_failure_with_status_zero() {
    let failure = upstream_failure(parse_stream_event(&StreamEvent {
        event: None,
        data: r#"{"error":"model runner crashed"}"#.into(),
    }));
    assert_eq!(failure.status, 0);
    assert_eq!(failure.message, "model runner crashed");
}

#[test]
fn stream_garbage_is_malformed() {
    let message = malformed_response(parse_stream_event(&StreamEvent {
        event: None,
        data: "data: {".into(),
    }));
    assert!(message.starts_with("stream line is not JSON"), "{message}");
}

#[test]
fn models_request_lists_tags() {
    let built = build_models_request();
    assert_eq!(built.method, "GET");
    assert_eq!(built.path, "/api/tags");
    assert!(built.body.is_empty());
}

#[test]
fn models_are_listed_by_name() {
    let models = parse_models_response(&response(
        200,
        r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","size":2019393189},
                      {"name":"qwen3:8b","model":"qwen3:8b"}]}"#,
    ))
    .unwrap();
    let ids: Vec<_> = models.iter().map(|model| model.id.as_str()).collect();
    assert_eq!(ids, ["llama3.2:latest", "qwen3:8b"]);
    assert!(
        models
            .iter()
            .all(|model| model.owned_by.is_none() && model.created.is_none())
    );
}

#[test]
fn models_listing_errors() {
    assert_eq!(
        upstream_failure(parse_models_response(&response(503, ""))).message,
        "HTTP 503"
    );
    assert_eq!(
        malformed_response(parse_models_response(&response(200, "{}"))),
        "response has no \"models\" array"
    );
}
