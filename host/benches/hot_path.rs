//! Microbenchmarks of the per-request hot path: routing, one adapter call per built-in
//! adapter (fresh instance + build-request + parse-response, ~2 KB each way), stream-event
//! parsing, header/key preparation and the API's JSON (de)serialisation.
//!
//! Run with `cargo bench -p chatd --bench hot_path`.

use std::collections::{BTreeMap, BTreeSet};

use chatd::routing::{RouteTable, resolve};
use chatd::runtime::bindings::{ChatRequest, HttpResponse, Message, StreamEvent};
use chatd::runtime::library::AdapterSet;
use chatd::runtime::{Runtime, RuntimeConfig};
use chatd::upstream::Framer;
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    adapters: AdapterSet,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let adapters = rt.block_on(async {
            let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
            AdapterSet::load(&runtime, None, &AdapterSet::default()).await
        });
        Fixture { rt, adapters }
    })
}

/// A request of about 2 KB: a system prompt and a few turns.
fn request(model: &str) -> ChatRequest {
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
                content: turn.clone(),
                tool_calls: None,
                tool_call_id: None,
                name: None,
            })
            .collect(),
        max_tokens: Some(256),
        temperature: Some(0.2),
        top_p: None,
        stop: vec![],
        json_mode: false,
        think: None,
        stream: false,
        tools: None,
        tool_choice: None,
    }
}

/// An upstream answer of about 2 KB in the adapter's dialect.
fn response(adapter: &str) -> HttpResponse {
    let text = "A mutex admits one holder; a semaphore admits up to N. ".repeat(32);
    let body = match adapter {
        "ollama" => {
            serde_json::json!({"model": "m", "message": {"role": "assistant", "content": text}, "done": true, "done_reason": "stop", "prompt_eval_count": 400, "eval_count": 300})
        }
        "ollama_cloud" => {
            serde_json::json!({"model": "m", "response": text, "done": true, "done_reason": "stop", "prompt_eval_count": 400, "eval_count": 300})
        }
        _ => {
            serde_json::json!({"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 400, "completion_tokens": 300}})
        }
    };
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&body).unwrap(),
    }
}

#[divan::bench(args = ["ollama", "ollama_cloud", "openai_compat"])]
fn adapter_call(bencher: Bencher, adapter: &str) {
    let f = fixture();
    let a = f.adapters.get(adapter).unwrap().clone();
    let req = request("m");
    let resp = response(adapter);
    bencher.bench_local(|| {
        f.rt.block_on(async {
            let mut inst = a.instance().await.unwrap();
            let http = inst.build_request(black_box(&req)).await.unwrap().unwrap();
            black_box(http);
            black_box(
                inst.parse_response(black_box(&resp))
                    .await
                    .unwrap()
                    .unwrap(),
            )
        })
    });
}

// The parts of `adapter_call`, to see where its time goes.

/// A fresh instance, dropped outside the timing.
#[divan::bench(args = ["ollama", "openai_compat"])]
fn adapter_instantiate_only(bencher: Bencher, adapter: &str) {
    let f = fixture();
    let a = f.adapters.get(adapter).unwrap().clone();
    bencher.bench_local(|| {
        f.rt.block_on(async { black_box(a.instance().await.unwrap()) })
    });
}

/// A fresh instance and its drop (returning its memory to the pool).
#[divan::bench(args = ["ollama", "openai_compat"])]
fn adapter_instantiate_and_drop(bencher: Bencher, adapter: &str) {
    let f = fixture();
    let a = f.adapters.get(adapter).unwrap().clone();
    bencher.bench_local(|| {
        f.rt.block_on(async { drop(black_box(a.instance().await.unwrap())) })
    });
}

/// `build-request` alone, on one reused instance.
#[divan::bench(args = ["ollama", "ollama_cloud", "openai_compat"])]
fn adapter_build_request_only(bencher: Bencher, adapter: &str) {
    let f = fixture();
    let a = f.adapters.get(adapter).unwrap().clone();
    let mut inst = f.rt.block_on(a.instance()).unwrap();
    let req = request("m");
    bencher.bench_local(|| {
        f.rt.block_on(async { black_box(inst.build_request(black_box(&req)).await.unwrap()) })
    });
}

/// `parse-response` alone, on one reused instance.
#[divan::bench(args = ["ollama", "ollama_cloud", "openai_compat"])]
fn adapter_parse_response_only(bencher: Bencher, adapter: &str) {
    let f = fixture();
    let a = f.adapters.get(adapter).unwrap().clone();
    let mut inst = f.rt.block_on(a.instance()).unwrap();
    let resp = response(adapter);
    bencher.bench_local(|| {
        f.rt.block_on(async { black_box(inst.parse_response(black_box(&resp)).await.unwrap()) })
    });
}

#[divan::bench(args = ["ollama", "openai_compat"])]
fn stream_event_parse(bencher: Bencher, adapter: &str) {
    let f = fixture();
    let a = f.adapters.get(adapter).unwrap().clone();
    let mut inst = f.rt.block_on(a.instance()).unwrap();
    let data = if adapter == "ollama" {
        r#"{"model":"m","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"tok "},"done":false}"#
    } else {
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}"#
    };
    let event = StreamEvent {
        event: None,
        data: data.into(),
    };
    bencher.bench_local(|| {
        f.rt.block_on(async {
            black_box(
                inst.parse_stream_event(black_box(&event))
                    .await
                    .unwrap()
                    .unwrap(),
            )
        })
    });
}

#[divan::bench]
fn route(bencher: Bencher) {
    let table = RouteTable {
        tiers: BTreeMap::from([("fast".to_string(), "ollama/qwen3:8b".to_string())]),
        configured: ["ollama", "ollama_cloud", "openrouter", "opencode", "kimi"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        registered: ["ollama", "ollama_cloud", "openrouter"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        default_provider: "ollama".into(),
    };
    bencher.bench(|| {
        black_box(resolve(&table, black_box("openrouter/anthropic/claude-x")).unwrap());
        black_box(resolve(&table, black_box("kimi-k2.6:cloud")).unwrap());
        black_box(resolve(&table, black_box("fast")).unwrap())
    });
}

#[divan::bench]
fn frame_sse_body(bencher: Bencher) {
    let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n";
    let body = bytes::Bytes::from(event.repeat(64));
    bencher.bench(|| {
        let mut f = Framer::new(chatd::runtime::bindings::StreamFraming::Sse);
        f.feed(black_box(&body)).unwrap();
        let mut n = 0;
        while f.next_event().is_some() {
            n += 1;
        }
        n
    });
}

#[divan::bench]
fn auth_header_injection(bencher: Bencher) {
    let mut prepared = http::HeaderMap::new();
    let mut auth =
        http::HeaderValue::from_static("Bearer sk-or-v1-0123456789abcdef0123456789abcdef");
    auth.set_sensitive(true);
    prepared.insert(http::header::AUTHORIZATION, auth);
    prepared.insert("x-title", http::HeaderValue::from_static("lakehouse"));
    let from_adapter = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    bencher.bench(|| {
        let mut headers = black_box(&prepared).clone();
        for (k, v) in from_adapter {
            headers.insert(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        headers
    });
}

#[divan::bench]
fn openai_request_json_parse(bencher: Bencher) {
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "openrouter/anthropic/claude-x",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Explain mutexes. ".repeat(50)}],
        "max_tokens": 256, "temperature": 0.2, "stream": false
    }))
    .unwrap();
    bencher.bench(|| {
        black_box(
            serde_json::from_slice::<chatd::api::openai::CompletionsRequest>(black_box(&body))
                .unwrap(),
        )
    });
}

mod sync_experiment {
    wasmtime::component::bindgen!({ path: "../wit/0.2.0", world: "plugin" });
}

#[divan::bench(args = [false, true])]
fn sync_adapter_call_experiment(bencher: Bencher, with_async_engine_config: bool) {
    use sync_experiment::lakehouse::provider::types as t;
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.linear_memory_keep_resident(4 << 20)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut cfg = wasmtime::Config::new();
    cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    if with_async_engine_config {
        cfg.epoch_interruption(true);
    }
    let engine = wasmtime::Engine::new(&cfg).unwrap();
    let bytes = chatd::runtime::library::BUILTIN
        .iter()
        .find(|(n, _)| *n == "openai_compat")
        .unwrap()
        .1;
    let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
    let mut linker = wasmtime::component::Linker::<()>::new(&engine);
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = sync_experiment::PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let turn = "Explain the difference between a mutex and a semaphore, briefly. ".repeat(6);
    let req = t::ChatRequest {
        model: "m".into(),
        messages: (0..5)
            .map(|_| t::Message {
                role: "user".into(),
                content: turn.clone(),
                tool_calls: None,
                tool_call_id: None,
                name: None,
            })
            .collect(),
        max_tokens: Some(256),
        temperature: Some(0.2),
        top_p: None,
        stop: vec![],
        json_mode: false,
        think: None,
        stream: false,
        tools: None,
        tool_choice: None,
    };
    let r = response("openai_compat");
    let resp = t::HttpResponse {
        status: r.status,
        headers: r.headers,
        body: r.body,
    };
    bencher.bench_local(|| {
        let mut store = wasmtime::Store::new(&engine, ());
        if with_async_engine_config {
            store.set_epoch_deadline(1_000_000);
        }
        let p = pre.instantiate(&mut store).unwrap();
        let a = p.lakehouse_provider_adapter();
        black_box(a.call_build_request(&mut store, &req).unwrap().unwrap());
        black_box(a.call_parse_response(&mut store, &resp).unwrap().unwrap())
    });
}
