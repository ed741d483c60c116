//! What an adapter instance can touch: nothing.
//!
//! Rust's `wasm32-wasip2` std imports a few WASI interfaces (stdio, environment, exit), and
//! components built through `cargo component` (wasip1 + adapter) import more (filesystem,
//! clocks, random); the built-in adapters are `no_std` and import none (cheaper to
//! instantiate). The host links all of WASI so std components load, but with nothing
//! granted: no preopened directories, no environment variables, no arguments, no sockets or
//! name lookups, a clock frozen at zero and deterministic "randomness". stdout is discarded;
//! stderr goes to a small in-memory buffer so a panic message can be logged.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// Bytes of adapter stderr kept per instance (enough for a panic message).
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
    stderr: MemoryOutputPipe,
}

impl Wasi {
    fn new() -> Wasi {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
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
            run: Arc::new(RunClock::new(limits.call_budget)),
            memory_exceeded: false,
            out_of_time: false,
        }
    }

    /// What the adapter wrote to stderr (a panic message, usually), lossily decoded.
    pub fn stderr(&self) -> String {
        match &self.wasi {
            Some(wasi) => String::from_utf8_lossy(&wasi.stderr.contents())
                .trim()
                .to_owned(),
            None => String::new(),
        }
    }

    /// Epoch callback: yield to the executor each tick so a busy adapter never blocks a
    /// runtime thread, and interrupt the call once its budget is spent.
    pub(crate) fn on_epoch(
        mut ctx: StoreContextMut<'_, Sandbox>,
    ) -> wasmtime::Result<UpdateDeadline> {
        let data = ctx.data_mut();
        if data.run.spent() >= data.run.budget {
            data.out_of_time = true;
            return Err(wasmtime::Error::new(OutOfTime));
        }
        data.run.yields();
        Ok(UpdateDeadline::Yield(1))
    }
}

/// How long the adapter call in progress has run, for its time budget.
///
/// A call yields its thread at every epoch tick, and on a busy thread it then waits behind
/// other requests before it runs again. That wait is the host's load, not the adapter's
/// work: counting it made calls that need a few milliseconds fail with `adapter_timeout` at
/// 64 concurrent requests. So only the time the call's future is being polled counts, plus
/// time the guest spends parked on a host future it asked for (a WASI sleep), which is its
/// own doing. Shared by the store's epoch callback and the call's future ([`within_budget`]).
///
/// A poll is timed with the monotonic clock while the call is short (almost every call
/// ends in its first poll, within microseconds); once it has yielded at a tick, its polls
/// are timed in the thread's CPU time, so that the OS running other processes in the middle
/// of a poll does not count either (reading that clock is a ~0.5 µs system call, which only
/// calls that already ran for milliseconds pay).
#[derive(Debug)]
pub(crate) struct RunClock {
    /// What one call may spend.
    budget: Duration,
    origin: Instant,
    /// Nanoseconds counted before the poll in progress.
    spent_ns: AtomicU64,
    /// When the poll in progress began: nanoseconds since `origin`, or of the thread's CPU
    /// time once `long` is set.
    poll_began_ns: AtomicU64,
    /// Set by the epoch callback when it yields: the `Pending` that follows is that yield,
    /// not a wait on the host.
    yielded: AtomicBool,
    /// The call has yielded at a tick at least once.
    long: AtomicBool,
}

impl RunClock {
    fn new(budget: Duration) -> RunClock {
        RunClock {
            budget,
            origin: Instant::now(),
            spent_ns: AtomicU64::new(0),
            poll_began_ns: AtomicU64::new(0),
            yielded: AtomicBool::new(false),
            long: AtomicBool::new(false),
        }
    }

    /// Now, on the clock the poll in progress is timed with.
    fn now_ns(&self) -> u64 {
        if self.long.load(Ordering::Relaxed)
            && let Some(cpu) = thread_cpu_ns()
        {
            return cpu;
        }
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn reset(&self) {
        self.spent_ns.store(0, Ordering::Relaxed);
        self.yielded.store(false, Ordering::Relaxed);
        self.long.store(false, Ordering::Relaxed);
    }

    fn poll_begins(&self) {
        self.poll_began_ns.store(self.now_ns(), Ordering::Relaxed);
    }

    fn poll_ends(&self) {
        self.add(self.polling_ns());
    }

    fn polling_ns(&self) -> u64 {
        self.now_ns()
            .saturating_sub(self.poll_began_ns.load(Ordering::Relaxed))
    }

    fn add(&self, ns: u64) {
        self.spent_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Called by the epoch callback as the call yields. The poll in progress is counted up
    /// to here on its clock and goes on on the CPU clock.
    fn yields(&self) {
        if !self.long.load(Ordering::Relaxed) {
            self.add(self.polling_ns());
            self.long.store(true, Ordering::Relaxed);
            self.poll_begins();
        }
        self.yielded.store(true, Ordering::Relaxed);
    }

    /// Time run so far, the poll in progress included (the epoch callback runs inside one).
    fn spent(&self) -> Duration {
        Duration::from_nanos(self.spent_ns.load(Ordering::Relaxed) + self.polling_ns())
    }

    /// Time counted before the poll in progress (none is, outside polls).
    fn counted(&self) -> Duration {
        Duration::from_nanos(self.spent_ns.load(Ordering::Relaxed))
    }
}

/// CPU time the calling thread has used, in nanoseconds.
#[cfg(unix)]
fn thread_cpu_ns() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call only writes to it.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    ok.then(|| secs * 1_000_000_000 + nanos)
}

#[cfg(not(unix))]
fn thread_cpu_ns() -> Option<u64> {
    None
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
        let polled = call.as_mut().poll(cx);
        run.poll_ends();
        match polled {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                if !run.yielded.swap(false, Ordering::Relaxed) {
                    let left = run.budget.saturating_sub(run.counted());
                    let mut timer = Box::pin(tokio::time::sleep(left));
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
        _current: usize,
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
