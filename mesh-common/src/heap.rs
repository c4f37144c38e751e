//! A global allocator that counts live heap bytes, for the memory tests and benchmarks
//! (`feature = "heap-count"`, dev-dependencies only).
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: mesh_common::heap::Counting = mesh_common::heap::Counting;
//! let before = mesh_common::heap::live_bytes();
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Forwards to the system allocator and keeps the count of live bytes.
#[derive(Debug)]
pub struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Heap bytes allocated through [`Counting`] and not yet freed (0 unless it is the global
/// allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}
