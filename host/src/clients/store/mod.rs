//! Where limit counters live: this process ([`memory`]) or Redis ([`redis`]), behind one
//! [`Limiter`] that also owns the clock.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use self::redis::RedisStore;
use super::limits::{self, Clock, Limit, Micros, Reading, Verdict};
use crate::config::LimitsConfig;
use memory::MemoryStore;

enum Store {
    Memory(MemoryStore),
    Redis(Arc<RedisStore>),
}

/// Checks and charges limits. Lives as long as the process: counters survive reloads.
pub struct Limiter {
    store: Store,
    clock: Arc<dyn Clock>,
}

/// The Redis store is unreachable and `fail_open` is false.
#[derive(Debug)]
pub struct Unavailable;

impl Limiter {
    /// The store `config` names, on `clock`. A Redis store connects in the background.
    pub fn new(config: &LimitsConfig, clock: Arc<dyn Clock>) -> Result<Limiter, String> {
        let store = match config.redis_url() {
            None => Store::Memory(MemoryStore::default()),
            Some(url) => Store::Redis(RedisStore::start(
                url,
                &config.key_prefix,
                config.store_display(),
            )?),
        };
        Ok(Limiter { store, clock })
    }

    /// `"memory"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        match self.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// False while the Redis store is unreachable.
    pub fn store_up(&self) -> bool {
        match &self.store {
            Store::Memory(_) => true,
            Store::Redis(r) => r.is_up(),
        }
    }

    /// Checks one request against `limits`, charging it when every limit admits it.
    pub async fn check(
        &self,
        limits: &[Limit],
        config: &LimitsConfig,
    ) -> Result<Verdict, Unavailable> {
        let now = self.clock.now();
        let readings = match &self.store {
            Store::Memory(m) => m.check(limits, now),
            Store::Redis(r) => {
                let shared = if r.is_up() {
                    r.check(limits, now, timeout(config)).await.ok()
                } else {
                    None
                };
                match shared {
                    Some(readings) => readings,
                    None if config.fail_open => r.fallback.check(limits, now),
                    None => return Err(Unavailable),
                }
            }
        };
        Ok(limits::verdict(limits, &readings))
    }

    /// Debits a finished answer's tokens; for Redis in a task of its own (the answer is not
    /// held for it), falling back to this process's counters while Redis is unreachable.
    pub fn debit(self: &Arc<Self>, limits: Vec<Limit>, tokens: u64, config: &LimitsConfig) {
        if tokens == 0 || !limits.iter().any(|l| l.kind.counts_tokens()) {
            return;
        }
        let now = self.clock.now();
        match &self.store {
            Store::Memory(m) => m.debit(&limits, now, tokens),
            Store::Redis(r) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    r.fallback.debit(&limits, now, tokens);
                    return;
                };
                let (limiter, timeout) = (self.clone(), timeout(config));
                runtime.spawn(async move { limiter.debit_at(&limits, now, tokens, timeout).await });
            }
        }
    }

    /// Debits `tokens` at `now`, waiting for the store.
    pub async fn debit_now(&self, limits: &[Limit], tokens: u64, config: &LimitsConfig) {
        self.debit_at(limits, self.clock.now(), tokens, timeout(config))
            .await;
    }

    async fn debit_at(&self, limits: &[Limit], now: Micros, tokens: u64, timeout: Duration) {
        match &self.store {
            Store::Memory(m) => m.debit(limits, now, tokens),
            Store::Redis(r) => {
                if !r.is_up() || r.debit(limits, now, tokens, timeout).await.is_err() {
                    r.fallback.debit(limits, now, tokens);
                }
            }
        }
    }

    /// What `limits` have left now, charging nothing (for the admin listing); `None` when
    /// the Redis store is unreachable.
    pub async fn peek(&self, limits: &[Limit], config: &LimitsConfig) -> Option<Vec<Reading>> {
        let now = self.clock.now();
        match &self.store {
            Store::Memory(m) => Some(m.peek(limits, now)),
            Store::Redis(r) => {
                let states = r.peek(limits, now, timeout(config)).await.ok()?;
                Some(
                    limits
                        .iter()
                        .zip(states)
                        .map(|(l, s)| limits::peek(l, s, now))
                        .collect(),
                )
            }
        }
    }
}

fn timeout(config: &LimitsConfig) -> Duration {
    Duration::from_millis(config.timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::limits::{Kind, ManualClock};

    const T0: u64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn limit(kind: Kind, n: u64) -> Limit {
        Limit::of("alice", kind, n)
    }

    /// Each kind of limit, alone: spent, refused with a wait, admitted again once the clock
    /// has moved by that wait.
    #[tokio::test]
    async fn each_limit_kind_is_hit_and_recovers_on_the_clock() {
        let config = LimitsConfig::default();
        for (kind, n, tokens_each) in [
            (Kind::RequestsPerMinute, 3, 0),
            (Kind::TokensPerMinute, 100, 60),
            (Kind::TokensPerDay, 100, 60),
            (Kind::TokensPerMonth, 100, 60),
        ] {
            let clock = ManualClock::at(T0 + 3_600_000_000);
            let limiter = Limiter::new(&config, clock.clone()).unwrap();
            let limits = [limit(kind, n)];
            let mut admitted = 0;
            let wait = loop {
                let v = limiter.check(&limits, &config).await.unwrap();
                if let Some((refused, wait)) = v.refused {
                    assert_eq!(refused, kind);
                    break wait;
                }
                admitted += 1;
                limiter.debit_now(&limits, tokens_each, &config).await;
                assert!(admitted < 10, "{kind:?} never refused");
            };
            let expected = if kind == Kind::RequestsPerMinute {
                3
            } else {
                2
            };
            assert_eq!(admitted, expected, "{kind:?}");
            clock.advance(wait - Duration::from_millis(1).min(wait));
            if wait > Duration::from_millis(1) {
                let v = limiter.check(&limits, &config).await.unwrap();
                assert!(!v.allowed, "{kind:?} admitted before its wait was over");
            }
            clock.advance(Duration::from_millis(1));
            let v = limiter.check(&limits, &config).await.unwrap();
            assert!(v.allowed, "{kind:?} not admitted after waiting {wait:?}");
            let waited_about = match kind {
                Kind::RequestsPerMinute => Duration::from_secs(20),
                // 20 tokens of debt + 1 to spend, at 100 a minute.
                Kind::TokensPerMinute => Duration::from_millis(12_600),
                // From 01:00 to the next midnight / the 1st of February.
                Kind::TokensPerDay => Duration::from_secs(23 * 3600),
                Kind::TokensPerMonth => Duration::from_secs(31 * 86_400 - 3600),
            };
            assert_eq!(wait, waited_about, "{kind:?}");
        }
    }
}
