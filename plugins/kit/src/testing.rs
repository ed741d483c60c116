//! Helpers for the adapters' unit tests (feature `testing`).

use crate::prelude::*;
use serde_json::Value;

use crate::types::{
    AdapterError, ChatRequest, HttpRequest, HttpResponse, Message, StreamEvent, UpstreamFailure,
};

/// A chat turn with only a role and content.
pub fn message(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
        tool_calls: None,
        tool_call_id: None,
        name: None,
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
        stop: Vec::new(),
        json_mode: false,
        think: None,
        stream: false,
        tools: None,
        tool_choice: None,
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

/// The upstream failure a result must be.
pub fn upstream_failure(result: Result<impl std::fmt::Debug, AdapterError>) -> UpstreamFailure {
    match result {
        Err(AdapterError::Upstream(failure)) => failure,
        other => panic!("expected an upstream failure, got {other:?}"),
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
