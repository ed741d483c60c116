use super::*;
use chatd_adapter_kit::testing::conformance::Fixtures;
use chatd_adapter_kit::testing::{
    body_json, chat_request, image_part, inline_image, invalid_request, malformed_response,
    message, response, stream_event, upstream_failure,
};
use chatd_adapter_kit::types::{FinishReason, JsonSchema, ResponseFormat};
use serde_json::{Value, json};

// With the chat endpoint, which carries every declared capability; the generate endpoint's
// refusals are tested below.
chatd_adapter_kit::conformance_tests!(
    OllamaCloud,
    Fixtures {
        settings: Some(r#"{"endpoint":"chat"}"#),
        answer: r#"{"model":"m","message":{"role":"assistant","content":"Hello"},"done":true,"done_reason":"stop"}"#,
        stream_end: &[
            (
                None,
                r#"{"model":"m","message":{"role":"assistant","content":"!"},"done":false}"#
            ),
            (
                None,
                r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":2}"#,
            ),
        ],
        error_codes: &[
            (
                404,
                r#"{"error":"model \"kimi-k9\" not found"}"#,
                "model_not_found"
            ),
            (401, r#"{"error":"unauthorized"}"#, "invalid_api_key"),
        ],
        embeddings_answer: None,
    }
);

fn generate() -> OllamaCloud {
    OllamaCloud::default()
}

fn chat() -> OllamaCloud {
    OllamaCloud::configure(r#"{"endpoint":"chat"}"#).unwrap()
}

fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    chatd_adapter_kit::testing::exported_build_request(&generate(), request)
}

fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    generate().parse_response(response)
}

fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    generate().parse_stream_event(event)
}

fn request() -> ChatRequest {
    chat_request("gpt-oss:120b")
}

fn body_of(request: &ChatRequest) -> Value {
    body_json(&build_request(request).expect("request builds"))
}

fn line(data: &str) -> Option<StreamChunk> {
    parse_stream_event(&stream_event(None, data)).expect("line parses")
}

#[test]
fn describes_a_bearer_ndjson_adapter() {
    let info = OllamaCloud::describe();
    assert_eq!(info.name, "ollama_cloud");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(matches!(info.auth, AuthScheme::Bearer));
    assert_eq!(info.default_base_url, "https://ollama.com");
    assert!(info.supports_streaming);
    assert!(matches!(info.stream_framing, StreamFraming::Ndjson));
}

#[test]
fn flattening_puts_system_first_and_labels_the_other_turns() {
    let messages = [
        message("system", "Be brief"),
        message("user", "hi"),
        message("assistant", "hello"),
        message("user", "bye"),
    ];
    assert_eq!(
        flatten(&messages).unwrap(),
        "Be brief\n\nUser: hi\n\nAssistant: hello\n\nUser: bye"
    );
}

#[test]
fn flattening_gathers_every_system_message_in_order() {
    let mut user = message("user", "q");
    user.content
        .push(chatd_adapter_kit::testing::text_part("r"));
    let messages = [
        user,
        message("system", "one"),
        message("assistant", "42"),
        message("system", "two"),
    ];
    assert_eq!(
        flatten(&messages).unwrap(),
        "one\n\ntwo\n\nUser: q\nr\n\nAssistant: 42"
    );
    assert_eq!(flatten(&[]).unwrap(), "");
}

#[test]
fn minimal_request_sends_stream_and_think_false_and_nothing_optional() {
    let built = build_request(&request()).unwrap();
    assert_eq!(built.method, "POST");
    assert_eq!(built.path, "/api/generate");
    assert_eq!(
        built.headers,
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ]
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&built.body).unwrap(),
        json!({ "model": "gpt-oss:120b", "prompt": "User: hi", "stream": false, "think": false })
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
}

#[test]
fn json_mode_and_options_are_sent() {
    let mut request = request();
    request.response_format = ResponseFormat::JsonObject;
    request.temperature = Some(0.2);
    request.top_p = Some(0.8);
    request.max_tokens = Some(256);
    request.stop = vec!["User:".into()];
    let body = body_of(&request);
    assert_eq!(body["format"], "json");
    assert_eq!(
        body["options"],
        json!({ "temperature": 0.2, "top_p": 0.8, "num_predict": 256, "stop": ["User:"] })
    );
}

#[test]
fn options_hold_only_the_fields_that_are_set() {
    let mut request = request();
    request.temperature = Some(1.0);
    assert_eq!(body_of(&request)["options"], json!({ "temperature": 1.0 }));
}

#[test]
fn generate_refuses_what_a_flat_prompt_cannot_carry() {
    let expected = |feature: &str| {
        format!(
            "{feature} need Ollama Cloud's /api/chat: set endpoint = \"chat\" in the provider's settings"
        )
    };
    let mut request = request();
    request.tools = Some("[]".into());
    assert_eq!(invalid_request(build_request(&request)), expected("tools"));

    let mut request = self::request();
    request.messages[0]
        .content
        .push(image_part(inline_image("image/png", "AAAA")));
    assert_eq!(invalid_request(build_request(&request)), expected("images"));

    let mut request = self::request();
    let mut tool = message("tool", "42");
    tool.tool_call_id = Some("c".into());
    request.messages.push(tool);
    assert_eq!(
        invalid_request(build_request(&request)),
        expected("tool turns")
    );

    let mut request = self::request();
    request.messages[0]
        .content
        .push(chatd_adapter_kit::types::ContentPart::Other((
            "file".into(),
            "{}".into(),
        )));
    assert!(invalid_request(build_request(&request)).contains("\"file\""));
}

#[test]
fn generate_carries_schemas_sampling_reasoning_and_passthrough() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let mut request = request();
    request.response_format = ResponseFormat::JsonSchema(JsonSchema {
        name: "n".into(),
        schema: schema.to_string(),
        strict: false,
    });
    request.seed = Some(7);
    request.top_k = Some(5);
    request.think = Some(true);
    request.reasoning_effort = Some("medium".into());
    request.extra = Some(r#"{"keep_alive":"1h","options":{"num_ctx":4096}}"#.into());
    let body = body_of(&request);
    assert_eq!(body["format"], schema);
    assert_eq!(
        body["options"],
        json!({"seed": 7, "top_k": 5, "num_ctx": 4096})
    );
    assert_eq!(body["think"], "medium");
    assert_eq!(body["keep_alive"], "1h");
    request.extra = Some(r#"{"prompt":"x"}"#.into());
    assert!(invalid_request(build_request(&request)).contains("extra.prompt"));
}

#[test]
fn the_endpoint_setting() {
    assert!(!OllamaCloud::configure("{}").unwrap().chat);
    assert!(
        !OllamaCloud::configure(r#"{"endpoint":"generate"}"#)
            .unwrap()
            .chat
    );
    assert!(chat().chat);
    assert_eq!(
        OllamaCloud::configure(r#"{"endpoint":"responses"}"#)
            .err()
            .unwrap(),
        "setting \"endpoint\" must be one of \"generate\", \"chat\", not \"responses\""
    );
    assert_eq!(
        OllamaCloud::configure(r#"{"endpont":"chat"}"#)
            .err()
            .unwrap(),
        "unknown setting \"endpont\" (this adapter takes \"endpoint\")"
    );
}

#[test]
fn chat_speaks_api_chat_with_tools_and_images() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let mut request = request();
    request.tools = Some(tools.to_string());
    request.messages[0]
        .content
        .push(image_part(inline_image("image/png", "AAAA")));
    let built = chatd_adapter_kit::testing::exported_build_request(&chat(), &request).unwrap();
    assert_eq!(built.path, "/api/chat");
    let body = body_json(&built);
    assert_eq!(body["tools"], tools);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "hi", "images": ["AAAA"]}])
    );
    let answer = chat()
        .parse_response(&response(
            200,
            r#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[
                {"function":{"name":"f","arguments":{"a":1}}}]},"done_reason":"stop"}"#,
        ))
        .unwrap();
    assert_eq!(answer.finish, Some(FinishReason::ToolCalls));
    let chunk = chat()
        .parse_stream_event(&stream_event(
            None,
            r#"{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}"#,
        ))
        .unwrap()
        .unwrap();
    assert_eq!(chunk.content.as_deref(), Some("Hi"));
}

#[test]
fn parses_a_complete_answer() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"gpt-oss:120b","created_at":"2026-01-01T00:00:00Z","response":"Hello!",
            "thinking":"say hi","done":true,"done_reason":"stop","context":[1,2],
            "prompt_eval_count":20,"eval_count":5}"#,
    ))
    .unwrap();
    assert_eq!(parsed.content, "Hello!");
    assert_eq!(parsed.reasoning.as_deref(), Some("say hi"));
    assert_eq!(parsed.model, "gpt-oss:120b");
    assert_eq!(parsed.usage.input_tokens, Some(20));
    assert_eq!(parsed.usage.output_tokens, Some(5));
    assert_eq!(parsed.done_reason.as_deref(), Some("stop"));
    assert_eq!(parsed.finish, Some(FinishReason::Stop));
    assert_eq!(parsed.tool_calls, None);
}

#[test]
fn unknown_done_reason_is_other_and_kept_verbatim() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"m","response":"","thinking":"","done_reason":"unload"}"#,
    ))
    .unwrap();
    assert_eq!(parsed.reasoning, None);
    assert_eq!(parsed.done_reason.as_deref(), Some("unload"));
    assert_eq!(parsed.finish, Some(FinishReason::Other));
}

#[test]
fn rate_limit_carries_retry_after() {
    let mut limited = response(429, r#"{"error":"you have reached your hourly limit"}"#);
    limited.headers = vec![("retry-after".into(), " 120 ".into())];
    match parse_response(&limited) {
        Err(AdapterError::RateLimited(limit)) => {
            assert_eq!(limit.message, "you have reached your hourly limit");
            assert_eq!(limit.retry_after_secs, Some(120));
        }
        other => panic!("expected rate-limited, got {other:?}"),
    }
}

#[test]
fn errors_take_the_message_from_any_body_shape() {
    for (status, body, expected) in [
        (401, r#"{"error":"unauthorized"}"#, "unauthorized"),
        (500, r#"{"error":{"message":"internal"}}"#, "internal"),
        (502, "<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (500, "", "HTTP 500"),
    ] {
        let failure = upstream_failure(parse_response(&response(status, body)));
        assert_eq!(failure.status, status);
        assert_eq!(failure.message, expected);
    }
}

#[test]
fn error_body_with_a_2xx_status_is_an_upstream_failure() {
    let failure = upstream_failure(parse_response(&response(
        200,
        r#"{"error":"model not found"}"#,
    )));
    assert_eq!(failure.status, 200);
    assert_eq!(failure.message, "model not found");
}

#[test]
fn garbage_2xx_bodies_are_malformed() {
    assert!(malformed_response(parse_response(&response(200, "nope"))).contains("not JSON"));
    assert_eq!(
        malformed_response(parse_response(&response(
            200,
            r#"{"model":"m","done":true}"#
        ))),
        "response has no \"response\" text"
    );
}

#[test]
fn stream_content_line() {
    let chunk = line(r#"{"model":"gpt-oss:120b","response":"Hel","done":false}"#).unwrap();
    assert_eq!(chunk.content.as_deref(), Some("Hel"));
    assert_eq!(chunk.reasoning, None);
    assert_eq!(chunk.model.as_deref(), Some("gpt-oss:120b"));
    assert!(!chunk.done);
}

#[test]
fn stream_thinking_line() {
    let chunk =
        line(r#"{"model":"m","response":"","thinking":"let me see","done":false}"#).unwrap();
    assert_eq!(chunk.content, None);
    assert_eq!(chunk.reasoning.as_deref(), Some("let me see"));
}

#[test]
fn stream_final_line_carries_usage_and_done() {
    let chunk = line(
        r#"{"model":"m","response":"","done":true,"done_reason":"length","context":[1],
            "prompt_eval_count":9,"eval_count":100}"#,
    )
    .unwrap();
    assert!(chunk.done);
    assert_eq!(chunk.content, None);
    assert_eq!(chunk.done_reason.as_deref(), Some("length"));
    assert_eq!(chunk.finish, Some(FinishReason::Length));
    assert_eq!(chunk.usage.input_tokens, Some(9));
    assert_eq!(chunk.usage.output_tokens, Some(100));
}

#[test]
fn stream_line_with_nothing_is_none() {
    assert!(line(r#"{"model":"m","response":"","done":false}"#).is_none());
}

#[test]
fn stream_error_line_is_an_upstream_failure_with_status_zero() {
    let failure = upstream_failure(parse_stream_event(&StreamEvent {
        event: None,
        data: r#"{"error":"upstream timeout"}"#.into(),
    }));
    assert_eq!(failure.status, 0);
    assert_eq!(failure.message, "upstream timeout");
}

#[test]
fn stream_garbage_is_malformed() {
    let message = malformed_response(parse_stream_event(&StreamEvent {
        event: None,
        data: "{\"response\":".into(),
    }));
    assert!(message.starts_with("stream line is not JSON"), "{message}");
}

#[test]
fn models_request_lists_tags() {
    for adapter in [generate(), chat()] {
        let built = adapter.build_models_request(None).unwrap();
        assert_eq!(built.method, "GET");
        assert_eq!(built.path, "/api/tags");
        assert!(built.body.is_empty());
    }
}

#[test]
fn models_are_listed_by_name() {
    let page = generate()
        .parse_models_response(&response(
            200,
            r#"{"models":[{"name":"gpt-oss:120b","model":"gpt-oss:120b","modified_at":"2025-08-05T00:00:00Z"},
                          {"model":"deepseek-v3.1:671b"}]}"#,
        ))
        .unwrap();
    let ids: Vec<_> = page.models.iter().map(|model| model.id.as_str()).collect();
    assert_eq!(ids, ["gpt-oss:120b", "deepseek-v3.1:671b"]);
    assert_eq!(page.next_cursor, None);
}

#[test]
fn models_listing_errors() {
    assert_eq!(
        upstream_failure(
            generate().parse_models_response(&response(401, r#"{"error":"unauthorized"}"#))
        )
        .message,
        "unauthorized"
    );
    assert_eq!(
        malformed_response(generate().parse_models_response(&response(200, r#"{"models":[{}]}"#))),
        "models[0] has no name"
    );
}
