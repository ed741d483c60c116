//! What each client used, per model, in this process since it started: `GET /metrics` and
//! `GET /v1/admin/clients` read these counters.
//!
//! Label cardinality stays bounded: client names come from the config, and each client
//! counts at most [`MODELS_PER_CLIENT`] distinct model names (as requested); further ones
//! are counted under `other`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::limits::Kind;

/// Distinct model labels per client before the rest count as [`OTHER_MODEL`].
pub const MODELS_PER_CLIENT: usize = 32;
/// The model label of models past [`MODELS_PER_CLIENT`].
pub const OTHER_MODEL: &str = "other";

/// The counters of one client × model.
#[derive(Debug, Default)]
pub struct ModelUsage {
    requests: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

impl ModelUsage {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tokens(&self, input: u64, output: u64) {
        self.input_tokens.fetch_add(input, Ordering::Relaxed);
        self.output_tokens.fetch_add(output, Ordering::Relaxed);
    }

    pub fn read(&self) -> UsageCounts {
        UsageCounts {
            requests: self.requests.load(Ordering::Relaxed),
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one client × model's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageCounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Default)]
struct ClientUsage {
    models: HashMap<Arc<str>, Arc<ModelUsage>>,
    /// Requests refused, by reason ([`Kind::name`] or `model_not_allowed`).
    refused: HashMap<&'static str, u64>,
}

/// Per client (sorted): each model's counts.
pub type UsageByModel = Vec<(Arc<str>, Vec<(Arc<str>, UsageCounts)>)>;
/// Per client (sorted): refused requests by reason.
pub type Refusals = Vec<(Arc<str>, Vec<(&'static str, u64)>)>;

/// Every client's counters.
#[derive(Debug, Default)]
pub struct Usage {
    clients: Mutex<HashMap<Arc<str>, ClientUsage>>,
    /// Requests refused for a missing or unknown key.
    auth_failures: AtomicU64,
}

/// Why a client's request was refused, for the refusal counter.
pub fn refusal_reason(kind: Option<Kind>) -> &'static str {
    kind.map_or("model_not_allowed", Kind::name)
}

impl Usage {
    /// The counters of `client` × `model` (or × [`OTHER_MODEL`] once the client has
    /// [`MODELS_PER_CLIENT`] models).
    pub fn model(&self, client: &Arc<str>, model: &str) -> Arc<ModelUsage> {
        let mut clients = self.lock();
        let usage = clients.entry(client.clone()).or_default();
        if let Some(m) = usage.models.get(model) {
            return m.clone();
        }
        let label: Arc<str> = if usage.models.len() < MODELS_PER_CLIENT {
            model.chars().take(100).collect::<String>().into()
        } else {
            OTHER_MODEL.into()
        };
        usage.models.entry(label).or_default().clone()
    }

    pub fn refused(&self, client: &Arc<str>, reason: &'static str) {
        let mut clients = self.lock();
        *clients
            .entry(client.clone())
            .or_default()
            .refused
            .entry(reason)
            .or_default() += 1;
    }

    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::Relaxed)
    }

    /// Client → model → counts, sorted.
    pub fn by_model(&self) -> UsageByModel {
        let clients = self.lock();
        let mut out: Vec<_> = clients
            .iter()
            .map(|(client, usage)| {
                let mut models: Vec<_> = usage
                    .models
                    .iter()
                    .map(|(m, u)| (m.clone(), u.read()))
                    .collect();
                models.sort_by(|a, b| a.0.cmp(&b.0));
                (client.clone(), models)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Client → reason → refused requests, sorted.
    pub fn refusals(&self) -> Refusals {
        let clients = self.lock();
        let mut out: Vec<_> = clients
            .iter()
            .map(|(client, usage)| {
                let mut reasons: Vec<_> = usage.refused.iter().map(|(r, n)| (*r, *n)).collect();
                reasons.sort();
                (client.clone(), reasons)
            })
            .filter(|(_, reasons)| !reasons.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, ClientUsage>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The clients' counters for `GET /metrics`, read at scrape time.
pub struct Collector(pub Arc<super::Service>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("clients::usage::Collector")
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let service = &self.0;
        let by_model = service.usage.by_model();
        let mut family = encoder.encode_descriptor(
            "client_requests",
            "Requests admitted per client (client keys on) and model as requested.",
            None,
            MetricType::Counter,
        )?;
        for (client, models) in &by_model {
            for (model, counts) in models {
                let labels = [("client", &**client), ("model", &**model)];
                ConstCounter::new(counts.requests).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "client_tokens",
            "Tokens per client, model and type (input or output), counted when answers end.",
            None,
            MetricType::Counter,
        )?;
        for (client, models) in &by_model {
            for (model, counts) in models {
                for (kind, n) in [
                    ("input", counts.input_tokens),
                    ("output", counts.output_tokens),
                ] {
                    let labels = [("client", &**client), ("model", &**model), ("type", kind)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "client_refused",
            "Requests refused per client and reason (model_not_allowed, or the limit reached).",
            None,
            MetricType::Counter,
        )?;
        for (client, reasons) in service.usage.refusals() {
            for (reason, n) in reasons {
                let labels = [("client", &*client), ("reason", reason)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let family = encoder.encode_descriptor(
            "client_auth_failures",
            "Requests refused for a missing or unknown client key.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(service.usage.auth_failures()).encode(family)?;
        let family = encoder.encode_descriptor(
            "limits_store_up",
            "1 while the limits store answers (always, for the in-process store); 0 while \
             Redis is unreachable and each replica enforces limits alone (or refuses, without \
             fail_open).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(service.limiter.store_up())).encode(family)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_capped_per_client() {
        let usage = Usage::default();
        let alice: Arc<str> = "alice".into();
        for i in 0..MODELS_PER_CLIENT + 5 {
            usage.model(&alice, &format!("m{i}")).request();
        }
        usage.model(&alice, "m0").tokens(3, 4);
        let all = usage.by_model();
        let models = &all[0].1;
        assert_eq!(models.len(), MODELS_PER_CLIENT + 1);
        let other = models.iter().find(|(m, _)| &**m == OTHER_MODEL).unwrap();
        assert_eq!(other.1.requests, 5);
        let m0 = models.iter().find(|(m, _)| &**m == "m0").unwrap();
        assert_eq!(
            (m0.1.requests, m0.1.input_tokens, m0.1.output_tokens),
            (1, 3, 4)
        );
        usage.refused(&alice, refusal_reason(None));
        usage.refused(&alice, refusal_reason(Some(Kind::TokensPerDay)));
        usage.refused(&alice, refusal_reason(None));
        assert_eq!(
            usage.refusals()[0].1,
            [("model_not_allowed", 2), ("tokens_per_day", 1)]
        );
    }
}
