//! `rast certs`: a CA, node and client certificates for a cluster's TLS.
//!
//! ```text
//!  DIR/ca.pem, ca.key           the cluster's CA (keep ca.key offline)
//!  DIR/node-<id>.pem, .key      one per node: DNS name node-<id>.rast
//!                               (how peers check each other) plus every
//!                               --hosts name or address (how clients do)
//!  DIR/client.pem, client.key   a client identity, for --client-cert-auth
//!  DIR/admin.pem, admin.key     a client with the admin role (admin.rast)
//! ```
//!
//! Keys are ECDSA P-256, written readable by their owner only. Meant for
//! a local or test cluster; a production cluster's certificates come from
//! its own CA, with the same names.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Options of `rast certs`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Node ids to make certificates for, comma-separated.
    #[arg(long, default_value = "1,2,3")]
    pub nodes: String,
    /// Host names and addresses clients dial the nodes by, comma-separated
    /// (every node certificate carries them all).
    #[arg(long, default_value = "127.0.0.1,localhost")]
    pub hosts: String,
    /// Replace files that exist (by default an existing CA is kept and
    /// reused, so new node certificates join the same cluster).
    #[arg(long)]
    pub force: bool,
}

fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Makes (or reuses) the CA and writes a certificate per node and one
/// client certificate; prints what it wrote.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let ca_pem = args.out.join("ca.pem");
    let ca_key_path = args.out.join("ca.key");
    // A certificate is checked against the CA's name and key: signing
    // with the kept key under the same name joins the same cluster, so
    // an existing CA's certificate need not be parsed back.
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Rast cluster CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let (ca_key, ca_cert) = if ca_pem.exists() && ca_key_path.exists() && !args.force {
        let key_pem = std::fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{}: not a private key", ca_key_path.display()))?;
        let cert = ca_params.self_signed(&key)?;
        (key, cert)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params.self_signed(&key)?;
        write(&ca_pem, &cert.pem(), false)?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        println!("{}", ca_pem.display());
        (key, cert)
    };
    let hosts = list(&args.hosts);
    let mut identities: Vec<(String, Vec<String>)> = Vec::new();
    for node in list(&args.nodes) {
        let id: u64 = node
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .with_context(|| format!("--nodes: {node:?} is not a node id (1 or more)"))?;
        let mut names = vec![format!("node-{id}.rast")];
        names.extend(hosts.iter().cloned());
        identities.push((format!("node-{id}"), names));
    }
    identities.push(("client".to_owned(), vec!["client.rast".to_owned()]));
    identities.push(("admin".to_owned(), vec!["admin.rast".to_owned()]));
    for (name, sans) in identities {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, &name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        let pem = args.out.join(format!("{name}.pem"));
        write(&pem, &cert.pem(), false)?;
        write(
            &args.out.join(format!("{name}.key")),
            &key.serialize_pem(),
            true,
        )?;
        println!("{}", pem.display());
    }
    Ok(())
}
