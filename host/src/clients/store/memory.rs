//! Limit counters in this process: the default store, and the Redis store's stand-in while
//! Redis is unreachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clients::limits::{self, Limit, Micros, Reading, State};

/// Counters by limit id. One lock for all: a check holds it for a few hash lookups.
#[derive(Debug, Default)]
pub struct MemoryStore {
    counters: Mutex<HashMap<Arc<str>, Counter>>,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// The calendar window a budget's count belongs to (0 for buckets).
    window: u64,
    state: u64,
}

impl MemoryStore {
    /// Reads every limit and, when all admit the request, charges it: atomic under the lock.
    pub fn check(&self, limits: &[Limit], now: Micros) -> Vec<Reading> {
        let mut counters = self.lock();
        let readings: Vec<Reading> = limits
            .iter()
            .map(|l| limits::read(l, state(&counters, l, now), now))
            .collect();
        if readings.iter().all(|r| r.allowed) {
            for (l, r) in limits.iter().zip(&readings) {
                if let Some(write) = r.write {
                    counters.insert(
                        l.id.clone(),
                        Counter {
                            window: 0,
                            state: write,
                        },
                    );
                }
            }
        }
        readings
    }

    /// Reads without charging (the admin listing).
    pub fn peek(&self, limits: &[Limit], now: Micros) -> Vec<Reading> {
        let counters = self.lock();
        limits
            .iter()
            .map(|l| limits::peek(l, state(&counters, l, now), now))
            .collect()
    }

    /// Debits the tokens of a finished answer from every token limit in `limits`.
    pub fn debit(&self, limits: &[Limit], now: Micros, tokens: u64) {
        let mut counters = self.lock();
        for l in limits.iter().filter(|l| l.kind.counts_tokens()) {
            let next = limits::debit(l, state(&counters, l, now), now, tokens);
            counters.insert(
                l.id.clone(),
                Counter {
                    window: window_of(l, now),
                    state: next,
                },
            );
        }
        // Buckets that are full again read as absent; drop them so the map stays small.
        if counters.len() > 4096 {
            counters.retain(|_, c| c.window != 0 || c.state > now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Counter>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A budget's window number, 0 for buckets (which carry their time in their state).
fn window_of(limit: &Limit, now: Micros) -> u64 {
    if matches!(
        limit.kind,
        limits::Kind::TokensPerDay | limits::Kind::TokensPerMonth
    ) {
        limit.window(now).0
    } else {
        0
    }
}

fn state(counters: &HashMap<Arc<str>, Counter>, limit: &Limit, now: Micros) -> State {
    let c = counters.get(&limit.id)?;
    (c.window == window_of(limit, now)).then_some(c.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::limits::Kind;

    const T0: Micros = 1_767_225_600_000_000;

    fn limit(id: &str, kind: Kind, n: u64) -> Limit {
        Limit {
            client: "a".into(),
            id: id.into(),
            kind,
            limit: n,
            pattern: None,
        }
    }

    #[test]
    fn a_refused_request_charges_no_limit() {
        let store = MemoryStore::default();
        let limits = [
            limit("a:rpm", Kind::RequestsPerMinute, 5),
            limit("a:tpd", Kind::TokensPerDay, 10),
        ];
        assert!(store.check(&limits, T0).iter().all(|r| r.allowed));
        store.debit(&limits, T0, 10);
        let r = store.check(&limits, T0);
        assert!(r[0].allowed && !r[1].allowed);
        // The request bucket was not charged for the refused request: 4 left, not 3.
        assert_eq!(store.peek(&limits[..1], T0)[0].remaining, 4);
        // The next day the budget is fresh.
        let tomorrow = T0 + 86_400_000_000;
        assert!(store.check(&limits, tomorrow).iter().all(|r| r.allowed));
    }
}
