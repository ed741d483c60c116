use super::*;
use chatd_adapter_kit::MAX_ERROR_CHARS;
use chatd_adapter_kit::testing::{
    body_json, chat_request, malformed_response, message, response, stream_event, upstream_failure,
};
use chatd_adapter_kit::types::FinishReason;
use serde_json::{Value, json};

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
    let info = describe();
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
        flatten(&messages),
        "Be brief\n\nUser: hi\n\nAssistant: hello\n\nUser: bye"
    );
}

#[test]
fn flattening_gathers_every_system_message_in_order() {
    let messages = [
        message("user", "q"),
        message("system", "one"),
        message("tool", "42"),
        message("system", "two"),
    ];
    assert_eq!(flatten(&messages), "one\n\ntwo\n\nUser: q\n\nTool: 42");
    assert_eq!(flatten(&[]), "");
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
    request.json_mode = true;
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
fn tools_are_refused() {
    let mut request = request();
    request.tools = Some("[]".into());
    match build_request(&request) {
        Err(AdapterError::InvalidRequest(message)) => {
            assert_eq!(message, "tools are not supported by /api/generate")
        }
        other => panic!("expected an invalid request, got {other:?}"),
    }
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
    assert_eq!(parsed.input_tokens, Some(20));
    assert_eq!(parsed.output_tokens, Some(5));
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
fn long_error_bodies_are_truncated_on_a_char_boundary() {
    let body = format!(r#"{{"error":"{}"}}"#, "ü".repeat(MAX_ERROR_CHARS * 2));
    let failure = upstream_failure(parse_response(&response(500, &body)));
    assert_eq!(failure.message, "ü".repeat(MAX_ERROR_CHARS));
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
    assert_eq!(chunk.input_tokens, Some(9));
    assert_eq!(chunk.output_tokens, Some(100));
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
    let built = build_models_request();
    assert_eq!(built.method, "GET");
    assert_eq!(built.path, "/api/tags");
    assert!(built.body.is_empty());
}

#[test]
fn models_are_listed_by_name() {
    let models = parse_models_response(&response(
        200,
        r#"{"models":[{"name":"gpt-oss:120b","model":"gpt-oss:120b","modified_at":"2025-08-05T00:00:00Z"},
                      {"model":"deepseek-v3.1:671b"}]}"#,
    ))
    .unwrap();
    let ids: Vec<_> = models.iter().map(|model| model.id.as_str()).collect();
    assert_eq!(ids, ["gpt-oss:120b", "deepseek-v3.1:671b"]);
    assert!(
        models
            .iter()
            .all(|model| model.owned_by.is_none() && model.created.is_none())
    );
}

#[test]
fn models_listing_errors() {
    assert_eq!(
        upstream_failure(parse_models_response(&response(
            401,
            r#"{"error":"unauthorized"}"#
        )))
        .message,
        "unauthorized"
    );
    assert_eq!(
        malformed_response(parse_models_response(&response(200, r#"{"models":[{}]}"#))),
        "models[0] has no name"
    );
}
