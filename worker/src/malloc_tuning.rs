//! glibc malloc settings for training. Every step frees and allocates again the
//! same multi-megabyte activation and gradient buffers. With glibc's defaults
//! the larger ones come from fresh `mmap`s and the top of the heap is trimmed
//! back to the kernel, so each step pays page faults and page zeroing for
//! memory it had a moment ago (`perf`: exc_page_fault, clear_page_erms). Kept
//! in the heap instead, vit-tiny/4 trains about 10% faster on the CPU for about
//! 5% more peak memory (docs/benchmarks.md). libtorch's CUDA memory has its own
//! caching allocator and is not affected.

use std::sync::atomic::{AtomicBool, Ordering};

/// Allocations below this come from the heap (glibc's upper limit for the
/// threshold; larger ones are rare here: a vit-tiny/4 batch of 128 tops out
/// near 25 MiB per activation).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap returned to the kernel beyond this.
const TRIM_THRESHOLD: i32 = 512 << 20;

static APPLIED: AtomicBool = AtomicBool::new(false);

/// Whether [`keep_freed_memory`] applied the settings in this process.
pub fn applied() -> bool {
    APPLIED.load(Ordering::Relaxed)
}

/// Applies the settings unless the user set malloc tunables of their own
/// (`GLIBC_TUNABLES` or the older `MALLOC_*_` variables). Call it first thing
/// in `main`, before any thread or tensor exists. Returns whether it applied them.
pub fn keep_freed_memory() -> bool {
    let user_set = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc"))
        || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"));
    if user_set {
        return false;
    }
    let ok = apply();
    APPLIED.store(ok, Ordering::Relaxed);
    ok
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists and both values are in glibc's accepted range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
