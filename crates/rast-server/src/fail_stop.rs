//! Fail-stop: a panic anywhere in a serving process ends the whole process.
//!
//! A node is one process of several threads (a core per thread). Were a
//! panic to end only its thread, the process would keep answering from the
//! other cores while the groups of the dead one stop without a word: half
//! a node, worse than none. So [`abort_on_panic`] installs a hook that logs
//! the panic and aborts; restarting is the operator's (or systemd's) job,
//! and recovery from the files is what a restart does anyway.
//!
//! One panic is expected and contained: the key-value state machine runs
//! each apply inside [`contain`] (a panicking apply stops that machine and
//! is reported, while its log keeps replicating). The hook lets a panic
//! inside `contain` unwind to it.
//!
//! ```text
//!  panic ──► hook ──► inside contain? ── yes ──► unwind to catch_unwind
//!                                    └── no ───► log, abort the process
//! ```

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Depth of [`contain`] calls on this thread.
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
}

/// Runs `work`, catching a panic inside it (the hook of
/// [`abort_on_panic`] lets it unwind to here).
pub fn contain<R>(work: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    CONTAINED.with(|depth| depth.set(depth.get() + 1));
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    CONTAINED.with(|depth| depth.set(depth.get() - 1));
    outcome
}

/// Whether this thread is inside [`contain`].
pub fn contained() -> bool {
    CONTAINED.with(|depth| depth.get() > 0)
}

/// Makes every panic outside [`contain`] abort the process, after the usual
/// message and an error in the log. Installed once per process.
pub fn abort_on_panic() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let report = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            report(info);
            if contained() {
                return;
            }
            tracing::error!(%info, "panic: stopping the whole process (fail-stop)");
            std::process::abort();
        }));
    });
}
