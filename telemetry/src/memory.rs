//! Handing freed memory back to the system, shared by the proxy and the controller. glibc keeps
//! what a burst of connections or a wave of config pushes freed, fragmented between longer-lived
//! allocations and spread over its per-thread arenas, so a process that once peaked stays there;
//! `malloc_trim` returns those free pages. Callers decide when a trim is worth its cost (a few
//! milliseconds on a large heap).

/// Returns the allocator's free pages to the system (a no-op where the allocator is not glibc's).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free lists; glibc
    // makes it safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
