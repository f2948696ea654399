//! Socket set-up for the event loop: listeners shared across cores with
//! `SO_REUSEPORT`, outgoing sockets, and adopting descriptors the ring
//! returns.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::constants::PIPE_BYTES;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

/// A listening TCP socket on `address` that every core binds with
/// `SO_REUSEPORT`, so the kernel spreads connections across cores.
pub fn listen_reuseport(address: SocketAddr) -> io::Result<OwnedFd> {
    let socket = socket(
        family(address),
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    setsockopt(&socket, sockopt::ReusePort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &SockaddrStorage::from(address),
    )?;
    listen(&socket, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    Ok(socket)
}

/// A new TCP socket for an outgoing connection (no delay on small frames).
pub fn tcp_socket(address: SocketAddr) -> io::Result<File> {
    let socket = socket(
        family(address),
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&socket, sockopt::TcpNoDelay, &true)?;
    Ok(File::from(socket))
}

/// Takes ownership of a descriptor an accept completion returned, and
/// turns off Nagle's algorithm on it.
pub fn adopt_socket(fd: i32) -> File {
    assert!(fd >= 0, "adopt_socket of an error result");
    // SAFETY: the kernel just created this descriptor for us (an accept
    // completion); nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(error) = setsockopt(&owned, sockopt::TcpNoDelay, &true) {
        tracing::debug!(%error, "TCP_NODELAY on an accepted socket");
    }
    File::from(owned)
}

fn family(address: SocketAddr) -> AddressFamily {
    match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A pipe for splicing socket → pipe → file: (read end, write end), sized
/// to [`PIPE_BYTES`] when the system allows (else the default 64 KiB).
pub fn splice_pipe() -> io::Result<(File, File)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    if let Err(error) = nix::fcntl::fcntl(
        &write,
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32),
    ) {
        tracing::debug!(%error, "F_SETPIPE_SZ; keeping the default pipe size");
    }
    Ok((File::from(read), File::from(write)))
}
