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

mod common;

use chatd::contract::v0_3::Plugin;
use chatd::contract::{ChatRequest, HttpResponse};

#[derive(Debug, Clone, Copy)]
enum Bound {
    None,
    Epoch,
    Fuel,
}

struct Setup {
    store: wasmtime::Store<()>,
    plugin: Plugin,
    small: HttpResponse,
    large: HttpResponse,
    request: ChatRequest,
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
    let (component, linker) = common::openai_compat(&engine);
    let mut store = wasmtime::Store::new(&engine, ());
    match bound {
        Bound::None => {}
        Bound::Epoch => store.set_epoch_deadline(u64::MAX / 2),
        Bound::Fuel => store.set_fuel(u64::MAX / 2).unwrap(),
    }
    let plugin = Plugin::instantiate(&mut store, &component, &linker).unwrap();
    Setup {
        store,
        plugin,
        small: common::openai_answer(32),
        large: common::openai_answer(1024),
        request: common::request("m"),
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
