//! Helpers for the adapters' unit tests, and the conformance tests every adapter runs
//! (feature `testing`).

use crate::prelude::*;
use serde_json::Value;

use crate::types::{
    AdapterError, ChatRequest, ContentPart, EmbeddingsRequest, HttpRequest, HttpResponse, Image,
    ImageSource, InlineImage, Message, RateLimit, ResponseFormat, StreamEvent, UpstreamFailure,
};

/// A text content part.
pub fn text_part(text: &str) -> ContentPart {
    ContentPart::Text(text.into())
}

/// An image content part without `detail`.
pub fn image_part(source: ImageSource) -> ContentPart {
    ContentPart::Image(Image {
        source,
        detail: None,
    })
}

/// An inline image source.
pub fn inline_image(media_type: &str, base64: &str) -> ImageSource {
    ImageSource::Inline(InlineImage {
        media_type: media_type.into(),
        base64: base64.into(),
    })
}

/// A chat turn with only a role and one text part.
pub fn message(role: &str, text: &str) -> Message {
    Message {
        role: role.into(),
        content: vec![text_part(text)],
        tool_calls: None,
        tool_call_id: None,
        name: None,
        reasoning: None,
    }
}

/// A request for `model` holding one user turn, "hi", and nothing optional.
pub fn chat_request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![message("user", "hi")],
        max_tokens: None,
        temperature: None,
        top_p: None,
        top_k: None,
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        repeat_penalty: None,
        stop: Vec::new(),
        response_format: ResponseFormat::Text,
        think: None,
        reasoning_effort: None,
        stream: false,
        tools: None,
        tool_choice: None,
        extra: None,
    }
}

/// An embeddings request for `model` and `inputs`, nothing optional.
pub fn embeddings_request(model: &str, inputs: &[&str]) -> EmbeddingsRequest {
    EmbeddingsRequest {
        model: model.into(),
        inputs: inputs.iter().map(|input| (*input).to_owned()).collect(),
        dimensions: None,
        extra: None,
    }
}

/// An upstream response without headers.
pub fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

/// A stream event, with its SSE event name if any.
pub fn stream_event(event: Option<&str>, data: &str) -> StreamEvent {
    StreamEvent {
        event: event.map(str::to_owned),
        data: data.into(),
    }
}

/// The JSON body of a built request.
pub fn body_json(request: &HttpRequest) -> Value {
    serde_json::from_slice(&request.body).expect("body is JSON")
}

/// The value of a built request's header.
pub fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `build-request` as the component runs it: refused when the request needs a capability the
/// adapter does not declare, else the adapter's own.
pub fn exported_build_request<A: crate::Adapter>(
    adapter: &A,
    request: &ChatRequest,
) -> Result<HttpRequest, AdapterError> {
    crate::adapter::build_request(adapter, request)
}

/// The upstream failure a result must be.
pub fn upstream_failure(result: Result<impl std::fmt::Debug, AdapterError>) -> UpstreamFailure {
    match result {
        Err(AdapterError::Upstream(failure)) => failure,
        other => panic!("expected an upstream failure, got {other:?}"),
    }
}

/// The rate limit a result must be.
pub fn rate_limited(result: Result<impl std::fmt::Debug, AdapterError>) -> RateLimit {
    match result {
        Err(AdapterError::RateLimited(limit)) => limit,
        other => panic!("expected rate-limited, got {other:?}"),
    }
}

/// The message of the invalid request a result must be.
pub fn invalid_request(result: Result<impl std::fmt::Debug, AdapterError>) -> String {
    match result {
        Err(AdapterError::InvalidRequest(message)) => message,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

/// The message of the malformed response a result must be.
pub fn malformed_response(result: Result<impl std::fmt::Debug, AdapterError>) -> String {
    match result {
        Err(AdapterError::MalformedResponse(message)) => message,
        other => panic!("expected a malformed response, got {other:?}"),
    }
}

/// Every value in a JSON document, depth first (objects' values, arrays' items).
pub fn all_values(value: &Value) -> Vec<&Value> {
    let mut out = vec![value];
    match value {
        Value::Object(map) => map.values().for_each(|v| out.extend(all_values(v))),
        Value::Array(items) => items.iter().for_each(|v| out.extend(all_values(v))),
        _ => {}
    }
    out
}

/// Whether some string in `value` contains `needle`.
pub fn mentions(value: &Value, needle: &str) -> bool {
    all_values(value)
        .iter()
        .any(|value| value.as_str().is_some_and(|text| text.contains(needle)))
}

pub mod conformance;

/// Stamps out the conformance tests ([`conformance`]) for an adapter, as `#[test]`s in a
/// module `conformance`, with the adapter's fixtures (a [`conformance::Fixtures`]):
///
/// ```ignore
/// chatd_adapter_kit::conformance_tests!(Ollama, fixtures());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($adapter:ty, $fixtures:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::testing::conformance as check;

            fn fixtures() -> check::Fixtures {
                $fixtures
            }

            #[test]
            fn describe_is_sane() {
                check::describe_is_sane::<$adapter>(&fixtures());
            }
            #[test]
            fn settings_are_checked() {
                check::settings_are_checked::<$adapter>(&fixtures());
            }
            #[test]
            fn a_plain_request_builds() {
                check::a_plain_request_builds::<$adapter>(&fixtures());
            }
            #[test]
            fn statuses_map_to_errors() {
                check::statuses_map_to_errors::<$adapter>(&fixtures());
            }
            #[test]
            fn error_codes_are_read() {
                check::error_codes_are_read::<$adapter>(&fixtures());
            }
            #[test]
            fn long_error_text_reaches_the_host() {
                check::long_error_text_reaches_the_host::<$adapter>(&fixtures());
            }
            #[test]
            fn bad_2xx_bodies_are_malformed() {
                check::bad_2xx_bodies_are_malformed::<$adapter>(&fixtures());
            }
            #[test]
            fn the_stream_ends_where_the_upstream_does() {
                check::the_stream_ends_where_the_upstream_does::<$adapter>(&fixtures());
            }
            #[test]
            fn images_reach_the_body() {
                check::images_reach_the_body::<$adapter>(&fixtures());
            }
            #[test]
            fn json_schema_reaches_the_body_as_an_object() {
                check::json_schema_reaches_the_body_as_an_object::<$adapter>(&fixtures());
            }
            #[test]
            fn unknown_content_parts_are_refused_by_kind() {
                check::unknown_content_parts_are_refused_by_kind::<$adapter>(&fixtures());
            }
            #[test]
            fn capabilities_are_honest() {
                check::capabilities_are_honest::<$adapter>(&fixtures());
            }
            #[test]
            fn embeddings_round_trip() {
                check::embeddings_round_trip::<$adapter>(&fixtures());
            }
            #[test]
            fn models_listing_is_a_get() {
                check::models_listing_is_a_get::<$adapter>(&fixtures());
            }
        }
    };
}
