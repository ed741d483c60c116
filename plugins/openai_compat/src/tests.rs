use super::*;
use chatd_adapter_kit::testing::conformance::Fixtures;
use chatd_adapter_kit::testing::{
    body_json, chat_request, embeddings_request, image_part, inline_image, invalid_request,
    malformed_response, message, response, stream_event, text_part, upstream_failure,
};
use chatd_adapter_kit::types::{FinishReason, Image, JsonSchema};

chatd_adapter_kit::conformance_tests!(
    OpenAiCompat,
    Fixtures {
        settings: None,
        answer: r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}]}"#,
        stream_end: &[
            (
                None,
                r#"{"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
            ),
            (
                None,
                r#"{"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            ),
            (None, "[DONE]"),
        ],
        error_codes: &[
            (
                404,
                r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
                "model_not_found",
            ),
            (
                400,
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
                "context_length_exceeded",
            ),
            (
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-***","type":"invalid_request_error","code":"invalid_api_key"}}"#,
                "invalid_api_key",
            ),
            (
                401,
                r#"{"error":{"message":"No auth credentials found","code":401}}"#,
                "invalid_api_key",
            ),
        ],
        embeddings_answer: Some(
            r#"{"object":"list","model":"e","data":[
                {"object":"embedding","index":1,"embedding":[0.25,2.0]},
                {"object":"embedding","index":0,"embedding":[0.5,-1.0]}],
                "usage":{"prompt_tokens":7,"total_tokens":7}}"#
        ),
    }
);

fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    chatd_adapter_kit::testing::exported_build_request(&OpenAiCompat, request)
}

fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    OpenAiCompat.parse_response(response)
}

fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    OpenAiCompat.parse_stream_event(event)
}

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
    let info = OpenAiCompat::describe();
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
    request.think = Some(false);
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
    request.response_format = ResponseFormat::JsonObject;
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
    assert_eq!(parsed.usage.input_tokens, Some(11));
    assert_eq!(parsed.usage.output_tokens, Some(4));
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
    assert_eq!(parsed.usage.input_tokens, None);
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
    assert_eq!(chunk.usage.input_tokens, Some(12));
    assert_eq!(chunk.usage.output_tokens, Some(34));
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
    assert_eq!(chunk.usage.input_tokens, Some(5));
    assert_eq!(chunk.usage.output_tokens, Some(6));
}

#[test]
fn stream_done_marker() {
    let chunk = event("[DONE]").unwrap();
    assert!(chunk.done);
    assert_eq!(chunk.content, None);
    assert_eq!(chunk.model, None);
    assert_eq!(chunk.finish, None);
    assert_eq!(chunk.usage.input_tokens, None);
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
fn models_request_lists_models_and_pages_with_after() {
    let built = OpenAiCompat.build_models_request(None).unwrap();
    assert_eq!(built.method, "GET");
    assert_eq!(built.path, "/models");
    assert!(built.body.is_empty());
    let built = OpenAiCompat
        .build_models_request(Some("model 7/x"))
        .unwrap();
    assert_eq!(built.path, "/models?after=model%207%2Fx");
}

#[test]
fn models_are_listed_with_owner_creation_time_and_context() {
    let page = OpenAiCompat
        .parse_models_response(&response(
            200,
            r#"{"object":"list","data":[
                {"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"openai"},
                {"id":"moonshotai/kimi-k2","name":"Kimi K2","context_length":131072},
                {"id":"qwen","max_model_len":32768}
            ]}"#,
        ))
        .unwrap();
    let models = &page.models;
    assert_eq!(models.len(), 3);
    assert_eq!(models[0].id, "gpt-4o");
    assert_eq!(models[0].owned_by.as_deref(), Some("openai"));
    assert_eq!(models[0].created, Some(1715367049));
    assert_eq!(models[0].context_length, None);
    assert_eq!(models[1].id, "moonshotai/kimi-k2");
    assert_eq!(models[1].owned_by, None);
    assert_eq!(models[1].context_length, Some(131072));
    assert_eq!(models[2].context_length, Some(32768));
    assert_eq!(page.next_cursor, None);
}

#[test]
fn models_pages_follow_has_more() {
    let page = OpenAiCompat
        .parse_models_response(&response(
            200,
            r#"{"data":[{"id":"a"},{"id":"b"}],"has_more":true,"last_id":"b-last"}"#,
        ))
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("b-last"));
    // No last_id: the page's last model.
    let page = OpenAiCompat
        .parse_models_response(&response(
            200,
            r#"{"data":[{"id":"a"},{"id":"b"}],"has_more":true}"#,
        ))
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("b"));
    let page = OpenAiCompat
        .parse_models_response(&response(
            200,
            r#"{"data":[{"id":"a"}],"has_more":false,"last_id":"a"}"#,
        ))
        .unwrap();
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        malformed_response(
            OpenAiCompat.parse_models_response(&response(200, r#"{"data":[],"has_more":true}"#))
        ),
        "has_more is set on an empty page"
    );
}

#[test]
fn models_listing_errors() {
    assert_eq!(
        upstream_failure(OpenAiCompat.parse_models_response(&response(
            401,
            r#"{"error":{"message":"No auth credentials found","code":401}}"#
        )))
        .message,
        "No auth credentials found"
    );
    assert_eq!(
        malformed_response(
            OpenAiCompat.parse_models_response(&response(200, r#"{"data":[{"object":"model"}]}"#))
        ),
        "data[0] has no id"
    );
}

fn user_with(parts: Vec<ContentPart>) -> Message {
    Message {
        content: parts,
        ..message("user", "")
    }
}

#[test]
fn text_only_content_is_one_string() {
    let mut request = request();
    request.messages = vec![user_with(vec![text_part("one"), text_part("two")])];
    assert_eq!(body_of(&request)["messages"][0]["content"], "one\ntwo");
}

#[test]
fn images_become_image_url_parts() {
    let mut request = request();
    request.messages = vec![user_with(vec![
        text_part("compare"),
        image_part(inline_image("image/png", "iVBORw0KGgo=")),
        ContentPart::Image(Image {
            source: ImageSource::Url("https://example.com/b.jpg".into()),
            detail: Some("low".into()),
        }),
    ])];
    assert_eq!(
        body_of(&request)["messages"][0]["content"],
        json!([
            { "type": "text", "text": "compare" },
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
            { "type": "image_url", "image_url": { "url": "https://example.com/b.jpg", "detail": "low" } },
        ])
    );
}

#[test]
fn audio_and_file_parts_pass_through_and_others_are_refused() {
    let audio =
        json!({ "type": "input_audio", "input_audio": { "data": "UklGR", "format": "wav" } });
    let file = json!({ "type": "file", "file": { "file_id": "file-1" } });
    let mut request = request();
    request.messages = vec![user_with(vec![
        ContentPart::Other(("input_audio".into(), audio.to_string())),
        ContentPart::Other(("file".into(), file.to_string())),
    ])];
    assert_eq!(
        body_of(&request)["messages"][0]["content"],
        json!([audio, file])
    );
    request.messages = vec![user_with(vec![ContentPart::Other((
        "video_url".into(),
        "{}".into(),
    ))])];
    assert_eq!(
        invalid_request(build_request(&request)),
        "messages[0].content[0]: content parts of type \"video_url\" are not supported by this upstream"
    );
    request.messages = vec![user_with(vec![ContentPart::Other((
        "file".into(),
        "[]".into(),
    ))])];
    assert_eq!(
        invalid_request(build_request(&request)),
        "messages[0].content[0] must be a JSON object"
    );
}

#[test]
fn json_schema_response_format() {
    let schema = json!({ "type": "object", "properties": { "a": { "type": "number" } } });
    let mut request = request();
    request.response_format = ResponseFormat::JsonSchema(JsonSchema {
        name: "answer".into(),
        schema: schema.to_string(),
        strict: true,
    });
    assert_eq!(
        body_of(&request)["response_format"],
        json!({ "type": "json_schema", "json_schema": { "name": "answer", "schema": schema, "strict": true } })
    );
}

#[test]
fn sampling_options_use_openai_and_openrouter_names() {
    let mut request = request();
    request.seed = Some(-1);
    request.top_k = Some(40);
    request.presence_penalty = Some(0.5);
    request.frequency_penalty = Some(-0.5);
    request.repeat_penalty = Some(1.2);
    let body = body_of(&request);
    assert_eq!(body["seed"], -1);
    assert_eq!(body["top_k"], 40);
    assert_eq!(body["presence_penalty"], 0.5);
    assert_eq!(body["frequency_penalty"], -0.5);
    assert_eq!(body["repetition_penalty"], 1.2);
    request.repeat_penalty = Some(f64::NAN);
    assert_eq!(
        invalid_request(build_request(&request)),
        "repetition_penalty must be a finite number"
    );
}

#[test]
fn reasoning_effort_is_sent_when_asked() {
    let mut request = request();
    request.think = Some(true);
    request.reasoning_effort = Some("minimal".into());
    assert_eq!(body_of(&request)["reasoning_effort"], "minimal");
    request.reasoning_effort = None;
    assert_eq!(body_of(&request)["reasoning_effort"], "medium");
    request.think = Some(false);
    assert!(body_of(&request).get("reasoning_effort").is_none());
}

#[test]
fn passthrough_fields_join_the_body() {
    let mut request = request();
    request.extra = Some(
        r#"{"provider":{"order":["groq"]},"transforms":["middle-out"],"reasoning":{"max_tokens":2000}}"#
            .into(),
    );
    let body = body_of(&request);
    assert_eq!(body["provider"], json!({ "order": ["groq"] }));
    assert_eq!(body["transforms"], json!(["middle-out"]));
    assert_eq!(body["reasoning"], json!({ "max_tokens": 2000 }));
    for field in ["model", "messages", "stream", "stream_options"] {
        request.extra = Some(format!(r#"{{"{field}":1}}"#));
        assert_eq!(
            invalid_request(build_request(&request)),
            format!("extra.{field} cannot be set: the adapter builds it")
        );
    }
}

#[test]
fn usage_details_are_read() {
    let parsed = parse_response(&response(
        200,
        r#"{"model":"o3","choices":[{"message":{"content":"x"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":100,"completion_tokens":50,
                     "prompt_tokens_details":{"cached_tokens":64},
                     "completion_tokens_details":{"reasoning_tokens":30}}}"#,
    ))
    .unwrap();
    assert_eq!(parsed.usage.input_tokens, Some(100));
    assert_eq!(parsed.usage.output_tokens, Some(50));
    assert_eq!(parsed.usage.reasoning_tokens, Some(30));
    assert_eq!(parsed.usage.cached_input_tokens, Some(64));
    let chunk = event(
        r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,
            "completion_tokens_details":{"reasoning_tokens":1}}}"#,
    )
    .unwrap();
    assert_eq!(chunk.usage.reasoning_tokens, Some(1));
}

#[test]
fn embeddings_ask_for_floats_and_come_back_in_index_order() {
    let mut request = embeddings_request("text-embedding-3-small", &["x", "y"]);
    request.dimensions = Some(512);
    request.extra = Some(r#"{"user":"u1"}"#.into());
    let built = OpenAiCompat.build_embeddings_request(&request).unwrap();
    assert_eq!(
        (built.method.as_str(), built.path.as_str()),
        ("POST", "/embeddings")
    );
    assert_eq!(
        body_json(&built),
        json!({ "model": "text-embedding-3-small", "input": ["x", "y"],
                "encoding_format": "float", "dimensions": 512, "user": "u1" })
    );
    request.extra = Some(r#"{"encoding_format":"base64"}"#.into());
    assert!(
        invalid_request(OpenAiCompat.build_embeddings_request(&request))
            .contains("encoding_format")
    );
    assert_eq!(
        malformed_response(OpenAiCompat.parse_embeddings_response(&response(
            200,
            r#"{"data":[{"index":0,"embedding":"AAAA"}]}"#
        ))),
        "data[0].embedding is not an array"
    );
}

#[test]
fn error_codes_inside_streams_and_200s() {
    let failure = upstream_failure(parse_stream_event(&stream_event(
        None,
        r#"{"error":{"message":"context too long","code":"context_length_exceeded"}}"#,
    )));
    assert_eq!(failure.status, 0);
    assert_eq!(failure.code.as_deref(), Some("context_length_exceeded"));
    let failure = upstream_failure(parse_response(&response(
        200,
        r#"{"error":{"message":"No endpoints found for model x","code":404}}"#,
    )));
    assert_eq!(failure.status, 404);
}
