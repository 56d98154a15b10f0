//! The global allocator's controls (jemalloc, the default `jemalloc`
//! feature): its statistics for `/metrics`, and giving back the free
//! blocks a thread keeps cached. Built with the system malloc, both do
//! nothing.

/// Live and resident bytes, as the allocator counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in live allocations.
    pub allocated: usize,
    /// Bytes of the allocator's pages in physical memory.
    pub resident: usize,
}

/// The allocator's view of memory now; `None` with the system malloc.
#[cfg(feature = "jemalloc")]
pub fn usage() -> Option<Usage> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // Statistics are cached until the epoch advances.
    epoch::advance().ok()?;
    Some(Usage {
        allocated: stats::allocated::read().ok()?,
        resident: stats::resident::read().ok()?,
    })
}

#[cfg(not(feature = "jemalloc"))]
pub fn usage() -> Option<Usage> {
    None
}

/// Give this thread's cached free blocks back to the shared arenas: for a
/// thread about to wait a long time after freeing a lot.
#[cfg(feature = "jemalloc")]
pub fn release_thread_cache() {
    // SAFETY: `thread.tcache.flush` takes no value in or out, so every
    // pointer is null and the length 0, as jemalloc's mallctl requires.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

#[cfg(not(feature = "jemalloc"))]
pub fn release_thread_cache() {}
