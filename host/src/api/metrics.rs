//! `GET /metrics`: chatd's counters in the OpenMetrics text format, which Prometheus scrapes.
//!
//! Nothing is counted twice: a collector reads the counters the gateway keeps anyway
//! (`telemetry.rs`, the adapter runtime's slots) at scrape time, so serving requests costs
//! nothing more than it did.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::gateway::Gateway;
use crate::memory::BodyBudget;
use crate::telemetry::{DURATION_BUCKETS, ProviderStats, StatsSnapshot};

/// The OpenMetrics text format's content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut registry = Registry::with_prefix("chatd");
    registry.register_collector(Box::new(GatewayCollector(
        state.gateway.clone(),
        state.bodies.clone(),
    )));
    registry.register_collector(Box::new(crate::clients::usage::Collector(
        state.clients.clone(),
    )));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

/// Reads one counter out of a provider's stats.
type Read = fn(&StatsSnapshot) -> u64;

/// Reads the gateway's counters on each scrape.
struct GatewayCollector(Arc<Gateway>, Arc<BodyBudget>);

impl std::fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayCollector")
    }
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gateway = &self.0;
        let providers = gateway.stats().all();
        let snapshots: Vec<_> = providers
            .iter()
            .map(|(name, stats)| (name.as_str(), stats.snapshot(), stats.durations()))
            .collect();

        let counters: [(&str, &str, Read); 3] = [
            ("requests", "Chat requests routed to the provider.", |s| {
                s.requests
            }),
            (
                "request_errors",
                "Requests that failed (upstream, adapter or timeout errors).",
                |s| s.errors,
            ),
            (
                "requests_cancelled",
                "Requests whose client went away before they finished.",
                |s| s.cancelled,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (provider, snapshot, _) in &snapshots {
                let labels = [("provider", *provider)];
                ConstCounter::new(value(snapshot)).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "requests_in_flight",
            "Requests being served now.",
            None,
            MetricType::Gauge,
        )?;
        for (provider, snapshot, _) in &snapshots {
            let in_flight = i64::try_from(snapshot.in_flight).unwrap_or(i64::MAX);
            ConstGauge::new(in_flight).encode(family.encode_family(&[("provider", *provider)])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its answer (a stream's last chunk), \
             for requests that finished, answered or failed.",
            None,
            MetricType::Histogram,
        )?;
        for (provider, _, durations) in &snapshots {
            let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(durations.buckets.iter().copied())
                .collect();
            family
                .encode_family(&[("provider", *provider)])?
                .encode_histogram::<NoLabelSet>(
                    durations.sum_seconds,
                    durations.count,
                    &buckets,
                    None,
                )?;
        }

        let snapshot = gateway.snapshot();
        let mut family = encoder.encode_descriptor(
            "provider_registered",
            "1 for a configured provider that can take requests, 0 for one that cannot (no key, \
             adapter missing: see GET /v1/chat/providers).",
            None,
            MetricType::Gauge,
        )?;
        let registered = snapshot.providers.keys().map(|name| (name, 1));
        let unregistered = snapshot.unregistered.keys().map(|name| (name, 0));
        for (provider, value) in registered.chain(unregistered) {
            ConstGauge::new(value)
                .encode(family.encode_family(&[("provider", provider.as_str())])?)?;
        }

        encode_resilience(&mut encoder, gateway, &providers)?;

        let runtime = gateway.runtime();
        let gauges = [
            (
                "adapter_instances_in_use",
                "Adapter instances alive (calls running, and instances kept for a request's next call).",
                i64::from(runtime.instances_in_use()),
            ),
            (
                "adapter_instances_max",
                "Adapter instances allowed at once (sandbox.max_instances).",
                i64::from(runtime.config().max_instances),
            ),
        ];
        let family = encoder.encode_descriptor(
            "request_body_bytes_in_flight",
            "Request body bytes held now, from the first byte read until the answer starts \
             (bounded by max_inflight_bytes).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(self.1.held()).unwrap_or(i64::MAX)).encode(family)?;
        for (name, help, value) in gauges {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(family)?;
        }
        Ok(())
    }
}

/// Retries, fallbacks, attempts by outcome, endpoint health, concurrency, tokens, and time
/// in adapters against time waiting for upstreams.
fn encode_resilience(
    encoder: &mut DescriptorEncoder,
    gateway: &Gateway,
    providers: &[(String, Arc<ProviderStats>)],
) -> Result<(), std::fmt::Error> {
    let attempts: Vec<_> = providers
        .iter()
        .map(|(name, stats)| (name.as_str(), stats.attempts()))
        .collect();

    let mut family = encoder.encode_descriptor(
        "retries",
        "Attempts after the first on a provider within one request.",
        None,
        MetricType::Counter,
    )?;
    for (provider, a) in &attempts {
        ConstCounter::new(a.retries).encode(family.encode_family(&[("provider", *provider)])?)?;
    }

    let mut family = encoder.encode_descriptor(
        "fallbacks",
        "Requests passed from a provider (from) to the next candidate of their chain (to).",
        None,
        MetricType::Counter,
    )?;
    for ((from, to), n) in gateway.stats().fallbacks() {
        let labels = [("from", from.as_str()), ("to", to.as_str())];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }

    let mut family = encoder.encode_descriptor(
        "upstream_attempts",
        "Upstream attempts by outcome: the answer's status class (2xx, 3xx, 4xx, 5xx), or \
         timeout, unreachable, other (the adapter failed, a malformed answer).",
        None,
        MetricType::Counter,
    )?;
    for (provider, a) in &attempts {
        for (outcome, n) in &a.by_outcome {
            let labels = [("provider", *provider), ("outcome", *outcome)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "provider_busy",
        "Requests refused for a provider's max_concurrency (provider_busy, or passed on).",
        None,
        MetricType::Counter,
    )?;
    for (provider, a) in &attempts {
        ConstCounter::new(a.busy).encode(family.encode_family(&[("provider", *provider)])?)?;
    }

    for (name, help, read) in [
        (
            "adapter_seconds",
            "Time spent in adapter calls (building requests, parsing answers and events).",
            (|a| a.adapter_seconds) as fn(&crate::telemetry::AttemptStats) -> f64,
        ),
        (
            "upstream_seconds",
            "Time spent waiting for upstreams (an answer, or a stream's next bytes).",
            |a| a.upstream_seconds,
        ),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (provider, a) in &attempts {
            ConstCounter::new(read(a)).encode(family.encode_family(&[("provider", *provider)])?)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "tokens",
        "Tokens the upstreams reported, per provider and model, in (input) and out (output).",
        None,
        MetricType::Counter,
    )?;
    for (provider, stats) in providers {
        for (model, input, output) in stats.token_counts() {
            for (direction, n) in [("input", input), ("output", output)] {
                let labels = [
                    ("provider", provider.as_str()),
                    ("model", model.as_str()),
                    ("direction", direction),
                ];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
    }

    let snapshot = gateway.snapshot();
    let endpoints: Vec<_> = snapshot
        .providers
        .values()
        .flat_map(|p| {
            p.endpoints
                .iter()
                .map(move |e| (p.name.as_str(), e.target.base_url(), e.state.snapshot()))
        })
        .collect();
    for (name, help, read) in [
        (
            "endpoint_ejections",
            "Times an endpoint was ejected (consecutive failures, or a failed probe).",
            (|h| h.ejections) as fn(&crate::gateway::HealthSnapshot) -> u64,
        ),
        (
            "endpoint_recoveries",
            "Times an ejected endpoint came back (its probe request was answered).",
            |h| h.recoveries,
        ),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (provider, url, health) in &endpoints {
            let labels = [("provider", *provider), ("endpoint", *url)];
            ConstCounter::new(read(health)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "endpoint_in_service",
        "1 for an endpoint that takes requests, 0 while it is ejected or half-open.",
        None,
        MetricType::Gauge,
    )?;
    for (provider, url, health) in &endpoints {
        let labels = [("provider", *provider), ("endpoint", *url)];
        ConstGauge::new(i64::from(health.state == "in_service"))
            .encode(family.encode_family(&labels)?)?;
    }

    let limited: Vec<_> = snapshot
        .providers
        .values()
        .filter_map(|p| Some((p.name.as_str(), p.admission.usage()?)))
        .collect();
    for (name, help, pick) in [
        (
            "provider_concurrency_in_use",
            "Requests holding one of a provider's max_concurrency slots.",
            (|u| u.0) as fn((u32, u32)) -> u32,
        ),
        (
            "provider_concurrency_max",
            "A provider's max_concurrency.",
            |u| u.1,
        ),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (provider, usage) in &limited {
            ConstGauge::new(i64::from(pick(*usage)))
                .encode(family.encode_family(&[("provider", *provider)])?)?;
        }
    }
    Ok(())
}
