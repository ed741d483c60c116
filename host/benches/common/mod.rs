//! Inputs shared by the benchmarks: a ~2 KB chat request, upstream answers in each adapter's
//! dialect, and the built-in openai_compat component for the benches that call it directly.

#![allow(dead_code)] // each bench binary uses part of it

use chatd::contract::{ChatRequest, ContentPart, HttpResponse, Message, ResponseFormat};

/// A request of about 2 KB: a system prompt and a few turns.
pub fn request(model: &str) -> ChatRequest {
    let turn = "Explain the difference between a mutex and a semaphore, briefly. ".repeat(6);
    ChatRequest {
        model: model.into(),
        messages: (0..5)
            .map(|i| Message {
                role: if i == 0 {
                    "system"
                } else if i % 2 == 1 {
                    "user"
                } else {
                    "assistant"
                }
                .into(),
                content: vec![ContentPart::Text(turn.clone())],
                tool_calls: None,
                tool_call_id: None,
                name: None,
                reasoning: None,
            })
            .collect(),
        max_tokens: Some(256),
        temperature: Some(0.2),
        top_p: None,
        top_k: None,
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        repeat_penalty: None,
        stop: vec![],
        response_format: ResponseFormat::Text,
        think: None,
        reasoning_effort: None,
        stream: false,
        tools: None,
        tool_choice: None,
        extra: None,
    }
}

/// An upstream answer of about 2 KB in the adapter's dialect.
pub fn response(adapter: &str) -> HttpResponse {
    let text = answer_text(32);
    let body = match adapter {
        "ollama" => {
            serde_json::json!({"model": "m", "message": {"role": "assistant", "content": text}, "done": true, "done_reason": "stop", "prompt_eval_count": 400, "eval_count": 300})
        }
        "ollama_cloud" => {
            serde_json::json!({"model": "m", "response": text, "done": true, "done_reason": "stop", "prompt_eval_count": 400, "eval_count": 300})
        }
        _ => return openai_answer(32),
    };
    json_response(&body)
}

/// An OpenAI Chat Completions answer whose content is `repeats` sentences (~56 bytes each).
pub fn openai_answer(repeats: usize) -> HttpResponse {
    let text = answer_text(repeats);
    json_response(
        &serde_json::json!({"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 400, "completion_tokens": 300}}),
    )
}

fn answer_text(repeats: usize) -> String {
    "A mutex admits one holder; a semaphore admits up to N. ".repeat(repeats)
}

fn json_response(body: &serde_json::Value) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(body).unwrap(),
    }
}

/// The built-in openai_compat adapter compiled for `engine`, with a linker that traps on
/// any WASI call (the calls benchmarked make none), for synchronous calls without chatd's
/// runtime around them.
pub fn openai_compat(
    engine: &wasmtime::Engine,
) -> (
    wasmtime::component::Component,
    wasmtime::component::Linker<()>,
) {
    let bytes = chatd::runtime::library::BUILTIN
        .iter()
        .find(|(n, _)| *n == "openai_compat")
        .unwrap()
        .1;
    let component = wasmtime::component::Component::new(engine, bytes).unwrap();
    let mut linker = wasmtime::component::Linker::<()>::new(engine);
    linker.define_unknown_imports_as_traps(&component).unwrap();
    (component, linker)
}
