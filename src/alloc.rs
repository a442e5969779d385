//! How the process's allocator treats freed memory: kept for reuse rather
//! than handed back to the kernel after every large buffer.
//!
//! Streaming allocates and frees a buffer of up to 64 KiB per output chunk on
//! every hop (pipe read, store, JSON frame, socket). glibc's default returns
//! the top of the heap to the kernel as soon as 128 KiB are free there, so
//! the next chunk faults fresh, zeroed pages back in: measured here, that
//! was a third of the host's CPU time while streaming and about half of a
//! client's. Keeping up to `KEPT_FREE` of freed heap per arena streams 1.5x as
//! fast (`cargo bench --bench host`); the host hands what it kept back once
//! no task is running (`give_back_freed_memory`).

/// Freed memory at the top of a heap kept before it is returned to the kernel.
pub const KEPT_FREE: usize = 16 * 1024 * 1024;
/// The largest buffer taken from the heap rather than mapped on its own.
/// glibc maps anything from 128 KiB up afresh (and unmaps it when freed)
/// once the trim threshold is set, which turns off its own adjustment of
/// this limit; a task's pipe is read up to 256 KiB at a time.
pub const FROM_HEAP_UP_TO: usize = 1024 * 1024;

/// Applies the setting to this process; returns whether the allocator took
/// it (always false where the C library is not glibc). Call once, first thing
/// in `main`, before the buffers it is about are allocated.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning parameters, under
        // glibc's own arena lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, FROM_HEAP_UP_TO as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_FREE as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns freed memory to the kernel now (when no task is streaming, say).
/// A no-op where the C library is not glibc.
pub(crate) fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory, under glibc's arena locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_setting() {
        assert!(super::keep_freed_memory());
    }
}
