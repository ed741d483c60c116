//! A provider's deployments: picking one per attempt (least outstanding requests, weighted)
//! and passive health — the circuit breaker.
//!
//! An endpoint that fails `eject_after_failures` times in a row (connection refused or reset,
//! a timeout, a 5xx, a stream that broke) is ejected: it gets no requests for
//! `eject_cooldown_ms`. Then it is half-open: the next request that picks it is its one
//! probe, and while the probe runs no other request goes there. The probe's success brings
//! the endpoint back; its failure ejects it for another cooldown. A 429 is not a failure
//! here: the endpoint answered, it is the key's quota that is spent (the request falls back
//! or retries per `failover.rs`).
//!
//! Ejection decides where a request goes first, never that it goes nowhere: a request with
//! no other candidate left is sent to an ejected endpoint all the same (a *last resort*,
//! like a load balancer's panic mode), whose answer brings the endpoint back at once. So a
//! lone provider behind a breaker fails no request the upstream would have answered.
//!
//! The state lives as long as the process ([`Lasting`], keyed by provider and URL), so a
//! reload keeps what it knew about an endpoint it still configures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::upstream::Target;

/// One deployment of a provider.
#[derive(Debug)]
pub struct Endpoint {
    /// Where and how to send (URL, timeout, headers with this endpoint's key).
    pub target: Target,
    /// Share of the load relative to the provider's other endpoints.
    pub weight: u32,
    /// Health and load, kept across reloads.
    pub state: Arc<EndpointState>,
}

/// When an endpoint is taken out of service, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that eject (0: never).
    pub eject_after: u32,
    pub cooldown: Duration,
}

/// The health and load of one endpoint. Lock-free: read on every request.
#[derive(Debug, Default)]
pub struct EndpointState {
    /// Attempts in flight here now.
    outstanding: AtomicUsize,
    /// Failures since the last success.
    failures: AtomicU32,
    /// While ejected: the [`clock_ms`] its cooldown ends; 0 in service.
    ejected_until: AtomicU64,
    /// A half-open endpoint's probe is in flight.
    probing: AtomicBool,
    ejections: AtomicU64,
    recoveries: AtomicU64,
}

/// An endpoint's health as shown in `/v1/chat/providers` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HealthSnapshot {
    /// `in_service`, `ejected`, or `half_open` (cooldown over, waiting for or running its probe).
    pub state: &'static str,
    pub outstanding: u64,
    pub consecutive_failures: u32,
    /// Milliseconds until an ejected endpoint gets its probe.
    pub ejected_for_ms: Option<u64>,
    pub ejections: u64,
    pub recoveries: u64,
}

/// Milliseconds on a process-wide monotonic clock, never 0 (0 marks "in service").
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

impl EndpointState {
    /// Health counters, for listings.
    pub fn snapshot(&self) -> HealthSnapshot {
        let until = self.ejected_until.load(Ordering::Acquire);
        let now = if until == 0 { 0 } else { clock_ms() };
        let state = match until {
            0 => "in_service",
            _ if now < until => "ejected",
            _ => "half_open",
        };
        HealthSnapshot {
            state,
            outstanding: self.outstanding.load(Ordering::Relaxed) as u64,
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            ejected_for_ms: (now < until).then(|| until - now),
            ejections: self.ejections.load(Ordering::Relaxed),
            recoveries: self.recoveries.load(Ordering::Relaxed),
        }
    }
}

/// How an attempt went, as far as its endpoint's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The endpoint answered (a 4xx is the request's problem, not the endpoint's).
    Answered,
    /// The endpoint failed: unreachable, timed out, a 5xx, a stream that broke.
    Failed,
    /// Says nothing about the endpoint (the adapter failed, the client left).
    Unknown,
}

/// No endpoint of a provider can take a request now: all ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllEjected {
    /// Until the first of them gets its probe.
    pub retry_in: Duration,
}

/// The endpoint an attempt goes to. Dropped, it counts the attempt out of the endpoint's
/// load and, if it was the probe and no outcome was reported (the client left), lets
/// another request probe.
#[derive(Debug)]
pub struct Picked {
    pub index: usize,
    state: Arc<EndpointState>,
    probe: bool,
    /// Sent to an ejected endpoint as a last resort (see the module notes).
    last_resort: bool,
    /// Whether `outstanding` counts this attempt (only with several endpoints).
    counted: bool,
    resolved: bool,
}

impl Picked {
    /// Records how the attempt went; the first outcome of a probe decides the endpoint's
    /// state. `provider` and `url` name it in the log.
    pub fn report(&mut self, health: Health, policy: &HealthPolicy, provider: &str, url: &str) {
        let state = &self.state;
        match health {
            Health::Unknown => return,
            Health::Answered => {
                if self.probe && !self.resolved {
                    state.failures.store(0, Ordering::Relaxed);
                    state.ejected_until.store(0, Ordering::Release);
                    state.recoveries.fetch_add(1, Ordering::Relaxed);
                    state.probing.store(false, Ordering::Release);
                    tracing::warn!(
                        provider,
                        endpoint = url,
                        "endpoint recovered: its probe request was answered"
                    );
                } else if self.last_resort && !self.resolved {
                    state.failures.store(0, Ordering::Relaxed);
                    // Only one of the concurrent last resorts counts the recovery.
                    let until = state.ejected_until.load(Ordering::Acquire);
                    if until != 0
                        && state
                            .ejected_until
                            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                            .is_ok()
                    {
                        state.recoveries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            provider,
                            endpoint = url,
                            "endpoint recovered: a request it got as the last resort was answered"
                        );
                    }
                } else if state.failures.load(Ordering::Relaxed) != 0 {
                    // Read first: on the healthy path this stays a read of a shared line.
                    state.failures.store(0, Ordering::Relaxed);
                }
            }
            Health::Failed => {
                let failures = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if policy.eject_after == 0 || self.last_resort {
                    // Never ejects; or ejected already, its cooldown running.
                } else if self.probe && !self.resolved {
                    state
                        .ejected_until
                        .store(clock_ms() + millis(policy.cooldown), Ordering::Release);
                    state.ejections.fetch_add(1, Ordering::Relaxed);
                    state.probing.store(false, Ordering::Release);
                    tracing::warn!(
                        provider,
                        endpoint = url,
                        cooldown_ms = millis(policy.cooldown),
                        "endpoint probe failed: ejected again"
                    );
                } else if failures >= policy.eject_after {
                    let until = clock_ms() + millis(policy.cooldown);
                    // One of the concurrent failures ejects; the others see it done.
                    if state
                        .ejected_until
                        .compare_exchange(0, until, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        state.ejections.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            provider,
                            endpoint = url,
                            failures,
                            cooldown_ms = millis(policy.cooldown),
                            "endpoint ejected after consecutive failures"
                        );
                    }
                }
            }
        }
        self.resolved = true;
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if self.counted {
            self.state.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
        if self.probe && !self.resolved {
            self.state.probing.store(false, Ordering::Release);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Picks the endpoint for an attempt. First a half-open endpoint whose probe is not running
/// (so that it comes back as soon as it can); otherwise the one in service with the fewest
/// attempts in flight for its weight, preferring endpoints this request has not `tried`;
/// ties are broken at random so that idle endpoints share the load. When all are ejected:
/// with `last_resort` the one whose cooldown ends first, otherwise an error.
pub fn pick(
    endpoints: &[Endpoint],
    tried: &[usize],
    last_resort: bool,
) -> Result<Picked, AllEjected> {
    if let [only] = endpoints {
        // One endpoint: nothing to balance, only its health to read.
        let until = only.state.ejected_until.load(Ordering::Acquire);
        return match until {
            0 => Ok(picked(0, only, false, false)),
            _ => match claim_probe(0, only, until) {
                Some(probe) => Ok(probe),
                None if last_resort => Ok(resort(0, only)),
                None => Err(AllEjected {
                    retry_in: Duration::from_millis(until.saturating_sub(clock_ms())),
                }),
            },
        };
    }
    let mut now = None;
    let mut now = || *now.get_or_insert_with(clock_ms);
    let mut best: Option<(usize, bool, f64)> = None;
    let mut earliest = u64::MAX;
    let mut soonest = 0;
    let offset = rand::random_range(0..endpoints.len());
    for step in 0..endpoints.len() {
        let i = (offset + step) % endpoints.len();
        let e = &endpoints[i];
        let until = e.state.ejected_until.load(Ordering::Acquire);
        if until != 0 {
            if let Some(probe) = (!tried.contains(&i))
                .then(|| claim_probe(i, e, until))
                .flatten()
            {
                return Ok(probe);
            }
            if until < earliest {
                (earliest, soonest) = (until, i);
            }
            continue;
        }
        let fresh = !tried.contains(&i);
        let load =
            (e.state.outstanding.load(Ordering::Relaxed) as f64 + 1.0) / f64::from(e.weight.max(1));
        let better = match best {
            None => true,
            Some((_, best_fresh, best_load)) => (fresh, -load) > (best_fresh, -best_load),
        };
        if better {
            best = Some((i, fresh, load));
        }
    }
    match best {
        Some((i, _, _)) => Ok(picked(i, &endpoints[i], false, true)),
        None if last_resort => Ok(resort(soonest, &endpoints[soonest])),
        None => Err(AllEjected {
            retry_in: Duration::from_millis(earliest.saturating_sub(now())),
        }),
    }
}

/// An ejected endpoint, sent a request that has nowhere else to go.
fn resort(index: usize, e: &Endpoint) -> Picked {
    let mut resort = picked(index, e, false, true);
    resort.last_resort = true;
    resort
}

/// The endpoint as this request's probe, if its cooldown is over and no probe runs.
fn claim_probe(index: usize, e: &Endpoint, until: u64) -> Option<Picked> {
    (clock_ms() >= until
        && e.state
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok())
    .then(|| picked(index, e, true, true))
}

fn picked(index: usize, e: &Endpoint, probe: bool, count: bool) -> Picked {
    if count {
        e.state.outstanding.fetch_add(1, Ordering::Relaxed);
    }
    Picked {
        index,
        state: e.state.clone(),
        probe,
        last_resort: false,
        counted: count,
        resolved: false,
    }
}

/// What outlives a snapshot: each endpoint's health, and each provider's concurrency
/// limit (so that a reload neither forgets an ejection nor lets in a second batch of
/// requests beside those still running under the old limit).
#[derive(Debug, Default)]
pub struct Lasting {
    endpoints: Mutex<HashMap<(String, String), Arc<EndpointState>>>,
    limits: Mutex<HashMap<String, (u32, Arc<Semaphore>)>>,
}

impl Lasting {
    /// The state of `provider`'s endpoint at `url`, created on first use.
    pub fn endpoint(&self, provider: &str, url: &str) -> Arc<EndpointState> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((provider.to_owned(), url.to_owned()))
            .or_default()
            .clone()
    }

    /// `provider`'s concurrency slots: the same semaphore while the limit stays the same.
    pub fn limit(&self, provider: &str, max: u32) -> Arc<Semaphore> {
        let mut map = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(provider) {
            Some((limit, semaphore)) if *limit == max => semaphore.clone(),
            _ => {
                let semaphore = Arc::new(Semaphore::new(max as usize));
                map.insert(provider.to_owned(), (max, semaphore.clone()));
                semaphore
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Endpoint {
                target: Target {
                    base: url::Url::parse(&format!("http://127.0.0.1:{}", 1000 + i)).unwrap(),
                    timeout: Duration::from_secs(1),
                    headers: http::HeaderMap::new(),
                    reserved: Vec::new(),
                },
                weight,
                state: Arc::default(),
            })
            .collect()
    }

    const POLICY: HealthPolicy = HealthPolicy {
        eject_after: 2,
        cooldown: Duration::from_millis(40),
    };

    fn fail(e: &[Endpoint], tried: &[usize]) -> usize {
        let mut p = pick(e, tried, false).unwrap();
        p.report(Health::Failed, &POLICY, "p", "u");
        p.index
    }

    #[test]
    fn the_least_loaded_endpoint_for_its_weight_is_picked() {
        let e = endpoints(&[1, 1, 2]);
        // Idle: weight 2 has the lowest load per weight.
        let a = pick(&e, &[], false).unwrap();
        assert_eq!(a.index, 2);
        // Four in flight end up spread by weight: one each on 0 and 1, two on 2.
        let more: Vec<Picked> = (0..3).map(|_| pick(&e, &[], false).unwrap()).collect();
        let load: Vec<u64> = e.iter().map(|e| e.state.snapshot().outstanding).collect();
        assert_eq!(load, [1, 1, 2]);
        drop((a, more));
        assert!(e.iter().all(|e| e.state.snapshot().outstanding == 0));
        // A retry goes to an endpoint the request has not tried, even a busier one.
        let _busy = pick(&e, &[], false).unwrap();
        assert_ne!(pick(&e, &[2], false).unwrap().index, 2);
        // Ties between idle endpoints are spread, not all sent to the first.
        let e = endpoints(&[1, 1]);
        let mut seen = [0; 2];
        for _ in 0..200 {
            seen[pick(&e, &[], false).unwrap().index] += 1;
        }
        assert!(seen[0] > 20 && seen[1] > 20, "{seen:?}");
    }

    #[test]
    fn consecutive_failures_eject_then_one_probe_decides() {
        let e = endpoints(&[1, 1]);
        // Failures on endpoint 0 only (the request "tried" 1 so it is avoided).
        assert_eq!(fail(&e, &[1]), 0);
        let mut ok = pick(&e, &[1], false).unwrap();
        ok.report(Health::Answered, &POLICY, "p", "u");
        assert_eq!(
            e[0].state.snapshot().consecutive_failures,
            0,
            "a success resets"
        );
        fail(&e, &[1]);
        fail(&e, &[1]);
        let s = e[0].state.snapshot();
        assert_eq!((s.state, s.ejections), ("ejected", 1));
        // Ejected: even a request that tried 1 goes to 1 now.
        for _ in 0..5 {
            assert_eq!(pick(&e, &[1], false).unwrap().index, 1);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(e[0].state.snapshot().state, "half_open");
        // The probe goes to 0; while it runs, nobody else is sent there.
        let probe = pick(&e, &[], false).unwrap();
        assert_eq!(probe.index, 0);
        for _ in 0..5 {
            assert_eq!(pick(&e, &[], false).unwrap().index, 1);
        }
        // A probe whose client left decides nothing: the next request probes.
        drop(probe);
        let mut probe = pick(&e, &[], false).unwrap();
        assert_eq!(probe.index, 0);
        probe.report(Health::Failed, &POLICY, "p", "u");
        assert_eq!(
            e[0].state.snapshot().ejections,
            2,
            "a failed probe ejects again"
        );
        assert_eq!(pick(&e, &[], false).unwrap().index, 1);
        std::thread::sleep(Duration::from_millis(50));
        let mut probe = pick(&e, &[], false).unwrap();
        probe.report(Health::Answered, &POLICY, "p", "u");
        let s = e[0].state.snapshot();
        assert_eq!((s.state, s.recoveries), ("in_service", 1));
    }

    #[test]
    fn a_lone_ejected_endpoint_is_skipped_until_its_probe_unless_nothing_else_can_serve() {
        let e = endpoints(&[1]);
        fail(&e, &[]);
        fail(&e, &[]);
        let err = pick(&e, &[], false).unwrap_err();
        assert!(err.retry_in <= POLICY.cooldown);
        std::thread::sleep(Duration::from_millis(50));
        let probe = pick(&e, &[], false).unwrap();
        assert!(pick(&e, &[], false).is_err(), "one probe at a time");
        drop(probe);
        // Unknown outcomes (the adapter failed) neither count nor decide.
        let mut p = pick(&e, &[], false).unwrap();
        p.report(Health::Unknown, &POLICY, "p", "u");
        drop(p);
        assert!(pick(&e, &[], false).is_ok());
        // Nowhere else to go: the ejected endpoint is tried all the same, and its answer
        // brings it back at once.
        let e = endpoints(&[1]);
        fail(&e, &[]);
        fail(&e, &[]);
        assert!(pick(&e, &[], false).is_err());
        let mut resort = pick(&e, &[], true).unwrap();
        let mut again = pick(&e, &[], true).unwrap();
        again.report(Health::Failed, &POLICY, "p", "u");
        assert_eq!(
            e[0].state.snapshot().ejections,
            1,
            "a failed last resort does not eject again"
        );
        resort.report(Health::Answered, &POLICY, "p", "u");
        let s = e[0].state.snapshot();
        assert_eq!((s.state, s.recoveries), ("in_service", 1));
        // eject_after = 0: never ejected.
        let never = HealthPolicy {
            eject_after: 0,
            ..POLICY
        };
        let e = endpoints(&[1]);
        for _ in 0..10 {
            pick(&e, &[], false)
                .unwrap()
                .report(Health::Failed, &never, "p", "u");
        }
        assert_eq!(e[0].state.snapshot().state, "in_service");
    }

    #[test]
    fn lasting_state_is_shared_by_name_and_limits_by_size() {
        let lasting = Lasting::default();
        assert!(Arc::ptr_eq(
            &lasting.endpoint("p", "http://a"),
            &lasting.endpoint("p", "http://a")
        ));
        assert!(!Arc::ptr_eq(
            &lasting.endpoint("p", "http://a"),
            &lasting.endpoint("q", "http://a")
        ));
        let a = lasting.limit("p", 2);
        assert!(Arc::ptr_eq(&a, &lasting.limit("p", 2)));
        assert!(!Arc::ptr_eq(&a, &lasting.limit("p", 3)));
    }
}
