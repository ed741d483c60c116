//! What bounding adapter CPU costs: the same adapter work with no interruption, with epoch
//! interruption (chatd's choice) and with fuel metering. Run with
//! `cargo bench -p chatd --bench interruption`.
//!
//! Uses synchronous calls on one reused instance so that only the guest's own instrumented
//! code differs between the variants.

use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit/0.2.0", world: "plugin" });
}
use bindings::lakehouse::provider::types as t;

#[derive(Debug, Clone, Copy)]
enum Bound {
    None,
    Epoch,
    Fuel,
}

struct Setup {
    store: wasmtime::Store<()>,
    plugin: bindings::Plugin,
    small: t::HttpResponse,
    large: t::HttpResponse,
    request: t::ChatRequest,
}

fn setup(bound: Bound) -> Setup {
    let mut cfg = wasmtime::Config::new();
    match bound {
        Bound::None => {}
        Bound::Epoch => {
            cfg.epoch_interruption(true);
        }
        Bound::Fuel => {
            cfg.consume_fuel(true);
        }
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
    let mut store = wasmtime::Store::new(&engine, ());
    match bound {
        Bound::None => {}
        Bound::Epoch => store.set_epoch_deadline(u64::MAX / 2),
        Bound::Fuel => store.set_fuel(u64::MAX / 2).unwrap(),
    }
    let plugin = bindings::Plugin::instantiate(&mut store, &component, &linker).unwrap();
    let answer = |n: usize| {
        let text = "A mutex admits one holder; a semaphore admits up to N. ".repeat(n);
        let body = serde_json::json!({"id": "x", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 400, "completion_tokens": 300}});
        t::HttpResponse {
            status: 200,
            headers: vec![],
            body: serde_json::to_vec(&body).unwrap(),
        }
    };
    let turn = "Explain the difference between a mutex and a semaphore, briefly. ".repeat(6);
    let request = t::ChatRequest {
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
    Setup {
        store,
        plugin,
        small: answer(32),
        large: answer(1024),
        request,
    }
}

const BOUNDS: [Bound; 3] = [Bound::None, Bound::Epoch, Bound::Fuel];

/// build-request + parse-response of ~2 KB each: what a request costs in guest code.
#[divan::bench(args = BOUNDS)]
fn build_and_parse_2kb(bencher: Bencher, bound: Bound) {
    let mut s = setup(bound);
    bencher.bench_local(|| {
        let a = s.plugin.lakehouse_provider_adapter();
        black_box(
            a.call_build_request(&mut s.store, &s.request)
                .unwrap()
                .unwrap(),
        );
        black_box(
            a.call_parse_response(&mut s.store, &s.small)
                .unwrap()
                .unwrap(),
        )
    });
}

/// parse-response of ~56 KB: a guest-CPU-heavy call, where instrumentation shows most.
#[divan::bench(args = BOUNDS)]
fn parse_56kb(bencher: Bencher, bound: Bound) {
    let mut s = setup(bound);
    bencher.bench_local(|| {
        let a = s.plugin.lakehouse_provider_adapter();
        black_box(
            a.call_parse_response(&mut s.store, &s.large)
                .unwrap()
                .unwrap(),
        )
    });
}
