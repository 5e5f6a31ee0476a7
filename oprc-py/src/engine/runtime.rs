//! The engine's tokio runtime: started on first use, one per process. After `fork()` the
//! child finds the parent's runtime without its threads, so it builds its own (the
//! parent's is left untouched: dropping it would wait for threads that do not exist).
//! No pyo3.

use std::sync::atomic::{AtomicPtr, Ordering};

use tokio::runtime::{Builder, Handle, Runtime};

struct Owned {
    pid: u32,
    runtime: Runtime,
}

static CURRENT: AtomicPtr<Owned> = AtomicPtr::new(std::ptr::null_mut());

/// Handle of this process's runtime, building it on first use (and again after a fork).
///
/// The runtime has one worker thread (futures here only wait for tickets) and at most four
/// blocking threads (they take the GIL to resolve Python futures).
pub fn handle() -> std::io::Result<Handle> {
    let pid = std::process::id();
    let cur = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null CURRENT always points to a leaked `Owned` that is never freed.
    if let Some(owned) = unsafe { cur.as_ref() } {
        if owned.pid == pid {
            return Ok(owned.runtime.handle().clone());
        }
    }
    let runtime = Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_name("oaas-engine")
        .enable_time()
        .build()?;
    let fresh = Box::into_raw(Box::new(Owned { pid, runtime }));
    match CURRENT.compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `fresh` was just leaked from a Box and is now published, never freed.
        Ok(_) => Ok(unsafe { &*fresh }.runtime.handle().clone()),
        Err(_) => {
            // Another thread installed a runtime first: drop ours, use theirs.
            // SAFETY: `fresh` was never published, so this thread owns it alone.
            let ours = unsafe { Box::from_raw(fresh) };
            ours.runtime.shutdown_background();
            handle()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn handle_is_reused_within_a_process() {
        let a = super::handle().expect("runtime");
        let b = super::handle().expect("runtime");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.block_on(async { 1 + 1 }), 2);
    }
}
