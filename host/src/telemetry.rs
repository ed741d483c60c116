//! Per-provider counters, kept across config reloads (keyed by provider name). They feed
//! `GET /v1/chat/providers` and `GET /metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds, in seconds, of the request-duration histogram's buckets (then +Inf): from
/// a quick refusal to a long generation.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Lock-free counters of one provider.
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
}

impl StatsRegistry {
    /// The stats of a provider, created on first use.
    pub fn provider(&self, name: &str) -> Arc<ProviderStats> {
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned()).or_default().clone()
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
    }
}
