//! `lakehouse:provider@0.2.0` (and 0.1.0, the same types without `models`): its generated
//! types and their conversions from and to the host's (0.3.0).
//!
//! A request goes down to what 0.2.0 carries: text (parts joined with "\n"), a JSON mode,
//! reasoning on/off, tools. What it cannot carry is refused by name ([`Refusal`]), never
//! dropped; the host's capability check normally refuses it first (0.2.0 adapters are
//! treated as declaring [`Capabilities::IMPLIED_V0_2`](super::Capabilities)). The one thing
//! dropped is the reasoning a client sends back with an assistant turn: it is context an
//! upstream may use, not a setting of the answer, and 0.2.0 has no place for it. Answers come
//! up unchanged but for their shape (token counts into a `usage` record, no error codes).

wasmtime::component::bindgen!({
    path: "../wit/0.2.0",
    world: "plugin",
});

pub use exports::lakehouse::provider::models::ModelInfo;
pub use lakehouse::provider::types::{
    AdapterError, AdapterInfo, ChatRequest, ChatResponse, Message, StreamChunk,
};

use super::Capabilities;
use lakehouse::provider::types as old;

/// What a 0.2.0 request cannot carry, named as the client knows it ("images", "seed", ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub feature: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cannot be carried: the adapter is built against contract 0.2.0 or older, \
             which carries text, tools, a JSON mode and reasoning on/off only",
            self.feature
        )
    }
}

fn refuse<T>(feature: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        feature: feature.into(),
    })
}

/// The request as a 0.2.0 adapter takes it.
pub fn request(r: &super::ChatRequest) -> Result<ChatRequest, Refusal> {
    let checks = [
        (r.seed.is_some(), "seed"),
        (r.top_k.is_some(), "top_k"),
        (r.presence_penalty.is_some(), "presence_penalty"),
        (r.frequency_penalty.is_some(), "frequency_penalty"),
        (r.repeat_penalty.is_some(), "repeat_penalty"),
        (r.extra.is_some(), "extra request fields (passthrough)"),
    ];
    if let Some((_, feature)) = checks.iter().find(|(set, _)| *set) {
        return refuse(*feature);
    }
    let json_mode = match r.response_format {
        super::ResponseFormat::Text => false,
        super::ResponseFormat::JsonObject => true,
        super::ResponseFormat::JsonSchema(_) => return refuse("a JSON schema response format"),
    };
    let messages = r
        .messages
        .iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChatRequest {
        model: r.model.clone(),
        messages,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        stop: r.stop.clone(),
        json_mode,
        // An effort level is reasoning on, for an upstream that has no levels.
        think: r.think.or(r.reasoning_effort.as_ref().map(|_| true)),
        stream: r.stream,
        tools: r.tools.clone(),
        tool_choice: r.tool_choice.clone(),
    })
}

fn message(m: &super::Message) -> Result<Message, Refusal> {
    let mut content = String::new();
    let mut first = true;
    for part in &m.content {
        match part {
            super::ContentPart::Text(text) => {
                if !first {
                    content.push('\n');
                }
                content.push_str(text);
                first = false;
            }
            super::ContentPart::Image(_) => return refuse("images"),
            super::ContentPart::Other((kind, _)) => {
                return refuse(format!("content parts of type {kind:?}"));
            }
        }
    }
    Ok(Message {
        role: m.role.clone(),
        content,
        tool_calls: m.tool_calls.clone(),
        tool_call_id: m.tool_call_id.clone(),
        name: m.name.clone(),
    })
}

impl From<AdapterInfo> for super::AdapterInfo {
    fn from(info: AdapterInfo) -> Self {
        super::AdapterInfo {
            name: info.name,
            version: info.version,
            auth: match info.auth {
                old::AuthScheme::None => super::AuthScheme::None,
                old::AuthScheme::Bearer => super::AuthScheme::Bearer,
                old::AuthScheme::Header(h) => super::AuthScheme::Header(h),
            },
            default_base_url: info.default_base_url,
            supports_streaming: info.supports_streaming,
            stream_framing: match info.stream_framing {
                old::StreamFraming::Ndjson => super::StreamFraming::Ndjson,
                old::StreamFraming::Sse => super::StreamFraming::Sse,
            },
            capabilities: Capabilities::IMPLIED_V0_2
                .names()
                .map(str::to_owned)
                .collect(),
        }
    }
}

fn usage(input_tokens: Option<u32>, output_tokens: Option<u32>) -> super::Usage {
    super::Usage {
        input_tokens,
        output_tokens,
        ..super::Usage::NONE
    }
}

fn finish(f: old::FinishReason) -> super::FinishReason {
    match f {
        old::FinishReason::Stop => super::FinishReason::Stop,
        old::FinishReason::Length => super::FinishReason::Length,
        old::FinishReason::ToolCalls => super::FinishReason::ToolCalls,
        old::FinishReason::ContentFilter => super::FinishReason::ContentFilter,
        old::FinishReason::Other => super::FinishReason::Other,
    }
}

impl From<ChatResponse> for super::ChatResponse {
    fn from(r: ChatResponse) -> Self {
        super::ChatResponse {
            content: r.content,
            reasoning: r.reasoning,
            model: r.model,
            usage: usage(r.input_tokens, r.output_tokens),
            done_reason: r.done_reason,
            finish: r.finish.map(finish),
            tool_calls: r.tool_calls,
        }
    }
}

impl From<StreamChunk> for super::StreamChunk {
    fn from(c: StreamChunk) -> Self {
        super::StreamChunk {
            content: c.content,
            reasoning: c.reasoning,
            tool_calls: c.tool_calls,
            model: c.model,
            done_reason: c.done_reason,
            finish: c.finish.map(finish),
            usage: usage(c.input_tokens, c.output_tokens),
            done: c.done,
        }
    }
}

impl From<AdapterError> for super::AdapterError {
    fn from(e: AdapterError) -> Self {
        match e {
            AdapterError::InvalidRequest(m) => super::AdapterError::InvalidRequest(m),
            AdapterError::RateLimited(r) => super::AdapterError::RateLimited(super::RateLimit {
                message: r.message,
                retry_after_secs: r.retry_after_secs,
            }),
            AdapterError::Upstream(u) => super::AdapterError::Upstream(super::UpstreamFailure {
                status: u.status,
                message: u.message,
                code: None,
            }),
            AdapterError::MalformedResponse(m) => super::AdapterError::MalformedResponse(m),
        }
    }
}

impl From<ModelInfo> for super::ModelInfo {
    fn from(m: ModelInfo) -> Self {
        super::ModelInfo {
            id: m.id,
            owned_by: m.owned_by,
            created: m.created,
            context_length: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{
        ContentPart, Image, ImageSource, InlineImage, JsonSchema, ResponseFormat,
    };

    fn request_v0_3() -> crate::contract::ChatRequest {
        crate::contract::ChatRequest {
            model: "m".into(),
            messages: vec![crate::contract::Message {
                role: "user".into(),
                content: vec![ContentPart::Text("a".into()), ContentPart::Text("b".into())],
                tool_calls: None,
                tool_call_id: None,
                name: None,
                reasoning: Some("thought".into()),
            }],
            max_tokens: Some(7),
            temperature: Some(0.1),
            top_p: Some(0.9),
            top_k: None,
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            repeat_penalty: None,
            stop: vec!["END".into()],
            response_format: ResponseFormat::JsonObject,
            think: None,
            reasoning_effort: Some("low".into()),
            stream: true,
            tools: Some("[]".into()),
            tool_choice: None,
            extra: None,
        }
    }

    #[test]
    fn text_parts_are_joined_and_the_rest_carried_over() {
        let old = request(&request_v0_3()).unwrap();
        assert_eq!(old.messages[0].content, "a\nb");
        assert!(old.json_mode && old.stream);
        assert_eq!(old.think, Some(true), "an effort level is reasoning on");
        assert_eq!(
            (old.max_tokens, old.top_p, old.stop.as_slice()),
            (Some(7), Some(0.9), ["END".to_string()].as_slice())
        );
    }

    #[test]
    fn what_0_2_cannot_carry_is_refused_by_name() {
        let refused = |f: fn(&mut crate::contract::ChatRequest)| {
            let mut r = request_v0_3();
            f(&mut r);
            request(&r).unwrap_err().feature
        };
        assert_eq!(
            refused(|r| r.messages[0].content.push(ContentPart::Image(Image {
                source: ImageSource::Inline(InlineImage {
                    media_type: "image/png".into(),
                    base64: "AAAA".into()
                }),
                detail: None
            }))),
            "images"
        );
        assert_eq!(
            refused(|r| r.messages[0]
                .content
                .push(ContentPart::Other(("input_audio".into(), "{}".into())))),
            "content parts of type \"input_audio\""
        );
        assert_eq!(refused(|r| r.seed = Some(1)), "seed");
        assert_eq!(refused(|r| r.top_k = Some(1)), "top_k");
        assert_eq!(refused(|r| r.repeat_penalty = Some(1.1)), "repeat_penalty");
        assert!(refused(|r| r.extra = Some("{}".into())).contains("passthrough"));
        assert!(
            refused(
                |r| r.response_format = ResponseFormat::JsonSchema(JsonSchema {
                    name: "x".into(),
                    schema: "{}".into(),
                    strict: false
                })
            )
            .contains("JSON schema")
        );
    }
}
