//! Stop signals: SIGTERM and SIGINT set a flag the event loops poll every
//! tick; SIGPIPE is ignored so a peer closing mid-send never kills the
//! process.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOPPING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOPPING.store(true, Ordering::SeqCst);
}

/// Installs the handlers.
pub fn install_stop_handlers() -> std::io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    // SAFETY: ignoring SIGPIPE installs no code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }?;
    Ok(())
}

/// Whether a stop was requested (by a signal or [`request_stop`]).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Requests a stop from inside the process (a core failed to start).
pub fn request_stop() {
    STOPPING.store(true, Ordering::SeqCst);
}
