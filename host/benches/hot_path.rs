//! Microbenchmarks of the per-request hot path: routing, one adapter call per built-in
//! adapter (fresh instance + build-request + parse-response, ~2 KB each way), stream-event
//! parsing, header/key preparation and the API's JSON (de)serialisation.
//!
//! Run with `cargo bench -p chatd --bench hot_path`.

use std::collections::{BTreeMap, BTreeSet};

use chatd::contract::StreamEvent;
use chatd::routing::{RouteTable, resolve};
use chatd::runtime::library::AdapterSet;
use chatd::runtime::{Runtime, RuntimeConfig};
use chatd::upstream::Framer;
use divan::{Bencher, black_box};

mod common;
use common::{request, response};

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
        tiers: BTreeMap::from([("fast".to_string(), vec!["ollama/qwen3:8b".to_string()])]),
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
        let mut f = Framer::new(chatd::contract::StreamFraming::Sse);
        f.feed(black_box(&body)).unwrap();
        let mut n = 0;
        while f.next_event().is_some() {
            n += 1;
        }
        n
    });
}

/// The headers of one upstream request, merged the way every request's are: the prepared key
/// and operator headers, then what the adapter asked for, then the default `User-Agent`.
#[divan::bench]
fn auth_header_injection(bencher: Bencher) {
    let mut prepared = http::HeaderMap::new();
    let mut auth =
        http::HeaderValue::from_static("Bearer sk-or-v1-0123456789abcdef0123456789abcdef");
    auth.set_sensitive(true);
    prepared.insert(http::header::AUTHORIZATION, auth);
    prepared.insert("x-title", http::HeaderValue::from_static("lakehouse"));
    let target = chatd::upstream::Target {
        base: url::Url::parse("https://openrouter.ai/api/v1").unwrap(),
        timeout: std::time::Duration::from_secs(60),
        headers: prepared,
        reserved: vec![http::header::AUTHORIZATION],
    };
    let from_adapter: Vec<(String, String)> = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    bencher
        .with_inputs(|| from_adapter.clone())
        .bench_local_values(|headers| black_box(&target).request_headers(headers).unwrap());
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
            serde_json::from_slice::<chatd::api::formats::openai::CompletionsRequest>(black_box(
                &body,
            ))
            .unwrap(),
        )
    });
}

/// Design evidence, kept to be re-run: the `adapter_call` work through synchronous wasmtime
/// calls on a bare store, with and without the epoch instrumentation chatd needs. It measured
/// no faster than chatd's async path (45-57 vs 32 us), so chatd calls adapters asynchronously.
#[divan::bench(args = [false, true])]
fn sync_adapter_call_experiment(bencher: Bencher, with_async_engine_config: bool) {
    use chatd::contract::v0_3::PluginPre;
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.linear_memory_keep_resident(4 << 20)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut cfg = wasmtime::Config::new();
    cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    if with_async_engine_config {
        cfg.epoch_interruption(true);
    }
    let engine = wasmtime::Engine::new(&cfg).unwrap();
    let (component, linker) = common::openai_compat(&engine);
    let pre = PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let req = request("m");
    let resp = response("openai_compat");
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
