//! Child processes the fault harness starts: they die with the thread that
//! started them, and may start inside another network namespace.
//!
//! Both need code to run in the child between `fork` and `exec`
//! (`CommandExt::pre_exec`), which is `unsafe`: the closure runs in a copy
//! of a multi-threaded process where only async-signal-safe calls are
//! allowed. The closures here make nothing but raw system calls (`prctl`,
//! `getppid`, `setns`) and build errors from an errno, which allocates
//! nothing.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

/// Makes the child receive SIGKILL when the thread that spawns it exits
/// (`PR_SET_PDEATHSIG`), so a harness that dies abruptly leaves no node
/// running. Spawn from a thread that lives as long as the child should
/// (the harness spawns from its main thread).
pub fn kill_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure only makes async-signal-safe system calls
    // (prctl, getppid) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|errno| io::Error::from_raw_os_error(errno as i32))?;
            // The parent may have died before the prctl: then no signal
            // will come, so give up now.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Makes the child enter the network namespace `namespace` (a descriptor
/// of `/proc/.../ns/net`) before it executes.
pub fn enter_network_namespace(command: &mut Command, namespace: &Arc<OwnedFd>) {
    let namespace = Arc::clone(namespace);
    // SAFETY: the closure only calls setns, an async-signal-safe system
    // call, on a descriptor the closure keeps open, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(&*namespace, CloneFlags::CLONE_NEWNET)
                .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
        });
    }
}
