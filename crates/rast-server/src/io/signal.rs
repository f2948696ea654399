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

/// For a command-line tool printing to a pipe (`rast man | head`): the
/// default SIGPIPE action, so a reader that goes away ends the process
/// quietly, as for any Unix filter, instead of an error on every write.
/// Never for a server: its sockets need SIGPIPE ignored
/// ([`install_stop_handlers`]).
pub fn end_quietly_on_closed_pipe() -> std::io::Result<()> {
    // SAFETY: restoring the default action installs no code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) }?;
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
