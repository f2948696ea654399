//! Socket set-up for the event loop: listeners shared across cores with
//! `SO_REUSEPORT`, outgoing sockets, and adopting descriptors the ring
//! returns.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::constants::{
    KEEPALIVE_IDLE_SECS, KEEPALIVE_INTERVAL_SECS, KEEPALIVE_PROBES, PIPE_BYTES,
};
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
    keep_alive(&socket)?;
    Ok(File::from(socket))
}

/// The IP address at the other end of a connected socket (`None` when it
/// cannot be read, or for a Unix socket).
pub fn peer_ip(socket: &File) -> Option<std::net::IpAddr> {
    let address: nix::sys::socket::SockaddrStorage =
        nix::sys::socket::getpeername(std::os::fd::AsRawFd::as_raw_fd(socket)).ok()?;
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(std::net::IpAddr::V4(v4.ip()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| std::net::IpAddr::V6(v6.ip()))
}

/// Takes ownership of a descriptor an accept completion returned, turns off
/// Nagle's algorithm on it and turns on TCP keepalive.
pub fn adopt_socket(fd: i32) -> File {
    assert!(fd >= 0, "adopt_socket of an error result");
    // SAFETY: the kernel just created this descriptor for us (an accept
    // completion); nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(error) = setsockopt(&owned, sockopt::TcpNoDelay, &true) {
        tracing::debug!(%error, "TCP_NODELAY on an accepted socket");
    }
    if let Err(error) = keep_alive(&owned) {
        tracing::debug!(%error, "TCP keepalive on an accepted socket");
    }
    File::from(owned)
}

/// TCP keepalive: a peer or client that vanished without a word (its
/// machine lost power, a link went down) is noticed and its connection
/// closed, instead of being kept for good.
fn keep_alive(socket: &OwnedFd) -> nix::Result<()> {
    setsockopt(socket, sockopt::KeepAlive, &true)?;
    setsockopt(socket, sockopt::TcpKeepIdle, &KEEPALIVE_IDLE_SECS)?;
    setsockopt(socket, sockopt::TcpKeepInterval, &KEEPALIVE_INTERVAL_SECS)?;
    setsockopt(socket, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)
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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, IntoRawFd};

    use nix::sys::socket::{getsockopt, sockopt};

    use super::*;

    /// Accepted and dialled sockets both probe a silent other end.
    #[test]
    fn sockets_keep_alive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let dialled = tcp_socket(address).unwrap();
        let _client = std::net::TcpStream::connect(address).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let accepted = adopt_socket(accepted.into_raw_fd());
        for socket in [&accepted, &dialled] {
            let fd = socket.as_fd();
            assert!(getsockopt(&fd, sockopt::KeepAlive).unwrap());
            assert_eq!(
                getsockopt(&fd, sockopt::TcpKeepIdle).unwrap(),
                KEEPALIVE_IDLE_SECS
            );
            assert_eq!(
                getsockopt(&fd, sockopt::TcpKeepInterval).unwrap(),
                KEEPALIVE_INTERVAL_SECS
            );
            assert_eq!(
                getsockopt(&fd, sockopt::TcpKeepCount).unwrap(),
                KEEPALIVE_PROBES
            );
        }
    }
}
