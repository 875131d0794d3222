//! glibc malloc settings for a process that runs the model, applied once at start-up.
//!
//! The KV buffers are reallocated as they grow, ONNX Runtime's memory arena grows its regions
//! from whichever thread runs a kernel, and the server's own threads allocate too. glibc gives
//! every such thread its own arena (up to 8 per core), and memory freed into an arena stays
//! there for that arena's next allocations: with ONNX Runtime's arena off (as it was from
//! 2026-12-02 to 2026-12-04), that per-thread caching kept about 17 MB more after the typing
//! replay (models/README.md, "Memory"). Two arenas bound it; the threads that share them rarely
//! allocate at the same moment (one inference thread and its pool run one kernel at a time).
//!
//! A decode step streams the weights (about 98 MB) and the KV cache (23 KB a token) from memory.
//! In 4 KiB pages that is some 25,000 pages a step, each a TLB miss, and the CPU's prefetchers
//! stop at every page's end. With transparent huge pages for malloc's memory (glibc's
//! `glibc.malloc.hugetlb=1` tunable), the engine bench decoded 6 to 7 % faster, at the same
//! peak RSS (docs/configuration.md, `GLIBC_TUNABLES`). glibc reads tunables only as a process starts, so
//! `restart_with_huge_pages` restarts the process once with it set.

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

/// The tunable `restart_with_huge_pages` sets, and the name a user's own setting of it uses.
const HUGE_PAGES: &str = "glibc.malloc.hugetlb=1";
const HUGE_PAGES_NAME: &str = "glibc.malloc.hugetlb";

/// Restarts the process (`exec`: the same process id, arguments and open files, so an editor's
/// pipes stay connected) with `glibc.malloc.hugetlb=1` added to `GLIBC_TUNABLES`, unless it is
/// set there already (`glibc.malloc.hugetlb=0` there keeps 4 KiB pages) or the kernel's
/// transparent huge pages are off. Returns when it does not restart, or when the restart fails
/// (then the process runs on as it is). Must run first thing in `main`.
pub fn restart_with_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let current = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
        let Some(current) = current.to_str() else { return };
        if current.contains(HUGE_PAGES_NAME) || !transparent_huge_pages_available() {
            return;
        }
        let Ok(executable) = std::env::current_exe() else { return };
        let tunables = if current.is_empty() { HUGE_PAGES.to_string() } else { format!("{current}:{HUGE_PAGES}") };
        let mut arguments = std::env::args_os();
        let mut command = std::process::Command::new(executable);
        if let Some(name) = arguments.next() {
            command.arg0(name);
        }
        // `exec` returns only when it failed.
        let _failed = command.args(arguments).env("GLIBC_TUNABLES", tunables).exec();
    }
}

/// Whether the kernel gives transparent huge pages to memory that asks for them (its mode is
/// `always` or `madvise`, not `never`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn transparent_huge_pages_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|modes| modes.contains("[always]") || modes.contains("[madvise]"))
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
