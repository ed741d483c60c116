//! What an adapter instance can touch: nothing.
//!
//! Rust's `wasm32-wasip2` std imports a few WASI interfaces (stdio, environment, exit), and
//! components built through `cargo component` (wasip1 + adapter) import more (filesystem,
//! clocks, random); the built-in adapters are `no_std` and import none (cheaper to
//! instantiate). The host links all of WASI so std components load, but with nothing
//! granted: no preopened directories, no environment variables, no arguments, no sockets or
//! name lookups, a clock frozen at zero and deterministic "randomness". stdout is discarded;
//! stderr goes to a small in-memory buffer that keeps its end, so a panic message can be
//! reported.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// Bytes of adapter stderr kept per instance: the last ones written, where a panic message
/// is (an adapter may log before it panics).
const STDERR_CAPACITY: usize = 4096;
/// Table elements an instance may grow to; Rust guests use a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-instance limits, fixed at engine start.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    /// Linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// How long one call may run before it is interrupted.
    pub call_budget: Duration,
}

/// The store data of one adapter instance.
pub struct Sandbox {
    /// Built on the adapter's first WASI call. Most requests make none (adapters touch WASI
    /// to write a panic message, say), and building a `WasiCtx` costs ~15 allocations and
    /// seeds two random generators from the OS that the builder then replaces: a measurable
    /// share of every request if done for every instance.
    wasi: Option<Wasi>,
    memory_bytes: usize,
    /// Linear memory the instance has now, in bytes (all its memories).
    memory_size: usize,
    /// How long the call in progress has run, and may.
    pub(crate) run: Arc<RunClock>,
    /// Set when the instance asked for more memory than allowed.
    pub(crate) memory_exceeded: bool,
    /// Set when the call in progress ran out of time.
    pub(crate) out_of_time: bool,
}

/// Returned from the epoch callback when a call exhausts its budget.
#[derive(Debug, thiserror::Error)]
#[error("adapter call exceeded its time budget")]
pub(crate) struct OutOfTime;

/// The WASI state of one instance: a context that grants nothing, its resources, and the
/// stderr buffer.
struct Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
    stderr: StderrTail,
}

impl Wasi {
    fn new() -> Wasi {
        let stderr = StderrTail::default();
        let ctx = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(vec![0]))
            .insecure_random(Deterministic::new(vec![0]))
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Wasi {
            ctx,
            table: ResourceTable::new(),
            stderr,
        }
    }
}

impl Sandbox {
    /// A fresh sandbox that grants nothing.
    pub fn new(limits: &SandboxLimits) -> Sandbox {
        Sandbox {
            wasi: None,
            memory_bytes: limits.memory_bytes,
            memory_size: 0,
            run: Arc::new(RunClock::new(limits.call_budget)),
            memory_exceeded: false,
            out_of_time: false,
        }
    }

    /// Linear memory the instance has now, in bytes.
    pub fn memory_size(&self) -> usize {
        self.memory_size
    }

    /// What the adapter wrote to stderr (a panic message, usually), lossily decoded.
    pub fn stderr(&self) -> String {
        match &self.wasi {
            Some(wasi) => wasi.stderr.contents(),
            None => String::new(),
        }
    }

    /// Epoch callback: interrupt the call once its budget is spent, else yield to the
    /// executor so that a busy adapter never holds up the other requests on its thread.
    ///
    /// The yield is tokio's `yield_now`, not wasmtime's plain `Yield`: that one wakes the
    /// task at once, so on a thread's single-threaded runtime the spinning call is always
    /// ready to run again, and the runtime polls its sockets and timers only every 61 task
    /// polls (~300 ms of 5 ms slices) and its hand-over queue every 31. `yield_now` defers the
    /// wake-up until the runtime has polled its I/O driver, so every other request on the
    /// thread gets its turn between two slices.
    pub(crate) fn on_epoch(
        mut ctx: StoreContextMut<'_, Sandbox>,
    ) -> wasmtime::Result<UpdateDeadline> {
        let data = ctx.data_mut();
        if data.run.tick() {
            data.out_of_time = true;
            return Err(wasmtime::Error::new(OutOfTime));
        }
        data.run.yielded.store(true, Ordering::Relaxed);
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    }
}

/// How much time the adapter call in progress has used, for its time budget.
///
/// What counts is the time the call runs: a call yields its thread at every epoch tick and
/// then waits behind other requests, and none of that waiting is the adapter's work. So a
/// call's time is made of stretches, each from a poll's start to the next epoch tick (where
/// it yields) or to a wait on the host, measured on the monotonic clock and counted up to
/// one tick ([`STRETCH_MAX`]): a stretch that took longer did not run all that time (the OS
/// ran other processes in its middle, or the whole process was stopped: a `SIGSTOP`, a VM
/// pause), so at most a tick of it is charged. Added to that is the time the guest spends
/// parked on a host future it asked for (a WASI sleep), which is its own doing.
///
/// The thread's CPU clock would be exact, but reading it is a system call that takes the
/// run queue's lock (`vDSO` does not serve it); its three reads per request cost ~3 µs of
/// CPU per request at c=64 (bench/README.md). The monotonic clock is read in user space.
/// Shared by the store's epoch callback and the call's future ([`within_budget`]).
#[derive(Debug)]
pub(crate) struct RunClock {
    /// What one call may spend, in nanoseconds.
    budget_ns: u64,
    /// Nanoseconds counted before the stretch in progress.
    spent_ns: AtomicU64,
    /// When the stretch in progress began (at a poll's start or at the last tick), in
    /// nanoseconds on [`now_ns`]'s clock.
    stretch_began_ns: AtomicU64,
    /// Set by the epoch callback when it yields: the `Pending` that follows is that yield,
    /// not a wait on the host.
    yielded: AtomicBool,
}

impl RunClock {
    fn new(budget: Duration) -> RunClock {
        RunClock {
            budget_ns: u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX),
            spent_ns: AtomicU64::new(0),
            stretch_began_ns: AtomicU64::new(0),
            yielded: AtomicBool::new(false),
        }
    }

    fn reset(&self) {
        self.spent_ns.store(0, Ordering::Relaxed);
        self.yielded.store(false, Ordering::Relaxed);
    }

    fn poll_begins(&self) {
        self.stretch_began_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Counts the stretch in progress up to now (at most [`STRETCH_MAX`]); the next one
    /// begins now.
    fn count_stretch(&self) {
        let now = now_ns();
        let began = self.stretch_began_ns.swap(now, Ordering::Relaxed);
        self.add(now.saturating_sub(began).min(STRETCH_MAX_NS));
    }

    fn add(&self, ns: u64) {
        self.spent_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Called by the epoch callback: counts the stretch that just ran, and says whether the
    /// budget is spent.
    fn tick(&self) -> bool {
        self.count_stretch();
        self.spent_ns.load(Ordering::Relaxed) >= self.budget_ns
    }

    /// Budget left, by what was counted so far.
    fn left(&self) -> Duration {
        Duration::from_nanos(
            self.budget_ns
                .saturating_sub(self.spent_ns.load(Ordering::Relaxed)),
        )
    }
}

/// The most one stretch of a call is charged: one epoch tick, after which a running call
/// yields (see [`RunClock`]).
const STRETCH_MAX: Duration = super::EPOCH_TICK;

const STRETCH_MAX_NS: u64 = STRETCH_MAX.as_nanos() as u64;

/// Nanoseconds on the monotonic clock since the first call.
fn now_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Arms `store` for one call (or instantiation) under its time budget; run the call with
/// [`within_budget`] and the clock this returns.
pub(crate) fn arm(store: &mut Store<Sandbox>) -> Arc<RunClock> {
    let data = store.data_mut();
    data.run.reset();
    data.out_of_time = false;
    let run = data.run.clone();
    store.set_epoch_deadline(1);
    run
}

/// Runs an adapter call (or instantiation) under its time budget; `None` if the budget ran
/// out while the guest was parked on a host future. A guest that runs is stopped by the
/// epoch callback instead (the call then fails with [`OutOfTime`]).
pub(crate) async fn within_budget<F: Future>(run: Arc<RunClock>, call: F) -> Option<F::Output> {
    let mut call = pin!(call);
    // While the guest waits on the host: since when, and a timer for what is left.
    let mut host_wait: Option<(Instant, Pin<Box<tokio::time::Sleep>>)> = None;
    std::future::poll_fn(move |cx| {
        if let Some((since, timer)) = host_wait.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            run.add(u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX));
            host_wait = None;
        }
        run.poll_begins();
        match call.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                if !run.yielded.swap(false, Ordering::Relaxed) {
                    run.count_stretch();
                    let mut timer = Box::pin(tokio::time::sleep(run.left()));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    host_wait = Some((Instant::now(), timer));
                }
                Poll::Pending
            }
        }
    })
    .await
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi.get_or_insert_with(Wasi::new);
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            // An error (not `Ok(false)`) traps right here, instead of letting the guest's
            // allocator abort with a less telling `unreachable`.
            return Err(wasmtime::Error::msg(format!(
                "adapter asked for {desired} bytes of memory; the limit is {}",
                self.memory_bytes
            )));
        }
        self.memory_size += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// An instance's stderr: the last [`STDERR_CAPACITY`] bytes written to it. wasmtime-wasi's
/// `MemoryOutputPipe` keeps the first bytes and refuses the rest, so an adapter that logged
/// a few lines before it panicked reported its log lines and lost the panic.
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(STDERR_CAPACITY)..];
        let overflow = (kept.len() + bytes.len()).saturating_sub(STDERR_CAPACITY);
        kept.drain(..overflow);
        kept.extend_from_slice(bytes);
    }

    /// What is kept, lossily decoded (the cut may fall inside a character).
    fn contents(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).trim().to_owned()
    }
}

/// How much a guest may write in one go: any amount (only the tail is kept).
const STDERR_PERMIT: usize = 64 * 1024;

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// A clock that always reads zero: adapters have no use for time, and a real clock would let
/// them fingerprint the host or time other tenants.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretch_is_charged_what_it_took_up_to_one_tick() {
        let clock = RunClock::new(Duration::from_millis(100));
        let short = Instant::now();
        clock.poll_begins();
        clock.count_stretch();
        let spent = Duration::from_nanos(clock.spent_ns.load(Ordering::Relaxed));
        assert!(spent <= short.elapsed(), "{spent:?}");
        // A stretch the thread did not run all of (here: asleep) is charged one tick.
        std::thread::sleep(STRETCH_MAX * 4);
        assert!(!clock.tick(), "one tick of 100 ms spent");
        let spent = Duration::from_nanos(clock.spent_ns.load(Ordering::Relaxed));
        assert!(
            spent >= STRETCH_MAX && spent <= STRETCH_MAX * 2,
            "{spent:?}"
        );
        assert!(clock.left() <= Duration::from_millis(95));
        for _ in 0..19 {
            std::thread::sleep(STRETCH_MAX);
            clock.count_stretch();
        }
        assert!(clock.tick(), "the budget is spent after 20 full ticks");
    }
}
