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

/// Hands the heap's free pages back to the kernel (`malloc_trim`). The
/// settings above keep a job's freed buffers for its next step; once the job
/// is over an idle worker would otherwise sit on them (1.5 GiB after a
/// CIFAR-10 run). Returns whether anything was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it is
    // thread-safe (it locks each arena it trims).
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("resident pages");
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages * u64::try_from(page).expect("page size")
    }

    #[test]
    fn freed_heap_memory_goes_back_to_the_kernel() {
        // 256 MiB in 64 KiB blocks (heap, not mmap), written so they are
        // resident; the last block stays, so the heap cannot simply shrink.
        let mut blocks: Vec<Vec<u8>> = (0..4096)
            .map(|i| vec![(i % 251) as u8 + 1; 64 << 10])
            .collect();
        let keep = blocks.pop();
        drop(blocks);
        let before = rss_bytes();
        release_free_memory();
        let after = rss_bytes();
        assert!(
            before.saturating_sub(after) > 128 << 20,
            "RSS {before} -> {after}: the freed blocks stayed resident"
        );
        drop(keep);
    }
}
