//! Memory that request bodies hold: a bound on it (`chatd.max_inflight_bytes`), and giving it
//! back to the operating system after a burst of big bodies.
//!
//! A body costs several times its size on its way through (the bytes, the parsed request,
//! the adapter's copies, the upstream request), and the parsed request is kept until the
//! answer starts (a fallback may need it again). Without a bound, enough concurrent big
//! bodies take all the memory there is; with one, a request beyond it is answered 503
//! `overloaded` at once, before its body is read.
//!
//! The bound costs a request one atomic add when it is taken and one when it is given back
//! (a body without a declared length: one per chunk as it arrives); nothing waits on a lock.
//!
//! Freed memory is not always returned: glibc keeps freed heap memory for reuse, and a burst
//! of big bodies leaves its arenas full of free space that nothing uses again soon (measured
//! in bench/README.md). So once the bodies in flight have fallen to a quarter of a peak of at
//! least [`TRIM_AFTER`] bytes, the heap is trimmed (`malloc_trim`), off the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Bytes of bodies held at once since the last trim from which a trim follows once the burst
/// is over: below it, what the allocator keeps is not worth a trim's pass over every arena.
pub const TRIM_AFTER: usize = 32 << 20;

/// The request body bytes held now, shared by every server thread.
#[derive(Debug, Default)]
pub struct BodyBudget {
    held: AtomicUsize,
    /// The most held at once since the last trim (approximately: updated only when a
    /// reservation goes beyond it, so small requests in steady state only read it).
    peak: AtomicUsize,
    /// A trim is running.
    trimming: AtomicBool,
}

/// Taking more would exceed the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

impl BodyBudget {
    /// A budget with nothing held.
    pub fn new() -> Arc<BodyBudget> {
        Arc::new(BodyBudget::default())
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Holds `bytes` for one body, if that keeps the total within `limit`.
    pub fn reserve(self: &Arc<Self>, bytes: usize, limit: usize) -> Result<BodyBytes, OverBudget> {
        let mut held = BodyBytes {
            budget: self.clone(),
            bytes: 0,
        };
        held.grow(bytes, limit)?;
        Ok(held)
    }

    /// One atomic add; a refused take is undone at once. Two refused takes racing may each
    /// see the other's bytes and both be refused where one alone would fit: the limit is
    /// never exceeded by what is admitted, at worst a request is refused a moment early.
    fn take(&self, bytes: usize, limit: usize) -> Result<(), OverBudget> {
        if bytes == 0 {
            return Ok(());
        }
        if bytes > limit {
            return Err(OverBudget);
        }
        let after = self
            .held
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        if after > limit {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
            return Err(OverBudget);
        }
        if after > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(after, Ordering::Relaxed);
        }
        Ok(())
    }

    fn give_back(self: &Arc<Self>, bytes: usize) {
        let now = self.held.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= TRIM_AFTER && now <= peak / 4 && !self.trimming.swap(true, Ordering::Relaxed) {
            self.peak.store(now, Ordering::Relaxed);
            trim_in_background(self.clone());
        }
    }
}

/// One body's share of the budget, given back when dropped (whichever way its request
/// ends: answered, failed, or its client gone).
#[derive(Debug)]
pub struct BodyBytes {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyBytes {
    /// Holds `more` bytes for this body (a body without a declared length, as it arrives).
    pub fn grow(&mut self, more: usize, limit: usize) -> Result<(), OverBudget> {
        self.budget.take(more, limit)?;
        self.bytes += more;
        Ok(())
    }

    /// Bytes held for this body.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BodyBytes {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

/// Trims the heap on a thread of its own: a pass over every arena takes milliseconds after a
/// big burst, which a server thread's other requests should not wait for.
fn trim_in_background(budget: Arc<BodyBudget>) {
    let after = budget.clone();
    let trim = move || {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory to the OS; it is thread-safe.
        unsafe {
            libc::malloc_trim(0);
        }
        budget.trimming.store(false, Ordering::Relaxed);
    };
    let spawned = std::thread::Builder::new()
        .name("chatd-trim".into())
        .spawn(trim);
    if spawned.is_err() {
        // No thread can be started now; the end of the next burst tries again.
        after.trimming.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_held_within_the_limit_and_given_back() {
        let budget = BodyBudget::new();
        let a = budget.reserve(600, 1000).unwrap();
        assert_eq!(budget.reserve(500, 1000).unwrap_err(), OverBudget);
        // A refused take leaves nothing behind.
        assert_eq!(budget.held(), 600);
        let mut b = budget.reserve(400, 1000).unwrap();
        assert_eq!(budget.held(), 1000);
        assert_eq!(b.grow(1, 1000), Err(OverBudget));
        assert_eq!(b.bytes(), 400);
        drop(a);
        b.grow(100, 1000).unwrap();
        assert_eq!(budget.held(), 500);
        drop(b);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.reserve(usize::MAX, 1000).unwrap_err(), OverBudget);
        assert_eq!(budget.reserve(1001, usize::MAX - 10).unwrap().bytes(), 1001);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn concurrent_takes_never_admit_more_than_the_limit() {
        let budget = BodyBudget::new();
        let admitted = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Ok(held) = budget.reserve(300, 1000) {
                            let now = admitted.fetch_add(300, Ordering::SeqCst) + 300;
                            most.fetch_max(now, Ordering::SeqCst);
                            admitted.fetch_sub(300, Ordering::SeqCst);
                            drop(held);
                        }
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 1000);
        assert_eq!(budget.held(), 0);
    }
}
