use super::*;
use chatd_adapter_kit::testing::conformance::Fixtures;
use chatd_adapter_kit::testing::{
    body_json, chat_request, header, image_part, inline_image, invalid_request, malformed_response,
    message, response, stream_event, text_part, upstream_failure,
};
use chatd_adapter_kit::types::{JsonSchema, Usage};

chatd_adapter_kit::conformance_tests!(
    Anthropic,
    Fixtures {
        settings: None,
        answer: r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}"#,
        stream_end: &[
            (
                Some("message_delta"),
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
            ),
            (Some("message_stop"), r#"{"type":"message_stop"}"#),
        ],
        error_codes: &[
            (
                404,
                r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"}}"#,
                "model_not_found",
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
                "context_length_exceeded",
            ),
            (
                401,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
                "invalid_api_key",
            ),
        ],
        embeddings_answer: None,
    }
);

fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    chatd_adapter_kit::testing::exported_build_request(&Anthropic, request)
}

fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    Anthropic.parse_response(response)
}

fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    Anthropic.parse_stream_event(event)
}

fn parse_models_response(response: &HttpResponse) -> Result<ModelPage, AdapterError> {
    Anthropic.parse_models_response(response)
}

fn request() -> ChatRequest {
    chat_request("claude-sonnet-4-5")
}

fn body_of(request: &ChatRequest) -> Value {
    body_json(&build_request(request).expect("request builds"))
}

fn event(name: &str, data: &str) -> Option<StreamChunk> {
    parse_stream_event(&stream_event(Some(name), data)).expect("event parses")
}

fn tool_calls_json(text: Option<&str>) -> Value {
    serde_json::from_str(text.expect("tool calls present")).expect("tool calls are JSON")
}

// --- describe ---

#[test]
fn describe_reports_the_adapter() {
    let info = Anthropic::describe();
    assert_eq!(info.name, "anthropic");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(matches!(info.auth, AuthScheme::Header(ref name) if name == "x-api-key"));
    assert_eq!(info.default_base_url, "https://api.anthropic.com");
    assert!(info.supports_streaming);
    assert!(matches!(info.stream_framing, StreamFraming::Sse));
}

// --- build-request ---

#[test]
fn builds_a_minimal_request() {
    let built = build_request(&request()).unwrap();
    assert_eq!(built.method, "POST");
    assert_eq!(built.path, "/v1/messages");
    assert_eq!(header(&built, "content-type"), Some("application/json"));
    assert_eq!(header(&built, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(header(&built, "accept"), Some("application/json"));
    let body: Value = serde_json::from_slice(&built.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        })
    );
}

#[test]
fn streaming_sets_stream_and_accept() {
    let mut req = request();
    req.stream = true;
    let built = build_request(&req).unwrap();
    assert_eq!(header(&built, "accept"), Some("text/event-stream"));
    let body: Value = serde_json::from_slice(&built.body).unwrap();
    assert_eq!(body["stream"], json!(true));
}

#[test]
fn sampling_parameters_pass_through() {
    let mut req = request();
    req.max_tokens = Some(77);
    req.temperature = Some(0.25);
    req.top_p = Some(0.5);
    req.stop = vec!["END".into(), "STOP".into()];
    let body = body_of(&req);
    assert_eq!(body["max_tokens"], json!(77));
    assert_eq!(body["temperature"], json!(0.25));
    assert_eq!(body["top_p"], json!(0.5));
    assert_eq!(body["stop_sequences"], json!(["END", "STOP"]));
    assert!(body.get("stream").is_none());
    assert!(body.get("thinking").is_none());
    assert!(body.get("system").is_none());
}

#[test]
fn non_finite_temperature_is_invalid() {
    let mut req = request();
    req.temperature = Some(f64::NAN);
    assert!(invalid_request(build_request(&req)).contains("temperature"));
    let mut req = request();
    req.top_p = Some(f64::INFINITY);
    assert!(invalid_request(build_request(&req)).contains("top_p"));
}

#[test]
fn system_messages_are_joined_into_the_system_field() {
    let mut req = request();
    req.messages = vec![
        message("system", "be brief"),
        message("user", "hi"),
        message("system", "be kind"),
    ];
    let body = body_of(&req);
    assert_eq!(body["system"], json!("be brief\n\nbe kind"));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
}

#[test]
fn json_mode_appends_an_instruction_to_the_system_text() {
    let mut req = request();
    req.response_format = ResponseFormat::JsonObject;
    assert_eq!(
        body_of(&req)["system"],
        json!("Respond with a single JSON object and nothing else.")
    );
    req.messages.insert(0, message("system", "be brief"));
    let body = body_of(&req);
    assert_eq!(
        body["system"],
        json!("be brief\n\nRespond with a single JSON object and nothing else.")
    );
    assert!(body.get("response_format").is_none());
}

#[test]
fn consecutive_same_role_turns_are_merged() {
    let mut req = request();
    req.messages = vec![
        message("user", "one"),
        message("user", "two"),
        message("assistant", "three"),
        message("assistant", "four"),
        message("user", "five"),
    ];
    assert_eq!(
        body_of(&req)["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "three"},
                {"type": "text", "text": "four"},
            ]},
            {"role": "user", "content": [{"type": "text", "text": "five"}]},
        ])
    );
}

#[test]
fn empty_turns_are_dropped_before_merging() {
    let mut req = request();
    req.messages = vec![
        message("user", "one"),
        message("assistant", ""),
        message("user", "two"),
    ];
    assert_eq!(
        body_of(&req)["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "one"},
            {"type": "text", "text": "two"},
        ]}])
    );
}

#[test]
fn tool_calls_and_results_become_blocks() {
    let mut req = request();
    let mut assistant = message("assistant", "let me look");
    assistant.tool_calls = Some(
        json!([
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "time", "arguments": ""}},
        ])
        .to_string(),
    );
    let mut first = message("tool", "sunny");
    first.tool_call_id = Some("toolu_1".into());
    let mut second = message("tool", "noon");
    second.tool_call_id = Some("toolu_2".into());
    req.messages = vec![
        message("user", "weather?"),
        assistant,
        first,
        second,
        message("user", "thanks"),
    ];
    assert_eq!(
        body_of(&req)["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
                {"type": "text", "text": "thanks"},
            ]},
        ])
    );
}

#[test]
fn tool_results_come_before_text_in_a_merged_user_turn() {
    let mut req = request();
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some(
        json!([{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
            .to_string(),
    );
    let mut tool = message("tool", "result");
    tool.tool_call_id = Some("t1".into());
    req.messages = vec![
        message("user", "go"),
        assistant,
        message("user", "note"),
        tool,
    ];
    let body = body_of(&req);
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        ]})
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "result"},
            {"type": "text", "text": "note"},
        ]})
    );
}

#[test]
fn bad_tool_call_history_is_invalid() {
    let mut req = request();
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some("not json".into());
    req.messages = vec![message("user", "hi"), assistant.clone()];
    assert!(invalid_request(build_request(&req)).contains("messages[1].tool_calls"));

    assistant.tool_calls = Some(json!({"id": "x"}).to_string());
    req.messages = vec![message("user", "hi"), assistant.clone()];
    assert!(invalid_request(build_request(&req)).contains("must be a JSON array"));

    assistant.tool_calls =
        Some(json!([{"type": "function", "function": {"name": "f"}}]).to_string());
    req.messages = vec![message("user", "hi"), assistant.clone()];
    assert!(invalid_request(build_request(&req)).contains("has no id"));

    assistant.tool_calls =
        Some(json!([{"id": "t", "function": {"name": "f", "arguments": "[1,2]"}}]).to_string());
    req.messages = vec![message("user", "hi"), assistant];
    assert!(invalid_request(build_request(&req)).contains("must be a JSON object"));
}

#[test]
fn tool_turn_without_id_is_invalid() {
    let mut req = request();
    req.messages = vec![message("user", "hi"), message("tool", "orphan")];
    assert!(invalid_request(build_request(&req)).contains("tool_call_id"));
}

#[test]
fn unknown_role_and_empty_conversation_are_invalid() {
    let mut req = request();
    req.messages = vec![message("narrator", "once upon a time")];
    assert!(invalid_request(build_request(&req)).contains("narrator"));
    req.messages = vec![message("system", "only a system prompt")];
    assert!(invalid_request(build_request(&req)).contains("no user"));
}

fn weather_tools() -> String {
    json!([
        {"type": "function", "function": {
            "name": "weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }},
        {"type": "function", "function": {"name": "noop"}},
    ])
    .to_string()
}

#[test]
fn tools_are_translated() {
    let mut req = request();
    req.tools = Some(weather_tools());
    let body = body_of(&req);
    assert_eq!(
        body["tools"],
        json!([
            {"name": "weather", "description": "Current weather",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "noop", "input_schema": {"type": "object"}},
        ])
    );
    assert!(body.get("tool_choice").is_none());
}

#[test]
fn tool_choice_is_translated() {
    let cases = [
        (json!("auto"), Some(json!({"type": "auto"}))),
        (json!("required"), Some(json!({"type": "any"}))),
        (
            json!({"type": "function", "function": {"name": "weather"}}),
            Some(json!({"type": "tool", "name": "weather"})),
        ),
    ];
    for (choice, expected) in cases {
        let mut req = request();
        req.tools = Some(weather_tools());
        req.tool_choice = Some(choice.to_string());
        let body = body_of(&req);
        assert_eq!(body.get("tool_choice").cloned(), expected, "{choice}");
        assert!(body["tools"].is_array());
    }
}

#[test]
fn tool_choice_none_omits_the_tools() {
    let mut req = request();
    req.tools = Some(weather_tools());
    req.tool_choice = Some("\"none\"".into());
    let body = body_of(&req);
    assert!(body.get("tools").is_none());
    assert!(body.get("tool_choice").is_none());
}

#[test]
fn tool_choice_without_tools_is_ignored() {
    let mut req = request();
    req.tool_choice = Some("\"required\"".into());
    let body = body_of(&req);
    assert!(body.get("tools").is_none());
    assert!(body.get("tool_choice").is_none());
    req.tools = Some("[]".into());
    assert!(body_of(&req).get("tools").is_none());
}

#[test]
fn bad_tools_are_invalid() {
    let mut req = request();
    req.tools = Some("{".into());
    assert!(invalid_request(build_request(&req)).contains("tools is not valid JSON"));
    req.tools = Some("{}".into());
    assert!(invalid_request(build_request(&req)).contains("tools must be a JSON array"));
    req.tools = Some(json!([{"type": "function", "function": {}}]).to_string());
    assert!(invalid_request(build_request(&req)).contains("tools[0]"));
    req.tools = Some(weather_tools());
    req.tool_choice = Some("\"sometimes\"".into());
    assert!(invalid_request(build_request(&req)).contains("tool_choice"));
    req.tool_choice = Some(json!({"type": "function"}).to_string());
    assert!(invalid_request(build_request(&req)).contains("function.name"));
}

#[test]
fn thinking_only_when_asked() {
    let mut req = request();
    req.think = Some(true);
    assert_eq!(
        body_of(&req)["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    req.think = Some(false);
    assert!(body_of(&req).get("thinking").is_none());
    req.think = None;
    assert!(body_of(&req).get("thinking").is_none());
}

#[test]
fn thinking_with_too_few_max_tokens_is_invalid() {
    let mut req = request();
    req.think = Some(true);
    req.max_tokens = Some(1024);
    assert!(invalid_request(build_request(&req)).contains("max_tokens"));
    req.max_tokens = Some(1025);
    assert_eq!(body_of(&req)["thinking"]["budget_tokens"], json!(1024));
}

// --- parse-response ---

#[test]
fn parses_a_text_answer() {
    let parsed = parse_response(&response(
        200,
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"text","text":"Hello"},{"type":"text","text":", world"}],
            "stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":12,"output_tokens":5}}"#,
    ))
    .unwrap();
    assert_eq!(parsed.content, "Hello, world");
    assert_eq!(parsed.reasoning, None);
    assert_eq!(parsed.model, "claude-sonnet-4-5");
    assert_eq!(parsed.usage.input_tokens, Some(12));
    assert_eq!(parsed.usage.output_tokens, Some(5));
    assert_eq!(parsed.done_reason.as_deref(), Some("end_turn"));
    assert!(matches!(parsed.finish, Some(FinishReason::Stop)));
    assert_eq!(parsed.tool_calls, None);
}

#[test]
fn parses_thinking_and_tool_use() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"claude-opus-4-1","content":[
            {"type":"thinking","thinking":"Need the ","signature":"sig"},
            {"type":"redacted_thinking","data":"xx"},
            {"type":"thinking","thinking":"weather."},
            {"type":"text","text":"Checking."},
            {"type":"tool_use","id":"toolu_9","name":"weather","input":{"city":"Paris"}}
           ],
           "stop_reason":"tool_use","usage":{"input_tokens":3,"output_tokens":4}}"#,
    ))
    .unwrap();
    assert_eq!(parsed.content, "Checking.");
    assert_eq!(parsed.reasoning.as_deref(), Some("Need the weather."));
    assert_eq!(parsed.done_reason.as_deref(), Some("tool_use"));
    assert!(matches!(parsed.finish, Some(FinishReason::ToolCalls)));
    let calls = tool_calls_json(parsed.tool_calls.as_deref());
    assert_eq!(
        calls,
        json!([{"id": "toolu_9", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    let arguments: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
}

#[test]
fn maps_stop_reasons() {
    let cases = [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other),
        ("something_new", FinishReason::Other),
    ];
    for (raw, expected) in cases {
        let body = json!({"model": "m", "content": [], "stop_reason": raw}).to_string();
        let parsed = parse_response(&response(200, &body)).unwrap();
        assert_eq!(parsed.done_reason.as_deref(), Some(raw));
        assert_eq!(
            std::mem::discriminant(&parsed.finish.unwrap()),
            std::mem::discriminant(&expected),
            "{raw}"
        );
    }
    let parsed = parse_response(&response(200, r#"{"content":[],"stop_reason":null}"#)).unwrap();
    assert_eq!(parsed.done_reason, None);
    assert!(parsed.finish.is_none());
    assert_eq!(parsed.content, "");
    assert_eq!(parsed.model, "");
}

#[test]
fn rate_limit_reports_retry_after() {
    let mut resp = response(
        429,
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}"#,
    );
    resp.headers = vec![("retry-after".into(), "17".into())];
    match parse_response(&resp) {
        Err(AdapterError::RateLimited(limit)) => {
            assert_eq!(limit.message, "Slow down");
            assert_eq!(limit.retry_after_secs, Some(17));
        }
        other => panic!("expected rate limited, got {other:?}"),
    }
    resp.headers = vec![("retry-after".into(), "soon".into())];
    match parse_response(&resp) {
        Err(AdapterError::RateLimited(limit)) => assert_eq!(limit.retry_after_secs, None),
        other => panic!("expected rate limited, got {other:?}"),
    }
}

#[test]
fn non_2xx_is_an_upstream_failure() {
    let failure = upstream_failure(parse_response(&response(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )));
    assert_eq!(failure.status, 529);
    assert_eq!(failure.message, "Overloaded");

    let failure = upstream_failure(parse_response(&response(502, "bad gateway")));
    assert_eq!(failure.status, 502);
    assert_eq!(failure.message, "bad gateway");

    let failure = upstream_failure(parse_response(&response(500, "")));
    assert_eq!(failure.message, "HTTP 500");
}

#[test]
fn error_object_with_2xx_is_an_upstream_failure() {
    let failure = upstream_failure(parse_response(&response(
        200,
        r#"{"type":"error","error":{"type":"api_error","message":"oops"}}"#,
    )));
    assert_eq!(failure.status, 502);
    assert_eq!(failure.message, "oops");
}

#[test]
fn malformed_2xx_bodies() {
    assert!(malformed_response(parse_response(&response(200, "not json"))).contains("not JSON"));
    assert!(malformed_response(parse_response(&response(200, "[1]"))).contains("JSON object"));
    assert!(malformed_response(parse_response(&response(200, "{}"))).contains("content"));
    assert!(
        malformed_response(parse_response(&response(
            200,
            r#"{"content":[{"type":"tool_use","name":"f","input":{}}]}"#
        )))
        .contains("no id")
    );
}

// --- parse-stream-event ---

#[test]
fn message_start_carries_model_and_input_tokens() {
    let chunk = event(
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
            "model":"claude-sonnet-4-5","content":[],"stop_reason":null,
            "usage":{"input_tokens":25,"output_tokens":1}}}"#,
    )
    .unwrap();
    assert_eq!(chunk.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(chunk.usage.input_tokens, Some(25));
    assert_eq!(chunk.usage.output_tokens, None);
    assert!(!chunk.done);
}

#[test]
fn text_and_thinking_deltas() {
    let chunk = event(
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
    )
    .unwrap();
    assert_eq!(chunk.content.as_deref(), Some("Hel"));
    assert_eq!(chunk.reasoning, None);

    let chunk = event(
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
    )
    .unwrap();
    assert_eq!(chunk.reasoning.as_deref(), Some("hmm"));
    assert_eq!(chunk.content, None);

    assert!(
        event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}"#,
        )
        .is_none()
    );
    assert!(
        event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
        )
        .is_none()
    );
}

#[test]
fn tool_use_blocks_become_tool_call_deltas() {
    let chunk = event(
        "content_block_start",
        r#"{"type":"content_block_start","index":1,
            "content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
    )
    .unwrap();
    assert_eq!(
        tool_calls_json(chunk.tool_calls.as_deref()),
        json!([{"index": 1, "id": "toolu_1", "type": "function",
                "function": {"name": "weather", "arguments": ""}}])
    );

    let chunk = event(
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,
            "delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}"#,
    )
    .unwrap();
    assert_eq!(
        tool_calls_json(chunk.tool_calls.as_deref()),
        json!([{"index": 1, "function": {"arguments": "{\"city\": \"Pa"}}])
    );

    assert!(
        event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        )
        .is_none()
    );
}

#[test]
fn text_block_start_and_stop_carry_nothing() {
    assert!(
        event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        )
        .is_none()
    );
    assert!(
        event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#
        )
        .is_none()
    );
}

#[test]
fn message_delta_carries_stop_reason_and_output_tokens() {
    let chunk = event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},
            "usage":{"output_tokens":15}}"#,
    )
    .unwrap();
    assert_eq!(chunk.done_reason.as_deref(), Some("max_tokens"));
    assert!(matches!(chunk.finish, Some(FinishReason::Length)));
    assert_eq!(chunk.usage.output_tokens, Some(15));
    assert_eq!(chunk.usage.input_tokens, None);
    assert!(!chunk.done);

    let chunk = event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}"#,
    )
    .unwrap();
    assert!(matches!(chunk.finish, Some(FinishReason::ToolCalls)));
}

#[test]
fn message_stop_ends_the_stream() {
    let chunk = event("message_stop", r#"{"type":"message_stop"}"#).unwrap();
    assert!(chunk.done);
    assert_eq!(chunk.content, None);
}

#[test]
fn ping_and_unknown_events_carry_nothing() {
    assert!(event("ping", r#"{"type": "ping"}"#).is_none());
    assert!(event("something_new", r#"{"type": "something_new", "x": 1}"#).is_none());
    assert!(event("ping", "").is_none());
}

#[test]
fn error_event_is_an_upstream_failure() {
    let failure = upstream_failure(parse_stream_event(&StreamEvent {
        event: Some("error".into()),
        data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            .into(),
    }));
    assert_eq!(failure.status, 0);
    assert_eq!(failure.message, "Overloaded");
}

#[test]
fn event_type_falls_back_to_the_data() {
    let chunk = parse_stream_event(&StreamEvent {
        event: None,
        data:
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#
                .into(),
    })
    .unwrap()
    .unwrap();
    assert_eq!(chunk.content.as_deref(), Some("x"));
    let chunk = parse_stream_event(&StreamEvent {
        event: None,
        data: r#"{"type":"message_stop"}"#.into(),
    })
    .unwrap()
    .unwrap();
    assert!(chunk.done);
}

#[test]
fn malformed_stream_events() {
    let bad = |data: &str| {
        malformed_response(parse_stream_event(&StreamEvent {
            event: Some("content_block_delta".into()),
            data: data.into(),
        }))
    };
    assert!(bad("{not json").contains("not JSON"));
    assert!(bad("[1,2]").contains("JSON object"));
    assert!(bad("\"text\"").contains("JSON object"));
}

// --- models ---

#[test]
fn builds_the_models_request_with_after_id_for_later_pages() {
    let built = Anthropic.build_models_request(None).unwrap();
    assert_eq!(built.method, "GET");
    assert_eq!(built.path, "/v1/models?limit=1000");
    assert_eq!(header(&built, "anthropic-version"), Some("2023-06-01"));
    assert!(built.body.is_empty());
    let built = Anthropic
        .build_models_request(Some("claude-3-haiku-20240307"))
        .unwrap();
    assert_eq!(
        built.path,
        "/v1/models?limit=1000&after_id=claude-3-haiku-20240307"
    );
}

#[test]
fn parses_the_models_listing() {
    let page = parse_models_response(&response(
        200,
        r#"{"data":[
            {"type":"model","id":"claude-sonnet-4-5","display_name":"Claude Sonnet 4.5",
             "created_at":"2025-09-29T00:00:00Z"},
            {"type":"model","id":"claude-haiku-4-5","display_name":"Claude Haiku 4.5",
             "created_at":"yesterday"}],
            "has_more":true,"first_id":"claude-sonnet-4-5","last_id":"claude-haiku-4-5"}"#,
    ))
    .unwrap();
    let models = &page.models;
    assert_eq!(models.len(), 2);
    assert_eq!(models[0].id, "claude-sonnet-4-5");
    assert_eq!(models[0].owned_by.as_deref(), Some("anthropic"));
    assert_eq!(models[0].created, Some(1759104000));
    assert_eq!(models[1].id, "claude-haiku-4-5");
    assert_eq!(models[1].created, None);
    assert_eq!(page.next_cursor.as_deref(), Some("claude-haiku-4-5"));
    let page = parse_models_response(&response(
        200,
        r#"{"data":[],"has_more":false,"last_id":null}"#,
    ))
    .unwrap();
    assert_eq!(page.next_cursor, None);
    assert!(
        malformed_response(parse_models_response(&response(
            200,
            r#"{"data":[],"has_more":true}"#
        )))
        .contains("last_id")
    );
}

#[test]
fn creation_times_in_unix_seconds() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix_seconds("2025-09-29T00:00:00Z"), Some(1759104000));
    assert_eq!(
        unix_seconds("2024-02-29T14:30:15.123+02:00"),
        Some(1709209815)
    );
    for bad in [
        "",
        "2025-09-29",
        "2025-13-01T00:00:00Z",
        "2025-09-29T00:00:00",
        "1969-12-31T23:59:59Z",
    ] {
        assert_eq!(unix_seconds(bad), None, "{bad}");
    }
}

#[test]
fn models_errors() {
    let failure = upstream_failure(parse_models_response(&response(
        401,
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
    )));
    assert_eq!(failure.status, 401);
    assert_eq!(failure.message, "invalid x-api-key");
    assert!(malformed_response(parse_models_response(&response(200, "{}"))).contains("data"));
    assert!(
        malformed_response(parse_models_response(&response(200, r#"{"data":[{}]}"#)))
            .contains("data[0]")
    );
}

// --- robustness ---

#[test]
fn never_panics_on_odd_input() {
    let bodies = [
        "",
        "null",
        "0",
        "[]",
        "{}",
        "\u{0}",
        "{\"content\": 5}",
        "{\"content\": [5, null, {\"type\": 3}, {\"type\": \"text\", \"text\": 7}]}",
        "{\"content\": [{\"type\": \"tool_use\", \"id\": \"a\", \"name\": \"b\"}]}",
        "{\"type\":\"error\",\"error\":7}",
        "{\"error\": {\"message\": 5}}",
        "{\"usage\": {\"input_tokens\": -1, \"output_tokens\": 1e30}, \"content\": []}",
    ];
    for status in [0, 100, 200, 204, 301, 400, 429, 500, 599, 65535] {
        for body in bodies {
            let resp = response(status, body);
            let _ = parse_response(&resp);
            let _ = parse_models_response(&resp);
        }
        let resp = HttpResponse {
            status,
            headers: vec![("Retry-After".into(), "99999999999".into())],
            body: vec![0xff, 0xfe, 0x80],
        };
        let _ = parse_response(&resp);
    }
    let names = [
        None,
        Some(""),
        Some("message_start"),
        Some("content_block_start"),
        Some("content_block_delta"),
        Some("message_delta"),
        Some("message_stop"),
        Some("error"),
        Some("ping"),
    ];
    for name in names {
        for data in bodies {
            let _ = parse_stream_event(&StreamEvent {
                event: name.map(str::to_owned),
                data: data.into(),
            });
        }
    }
    // Odd but well-formed requests.
    let mut req = request();
    req.messages = Vec::new();
    let _ = build_request(&req);
    req.messages = vec![message("user", "\u{0}é😀")];
    req.max_tokens = Some(u32::MAX);
    req.think = Some(true);
    req.reasoning_effort = Some("high".into());
    req.tools = Some("[null, 1]".into());
    let _ = build_request(&req);
}

fn user_with(parts: Vec<ContentPart>) -> Message {
    Message {
        content: parts,
        ..message("user", "")
    }
}

#[test]
fn images_become_image_blocks() {
    let mut req = request();
    req.messages = vec![user_with(vec![
        text_part("compare"),
        image_part(inline_image("image/jpeg", "/9j/4AAQ")),
        text_part(""),
        image_part(ImageSource::Url("https://example.com/b.png".into())),
    ])];
    assert_eq!(
        body_of(&req)["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "compare"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}},
        ]}])
    );
}

#[test]
fn images_in_a_system_turn_and_unknown_parts_are_refused() {
    let mut req = request();
    let mut system = message("system", "look");
    system
        .content
        .push(image_part(inline_image("image/png", "AAAA")));
    req.messages = vec![system, message("user", "hi")];
    assert!(
        invalid_request(build_request(&req)).starts_with("messages[0].content[1]: image parts")
    );
    req.messages = vec![user_with(vec![ContentPart::Other((
        "input_audio".into(),
        "{}".into(),
    ))])];
    assert!(invalid_request(build_request(&req)).contains("\"input_audio\""));
}

#[test]
fn tool_results_with_images_become_blocks() {
    let mut assistant = message("assistant", "");
    assistant.tool_calls = Some(
        json!([{"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}])
            .to_string(),
    );
    let mut tool = user_with(vec![
        text_part("here"),
        image_part(inline_image("image/png", "AAAA")),
    ]);
    tool.role = "tool".into();
    tool.tool_call_id = Some("t1".into());
    let mut req = request();
    req.messages = vec![message("user", "screenshot?"), assistant, tool];
    assert_eq!(
        body_of(&req)["messages"][2]["content"][0]["content"],
        json!([
            {"type": "text", "text": "here"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        ])
    );
}

#[test]
fn a_json_schema_is_a_structured_output_with_its_beta_header() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}},
                        "required": ["a"], "additionalProperties": false});
    let mut req = request();
    req.response_format = ResponseFormat::JsonSchema(JsonSchema {
        name: "answer".into(),
        schema: schema.to_string(),
        strict: true,
    });
    let built = build_request(&req).unwrap();
    assert_eq!(
        header(&built, "anthropic-beta"),
        Some("structured-outputs-2025-11-13")
    );
    let body = body_json(&built);
    assert_eq!(
        body["output_format"],
        json!({"type": "json_schema", "schema": schema})
    );
    assert!(body.get("system").is_none());
    assert_eq!(
        header(&build_request(&request()).unwrap(), "anthropic-beta"),
        None
    );
}

#[test]
fn top_k_is_sent() {
    let mut req = request();
    req.top_k = Some(5);
    assert_eq!(body_of(&req)["top_k"], 5);
}

#[test]
fn efforts_become_thinking_budgets() {
    for (effort, budget, max_tokens) in [
        ("minimal", 1024, 1024 + 4096),
        ("low", 2048, 2048 + 4096),
        ("medium", 8192, 8192 + 4096),
        ("high", 16384, 16384 + 4096),
    ] {
        let mut req = request();
        req.think = Some(true);
        req.reasoning_effort = Some(effort.into());
        let body = body_of(&req);
        assert_eq!(body["thinking"]["budget_tokens"], budget, "{effort}");
        assert_eq!(body["max_tokens"], max_tokens, "{effort}");
    }
    // A client's max_tokens shrinks the budget below it.
    let mut req = request();
    req.think = Some(true);
    req.reasoning_effort = Some("high".into());
    req.max_tokens = Some(5000);
    let body = body_of(&req);
    assert_eq!(body["thinking"]["budget_tokens"], 4999);
    assert_eq!(body["max_tokens"], 5000);
    req.reasoning_effort = Some("extreme".into());
    assert!(invalid_request(build_request(&req)).contains("extreme"));
}

#[test]
fn cache_tokens_count_as_input_and_as_cached() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"m","content":[],"stop_reason":"end_turn","usage":{"input_tokens":10,
            "cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":2}}"#,
    ))
    .unwrap();
    assert_eq!(
        (parsed.usage.input_tokens, parsed.usage.cached_input_tokens),
        (Some(115), Some(100))
    );
    let chunk = event(
        "message_start",
        r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":4,
            "cache_read_input_tokens":6,"output_tokens":1}}}"#,
    )
    .unwrap();
    let Usage {
        input_tokens,
        output_tokens,
        reasoning_tokens,
        cached_input_tokens,
    } = chunk.usage;
    assert_eq!(
        (
            input_tokens,
            output_tokens,
            reasoning_tokens,
            cached_input_tokens
        ),
        (Some(10), None, None, Some(6))
    );
}

#[test]
fn stream_errors_carry_codes() {
    let failure = upstream_failure(parse_stream_event(&stream_event(
        Some("error"),
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )));
    assert_eq!(
        (failure.status, failure.code.as_deref()),
        (0, Some("overloaded"))
    );
}
