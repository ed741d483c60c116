//! Per-provider counters, kept across config reloads (keyed by provider name). They feed
//! `GET /v1/chat/providers` and `GET /metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds, in seconds, of the request-duration histogram's buckets (then +Inf): from
/// a quick refusal to a long generation.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// What came of one upstream attempt: the status class of its answer, or why there was none.
pub const ATTEMPT_OUTCOMES: [&str; 7] = [
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "timeout",
    "unreachable",
    "other",
];

/// Distinct models whose tokens are counted per provider; more are counted as `other`, so
/// that clients naming random models cannot grow the metrics without bound.
pub const MAX_MODELS: usize = 200;

/// Counters of one provider, lock-free on the request path.
#[derive(Debug, Default)]
pub struct ProviderStats {
    requests: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicU64,
    last_latency_us: AtomicU64,
    in_flight: AtomicU64,
    /// Finished requests (answered or failed) per duration bucket; the last is +Inf.
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_us: AtomicU64,
    /// Attempts after the first on this provider, within one request.
    retries: AtomicU64,
    /// Upstream attempts by [`ATTEMPT_OUTCOMES`].
    attempts: [AtomicU64; ATTEMPT_OUTCOMES.len()],
    /// Requests refused for its `max_concurrency` (`provider_busy`).
    busy: AtomicU64,
    /// Time in adapter calls, and time waiting for the upstream.
    adapter_us: AtomicU64,
    upstream_us: AtomicU64,
    /// Tokens in and out per model.
    tokens: RwLock<HashMap<String, TokenCount>>,
}

/// Tokens one model took in and gave out.
#[derive(Debug, Default)]
pub struct TokenCount {
    pub input: AtomicU64,
    pub output: AtomicU64,
}

/// The duration histogram of a provider's finished requests.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationHistogram {
    /// Requests per bucket (not cumulative), the bounds of [`DURATION_BUCKETS`] then +Inf.
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// A point-in-time copy of [`ProviderStats`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct StatsSnapshot {
    pub requests: u64,
    /// Requests that failed (upstream, adapter or timeout errors).
    pub errors: u64,
    /// Requests the client abandoned before they finished (not the provider's fault).
    pub cancelled: u64,
    pub in_flight: u64,
    /// Latency of the last finished request, in milliseconds (absent before the first).
    pub last_latency_ms: Option<f64>,
}

impl ProviderStats {
    /// Marks a request as started; the guard records its outcome when finished.
    pub fn start(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            stats: self.clone(),
            outcome: Outcome::Cancelled,
        }
    }

    /// Copies the duration histogram.
    pub fn durations(&self) -> DurationHistogram {
        let buckets: Vec<u64> = self
            .duration_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        DurationHistogram {
            count: buckets.iter().sum(),
            buckets,
            sum_seconds: self.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Counts a retry (an attempt after the first on this provider).
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upstream attempt by its outcome, one of [`ATTEMPT_OUTCOMES`].
    pub fn attempted(&self, outcome: &str) {
        let i = ATTEMPT_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(ATTEMPT_OUTCOMES.len() - 1);
        self.attempts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused for the concurrency limit.
    pub fn refused_busy(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds time spent in an adapter call.
    pub fn adapter_time(&self, d: Duration) {
        self.adapter_us.fetch_add(micros(d), Ordering::Relaxed);
    }

    /// Adds time spent waiting for the upstream.
    pub fn upstream_time(&self, d: Duration) {
        self.upstream_us.fetch_add(micros(d), Ordering::Relaxed);
    }

    /// Adds the tokens of one answer of `model`.
    pub fn tokens(&self, model: &str, input: Option<u32>, output: Option<u32>) {
        if input.is_none() && output.is_none() {
            return;
        }
        let add = |count: &TokenCount| {
            count
                .input
                .fetch_add(input.map_or(0, u64::from), Ordering::Relaxed);
            count
                .output
                .fetch_add(output.map_or(0, u64::from), Ordering::Relaxed);
        };
        let read = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = read.get(model) {
            return add(count);
        }
        drop(read);
        let mut map = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        let key = if map.len() < MAX_MODELS || map.contains_key(model) {
            model
        } else {
            "other"
        };
        add(map.entry(key.to_owned()).or_default());
    }

    /// Tokens in and out per model.
    pub fn token_counts(&self) -> Vec<(String, u64, u64)> {
        let map = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map
            .iter()
            .map(|(m, c)| {
                let (i, o) = (&c.input, &c.output);
                (
                    m.clone(),
                    i.load(Ordering::Relaxed),
                    o.load(Ordering::Relaxed),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// The counters of the resilience layer: retries, attempts by outcome, busy refusals,
    /// adapter and upstream time.
    pub fn attempts(&self) -> AttemptStats {
        AttemptStats {
            retries: self.retries.load(Ordering::Relaxed),
            by_outcome: ATTEMPT_OUTCOMES
                .iter()
                .zip(&self.attempts)
                .map(|(o, n)| (*o, n.load(Ordering::Relaxed)))
                .collect(),
            busy: self.busy.load(Ordering::Relaxed),
            adapter_seconds: self.adapter_us.load(Ordering::Relaxed) as f64 / 1e6,
            upstream_seconds: self.upstream_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let last = self.last_latency_us.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_latency_ms: (last > 0).then(|| last as f64 / 1000.0),
        }
    }
}

/// Attempt counters of one provider (see [`ProviderStats::attempts`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptStats {
    pub retries: u64,
    pub by_outcome: BTreeMap<&'static str, u64>,
    pub busy: u64,
    pub adapter_seconds: f64,
    pub upstream_seconds: f64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Records one request's end. A guard dropped without [`RequestGuard::finish`] (the client
/// went away, or a shutdown cut the request) counts as cancelled.
pub struct RequestGuard {
    stats: Arc<ProviderStats>,
    outcome: Outcome,
}

enum Outcome {
    Ok,
    Failed,
    Cancelled,
}

impl RequestGuard {
    /// Records the request's latency and outcome.
    pub fn finish(mut self, latency: Duration, ok: bool) {
        self.outcome = if ok { Outcome::Ok } else { Outcome::Failed };
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.stats.last_latency_us.store(us, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.stats.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.stats.duration_sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let counter = match self.outcome {
            Outcome::Ok => None,
            Outcome::Failed => Some(&self.stats.errors),
            Outcome::Cancelled => Some(&self.stats.cancelled),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stats of every provider name ever served.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    by_provider: Mutex<HashMap<String, Arc<ProviderStats>>>,
    /// Requests passed from one provider (`from`) to the next candidate of a chain (`to`).
    fallbacks: Mutex<BTreeMap<(String, String), u64>>,
}

impl StatsRegistry {
    /// The stats of a provider, created on first use.
    pub fn provider(&self, name: &str) -> Arc<ProviderStats> {
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    /// Counts a request passed from provider `from` to `to`, the next candidate of its chain.
    pub fn fell_back(&self, from: &str, to: &str) {
        let mut map = self.fallbacks.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((from.to_owned(), to.to_owned())).or_default() += 1;
    }

    /// Fallbacks by (from, to).
    pub fn fallbacks(&self) -> Vec<((String, String), u64)> {
        let map = self.fallbacks.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Every provider's stats, by name.
    pub fn all(&self) -> Vec<(String, Arc<ProviderStats>)> {
        let map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.iter().map(|(n, s)| (n.clone(), s.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_outcomes() {
        let stats = Arc::new(ProviderStats::default());
        stats.start().finish(Duration::from_millis(12), true);
        stats.start().finish(Duration::from_millis(3), false);
        drop(stats.start());
        let s = stats.snapshot();
        assert_eq!(
            (s.requests, s.errors, s.cancelled, s.in_flight),
            (3, 1, 1, 0)
        );
        assert_eq!(s.last_latency_ms, Some(3.0));
        // 12 ms falls in the 0.025 s bucket, 3 ms in the first; the cancelled one in none.
        let d = stats.durations();
        assert_eq!((d.count, d.buckets[0], d.buckets[2]), (2, 1, 1));
        assert!((d.sum_seconds - 0.015).abs() < 1e-9, "{d:?}");
        let reg = StatsRegistry::default();
        assert!(Arc::ptr_eq(&reg.provider("a"), &reg.provider("a")));
        reg.fell_back("a", "b");
        reg.fell_back("a", "b");
        assert_eq!(reg.fallbacks(), [(("a".into(), "b".into()), 2)]);
    }

    #[test]
    fn attempts_tokens_and_times_are_counted() {
        let stats = ProviderStats::default();
        stats.attempted("5xx");
        stats.attempted("2xx");
        stats.attempted("nonsense");
        stats.retried();
        stats.adapter_time(Duration::from_micros(1500));
        stats.upstream_time(Duration::from_millis(2));
        let a = stats.attempts();
        assert_eq!(a.retries, 1);
        assert_eq!(a.by_outcome["2xx"], 1);
        assert_eq!(a.by_outcome["5xx"], 1);
        assert_eq!(a.by_outcome["other"], 1);
        assert_eq!(a.by_outcome["4xx"], 0);
        assert!((a.adapter_seconds - 0.0015).abs() < 1e-9);
        stats.tokens("m", Some(3), Some(4));
        stats.tokens("m", Some(1), None);
        stats.tokens("n", None, None);
        assert_eq!(stats.token_counts(), [("m".to_owned(), 4, 4)]);
        for i in 0..MAX_MODELS + 5 {
            stats.tokens(&format!("x{i}"), Some(1), Some(1));
        }
        let counts = stats.token_counts();
        assert_eq!(counts.len(), MAX_MODELS + 1);
        let other = counts.iter().find(|(m, _, _)| m == "other").unwrap();
        assert_eq!(other.1, 6, "{other:?}");
    }
}
