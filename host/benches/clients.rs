//! Microbenchmarks of what client keys add to a request: finding the client by its key, and
//! admitting a routed request against four in-process limits (the check, the usage counters,
//! and the token debit when the meter is dropped).
//!
//! Run with `cargo bench -p chatd --bench clients`.

use std::sync::Arc;

use chatd::clients::{Caller, ClientTable, Service, admit, keys, scope};
use chatd::config::Config;
use chatd::routing::{Route, Rule};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const KEY: &str = "chatd_bebebebebebebebebebebebebebebebebebebebebebebebebebebebebebebe";

fn config() -> Arc<Config> {
    let mut text = String::from(
        "[chatd]\n[chatd.providers.openrouter]\nadapter = \"openai_compat\"\n[chatd.clients]\nenabled = true\n",
    );
    // Ten clients, the benchmarked one last.
    for i in 0..10 {
        let key = if i == 9 {
            KEY.to_owned()
        } else {
            format!("chatd_other{i}")
        };
        text.push_str(&format!(
            "[chatd.clients.keys.c{i}]\nsha256 = \"{}\"\nmodels = [\"fast\", \"openrouter/*\"]\n\
             requests_per_minute = 100000000\ntokens_per_minute = 100000000000\n\
             tokens_per_day = 100000000000000\ntokens_per_month = 100000000000000\n",
            keys::hex(&keys::digest(key.as_bytes()))
        ));
    }
    Arc::new(Config::parse(&text, std::path::Path::new("/bench/lakehouse.toml")).unwrap())
}

#[divan::bench]
fn authenticate(bencher: Bencher) {
    let table = ClientTable::build(&config());
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    bencher.bench_local(|| black_box(table.authenticate(black_box(&headers)).unwrap()));
}

#[divan::bench]
fn admit_with_four_limits(bencher: Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = config();
    let service = Arc::new(Service::new(&config.chatd.limits).unwrap());
    let client = ClientTable::build(&config).clients["c9"].clone();
    let route = Route {
        provider: "openrouter".into(),
        model: "mock/m".into(),
        rule: Rule::Prefix,
        tier: None,
    };
    bencher.bench_local(|| {
        rt.block_on(async {
            let caller = Arc::new(Caller::new(client.clone(), service.clone()));
            scope(caller, async {
                let mut meter = admit(&config, "openrouter/mock/m", &route)
                    .await
                    .unwrap()
                    .unwrap();
                meter.tokens(Some(12), Some(4));
                drop(black_box(meter));
            })
            .await
        })
    });
}
