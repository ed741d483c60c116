//! The adapter runtime: one wasmtime engine, adapters compiled once at load and pre-linked,
//! and fresh pooled instances for every request.
//!
//! Why this shape: instantiating from an `InstancePre` into a pooling allocator slot costs
//! a few microseconds, so every request gets its own instances (no state can leak between
//! requests) and none is held long while the upstream works (the gateway keeps an idle
//! instance for at most 10 ms; a request waiting a minute for a model holds no slot and no
//! instance memory). The built-in adapters are `no_std` (no WASI imports), which halves what
//! instantiation costs. Calls are async so a guest that writes to stderr (a std guest's panic
//! does) works on tokio threads, and so a busy guest yields at every epoch tick.

pub mod adapter;

pub mod library;
mod retire;
pub mod sandbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use crate::contract::ContractVersion;
pub use adapter::{Adapter, AdapterInstance, AdapterSource};
pub use retire::drop_on_park;
use sandbox::{OutOfTime, Sandbox, SandboxLimits};

/// How often the engine's epoch advances while adapter instances are alive: the granularity
/// of the per-call time budget and of yielding to the executor while a guest runs.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How long the epoch clock sleeps at most while no adapter instance is alive (it is woken as
/// soon as one is created). Bounded so the thread notices when its engine is gone.
const IDLE_EPOCH_SLEEP: Duration = Duration::from_secs(1);

/// Dirty linear memory a pool slot keeps resident (reset with memset) when its instance is
/// dropped; see `Runtime::new`.
const KEEP_RESIDENT: usize = 512 << 10;

/// How long a request waits for a free adapter instance slot before a 503.
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// An adapter call whose input (request or response) is at least this big is a heavy call:
/// it waits for room in the runtime's heavy-call budget, [`HEAVY_PER_CPU`] per CPU.
pub const HEAVY_CALL_BYTES: usize = 1 << 20;

/// Input of heavy calls in progress at once, per CPU. An instance grows to about six times
/// its input while it builds the upstream body (a 4 MiB body: 21-25 MiB), and with every call
/// yielding at each epoch tick, a burst of big requests on one thread otherwise has all of
/// them half-built at once: 64 requests of 4 MiB held ~400 MiB of adapter memory. Two 4 MiB
/// calls per CPU keep the CPUs busy; more would only hold more memory. Calls under
/// [`HEAVY_CALL_BYTES`] never wait for it, so a big request cannot hold up ordinary ones.
const HEAVY_PER_CPU: usize = 8 << 20;

/// Why a component could not become an adapter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("needs more memory at start than [chatd.sandbox] memory_mib allows (raise it): {0}")]
    MemoryLimit(String),
    #[error("not a chatd adapter: {0}")]
    NotAnAdapter(String),
    #[error("unsupported contract version {found} (this chatd serves {supported})")]
    UnsupportedContract { found: String, supported: String },
    #[error("imports something chatd does not provide: {0}")]
    Link(String),
    #[error("exports do not match contract {version}: {message}")]
    Exports {
        version: ContractVersion,
        message: String,
    },
    #[error("cannot be instantiated against contract: {0}")]
    Instantiate(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    #[error("describe() returned an unusable description: {0}")]
    Description(String),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
}

/// Why a call into an adapter produced no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("adapter trapped: {0}")]
    Trap(String),
    #[error("adapter exceeded its time budget")]
    Timeout,
    #[error("adapter exceeded its memory limit")]
    MemoryLimit,
    #[error("no adapter instance slot free")]
    Capacity,
    #[error("adapter returned an unusable value: {0}")]
    BadOutput(String),
}

impl CallError {
    pub(crate) fn from_trap(e: &wasmtime::Error, sandbox: &Sandbox) -> CallError {
        if sandbox.out_of_time || e.downcast_ref::<OutOfTime>().is_some() {
            return CallError::Timeout;
        }
        if sandbox.memory_exceeded {
            return CallError::MemoryLimit;
        }
        let mut message = adapter::error_chain(e);
        let stderr = stderr_excerpt(&sandbox.stderr());
        if !stderr.is_empty() {
            message = format!("{message} (adapter stderr: {stderr})");
        }
        CallError::Trap(message)
    }
}

/// Characters of an adapter's stderr an error message quotes.
const STDERR_EXCERPT: usize = 300;

/// What of a trapped guest's stderr to report, on one line: from its last panic message on
/// (what an adapter logged before it panicked is not why it failed), else its end. std's
/// hint to set `RUST_BACKTRACE` is dropped (a sandbox has no environment to set it in).
fn stderr_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let panic = lines.iter().rposition(|line| line.contains("panicked at"));
    let text = lines[panic.unwrap_or(0)..].join(" | ");
    let chars = text.chars().count();
    if panic.is_none() && chars > STDERR_EXCERPT {
        let tail: String = text.chars().skip(chars - STDERR_EXCERPT).collect();
        return format!("...{tail}");
    }
    match text.char_indices().nth(STDERR_EXCERPT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Settings the runtime is built with.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    /// Memory an adapter instance may use.
    pub memory_bytes: usize,
    /// Time budget of one adapter call.
    pub call_budget: Duration,
    /// Adapter instances alive at once.
    pub max_instances: u32,
}

impl RuntimeConfig {
    /// Reads the runtime settings from `[chatd.sandbox]`.
    pub fn from_config(c: &crate::config::SandboxConfig) -> RuntimeConfig {
        RuntimeConfig {
            memory_bytes: c.memory_mib as usize * 1024 * 1024,
            call_budget: Duration::from_millis(c.cpu_ms),
            max_instances: c.max_instances,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig::from_config(&crate::config::SandboxConfig::default())
    }
}

/// The shared engine, linker and instance slots. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<Sandbox>,
    limits: SandboxLimits,
    config: RuntimeConfig,
    slots: Arc<Semaphore>,
    /// The heavy-call budget, one permit per MiB of input.
    heavy: Arc<Semaphore>,
    /// Its size in permits.
    heavy_budget: usize,
    clock: EpochClock,
}

impl Runtime {
    /// Builds the engine (pooling allocator sized from `config`) and starts its epoch clock.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, String> {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances;
        // A Rust component has one memory but several small core instances and tables
        // (wit-component glue), hence the multipliers.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(config.memory_bytes)
            // On reuse, a slot's memory is reset with memset instead of madvise: with the
            // kernel's PAGEMAP_SCAN (Linux 6.7+) only pages the last request dirtied are
            // touched, which almost halves an adapter call on a fresh instance (see
            // bench/README.md). Beyond this much dirty memory the rest is madvised away:
            // whatever is kept stays resident in the slot, so after a burst of big bodies
            // every slot it used kept all of it (4 MiB each, 256 MiB for 64 requests, when
            // this was 4 MiB). A request of ordinary size dirties far less (a 100 KB body:
            // ~350 KiB).
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .wasm_component_model(true);
        if std::env::var_os("CHATD_WASM_PERFMAP").is_some_and(|v| v == "1") {
            // Lets `perf report` name adapter functions instead of bare JIT addresses.
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm).map_err(|e| format!("cannot start wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| format!("cannot link WASI: {e}"))?;
        let slots = Arc::new(Semaphore::new(n as usize));
        let clock = EpochClock::start(&engine, slots.clone(), n)?;
        let limits = SandboxLimits {
            memory_bytes: config.memory_bytes,
            call_budget: config.call_budget,
        };
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let heavy_budget = cpus * HEAVY_PER_CPU / HEAVY_CALL_BYTES;
        let heavy = Arc::new(Semaphore::new(heavy_budget));
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                limits,
                config,
                slots,
                heavy,
                heavy_budget,
                clock,
            }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub(crate) fn linker(&self) -> &Linker<Sandbox> {
        &self.inner.linker
    }

    /// Compiles component bytes (tens of milliseconds: done at load, never per request).
    pub(crate) fn compile(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        Component::new(&self.inner.engine, bytes).map_err(|e| {
            let message = adapter::error_chain(&e);
            // wasmtime's words for a component whose memory at start exceeds the limit each
            // instance slot is sized for: the component is fine, the setting is too small.
            if message.contains("pooling allocator") && message.contains("memory") {
                LoadError::MemoryLimit(message)
            } else {
                LoadError::Compile(message)
            }
        })
    }

    pub(crate) fn new_store(&self) -> Store<Sandbox> {
        let mut store = Store::new(&self.inner.engine, Sandbox::new(&self.inner.limits));
        store.limiter(|s| s);
        store.epoch_deadline_callback(Sandbox::on_epoch);
        store
    }

    /// Adapter instances alive now (calls running, and instances kept for a request's next
    /// call), out of `config().max_instances`.
    pub fn instances_in_use(&self) -> u32 {
        in_use(&self.inner.slots, self.inner.config.max_instances)
    }

    /// Waits for a free instance slot, at most [`SLOT_WAIT`]: waiting smooths bursts, the
    /// bound turns sustained overload into a clear 503 instead of a queue that never drains.
    pub(crate) async fn acquire_slot(&self) -> Result<OwnedSemaphorePermit, CallError> {
        let slots = self.inner.slots.clone();
        match tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await {
            Ok(Ok(permit)) => {
                self.inner.clock.wake();
                Ok(permit)
            }
            _ => Err(CallError::Capacity),
        }
    }

    /// A share of the heavy-call budget for a call whose input is `bytes` long, waiting for
    /// it at most [`SLOT_WAIT`]; `None` for a call under [`HEAVY_CALL_BYTES`], which never
    /// waits. `held` is what the instance holds already (a second call on it tops it up). A
    /// call bigger than the whole budget waits for all of it.
    pub(crate) async fn weigh(
        &self,
        bytes: usize,
        held: usize,
    ) -> Result<Option<OwnedSemaphorePermit>, CallError> {
        if bytes < HEAVY_CALL_BYTES {
            return Ok(None);
        }
        let wanted = bytes
            .div_ceil(HEAVY_CALL_BYTES)
            .min(self.inner.heavy_budget);
        // At most the budget, which a semaphore's permits fit.
        let more = u32::try_from(wanted.saturating_sub(held)).unwrap_or(u32::MAX);
        if more == 0 {
            return Ok(None);
        }
        let heavy = self.inner.heavy.clone();
        match tokio::time::timeout(SLOT_WAIT, heavy.acquire_many_owned(more)).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(CallError::Capacity),
        }
    }

    /// How many times the epoch clock has ticked (it pauses while no instance is alive).
    pub fn epoch_ticks(&self) -> u64 {
        self.inner.clock.ticks.load(Ordering::Relaxed)
    }
}

/// Slots taken out of `max` (the epoch clock holds the semaphore, not the runtime).
fn in_use(slots: &Semaphore, max: u32) -> u32 {
    max.saturating_sub(u32::try_from(slots.available_permits()).unwrap_or(u32::MAX))
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] while any adapter
/// instance is alive, so that an idle chatd does not wake up 200 times a second.
struct EpochClock {
    thread: std::thread::Thread,
    ticks: Arc<AtomicU64>,
}

impl EpochClock {
    /// Starts the clock; it stops once the engine is dropped.
    fn start(engine: &Engine, slots: Arc<Semaphore>, max: u32) -> Result<EpochClock, String> {
        let weak = engine.weak();
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        let handle = std::thread::Builder::new()
            .name("chatd-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    counter.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(EPOCH_TICK);
                    // An instance created after this check unparks the thread (park returns at
                    // once if that happened before it), so no call misses its ticks for long.
                    if in_use(&slots, max) == 0 {
                        std::thread::park_timeout(IDLE_EPOCH_SLEEP);
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        Ok(EpochClock {
            thread: handle.thread().clone(),
            ticks,
        })
    }

    /// Makes sure the clock runs: called whenever an instance slot is taken. Cheap unless the
    /// clock was parked.
    fn wake(&self) {
        self.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_reports_the_panic_after_what_the_adapter_logged() {
        let logged: String = (0..20)
            .map(|i| format!("debug line {i}: {}\n", "x".repeat(40)))
            .collect();
        let panic = "thread '<unnamed>' panicked at src/lib.rs:9:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            stderr_excerpt(&format!("{logged}{panic}")),
            "thread '<unnamed>' panicked at src/lib.rs:9:5: | boom"
        );
        // Without a panic message, the end is what is reported.
        let excerpt = stderr_excerpt(&logged);
        assert!(
            excerpt.starts_with("...") && excerpt.contains("debug line 19"),
            "{excerpt}"
        );
        assert_eq!(excerpt.chars().count(), 3 + STDERR_EXCERPT);
        // A long panic message is cut at its end.
        let long = stderr_excerpt(&format!(
            "thread 'x' panicked at a.rs:1:1:\n{}",
            "é".repeat(400)
        ));
        assert!(
            long.starts_with("thread 'x' panicked at") && long.ends_with("é..."),
            "{long}"
        );
        assert_eq!(stderr_excerpt(""), "");
    }

    #[tokio::test]
    async fn heavy_calls_share_a_budget_that_ordinary_calls_never_wait_for() {
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let budget = runtime.inner.heavy_budget;
        assert!(budget >= 8, "{budget}");
        // Ordinary inputs take nothing.
        assert!(
            runtime
                .weigh(HEAVY_CALL_BYTES - 1, 0)
                .await
                .unwrap()
                .is_none()
        );
        // A big one takes a permit per MiB; what an instance holds already is not taken twice.
        let four = runtime.weigh(4 << 20, 0).await.unwrap().unwrap();
        assert_eq!(four.num_permits(), 4);
        assert!(runtime.weigh(4 << 20, 4).await.unwrap().is_none());
        let more = runtime.weigh(6 << 20, 4).await.unwrap().unwrap();
        assert_eq!(more.num_permits(), 2);
        // One bigger than the whole budget waits for all of it, not forever.
        drop((four, more));
        let all = runtime.weigh(1 << 40, 0).await.unwrap().unwrap();
        assert_eq!(all.num_permits(), budget);
        // With the budget taken, a heavy call waits and an ordinary one does not.
        let waiting = tokio::spawn({
            let runtime = runtime.clone();
            async move {
                runtime
                    .weigh(2 << 20, 0)
                    .await
                    .map(|p| p.map(|p| p.num_permits()))
            }
        });
        assert!(runtime.weigh(64 << 10, 0).await.unwrap().is_none());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(all);
        assert_eq!(waiting.await.unwrap().unwrap(), Some(2));
    }

    #[test]
    fn a_multi_line_load_error_is_reported_whole_on_one_line() {
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        // Not even a wasm header: the parser lists the expected and actual bytes over lines.
        let Err(LoadError::Compile(message)) = runtime.compile(b"junk") else {
            panic!("junk compiled");
        };
        assert!(!message.contains('\n'), "{message:?}");
        assert!(
            message.contains("expected=[") && message.contains("actual="),
            "{message}"
        );
    }
}
