//! glibc malloc settings for a process that runs the model, applied once at start-up.
//!
//! The KV buffers are reallocated as they grow, ONNX Runtime's memory arena grows its regions
//! from whichever thread runs a kernel, and the server's own threads allocate too. glibc gives
//! every such thread its own arena (up to 8 per core), and memory freed into an arena stays
//! there for that arena's next allocations: with ONNX Runtime's arena off (as it was from
//! 2026-12-02 to 2026-12-04), that per-thread caching kept about 17 MB more after the typing
//! replay (models/README.md, "Memory"). Two arenas bound it; the threads that share them rarely
//! allocate at the same moment (one inference thread and its pool run one kernel at a time).

/// Most glibc malloc arenas (the main one and one for all other threads).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Applies the settings. Must run before the process starts threads: glibc fixes its arena
/// limit when a second arena is first needed.
pub fn tune_for_inference() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Returns the free memory of malloc's arenas to the system: after a batch
/// (`Model::generate_batch`) freed its buffers, which glibc would otherwise keep for later
/// allocations, so the process's resident memory goes back to what it was before the batch.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory malloc holds free; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
