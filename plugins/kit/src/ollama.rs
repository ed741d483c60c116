//! What the Ollama adapters share: `/api/chat` (the whole translation, used by `ollama` and
//! by `ollama_cloud` with `endpoint = "chat"`), the options and flags `/api/generate` takes
//! too, the NDJSON stream lines, errors, `/api/embed` and `/api/tags`.

use crate::prelude::*;
use serde_json::{Map, Value, json};

use crate::content::other_part;
use crate::errors::{
    ErrorShape, error_code, invalid, json_body as checked_json_body, malformed, upstream_with_code,
};
use crate::extra::merge_extra;
use crate::finish::{answer_finish, finish_reason};
use crate::http::{accept, get_json, post_json};
use crate::json::{
    finite, json_object, non_empty, parse_json, parse_json_array, take_text, token_count,
};
use crate::openai::{arguments_object, tool_call, tool_call_delta};
use crate::stream::carries_something;
use crate::types::{
    AdapterError, ChatRequest, ChatResponse, ContentPart, EmbeddingsRequest, EmbeddingsResponse,
    HttpRequest, HttpResponse, ImageSource, Message, ModelInfo, ModelPage, ResponseFormat,
    StreamChunk, StreamEvent, StreamFraming, Usage,
};

/// Body fields the adapters build, which `extra` may not set: the answer's parsing depends on
/// them (`stream`) or they are the request itself.
const OWNED_FIELDS: &[&str] = &["model", "messages", "prompt", "stream", "input"];

/// The body of a generation request: `model`, then `input_field` (`messages` or `prompt`) set
/// to `input`, `stream`, `think`, `format`, `options`, then the passthrough fields of `extra`
/// (`keep_alive`, ...; an `options` object is merged into the adapter's own).
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
    body.insert("think".into(), think(request)?);
    match &request.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            body.insert("format".into(), "json".into());
        }
        ResponseFormat::JsonSchema(schema) => {
            let field = "response_format.json_schema.schema";
            let schema = parse_json(field, &schema.schema)?;
            if !schema.is_object() {
                return Err(invalid(format!("{field} must be a JSON object")));
            }
            body.insert("format".into(), schema);
        }
    }
    let options = options(request)?;
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    merge_extra(
        &mut body,
        request.extra.as_deref(),
        OWNED_FIELDS,
        &["options"],
    )?;
    Ok(body)
}

/// Ollama's `think`: `false` unless asked, the effort level when one was named (Ollama takes
/// "low", "medium" and "high"; "minimal" is its "low", and models without levels treat any
/// level as on), else `true`.
fn think(request: &ChatRequest) -> Result<Value, AdapterError> {
    if request.think == Some(false) {
        return Ok(false.into());
    }
    match request.reasoning_effort.as_deref() {
        Some("minimal" | "low") => Ok("low".into()),
        Some(level @ ("medium" | "high")) => Ok(level.into()),
        Some(other) => Err(invalid(format!(
            "reasoning_effort {other:?} is not one of \"minimal\", \"low\", \"medium\", \"high\""
        ))),
        None => Ok(request.think.unwrap_or(false).into()),
    }
}

/// Ollama's sampling `options`, holding only the fields the request sets.
pub fn options(request: &ChatRequest) -> Result<Map<String, Value>, AdapterError> {
    let mut options = Map::new();
    let mut float = |name: &str, value: Option<f64>| -> Result<(), AdapterError> {
        if let Some(value) = value {
            options.insert(name.into(), finite(name, value)?);
        }
        Ok(())
    };
    float("temperature", request.temperature)?;
    float("top_p", request.top_p)?;
    float("repeat_penalty", request.repeat_penalty)?;
    float("presence_penalty", request.presence_penalty)?;
    float("frequency_penalty", request.frequency_penalty)?;
    if let Some(top_k) = request.top_k {
        options.insert("top_k".into(), top_k.into());
    }
    if let Some(seed) = request.seed {
        options.insert("seed".into(), seed.into());
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
pub fn post(path: &str, stream: bool, body: Map<String, Value>) -> HttpRequest {
    post_json(path, &[], accept(stream, StreamFraming::Ndjson), body)
}

/// The `POST /api/chat` request for a chat request.
pub fn chat_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    let messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(index, message)| chat_message(index, message))
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = request_body(request, "messages", Value::Array(messages))?;
    if let Some(tools) = tools(request)? {
        body.insert("tools".into(), tools);
    }
    Ok(post("/api/chat", request.stream, body))
}

/// One chat turn in `/api/chat`'s shape: text parts joined into `content`, inline images as
/// base64 in `images`, tool calls with their arguments as objects, the client's reasoning
/// as `thinking`.
fn chat_message(index: usize, message: &Message) -> Result<Value, AdapterError> {
    let field = format!("messages[{index}].content");
    let mut text = String::new();
    let mut images = Vec::new();
    for (position, part) in message.content.iter().enumerate() {
        match part {
            ContentPart::Text(part) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(part);
            }
            ContentPart::Image(image) => match &image.source {
                ImageSource::Inline(inline) => images.push(Value::from(inline.base64.clone())),
                ImageSource::Url(_) => {
                    return Err(invalid(format!(
                        "{field}[{position}]: Ollama takes images inline only, not by URL"
                    )));
                }
            },
            ContentPart::Other((kind, _)) => return Err(other_part(&field, position, kind)),
        }
    }
    let mut out = Map::new();
    out.insert("role".into(), message.role.clone().into());
    out.insert("content".into(), text.into());
    if !images.is_empty() {
        out.insert("images".into(), Value::Array(images));
    }
    if let Some(reasoning) = &message.reasoning {
        out.insert("thinking".into(), reasoning.clone().into());
    }
    if let Some(calls) = &message.tool_calls {
        let field = format!("messages[{index}].tool_calls");
        out.insert("tool_calls".into(), tool_calls_from_openai(&field, calls)?);
    }
    if let (Some(name), "tool") = (&message.name, message.role.as_str()) {
        out.insert("tool_name".into(), name.clone().into());
    }
    Ok(Value::Object(out))
}

/// The OpenAI `tools` array to send, or `None` when there is none to send.
fn tools(request: &ChatRequest) -> Result<Option<Value>, AdapterError> {
    let Some(text) = &request.tools else {
        return Ok(None);
    };
    let tools = parse_json_array("tools", text)?;
    // Ollama has no tool_choice. "none" is honoured by sending no tools; "auto", "required" and
    // a named function are best effort: the model gets the tools and decides for itself.
    if let Some(choice) = &request.tool_choice
        && parse_json("tool_choice", choice)? == "none"
    {
        return Ok(None);
    }
    Ok(Some(Value::Array(tools)))
}

/// Parses a complete `/api/chat` response of any status.
pub fn chat_answer(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    let mut body = json_body(response)?;
    let message = body
        .get_mut("message")
        .filter(|message| message.is_object())
        .ok_or_else(|| malformed("response has no \"message\" object"))?;
    let content = take_text(&mut message["content"], "message.content")?;
    let message = &body["message"];
    let tool_calls = tool_calls_to_openai(&message["tool_calls"], false)?;
    Ok(chat_response(
        &body,
        content,
        &message["thinking"],
        tool_calls,
    ))
}

/// Parses one NDJSON line of a streamed `/api/chat` response.
pub fn chat_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    let Some(line) = stream_line(event)? else {
        return Ok(None);
    };
    let message = &line["message"];
    let tool_calls = tool_calls_to_openai(&message["tool_calls"], true)?;
    let chunk = StreamChunk {
        tool_calls: tool_calls.map(|calls| calls.to_string()),
        ..stream_chunk(&line, &message["content"], &message["thinking"])
    };
    Ok(carries_something(&chunk).then_some(chunk))
}

/// The JSON body of a 2xx response, or the error the response stands for; Ollama reports some
/// failures as an error object with a 2xx status.
pub fn json_body(response: &HttpResponse) -> Result<Value, AdapterError> {
    let body = checked_json_body(response, ErrorShape::OpenAi)?;
    if let Some(message) = ErrorShape::OpenAi.message(&body) {
        let code = error_code(response.status, &body, &message);
        return Err(upstream_with_code(response.status, message, code));
    }
    Ok(body)
}

/// Token counts of an answer or a stream's last line. Ollama counts thinking in `eval_count`
/// without saying how much of it was thinking.
fn usage(body: &Value) -> Usage {
    Usage {
        input_tokens: token_count(&body["prompt_eval_count"]),
        output_tokens: token_count(&body["eval_count"]),
        reasoning_tokens: None,
        cached_input_tokens: None,
    }
}

/// A complete answer: `content`, `reasoning` (unless empty) and `tool_calls` (in OpenAI's
/// shape) from where the endpoint puts them; model, stop reason and token counts from `body`.
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
        usage: usage(body),
        finish: answer_finish(done_reason.as_deref(), tool_calls.is_some()),
        done_reason,
        tool_calls: tool_calls.map(|calls| calls.to_string()),
    }
}

/// The JSON object of one NDJSON line of a stream; `None` for a blank line. An error line is an
/// upstream failure with status 0.
pub fn stream_line(event: &StreamEvent) -> Result<Option<Value>, AdapterError> {
    let line = event.data.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let body = json_object(line.as_bytes(), "stream line")?;
    if let Some(message) = ErrorShape::OpenAi.message(&body) {
        let code = error_code(0, &body, &message);
        return Err(upstream_with_code(0, message, code));
    }
    Ok(Some(body))
}

/// What a stream line carries: `content` and `reasoning` (unless empty) from where the endpoint
/// puts them; model, stop reason, token counts and `done` (Ollama's last line says it) from
/// `line`.
pub fn stream_chunk(line: &Value, content: &Value, reasoning: &Value) -> StreamChunk {
    let done_reason = line["done_reason"].as_str().map(str::to_owned);
    StreamChunk {
        content: non_empty(content),
        reasoning: non_empty(reasoning),
        tool_calls: None,
        model: line["model"].as_str().map(str::to_owned),
        finish: done_reason.as_deref().map(finish_reason),
        done_reason,
        usage: usage(line),
        done: line["done"].as_bool().unwrap_or(false),
    }
}

/// The `POST /api/embed` request for an embeddings request. `truncate` is left to Ollama
/// (which cuts inputs to the context window unless told `"truncate": false`, passthrough).
pub fn embed_request(request: &EmbeddingsRequest) -> Result<HttpRequest, AdapterError> {
    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    body.insert("input".into(), request.inputs.clone().into());
    if let Some(dimensions) = request.dimensions {
        body.insert("dimensions".into(), dimensions.into());
    }
    merge_extra(
        &mut body,
        request.extra.as_deref(),
        OWNED_FIELDS,
        &["options"],
    )?;
    Ok(post("/api/embed", false, body))
}

/// Parses a `/api/embed` response of any status.
pub fn embed_response(response: &HttpResponse) -> Result<EmbeddingsResponse, AdapterError> {
    let body = json_body(response)?;
    let vectors = body["embeddings"]
        .as_array()
        .ok_or_else(|| malformed("response has no \"embeddings\" array"))?;
    let embeddings = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| vector_f32(&format!("embeddings[{index}]"), vector))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EmbeddingsResponse {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        embeddings,
        input_tokens: token_count(&body["prompt_eval_count"]),
    })
}

/// A JSON array of numbers as an embedding vector (`field` names it in errors).
pub fn vector_f32(field: &str, vector: &Value) -> Result<Vec<f32>, AdapterError> {
    vector
        .as_array()
        .ok_or_else(|| malformed(format!("{field} is not an array")))?
        .iter()
        .map(|number| {
            number
                .as_f64()
                .map(|number| number as f32)
                .ok_or_else(|| malformed(format!("{field} holds a value that is not a number")))
        })
        .collect()
}

/// The `GET /api/tags` request that lists the models (one page: Ollama does not paginate).
pub fn tags_request() -> HttpRequest {
    get_json("/api/tags", &[])
}

/// The models of a `/api/tags` response of any status.
pub fn tags(response: &HttpResponse) -> Result<ModelPage, AdapterError> {
    let body = json_body(response)?;
    let models = body["models"]
        .as_array()
        .ok_or_else(|| malformed("response has no \"models\" array"))?;
    let models = models
        .iter()
        .enumerate()
        .map(|(index, model)| {
            model["name"]
                .as_str()
                .or_else(|| model["model"].as_str())
                .map(|name| ModelInfo {
                    id: name.to_owned(),
                    owned_by: None,
                    created: None,
                    // /api/tags does not say; /api/show would, one request per model.
                    context_length: None,
                })
                .ok_or_else(|| malformed(format!("models[{index}] has no name")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ModelPage {
        models,
        next_cursor: None,
    })
}

/// Converts an OpenAI `tool_calls` array (JSON text of request field `field`) to Ollama's
/// shape, where arguments are JSON objects.
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
        image_part, inline_image, invalid_request, malformed_response, message, response,
        stream_event, text_part, upstream_failure,
    };
    use crate::types::FinishReason;
    use serde_json::json;

    fn request() -> ChatRequest {
        crate::testing::chat_request("m")
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
        request.response_format = ResponseFormat::JsonObject;
        request.max_tokens = Some(8);
        request.temperature = Some(0.5);
        request.top_p = Some(1.0);
        request.top_k = Some(40);
        request.seed = Some(-3);
        request.repeat_penalty = Some(1.1);
        request.presence_penalty = Some(0.25);
        request.frequency_penalty = Some(0.5);
        request.stop = vec!["x".into()];
        let body = request_body(&request, "messages", json!([])).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "model": "m", "messages": [], "stream": true, "think": true, "format": "json",
                "options": {
                    "temperature": 0.5, "top_p": 1.0, "num_predict": 8, "stop": ["x"],
                    "top_k": 40, "seed": -3, "repeat_penalty": 1.1,
                    "presence_penalty": 0.25, "frequency_penalty": 0.5,
                },
            })
        );
        request.top_p = Some(f64::NAN);
        assert_eq!(
            invalid_request(request_body(&request, "prompt", Value::Null)),
            "top_p must be a finite number"
        );
    }

    #[test]
    fn think_carries_the_effort_level() {
        let think = |think, effort: Option<&str>| {
            let mut request = request();
            request.think = think;
            request.reasoning_effort = effort.map(str::to_owned);
            request_body(&request, "prompt", Value::Null).map(|body| body["think"].clone())
        };
        assert_eq!(think(None, None).unwrap(), json!(false));
        assert_eq!(think(Some(true), None).unwrap(), json!(true));
        assert_eq!(think(Some(true), Some("high")).unwrap(), json!("high"));
        assert_eq!(think(Some(true), Some("medium")).unwrap(), json!("medium"));
        assert_eq!(think(Some(true), Some("minimal")).unwrap(), json!("low"));
        assert_eq!(think(Some(false), Some("high")).unwrap(), json!(false));
        assert_eq!(
            invalid_request(think(Some(true), Some("max"))),
            "reasoning_effort \"max\" is not one of \"minimal\", \"low\", \"medium\", \"high\""
        );
    }

    #[test]
    fn a_schema_is_the_format_and_extra_merges_into_options() {
        let mut request = request();
        request.temperature = Some(0.5);
        request.response_format = ResponseFormat::JsonSchema(crate::types::JsonSchema {
            name: "r".into(),
            schema: r#"{"type":"object"}"#.into(),
            strict: false,
        });
        request.extra = Some(r#"{"keep_alive":"10m","options":{"num_ctx":8192}}"#.into());
        let body = request_body(&request, "prompt", Value::Null).unwrap();
        assert_eq!(body["format"], json!({"type": "object"}));
        assert_eq!(body["keep_alive"], "10m");
        assert_eq!(
            body["options"],
            json!({"temperature": 0.5, "num_ctx": 8192})
        );
        for field in ["stream", "model", "messages", "prompt"] {
            request.extra = Some(format!(r#"{{"{field}":1}}"#));
            assert_eq!(
                invalid_request(request_body(&request, "prompt", Value::Null)),
                format!("extra.{field} cannot be set: the adapter builds it")
            );
        }
        request.extra = None;
        request.response_format = ResponseFormat::JsonSchema(crate::types::JsonSchema {
            name: "r".into(),
            schema: "[1]".into(),
            strict: false,
        });
        assert_eq!(
            invalid_request(request_body(&request, "prompt", Value::Null)),
            "response_format.json_schema.schema must be a JSON object"
        );
    }

    #[test]
    fn chat_messages_carry_images_reasoning_and_tool_names() {
        let mut user = message("user", "look");
        user.content
            .push(image_part(inline_image("image/png", "AAAA")));
        user.content.push(text_part("closely"));
        let mut assistant = message("assistant", "a cat");
        assistant.reasoning = Some("whiskers".into());
        let mut tool = message("tool", "42");
        tool.name = Some("f".into());
        let mut request = request();
        request.messages = vec![user, assistant, tool];
        let body = crate::testing::body_json(&chat_request(&request).unwrap());
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "look\nclosely", "images": ["AAAA"]},
                {"role": "assistant", "content": "a cat", "thinking": "whiskers"},
                {"role": "tool", "content": "42", "tool_name": "f"},
            ])
        );
        let mut user = message("user", "look");
        user.content
            .push(image_part(ImageSource::Url("https://x/y.png".into())));
        request.messages = vec![user];
        assert_eq!(
            invalid_request(chat_request(&request)),
            "messages[0].content[1]: Ollama takes images inline only, not by URL"
        );
    }

    #[test]
    fn embeddings() {
        let mut request = crate::testing::embeddings_request("e", &["a", "b"]);
        request.dimensions = Some(64);
        request.extra = Some(r#"{"truncate":false}"#.into());
        let built = embed_request(&request).unwrap();
        assert_eq!(built.path, "/api/embed");
        assert_eq!(
            crate::testing::body_json(&built),
            json!({"model": "e", "input": ["a", "b"], "dimensions": 64, "truncate": false})
        );
        let parsed = embed_response(&response(
            200,
            r#"{"model":"e","embeddings":[[0.5,-1],[0.25,2]],"prompt_eval_count":7}"#,
        ))
        .unwrap();
        assert_eq!(parsed.embeddings, vec![vec![0.5, -1.0], vec![0.25, 2.0]]);
        assert_eq!((parsed.model.as_str(), parsed.input_tokens), ("e", Some(7)));
        assert_eq!(
            malformed_response(embed_response(&response(
                200,
                r#"{"embeddings":[[1,"x"]]}"#
            ))),
            "embeddings[0] holds a value that is not a number"
        );
        let failure = upstream_failure(embed_response(&response(
            400,
            r#"{"error":"the input length exceeds the context length"}"#,
        )));
        assert_eq!(failure.code.as_deref(), Some("context_length_exceeded"));
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
            (chunk.usage.input_tokens, chunk.usage.output_tokens),
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
        let page = tags(&response(200, r#"{"models":[{"name":"a"},{"model":"b"}]}"#)).unwrap();
        let names: Vec<_> = page.models.iter().map(|model| model.id.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(page.next_cursor, None);
        for (body, expected) in [
            ("{}", "response has no \"models\" array"),
            (r#"{"models":[{}]}"#, "models[0] has no name"),
        ] {
            assert_eq!(malformed_response(tags(&response(200, body))), expected);
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
