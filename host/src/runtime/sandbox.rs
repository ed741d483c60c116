//! What an adapter instance can touch: nothing.
//!
//! Rust's `wasm32-wasip2` std imports a few WASI interfaces (stdio, environment, exit), and
//! components built through `cargo component` (wasip1 + adapter) import more (filesystem,
//! clocks, random); the built-in adapters are `no_std` and import none (cheaper to
//! instantiate). The host links all of WASI so std components load, but with nothing
//! granted: no preopened directories, no environment variables, no arguments, no sockets or
//! name lookups, a clock frozen at zero and deterministic "randomness". stdout is discarded;
//! stderr goes to a small in-memory buffer so a panic message can be logged.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreContextMut, UpdateDeadline};
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
    /// Epoch ticks one call may run before it is interrupted.
    pub call_ticks: u32,
}

/// The store data of one adapter instance.
pub struct Sandbox {
    /// Built on the adapter's first WASI call. Most requests make none (adapters touch WASI
    /// to write a panic message, say), and building a `WasiCtx` costs ~15 allocations and
    /// seeds two random generators from the OS that the builder then replaces: ~3% of
    /// chatd's per-request instructions when done for every instance (callgrind).
    wasi: Option<Wasi>,
    memory_bytes: usize,
    /// Ticks left for the call in progress.
    ticks_left: u32,
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
            ticks_left: 0,
            memory_exceeded: false,
            out_of_time: false,
        }
    }

    /// Arms the time budget for the next call.
    pub(crate) fn arm(&mut self, ticks: u32) {
        self.ticks_left = ticks;
        self.out_of_time = false;
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
        if data.ticks_left == 0 {
            data.out_of_time = true;
            return Err(wasmtime::Error::new(OutOfTime));
        }
        data.ticks_left -= 1;
        Ok(UpdateDeadline::Yield(1))
    }
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
