use super::*;
use chatd_adapter_kit::MAX_ERROR_CHARS;
use chatd_adapter_kit::testing::{
    body_json, chat_request, invalid_request, malformed_response, message, response, stream_event,
    upstream_failure,
};
use chatd_adapter_kit::types::FinishReason;

fn request() -> ChatRequest {
    chat_request("moonshotai/kimi-k2")
}

fn body_of(request: &ChatRequest) -> Value {
    body_json(&build_request(request).expect("request builds"))
}

fn event(data: &str) -> Option<StreamChunk> {
    parse_stream_event(&stream_event(None, data)).expect("event parses")
}

#[test]
fn describes_a_bearer_sse_adapter() {
    let info = describe();
    assert_eq!(info.name, "openai_compat");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(matches!(info.auth, AuthScheme::Bearer));
    assert_eq!(info.default_base_url, "https://openrouter.ai/api/v1");
    assert!(info.supports_streaming);
    assert!(matches!(info.stream_framing, StreamFraming::Sse));
}

#[test]
fn minimal_request_sends_nothing_optional() {
    let mut request = request();
    request.think = Some(true);
    let built = build_request(&request).unwrap();
    assert_eq!(built.method, "POST");
    assert_eq!(built.path, "/chat/completions");
    assert_eq!(
        built.headers,
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ]
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&built.body).unwrap(),
        json!({ "model": "moonshotai/kimi-k2", "messages": [{ "role": "user", "content": "hi" }] })
    );
}

#[test]
fn every_optional_field_is_sent_when_set() {
    let mut request = request();
    request.max_tokens = Some(100);
    request.temperature = Some(0.7);
    request.top_p = Some(0.95);
    request.stop = vec!["###".into()];
    request.json_mode = true;
    let body = body_of(&request);
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["temperature"], 0.7);
    assert_eq!(body["top_p"], 0.95);
    assert_eq!(body["stop"], json!(["###"]));
    assert_eq!(body["response_format"], json!({ "type": "json_object" }));
    assert!(body.get("stream").is_none());
    assert!(body.get("stream_options").is_none());
}

#[test]
fn streaming_request_asks_for_sse_and_usage() {
    let mut request = request();
    request.stream = true;
    let built = build_request(&request).unwrap();
    assert!(
        built
            .headers
            .contains(&("accept".to_owned(), "text/event-stream".to_owned()))
    );
    let body = body_of(&request);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({ "include_usage": true }));
}

#[test]
fn non_finite_top_p_is_an_invalid_request() {
    let mut request = request();
    request.top_p = Some(f64::INFINITY);
    assert_eq!(
        invalid_request(build_request(&request)),
        "top_p must be a finite number"
    );
}

#[test]
fn tools_and_tool_choice_pass_through() {
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } }]);
    let choice = json!({ "type": "function", "function": { "name": "get_weather" } });
    let mut request = request();
    request.tools = Some(tools.to_string());
    request.tool_choice = Some(choice.to_string());
    let body = body_of(&request);
    assert_eq!(body["tools"], tools);
    assert_eq!(body["tool_choice"], choice);
}

#[test]
fn tool_choice_without_tools_is_not_sent() {
    let mut request = request();
    request.tool_choice = Some("\"auto\"".into());
    assert!(body_of(&request).get("tool_choice").is_none());
}

#[test]
fn invalid_tool_json_names_the_field() {
    let mut request = request();
    request.tools = Some("nope".into());
    assert!(invalid_request(build_request(&request)).starts_with("tools is not valid JSON"));

    let mut request = self::request();
    request.tools = Some("[]".into());
    request.tool_choice = Some("{".into());
    assert!(invalid_request(build_request(&request)).starts_with("tool_choice is not valid JSON"));

    let mut request = self::request();
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some("{\"id\":1}".into());
    request.messages = vec![assistant];
    assert_eq!(
        invalid_request(build_request(&request)),
        "messages[0].tool_calls must be a JSON array"
    );
}

#[test]
fn tool_turns_keep_their_calls_ids_and_names() {
    let calls = json!([{
        "id": "call_1",
        "type": "function",
        "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" }
    }]);
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some(calls.to_string());
    let mut tool = message("tool", "sunny");
    tool.tool_call_id = Some("call_1".into());
    tool.name = Some("get_weather".into());
    let mut user = message("user", "weather?");
    user.name = Some("alice".into());
    let mut request = request();
    request.messages = vec![user, assistant, tool];
    assert_eq!(
        body_of(&request)["messages"],
        json!([
            { "role": "user", "content": "weather?", "name": "alice" },
            { "role": "assistant", "content": null, "tool_calls": calls },
            { "role": "tool", "content": "sunny", "tool_call_id": "call_1", "name": "get_weather" },
        ])
    );
}

#[test]
fn assistant_text_is_kept_beside_tool_calls_and_empty_calls_are_dropped() {
    let mut with_text = message("assistant", "Let me check.");
    with_text.tool_calls =
        Some(r#"[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]"#.into());
    let mut empty_calls = message("assistant", "");
    empty_calls.tool_calls = Some("[]".into());
    let mut request = request();
    request.messages = vec![with_text, empty_calls];
    let messages = &body_of(&request)["messages"];
    assert_eq!(messages[0]["content"], "Let me check.");
    assert_eq!(messages[0]["tool_calls"][0]["id"], "c");
    assert_eq!(messages[1], json!({ "role": "assistant", "content": "" }));
}

#[test]
fn parses_a_complete_answer() {
    let parsed = parse_response(&response(
        200,
        r#"{"id":"gen-1","model":"moonshotai/kimi-k2","choices":[{"index":0,
            "message":{"role":"assistant","content":"Hello!","reasoning":"greet back"},
            "finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}"#,
    ))
    .unwrap();
    assert_eq!(parsed.content, "Hello!");
    assert_eq!(parsed.reasoning.as_deref(), Some("greet back"));
    assert_eq!(parsed.model, "moonshotai/kimi-k2");
    assert_eq!(parsed.input_tokens, Some(11));
    assert_eq!(parsed.output_tokens, Some(4));
    assert_eq!(parsed.done_reason.as_deref(), Some("stop"));
    assert_eq!(parsed.finish, Some(FinishReason::Stop));
    assert_eq!(parsed.tool_calls, None);
}

#[test]
fn reasoning_content_is_read_and_empty_reasoning_ignored() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"kimi","choices":[{"message":{"content":"x","reasoning":"","reasoning_content":"why"},
            "finish_reason":"length"}]}"#,
    ))
    .unwrap();
    assert_eq!(parsed.reasoning.as_deref(), Some("why"));
    assert_eq!(parsed.finish, Some(FinishReason::Length));
    assert_eq!(parsed.input_tokens, None);
}

#[test]
fn answer_tool_calls_pass_through_and_set_the_finish() {
    let calls = json!([{
        "id": "call_9",
        "type": "function",
        "function": { "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}" }
    }]);
    let body = json!({
        "model": "m",
        "choices": [{ "message": { "role": "assistant", "content": null, "tool_calls": calls }, "finish_reason": "tool_calls" }]
    });
    let parsed = parse_response(&response(200, &body.to_string())).unwrap();
    assert_eq!(parsed.content, "");
    let parsed_calls: Value = serde_json::from_str(parsed.tool_calls.as_deref().unwrap()).unwrap();
    assert_eq!(parsed_calls, calls);
    assert_eq!(parsed.finish, Some(FinishReason::ToolCalls));
}

#[test]
fn tool_calls_upgrade_a_plain_stop() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"m","choices":[{"message":{"content":"","tool_calls":[{"id":"a","type":"function",
            "function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}"#,
    ))
    .unwrap();
    assert_eq!(parsed.done_reason.as_deref(), Some("stop"));
    assert_eq!(parsed.finish, Some(FinishReason::ToolCalls));

    let parsed = parse_response(&response(
        200,
        r#"{"model":"m","choices":[{"message":{"content":"ok","tool_calls":[]},"finish_reason":"content_filter"}]}"#,
    ))
    .unwrap();
    assert_eq!(parsed.tool_calls, None);
    assert_eq!(parsed.finish, Some(FinishReason::ContentFilter));
}

#[test]
fn rate_limit_carries_retry_after() {
    let mut limited = response(
        429,
        r#"{"error":{"message":"Rate limit exceeded","code":429}}"#,
    );
    limited.headers = vec![("retry-after".into(), "30".into())];
    match parse_response(&limited) {
        Err(AdapterError::RateLimited(limit)) => {
            assert_eq!(limit.message, "Rate limit exceeded");
            assert_eq!(limit.retry_after_secs, Some(30));
        }
        other => panic!("expected rate-limited, got {other:?}"),
    }
}

#[test]
fn server_errors_take_the_message_from_any_body_shape() {
    for (body, expected) in [
        (
            r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
            "The server had an error",
        ),
        (r#"{"error":"overloaded"}"#, "overloaded"),
        ("Internal Server Error", "Internal Server Error"),
        ("", "HTTP 500"),
    ] {
        let failure = upstream_failure(parse_response(&response(500, body)));
        assert_eq!(failure.status, 500);
        assert_eq!(failure.message, expected);
    }
}

#[test]
fn long_error_bodies_are_truncated_on_a_char_boundary() {
    let body = "日本".repeat(MAX_ERROR_CHARS);
    let failure = upstream_failure(parse_response(&response(503, &body)));
    assert_eq!(failure.message.chars().count(), MAX_ERROR_CHARS);
    assert!(body.starts_with(&failure.message));
}

#[test]
fn error_object_with_a_200_uses_its_code_or_502() {
    let failure = upstream_failure(parse_response(&response(
        200,
        r#"{"error":{"message":"Provider returned error","code":524}}"#,
    )));
    assert_eq!(failure.status, 524);
    assert_eq!(failure.message, "Provider returned error");

    for code in ["\"server_error\"", "200", "null"] {
        let body = format!(r#"{{"error":{{"message":"bad","code":{code}}}}}"#);
        assert_eq!(
            upstream_failure(parse_response(&response(200, &body))).status,
            502
        );
    }
}

#[test]
fn garbage_2xx_bodies_are_malformed() {
    assert!(
        malformed_response(parse_response(&response(200, "<!doctype html>"))).contains("not JSON")
    );
    assert_eq!(
        malformed_response(parse_response(&response(200, r#""text""#))),
        "response body is not a JSON object"
    );
    for body in [
        r#"{"choices":[{}]}"#,
        r#"{"choices":[5]}"#,
        r#"{"choices":[{"message":"hi"}]}"#,
    ] {
        assert_eq!(
            malformed_response(parse_response(&response(200, body))),
            "choices[0].message is missing",
            "{body}"
        );
    }
    assert_eq!(
        malformed_response(parse_response(&response(
            200,
            r#"{"choices":[{"message":{"content":7}}]}"#
        ))),
        "choices[0].message.content is not a string"
    );
}

#[test]
fn zero_choices_is_malformed() {
    for body in [r#"{"model":"m","choices":[]}"#, r#"{"model":"m"}"#] {
        assert_eq!(
            malformed_response(parse_response(&response(200, body))),
            "upstream returned zero choices"
        );
    }
}

#[test]
fn stream_content_delta() {
    let chunk = event(
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
    )
    .unwrap();
    assert_eq!(chunk.content.as_deref(), Some("Hel"));
    assert_eq!(chunk.model.as_deref(), Some("m"));
    assert_eq!(chunk.finish, None);
    assert!(!chunk.done);
}

#[test]
fn stream_reasoning_deltas() {
    let chunk =
        event(r#"{"model":"m","choices":[{"delta":{"content":"","reasoning":"hmm"}}]}"#).unwrap();
    assert_eq!(chunk.content, None);
    assert_eq!(chunk.reasoning.as_deref(), Some("hmm"));
    let chunk = event(r#"{"model":"m","choices":[{"delta":{"reasoning_content":"so"}}]}"#).unwrap();
    assert_eq!(chunk.reasoning.as_deref(), Some("so"));
}

#[test]
fn stream_tool_call_delta_passes_through() {
    let calls = json!([{ "index": 0, "id": "call_1", "type": "function", "function": { "name": "f", "arguments": "{\"a\":" } }]);
    let data = json!({ "model": "m", "choices": [{ "delta": { "tool_calls": calls } }] });
    let chunk = event(&data.to_string()).unwrap();
    let parsed: Value = serde_json::from_str(chunk.tool_calls.as_deref().unwrap()).unwrap();
    assert_eq!(parsed, calls);
}

#[test]
fn stream_final_choice_carries_the_finish() {
    let chunk =
        event(r#"{"model":"m","choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#).unwrap();
    assert_eq!(chunk.done_reason.as_deref(), Some("tool_calls"));
    assert_eq!(chunk.finish, Some(FinishReason::ToolCalls));
    assert!(!chunk.done);
}

#[test]
fn stream_usage_only_chunk() {
    let chunk = event(
        r#"{"model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#,
    )
    .unwrap();
    assert_eq!(chunk.input_tokens, Some(12));
    assert_eq!(chunk.output_tokens, Some(34));
    assert_eq!(chunk.content, None);
    assert!(!chunk.done);
}

#[test]
fn stream_usage_inside_the_choice() {
    let chunk = event(
        r#"{"model":"kimi","choices":[{"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":5,"completion_tokens":6}}]}"#,
    )
    .unwrap();
    assert_eq!(chunk.finish, Some(FinishReason::Stop));
    assert_eq!(chunk.input_tokens, Some(5));
    assert_eq!(chunk.output_tokens, Some(6));
}

#[test]
fn stream_done_marker() {
    let chunk = event("[DONE]").unwrap();
    assert!(chunk.done);
    assert_eq!(chunk.content, None);
    assert_eq!(chunk.model, None);
    assert_eq!(chunk.finish, None);
    assert_eq!(chunk.input_tokens, None);
}

#[test]
fn stream_role_only_delta_is_none() {
    assert!(
        event(r#"{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#)
            .is_none()
    );
}

#[test]
fn stream_error_events() {
    let failure = upstream_failure(parse_stream_event(&StreamEvent {
        event: None,
        data: r#"{"error":{"message":"Provider disconnected","code":502},"choices":[{"delta":{},"finish_reason":"error"}]}"#.into(),
    }));
    assert_eq!(failure.status, 502);
    assert_eq!(failure.message, "Provider disconnected");

    let failure = upstream_failure(parse_stream_event(&StreamEvent {
        event: Some("error".into()),
        data: r#"{"error":{"message":"oops","code":"internal"}}"#.into(),
    }));
    assert_eq!(failure.status, 0);
    assert_eq!(failure.message, "oops");
}

#[test]
fn stream_garbage_is_malformed() {
    let message = malformed_response(parse_stream_event(&StreamEvent {
        event: None,
        data: "{\"choices\":".into(),
    }));
    assert!(message.starts_with("stream event is not JSON"), "{message}");
}

#[test]
fn models_request_lists_models() {
    let built = build_models_request();
    assert_eq!(built.method, "GET");
    assert_eq!(built.path, "/models");
    assert!(built.body.is_empty());
}

#[test]
fn models_are_listed_with_owner_and_creation_time() {
    let models = parse_models_response(&response(
        200,
        r#"{"object":"list","data":[
            {"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"openai"},
            {"id":"moonshotai/kimi-k2","name":"Kimi K2"}
        ]}"#,
    ))
    .unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0].id, "gpt-4o");
    assert_eq!(models[0].owned_by.as_deref(), Some("openai"));
    assert_eq!(models[0].created, Some(1715367049));
    assert_eq!(models[1].id, "moonshotai/kimi-k2");
    assert_eq!(models[1].owned_by, None);
    assert_eq!(models[1].created, None);
}

#[test]
fn models_listing_errors() {
    assert_eq!(
        upstream_failure(parse_models_response(&response(
            401,
            r#"{"error":{"message":"No auth credentials found","code":401}}"#
        )))
        .message,
        "No auth credentials found"
    );
    assert_eq!(
        malformed_response(parse_models_response(&response(
            200,
            r#"{"data":[{"object":"model"}]}"#
        ))),
        "data[0] has no id"
    );
}
