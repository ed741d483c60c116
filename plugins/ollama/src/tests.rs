use super::*;
use chatd_adapter_kit::prelude::*;
use chatd_adapter_kit::testing::conformance::Fixtures;
use chatd_adapter_kit::testing::{
    body_json, chat_request, embeddings_request, image_part, inline_image, invalid_request,
    malformed_response, message, response, stream_event, text_part, upstream_failure,
};
use chatd_adapter_kit::types::{FinishReason, JsonSchema, Message, ResponseFormat};
use serde_json::{Value, json};

chatd_adapter_kit::conformance_tests!(
    Ollama,
    Fixtures {
        settings: None,
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
                r#"{"error":"model \"llama9\" not found, try pulling it first"}"#,
                "model_not_found",
            ),
            (
                400,
                r#"{"error":"the input length exceeds the context length"}"#,
                "context_length_exceeded",
            ),
        ],
        embeddings_answer: Some(
            r#"{"model":"e","embeddings":[[0.5,-1.0],[0.25,2.0]],"prompt_eval_count":7}"#
        ),
    }
);

fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    chatd_adapter_kit::testing::exported_build_request(&Ollama, request)
}

fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    Ollama.parse_response(response)
}

fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    Ollama.parse_stream_event(event)
}

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
    let info = Ollama::describe();
    assert_eq!(info.name, "ollama");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(matches!(info.auth, AuthScheme::None));
    assert_eq!(info.default_base_url, "http://127.0.0.1:11434");
    assert!(info.supports_streaming);
    assert!(matches!(info.stream_framing, StreamFraming::Ndjson));
    assert!(info.capabilities.contains(&"images".into()));
    assert!(!info.capabilities.contains(&"image-urls".into()));
    assert!(!info.capabilities.contains(&"settings".into()));
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
    request.response_format = ResponseFormat::JsonObject;
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
    assert_eq!(parsed.usage.input_tokens, Some(12));
    assert_eq!(parsed.usage.output_tokens, Some(3));
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
    assert_eq!(parsed.usage.input_tokens, None);
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
    assert_eq!(chunk.usage.input_tokens, Some(26));
    assert_eq!(chunk.usage.output_tokens, Some(290));
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
    let built = Ollama.build_models_request(None).unwrap();
    assert_eq!(built.method, "GET");
    assert_eq!(built.path, "/api/tags");
    assert!(built.body.is_empty());
}

#[test]
fn models_are_listed_by_name_on_one_page() {
    let page = Ollama
        .parse_models_response(&response(
            200,
            r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","size":2019393189},
                          {"name":"qwen3:8b","model":"qwen3:8b"}]}"#,
        ))
        .unwrap();
    let ids: Vec<_> = page.models.iter().map(|model| model.id.as_str()).collect();
    assert_eq!(ids, ["llama3.2:latest", "qwen3:8b"]);
    assert_eq!(page.next_cursor, None);
    assert!(page.models.iter().all(|model| model.owned_by.is_none()
        && model.created.is_none()
        && model.context_length.is_none()));
}

#[test]
fn models_listing_errors() {
    assert_eq!(
        upstream_failure(Ollama.parse_models_response(&response(503, ""))).message,
        "HTTP 503"
    );
    assert_eq!(
        malformed_response(Ollama.parse_models_response(&response(200, "{}"))),
        "response has no \"models\" array"
    );
}

fn user_with(parts: Vec<chatd_adapter_kit::types::ContentPart>) -> Message {
    Message {
        content: parts,
        ..message("user", "")
    }
}

#[test]
fn images_ride_on_their_message_as_base64() {
    let mut request = request();
    request.messages = vec![
        message("system", "be brief"),
        user_with(vec![
            text_part("what is"),
            image_part(inline_image("image/jpeg", "/9j/4AAQ")),
            text_part("this?"),
            image_part(inline_image("image/png", "iVBORw0KGgo=")),
        ]),
    ];
    assert_eq!(
        body_of(&request)["messages"],
        json!([
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": "what is\nthis?", "images": ["/9j/4AAQ", "iVBORw0KGgo="] },
        ])
    );
}

#[test]
fn image_urls_and_unknown_parts_are_refused() {
    let mut request = request();
    request.messages = vec![user_with(vec![image_part(
        chatd_adapter_kit::types::ImageSource::Url("https://x/cat.png".into()),
    )])];
    // The host never sends a URL without "image-urls"; the kit refuses it before the adapter.
    assert!(invalid_request(build_request(&request)).contains("image-urls"));
    assert_eq!(
        invalid_request(Ollama.build_request(&request)),
        "messages[0].content[0]: Ollama takes images inline only, not by URL"
    );
    request.messages = vec![user_with(vec![
        chatd_adapter_kit::types::ContentPart::Other((
            "input_audio".into(),
            r#"{"type":"input_audio"}"#.into(),
        )),
    ])];
    assert_eq!(
        invalid_request(build_request(&request)),
        "messages[0].content[0]: content parts of type \"input_audio\" are not supported by this upstream"
    );
}

#[test]
fn a_json_schema_is_the_format() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let mut request = request();
    request.response_format = ResponseFormat::JsonSchema(JsonSchema {
        name: "city".into(),
        schema: schema.to_string(),
        strict: true,
    });
    assert_eq!(body_of(&request)["format"], schema);
}

#[test]
fn sampling_options_go_into_options() {
    let mut request = request();
    request.seed = Some(42);
    request.top_k = Some(20);
    request.repeat_penalty = Some(1.1);
    request.presence_penalty = Some(0.5);
    request.frequency_penalty = Some(0.25);
    assert_eq!(
        body_of(&request)["options"],
        json!({ "seed": 42, "top_k": 20, "repeat_penalty": 1.1,
                "presence_penalty": 0.5, "frequency_penalty": 0.25 })
    );
}

#[test]
fn reasoning_effort_becomes_a_think_level() {
    let mut request = request();
    request.think = Some(true);
    request.reasoning_effort = Some("high".into());
    assert_eq!(body_of(&request)["think"], "high");
    request.reasoning_effort = Some("minimal".into());
    assert_eq!(body_of(&request)["think"], "low");
    request.reasoning_effort = None;
    assert_eq!(body_of(&request)["think"], true);
}

#[test]
fn assistant_reasoning_goes_back_as_thinking() {
    let mut assistant = message("assistant", "4");
    assistant.reasoning = Some("2+2".into());
    let mut request = request();
    request.messages = vec![message("user", "2+2?"), assistant, message("user", "sure?")];
    assert_eq!(body_of(&request)["messages"][1]["thinking"], "2+2");
}

#[test]
fn passthrough_merges_top_level_and_into_options() {
    let mut request = request();
    request.temperature = Some(0.2);
    request.extra = Some(r#"{"keep_alive":"30m","options":{"num_ctx":32768}}"#.into());
    let body = body_of(&request);
    assert_eq!(body["keep_alive"], "30m");
    assert_eq!(
        body["options"],
        json!({ "temperature": 0.2, "num_ctx": 32768 })
    );
    for field in ["stream", "messages", "model"] {
        request.extra = Some(format!(r#"{{"{field}":null}}"#));
        assert!(
            invalid_request(build_request(&request)).contains(&format!("extra.{field}")),
            "{field}"
        );
    }
}

#[test]
fn embeddings_use_api_embed() {
    let mut request = embeddings_request("nomic-embed-text", &["one", "two"]);
    request.dimensions = Some(256);
    let built = Ollama.build_embeddings_request(&request).unwrap();
    assert_eq!(
        (built.method.as_str(), built.path.as_str()),
        ("POST", "/api/embed")
    );
    assert_eq!(
        body_json(&built),
        json!({ "model": "nomic-embed-text", "input": ["one", "two"], "dimensions": 256 })
    );
    let parsed = Ollama
        .parse_embeddings_response(&response(
            200,
            r#"{"model":"nomic-embed-text","embeddings":[[0.1,0.2],[0.3,0.4]],
                "total_duration":1,"prompt_eval_count":4}"#,
        ))
        .unwrap();
    assert_eq!(parsed.model, "nomic-embed-text");
    assert_eq!(parsed.embeddings, vec![vec![0.1, 0.2], vec![0.3, 0.4]]);
    assert_eq!(parsed.input_tokens, Some(4));
    let failure = upstream_failure(Ollama.parse_embeddings_response(&response(
        404,
        r#"{"error":"model \"nomic\" not found, try pulling it first"}"#,
    )));
    assert_eq!(failure.code.as_deref(), Some("model_not_found"));
}

#[test]
fn stream_error_lines_carry_a_code() {
    let failure = upstream_failure(parse_stream_event(&stream_event(
        None,
        r#"{"error":"model \"x\" not found"}"#,
    )));
    assert_eq!(
        (failure.status, failure.code.as_deref()),
        (0, Some("model_not_found"))
    );
}
