//! What the Ollama adapters share: `/api/chat` and `/api/generate` take the same options and
//! flags, stream the same NDJSON lines (apart from where the text is), report errors the same
//! way, and list models through `/api/tags`.

use crate::prelude::*;
use serde_json::{Map, Value, json};

use crate::errors::{ErrorShape, invalid, json_body as checked_json_body, malformed, upstream};
use crate::finish::{answer_finish, finish_reason};
use crate::http::{accept, get_json, post_json};
use crate::json::{finite, json_object, non_empty, parse_json_array, token_count};
use crate::openai::{arguments_object, tool_call, tool_call_delta};
use crate::types::{
    AdapterError, ChatRequest, ChatResponse, HttpRequest, HttpResponse, StreamChunk, StreamEvent,
    StreamFraming,
};

/// The body of a generation request: `model`, then `input_field` (`messages` or `prompt`) set
/// to `input`, `stream`, `think`, `format` and `options`.
#[inline]
pub fn request_body(
    request: &ChatRequest,
    input_field: &str,
    input: Value,
) -> Result<Map<String, Value>, AdapterError> {
    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    body.insert(input_field.into(), input);
    // Both are always sent: Ollama streams when "stream" is absent, and thinking models think
    // when "think" is absent, while chatd's default is off.
    body.insert("stream".into(), request.stream.into());
    body.insert("think".into(), request.think.unwrap_or(false).into());
    if request.json_mode {
        body.insert("format".into(), "json".into());
    }
    let options = options(request)?;
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    Ok(body)
}

/// Ollama's sampling `options`, holding only the fields the request sets.
#[inline]
pub fn options(request: &ChatRequest) -> Result<Map<String, Value>, AdapterError> {
    let mut options = Map::new();
    if let Some(temperature) = request.temperature {
        options.insert("temperature".into(), finite("temperature", temperature)?);
    }
    if let Some(top_p) = request.top_p {
        options.insert("top_p".into(), finite("top_p", top_p)?);
    }
    if let Some(max_tokens) = request.max_tokens {
        options.insert("num_predict".into(), max_tokens.into());
    }
    if !request.stop.is_empty() {
        options.insert("stop".into(), request.stop.clone().into());
    }
    Ok(options)
}

/// The `POST` of a generation request body to `path`, accepting NDJSON when `stream` is set.
#[inline]
pub fn post(path: &str, stream: bool, body: Map<String, Value>) -> HttpRequest {
    post_json(path, &[], accept(stream, StreamFraming::Ndjson), body)
}

/// The JSON body of a 2xx response, or the error the response stands for; Ollama reports some
/// failures as an error object with a 2xx status.
#[inline]
pub fn json_body(response: &HttpResponse) -> Result<Value, AdapterError> {
    let body = checked_json_body(response, ErrorShape::OpenAi)?;
    if let Some(message) = ErrorShape::OpenAi.message(&body) {
        return Err(upstream(response.status, message));
    }
    Ok(body)
}

/// A complete answer: `content`, `reasoning` (unless empty) and `tool_calls` (in OpenAI's
/// shape) from where the endpoint puts them; model, stop reason and token counts from `body`.
#[inline]
pub fn chat_response(
    body: &Value,
    content: String,
    reasoning: &Value,
    tool_calls: Option<Value>,
) -> ChatResponse {
    let done_reason = body["done_reason"].as_str().map(str::to_owned);
    ChatResponse {
        content,
        reasoning: non_empty(reasoning),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        input_tokens: token_count(&body["prompt_eval_count"]),
        output_tokens: token_count(&body["eval_count"]),
        finish: answer_finish(done_reason.as_deref(), tool_calls.is_some()),
        done_reason,
        tool_calls: tool_calls.map(|calls| calls.to_string()),
    }
}

/// The JSON object of one NDJSON line of a stream; `None` for a blank line. An error line is an
/// upstream failure with status 0.
#[inline]
pub fn stream_line(event: &StreamEvent) -> Result<Option<Value>, AdapterError> {
    let line = event.data.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let body = json_object(line.as_bytes(), "stream line")?;
    if let Some(message) = ErrorShape::OpenAi.message(&body) {
        return Err(upstream(0, message));
    }
    Ok(Some(body))
}

/// What a stream line carries: `content` and `reasoning` (unless empty) from where the endpoint
/// puts them; model, stop reason, token counts and `done` from `line`.
#[inline]
pub fn stream_chunk(line: &Value, content: &Value, reasoning: &Value) -> StreamChunk {
    let done_reason = line["done_reason"].as_str().map(str::to_owned);
    StreamChunk {
        content: non_empty(content),
        reasoning: non_empty(reasoning),
        tool_calls: None,
        model: line["model"].as_str().map(str::to_owned),
        finish: done_reason.as_deref().map(finish_reason),
        done_reason,
        input_tokens: token_count(&line["prompt_eval_count"]),
        output_tokens: token_count(&line["eval_count"]),
        done: line["done"].as_bool().unwrap_or(false),
    }
}

/// The `GET /api/tags` request that lists the models.
#[inline]
pub fn tags_request() -> HttpRequest {
    get_json("/api/tags", &[])
}

/// The models of a `/api/tags` response of any status, each made by `make` from its name.
#[inline]
pub fn tags<T>(
    response: &HttpResponse,
    make: impl Fn(String) -> T,
) -> Result<Vec<T>, AdapterError> {
    let body = json_body(response)?;
    let models = body["models"]
        .as_array()
        .ok_or_else(|| malformed("response has no \"models\" array"))?;
    models
        .iter()
        .enumerate()
        .map(|(index, model)| {
            model["name"]
                .as_str()
                .or_else(|| model["model"].as_str())
                .map(|name| make(name.to_owned()))
                .ok_or_else(|| malformed(format!("models[{index}] has no name")))
        })
        .collect()
}

/// Converts an OpenAI `tool_calls` array (JSON text of request field `field`) to Ollama's
/// shape, where arguments are JSON objects.
#[inline]
pub fn tool_calls_from_openai(field: &str, text: &str) -> Result<Value, AdapterError> {
    let calls = parse_json_array(field, text)?;
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let function = &call["function"];
            let name = function["name"]
                .as_str()
                .ok_or_else(|| invalid(format!("{field}[{index}].function.name is missing")))?;
            let arguments = arguments_object(
                &format!("{field}[{index}].function.arguments"),
                &function["arguments"],
            )?;
            Ok(json!({ "function": { "name": name, "arguments": arguments } }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Converts Ollama tool calls (an answer's or stream line's `message.tool_calls`) to OpenAI's
/// shape, with `index` when streaming; `None` if there are none.
#[inline]
pub fn tool_calls_to_openai(calls: &Value, streaming: bool) -> Result<Option<Value>, AdapterError> {
    let calls = match calls {
        Value::Null => return Ok(None),
        Value::Array(calls) if calls.is_empty() => return Ok(None),
        Value::Array(calls) => calls,
        _ => return Err(malformed("message.tool_calls is not an array")),
    };
    let mut converted = Vec::with_capacity(calls.len());
    for (position, call) in calls.iter().enumerate() {
        let function = &call["function"];
        let name = function["name"].as_str().ok_or_else(|| {
            malformed(format!(
                "message.tool_calls[{position}].function.name is missing"
            ))
        })?;
        let arguments = match &function["arguments"] {
            Value::Null => "{}".to_owned(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        // When streaming, Ollama may send each call on its own line, where positions restart at
        // zero; its own `index` keeps the calls apart.
        let index = function["index"].as_u64().unwrap_or(position as u64);
        let id = match call["id"].as_str() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("call_{index}"),
        };
        converted.push(if streaming {
            tool_call_delta(index, id, name, arguments)
        } else {
            tool_call(id, name, arguments)
        });
    }
    Ok(Some(Value::Array(converted)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        chat_request, invalid_request, malformed_response, response, stream_event, upstream_failure,
    };
    use crate::types::FinishReason;
    use serde_json::json;

    fn request() -> ChatRequest {
        chat_request("m")
    }

    fn event(data: &str) -> StreamEvent {
        stream_event(None, data)
    }

    #[test]
    fn request_body_always_sends_stream_and_think() {
        let body = request_body(&request(), "prompt", "User: hi".into()).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({ "model": "m", "prompt": "User: hi", "stream": false, "think": false })
        );
        let mut request = request();
        request.stream = true;
        request.think = Some(true);
        request.json_mode = true;
        request.max_tokens = Some(8);
        request.temperature = Some(0.5);
        request.top_p = Some(1.0);
        request.stop = vec!["x".into()];
        let body = request_body(&request, "messages", json!([])).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "model": "m", "messages": [], "stream": true, "think": true, "format": "json",
                "options": { "temperature": 0.5, "top_p": 1.0, "num_predict": 8, "stop": ["x"] },
            })
        );
        request.top_p = Some(f64::NAN);
        assert_eq!(
            invalid_request(request_body(&request, "prompt", Value::Null)),
            "top_p must be a finite number"
        );
    }

    #[test]
    fn posts_accept_ndjson_when_streaming() {
        let built = post("/api/chat", true, Map::new());
        assert_eq!(built.headers[1].1, "application/x-ndjson");
        let built = post("/api/chat", false, Map::new());
        assert_eq!(built.headers[1].1, "application/json");
        assert_eq!(built.body, b"{}");
    }

    #[test]
    fn error_objects_fail_whatever_the_status() {
        let failure = upstream_failure(json_body(&response(200, r#"{"error":"out of memory"}"#)));
        assert_eq!(failure.status, 200);
        assert_eq!(failure.message, "out of memory");
        assert!(json_body(&response(200, r#"{"model":"m"}"#)).is_ok());
    }

    #[test]
    fn stream_lines() {
        assert!(stream_line(&event("  ")).unwrap().is_none());
        assert_eq!(
            stream_line(&event(r#" {"done":false} "#)).unwrap(),
            Some(json!({ "done": false }))
        );
        let failure = upstream_failure(stream_line(&event(r#"{"error":"crashed"}"#)));
        assert_eq!(failure.status, 0);
        assert_eq!(failure.message, "crashed");
        let message = malformed_response(stream_line(&event("{")));
        assert!(message.starts_with("stream line is not JSON"), "{message}");
    }

    #[test]
    fn common_fields_of_lines_and_answers() {
        let line = json!({
            "model": "m", "response": "", "thinking": "hmm", "done": true,
            "done_reason": "length", "prompt_eval_count": 3, "eval_count": 4,
        });
        let chunk = stream_chunk(&line, &line["response"], &line["thinking"]);
        assert_eq!(chunk.content, None);
        assert_eq!(chunk.reasoning.as_deref(), Some("hmm"));
        assert_eq!(chunk.model.as_deref(), Some("m"));
        assert_eq!(chunk.done_reason.as_deref(), Some("length"));
        assert_eq!(chunk.finish, Some(FinishReason::Length));
        assert_eq!(
            (chunk.input_tokens, chunk.output_tokens),
            (Some(3), Some(4))
        );
        assert!(chunk.done);

        let body = json!({ "done_reason": "stop" });
        let answer = chat_response(&body, "hi".into(), &Value::Null, None);
        assert_eq!(answer.model, "");
        assert_eq!(answer.finish, Some(FinishReason::Stop));
        assert_eq!(answer.tool_calls, None);
        let calls = json!([{ "id": "a" }]);
        let answer = chat_response(&body, String::new(), &json!(""), Some(calls));
        assert_eq!(answer.reasoning, None);
        assert_eq!(answer.finish, Some(FinishReason::ToolCalls));
        assert_eq!(answer.tool_calls.as_deref(), Some(r#"[{"id":"a"}]"#));
    }

    #[test]
    fn tags_are_listed_by_name_or_model() {
        let built = tags_request();
        assert_eq!(
            (built.method.as_str(), built.path.as_str()),
            ("GET", "/api/tags")
        );
        let names = tags(
            &response(200, r#"{"models":[{"name":"a"},{"model":"b"}]}"#),
            |n| n,
        )
        .unwrap();
        assert_eq!(names, ["a", "b"]);
        for (body, expected) in [
            ("{}", "response has no \"models\" array"),
            (r#"{"models":[{}]}"#, "models[0] has no name"),
        ] {
            assert_eq!(
                malformed_response(tags(&response(200, body), |n| n)),
                expected
            );
        }
    }

    #[test]
    fn tool_calls_both_ways() {
        let text = r#"[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
                       {"function":{"name":"g"}}]"#;
        assert_eq!(
            tool_calls_from_openai("messages[0].tool_calls", text).unwrap(),
            json!([
                { "function": { "name": "f", "arguments": { "a": 1 } } },
                { "function": { "name": "g", "arguments": {} } },
            ])
        );
        assert_eq!(
            invalid_request(tool_calls_from_openai(
                "messages[0].tool_calls",
                r#"[{"function":{}}]"#
            )),
            "messages[0].tool_calls[0].function.name is missing"
        );

        let calls = json!([{ "function": { "index": 3, "name": "f", "arguments": { "a": 1 } } }]);
        assert_eq!(
            tool_calls_to_openai(&calls, true).unwrap(),
            Some(json!([{
                "index": 3, "id": "call_3", "type": "function",
                "function": { "name": "f", "arguments": "{\"a\":1}" },
            }]))
        );
        assert_eq!(
            tool_calls_to_openai(&json!([{ "id": "x", "function": { "name": "f" } }]), false)
                .unwrap(),
            Some(json!([{
                "id": "x", "type": "function", "function": { "name": "f", "arguments": "{}" },
            }]))
        );
        assert_eq!(tool_calls_to_openai(&Value::Null, false).unwrap(), None);
        assert_eq!(tool_calls_to_openai(&json!([]), true).unwrap(), None);
        assert_eq!(
            malformed_response(tool_calls_to_openai(&json!({}), false)),
            "message.tool_calls is not an array"
        );
    }
}
