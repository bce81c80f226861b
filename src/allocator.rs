//! The allocator settings a long-lived worker needs: glibc's malloc keeps freed memory in
//! one arena per thread it has seen (up to eight per core), so the memory a batch frees on
//! one thread is not reused by the next batch's work on another, and the worker's resident
//! memory climbs batch after batch by fragmentation rather than by data. Capping the arenas
//! makes a catch-up's peak follow its batch budget (measured: a 10 M-row first load peaked at
//! 1.2 GiB with glibc's default and at 0.7 GiB with two arenas, in the same time).
//!
//! After each activity the worker hands the arenas' free memory back to the system
//! ([`release_free_memory`]), so the next batch starts from what is live, not from the last
//! batch's high-water mark.
//!
//! `MALLOC_ARENA_MAX` in the environment still wins: the cap is set only when it is absent.

/// Caps glibc's malloc arenas (no-op elsewhere, or when `MALLOC_ARENA_MAX` is set). Call it
/// first thing in `main`, before any thread starts.
pub fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        /// The arenas the process's allocations share.
        const ARENAS: i32 = 2;
        // SAFETY: mallopt only changes the allocator's tunables; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// Returns the free memory of glibc's arenas to the system (no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
