//! TLS to a node that serves it (feature `tls`).
//!
//! A node with `--tls-cert/--tls-key/--tls-ca` encrypts every connection;
//! a client then needs the cluster's CA certificate to check the node,
//! and, where the node requires it (`--client-cert-auth`), a certificate
//! of its own signed by that CA:
//!
//! ```no_run
//! use rast_client::{Client, ClientOptions, TlsOptions};
//! use std::path::Path;
//!
//! let tls = TlsOptions::from_files(Path::new("certs/ca.pem"), None)?;
//! let options = ClientOptions { tls: Some(tls), ..ClientOptions::default() };
//! let mut client = Client::new(&["127.0.0.1:7001"], options)?;
//! client.append("default", &[b"over TLS".as_slice()])?;
//! # Ok::<(), rast_client::ClientError>(())
//! ```
//!
//! The node's certificate is checked against the name the client dialed
//! (the host of `address`: an IP address or a DNS name), unless
//! [`TlsOptions::server_name`] says another.

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::ClientError;

/// How a client speaks TLS.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// The rustls setup: the CA to trust, the certificate to present.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the node's certificate must carry; `None`: the host part
    /// of the address dialed.
    pub server_name: Option<String>,
}

/// The `ring` cryptography (see the server's `tls` module for why).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: {reason}", path.display()),
    ))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

impl TlsOptions {
    /// Trusts the CA certificate(s) in `ca`; presents the certificate
    /// chain and key of `identity` (`(cert, key)` PEM files) when given.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots
                .add(cert)
                .map_err(|error| file_error(ca, format!("not a CA certificate: {error}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| file_error(ca, error))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = read_certs(cert)?;
                let key =
                    PrivateKeyDer::from_pem_file(key).map_err(|error| file_error(key, error))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|error| file_error(cert, error))?
            }
        };
        Ok(Self {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// Opens a TLS session over `stream` to `address` (`host:port`).
    pub(crate) fn wrap(&self, address: &str, stream: TcpStream) -> Result<Session, ClientError> {
        let host = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(address).to_owned(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|error| {
            ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host}: not a name TLS can check: {error}"),
            ))
        })?;
        let session = rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|error| ClientError::Io(io::Error::other(error)))?;
        Ok(Arc::new(Mutex::new(rustls::StreamOwned::new(
            session, stream,
        ))))
    }
}

/// The host of `host:port` (an IPv6 address without its brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A TLS session over a connection's socket, shared by the connection's
/// reading and writing halves (used from one thread at a time: the lock is
/// never contended).
pub(crate) type Session = Arc<Mutex<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> io::Result<std::sync::MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| io::Error::other("TLS session poisoned by a panic"))
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:7001"), "127.0.0.1");
        assert_eq!(host_of("node.example:7001"), "node.example");
        assert_eq!(host_of("[::1]:7001"), "::1");
    }
}
