//! TLS for the node's listener and its peer links (rustls, no OpenSSL).
//!
//! One listener serves clients and peers, so one TLS server setup serves
//! both; what a connection may do is decided after its Hello, from the
//! certificate it presented:
//!
//! ```text
//!  accept ── TLS handshake ──► Hello(node id 0)  client: a certificate is
//!             (server cert,                       optional, or required with
//!              client cert                        --client-cert-auth
//!              requested)  ──► Hello(node id N)  peer: the certificate must be
//!                                                 valid for `node-N.rast` and
//!                                                 N a member of a log here
//!  dial a peer ── TLS handshake (our node cert as client cert; the
//!                 server's must be valid for `node-M.rast`) ──► Hello
//! ```
//!
//! Every node certificate is signed by the cluster's CA (`--tls-ca`) and
//! names its node id as the DNS name `node-<id>.rast` (see
//! [`node_server_name`]); `rast certs` makes a CA, node and client
//! certificates for a local cluster.
//!
//! # Where the bytes go
//!
//! This kernel offers no kernel TLS (`tls` ULP), so records are encrypted
//! and decrypted in user space: a TLS connection receives ciphertext into
//! a block of its own and decrypts into the connection's inbox, and
//! encrypts its send queue into one ciphertext buffer per send. The
//! splice paths (file → socket for reads, socket → file on followers) move
//! bytes the kernel would have to encrypt, so with TLS on reads come from
//! the segment maps and followers receive into memory. `status` and
//! `/metrics` say which mode runs (`rast_tls_mode`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::types::NodeId;

/// Where the node's TLS material lives (`--tls-cert`, `--tls-key`,
/// `--tls-ca`, `--client-cert-auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of this node (leaf first).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM certificate(s) of the CA that signs every node's (and every
    /// authenticating client's) certificate.
    pub ca: PathBuf,
    /// Refuse clients that present no certificate signed by the CA.
    pub client_cert_auth: bool,
}

/// Why the TLS setup could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the material (a key that does not match, …).
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The node's TLS setups, built once at start-up and shared by the cores.
#[derive(Clone, Debug)]
pub struct Tls {
    /// For accepted connections (clients and peers).
    pub server: Arc<ServerConfig>,
    /// For the links this node dials to its peers (its node certificate as
    /// the client certificate).
    pub client: Arc<ClientConfig>,
    /// Clients must present a certificate.
    pub client_cert_auth: bool,
}

/// The `ring` cryptography: pure Rust and assembly, built by the `cc` the
/// project already needs. rustls marks it deprecated because it lacks the
/// post-quantum key exchange of its `aws-lc-rs` provider, whose C library
/// needs a build of its own; classical ECDHE it has.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(error.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| TlsError::File {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// The CA certificates of `path` as a root store.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|error| TlsError::File {
            path: path.to_owned(),
            reason: format!("not a CA certificate: {error}"),
        })?;
    }
    Ok(roots)
}

impl Tls {
    /// Reads the files and builds both setups; every problem is an error
    /// naming the file.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let certs = read_certs(&files.cert)?;
        let key = read_key(&files.key)?;
        let roots = Arc::new(read_roots(&files.ca)?);
        let setup = |error: rustls::Error| TlsError::Setup(error.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            provider(),
        );
        // Peers always present their node certificate; clients may not
        // (checked after the Hello, where the two are told apart).
        let verifier = if files.client_cert_auth {
            verifier
        } else {
            verifier.allow_unauthenticated()
        }
        .build()
        .map_err(|error| TlsError::Setup(error.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(setup)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(setup)?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            client_cert_auth: files.client_cert_auth,
        })
    }

    /// A server session for an accepted connection.
    pub fn accept(&self) -> Result<rustls::Connection, String> {
        rustls::ServerConnection::new(Arc::clone(&self.server))
            .map(rustls::Connection::Server)
            .map_err(|error| error.to_string())
    }

    /// A client session for a link to peer `id`: its certificate must name
    /// that node.
    pub fn dial(&self, id: NodeId) -> Result<rustls::Connection, String> {
        rustls::ClientConnection::new(Arc::clone(&self.client), node_server_name(id))
            .map(rustls::Connection::Client)
            .map_err(|error| error.to_string())
    }
}

/// Whether this kernel has the `tls` upper-layer protocol (kernel TLS).
/// Probed on a fresh, unconnected TCP socket: a kernel without the ULP
/// answers `ENOENT`, one with it `ENOTCONN` (it needs an established
/// connection). Said at startup only: this build encrypts in user space
/// either way, and the startup line tells the operator which is which.
pub fn kernel_tls_available() -> bool {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt};
    let Ok(probe) = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    !matches!(
        setsockopt(&probe, sockopt::TcpUlp::default(), b"tls"),
        Err(nix::errno::Errno::ENOENT)
    )
}

/// The name a node's certificate carries: `node-<id>.rast`.
pub fn node_dns_name(id: NodeId) -> String {
    format!("node-{}.rast", id.get())
}

/// [`node_dns_name`] as the name a TLS client checks.
pub fn node_server_name(id: NodeId) -> ServerName<'static> {
    ServerName::try_from(node_dns_name(id)).expect("node-<digits>.rast is a valid DNS name")
}

/// The name a client certificate carries to have the admin role.
pub const ADMIN_NAME: &str = "admin.rast";

/// Whether the certificate a connection presented (already verified
/// against the CA by the handshake) names node `id`.
pub fn certifies_node(connection: &rustls::Connection, id: NodeId) -> bool {
    certifies_name(connection, &node_dns_name(id))
}

/// Whether the certificate a connection presented (already verified
/// against the CA by the handshake) is valid for the DNS name `name`.
pub fn certifies_name(connection: &rustls::Connection, name: &str) -> bool {
    let Some(leaf) = connection
        .peer_certificates()
        .and_then(|certs| certs.first())
    else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name.to_owned()) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Whether the connection presented a (CA-verified) certificate at all.
pub fn has_certificate(connection: &rustls::Connection) -> bool {
    connection
        .peer_certificates()
        .is_some_and(|certs| !certs.is_empty())
}

#[cfg(test)]
mod tests {
    /// The probe agrees with the kernel's own list: setting the ULP loads
    /// its module where there is one, so afterwards `tls` is listed in
    /// `tcp_available_ulp` exactly when the probe found it.
    #[test]
    fn kernel_tls_probe_agrees_with_the_kernel() {
        let available = super::kernel_tls_available();
        let Ok(listed) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp") else {
            return;
        };
        assert_eq!(
            listed.split_whitespace().any(|ulp| ulp == "tls"),
            available,
            "probe says {available}, the kernel lists {listed:?}"
        );
    }
}
