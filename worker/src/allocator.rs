//! The worker's memory allocator: jemalloc, linked in statically and
//! overriding `malloc` for the whole process (libtorch's C++ included).
//!
//! Every training step frees and allocates again the same multi-megabyte
//! activation and gradient buffers, and under bf16 autocast also thousands of
//! small ones (casts, oneDNN descriptors). glibc's malloc, even tuned to keep
//! freed memory in the heap (this module's former `mallopt` settings), spent
//! a fifth of a bf16 step in `_int_free`, `_int_malloc` and
//! `malloc_consolidate`; jemalloc with its purging off trains vit-tiny/4 32%
//! faster in bf16 and a few percent faster in fp32, with 10-15% less peak
//! memory (docs/benchmarks.md). Freed pages stay with the process between
//! steps; [`release_free_memory`] hands them back once a job is over.

use std::ffi::{CStr, c_char, c_void};

// The crate must be visible to rustc for its `malloc` to override libc's.
use tikv_jemalloc_sys as _;

/// jemalloc's settings, read before `main`: never purge freed pages on a
/// timer (each step would fault them in again). `MALLOC_CONF` in the
/// environment is read after this and wins, option by option.
const SETTINGS: &CStr = c"dirty_decay_ms:-1,muzzy_decay_ms:-1";

/// A C string pointer that may live in a static.
#[repr(transparent)]
pub struct ConfPtr(*const c_char);

// SAFETY: it points at a 'static, immutable C string.
unsafe impl Sync for ConfPtr {}

/// jemalloc reads its compiled-in options from this symbol (a weak `NULL` in
/// jemalloc itself, so this definition wins).
#[unsafe(export_name = "malloc_conf")]
#[used]
pub static MALLOC_CONF: ConfPtr = ConfPtr(SETTINGS.as_ptr());

/// Keeps [`MALLOC_CONF`] in a binary that links this crate: a static nothing
/// refers to may be left out by the linker. Call it first thing in `main`.
pub fn keep_settings() {
    std::hint::black_box(&MALLOC_CONF);
}

/// `MALLCTL_ARENAS_ALL` in jemalloc's `arena.<i>.*` names.
const ALL_ARENAS_PURGE: &CStr = c"arena.4096.purge";

/// Whether freed memory stays with the process between steps: jemalloc's
/// dirty-page decay is off, as [`SETTINGS`] sets it, unless the user's
/// `MALLOC_CONF` turned it back on.
pub fn applied() -> bool {
    let mut value: isize = 0;
    let mut len = std::mem::size_of::<isize>();
    // SAFETY: `opt.dirty_decay_ms` is an ssize_t; `value` and `len` describe
    // a buffer of that size and nothing is written into jemalloc.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"opt.dirty_decay_ms".as_ptr(),
            (&raw mut value).cast::<c_void>(),
            &raw mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0 && value == -1
}

/// Hands the freed pages of every arena back to the kernel. [`SETTINGS`]
/// keep a job's freed buffers for its next step; once the job is over an idle
/// worker would otherwise sit on them (1.5 GiB after a CIFAR-10 run). Returns
/// whether jemalloc accepted the request.
pub fn release_free_memory() -> bool {
    // SAFETY: `arena.<all>.purge` takes and returns nothing; jemalloc locks
    // each arena it purges, so any thread may call it.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            ALL_ARENAS_PURGE.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn rss_bytes() -> i64 {
        crate::system::process::rss_bytes().expect("resident memory")
    }

    #[test]
    fn freed_memory_stays_until_released() {
        keep_settings();
        assert!(applied(), "jemalloc did not read MALLOC_CONF's settings");
        // 256 MiB in 64 KiB blocks, written so they are resident; the last
        // block stays, so the arena cannot simply be unmapped whole.
        let mut blocks: Vec<Vec<u8>> = (0..4096)
            .map(|i| vec![(i % 251) as u8 + 1; 64 << 10])
            .collect();
        let keep = blocks.pop();
        let allocated = rss_bytes();
        drop(blocks);
        let before = rss_bytes();
        assert!(
            allocated - before < 32 << 20,
            "RSS {allocated} -> {before}: freed blocks went back to the kernel on their own"
        );
        release_free_memory();
        let after = rss_bytes();
        assert!(
            before - after > 128 << 20,
            "RSS {before} -> {after}: the freed blocks stayed resident"
        );
        drop(keep);
    }
}
