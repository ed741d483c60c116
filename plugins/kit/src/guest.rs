//! What a `#![no_std]` adapter needs from its runtime (feature `runtime`): an allocator, a
//! panic handler and the canonical ABI's `cabi_realloc`.
//!
//! Why no std: Rust's std for `wasm32-wasip2` links wasi-libc and the WASI preview 1 adapter,
//! so every component carries a second core module and ~30 WASI imports, and the host pays
//! for them on every instantiation (an instance lives for one adapter call). Built without
//! std, an adapter is one core module with no imports at all.

/// wasi-libc's malloc, the allocator std uses on this target. (The `dlmalloc` crate, which std
/// uses on other wasm targets, grows linear memory on the first allocation of every fresh
/// instance, an mprotect in the host each time: a whole adapter call measured 19 -> 38 µs.)
#[global_allocator]
static ALLOCATOR: LibcMalloc = LibcMalloc;

struct LibcMalloc;

unsafe extern "C" {
    fn malloc(size: usize) -> *mut u8;
    fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
}

/// malloc's guaranteed alignment on wasm32.
const MIN_ALIGN: usize = 16;

// SAFETY: forwards to libc's allocator, asking for an explicit alignment whenever the layout
// needs more than malloc guarantees.
unsafe impl core::alloc::GlobalAlloc for LibcMalloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        unsafe {
            if layout.align() <= MIN_ALIGN && layout.align() <= layout.size() {
                malloc(layout.size())
            } else {
                aligned_alloc(layout.align(), layout.size())
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: core::alloc::Layout) {
        unsafe { free(ptr) }
    }

    unsafe fn realloc(
        &self,
        ptr: *mut u8,
        layout: core::alloc::Layout,
        new_size: usize,
    ) -> *mut u8 {
        unsafe {
            if layout.align() <= MIN_ALIGN && layout.align() <= new_size {
                realloc(ptr, new_size)
            } else {
                let new = self.alloc(core::alloc::Layout::from_size_align_unchecked(
                    new_size,
                    layout.align(),
                ));
                if !new.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    free(ptr);
                }
                new
            }
        }
    }
}

/// A panic is a bug in the adapter: trap, and the host reports the call as a trapped adapter.
/// There is no stderr to write the message to (no WASI), so it is not formatted at all.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

// memcpy, memcmp and friends: wasi-libc's (shipped with the target, pure code, no imports),
// since compiler-builtins leaves them to libc on this target.
#[link(name = "c")]
unsafe extern "C" {}

/// The canonical ABI's allocator export, through which the host writes call arguments into
/// the instance. On `wasm32-wasip2` std exports it and wit-bindgen counts on that; on
/// `wasm32-wasip1` (cargo-component's target) wit-bindgen brings its own.
///
/// # Safety
/// Called by the host with the canonical ABI's (old pointer, old size, alignment, new size)
/// of a block this allocator handed out, or a null block of size 0.
#[cfg(target_env = "p2")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a power-of-two alignment and, when old_len is not 0, a
    // block allocated here with that size and alignment.
    let ptr = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}
