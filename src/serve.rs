//! `rast serve`: flags, an optional TOML config file (`--config`), and the
//! conversion into the server's settings. A flag overrides the file; the
//! file overrides the defaults.
//!
//! ```toml
//! id = 1
//! listen = "127.0.0.1:7001"
//! peers = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
//! data = "./data/1"
//! cores = 2
//! cluster_id = "rast"
//! token_file = "/etc/rast/token"
//! admin_token_file = "/etc/rast/admin-token"        # the admin role (else every client)
//! read_only_token_file = "/etc/rast/reader-token"   # read-only clients
//! peer_token_file = "/etc/rast/peer-token"          # peers (else token_file)
//! storage = "disk"          # or "memory"
//! zero_copy = "splice"      # or "buffer"
//! logs = "default"
//! metrics_addr = "127.0.0.1:9101"
//! metrics_tls = false       # true: metrics over HTTPS (needs the TLS keys below)
//! join = false              # true: start outside the configuration
//! snapshot_log_bytes = 134217728  # kv log: snapshot after this much log
//! retain_bytes = 0          # plain logs: keep about this much (0: all)
//! retain_age_secs = 0       # plain logs: drop segments older (0: keep)
//! segment_bytes = 67108864  # log segment file size
//! segment_fill = "reserve"  # or "zeros"
//! quota_bytes = 0           # disk quota of the node (0: none)
//! client_idle_secs = 300    # close silent client connections (tails excepted)
//! scrub_bytes_per_sec = 8388608  # background re-verification of stored files (0: off)
//! tls_cert = "/etc/rast/node-1.pem"   # TLS: this node's certificate chain,
//! tls_key = "/etc/rast/node-1.key"    #   its key,
//! tls_ca = "/etc/rast/ca.pem"         #   and the cluster's CA (all three or none)
//! client_cert_auth = false  # TLS: clients must present a CA-signed certificate
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use rast::constants::{
    CLIENT_IDLE_MS_DEFAULT, SCRUB_BYTES_PER_SEC_DEFAULT, SNAPSHOT_LOG_BYTES_DEFAULT,
};
use rast::constants::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
use rast::server::group::snapshot::SnapshotPolicy;
use rast::server::tls::{Tls, TlsFiles};
use rast::server::{Named, Settings, StorageMode, ZeroCopy};
use rast::storage::retention::Retention;
use rast::types::NodeId;

/// Options of `rast serve`.
#[derive(clap::Args, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file with any of these options (flags override it).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// This node's id (one of --peers).
    #[arg(long)]
    id: Option<u64>,
    /// Address to listen on, for peers and clients.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Every node as ID=ADDR, comma-separated, this one included.
    #[arg(long)]
    peers: Option<String>,
    /// Data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Cores (threads) to run; default: all. Every node needs the same.
    #[arg(long)]
    cores: Option<u32>,
    /// Cluster id required in every handshake [default: rast].
    #[arg(long)]
    cluster_id: Option<String>,
    /// File holding a shared token that peers and clients must present.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the admin role's token: with it, admin requests
    /// (membership, transfer, snapshot) need this token or a TLS client
    /// certificate for admin.rast [default: none, every client is admin].
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// File holding a read-only clients' token: a client presenting it may
    /// read, tail, get and ask status, never append or write keys (needs
    /// --token-file for the writers).
    #[arg(long)]
    read_only_token_file: Option<PathBuf>,
    /// File holding the token peers present to each other instead of
    /// --token-file's, so a client's credential is not a peer's [default:
    /// the --token-file token].
    #[arg(long)]
    peer_token_file: Option<PathBuf>,
    /// Where logs are stored: disk or memory [default: disk].
    #[arg(long)]
    storage: Option<String>,
    /// Follower receive path for large batches: splice or buffer [default:
    /// splice, measured faster; see docs/performance.md].
    #[arg(long)]
    zero_copy: Option<String>,
    /// Logs to create at start, comma-separated [default: default,kv].
    #[arg(long)]
    logs: Option<String>,
    /// Serve Prometheus metrics on this address (GET /metrics, /health,
    /// /ready).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Serve --metrics-addr over HTTPS with the node's TLS certificate
    /// (scrapers trust --tls-ca; with --client-cert-auth they present a
    /// certificate too) [default: plain HTTP].
    #[arg(long)]
    #[serde(default)]
    metrics_tls: bool,
    /// Fault injection, for testing: the key-value state machine panics
    /// whenever it applies a write to KEY. The kv log then stops applying
    /// (reported by `rast status` and metrics) while other logs serve on.
    /// Hidden from `--help`: a test switch, not an operator's.
    #[arg(long, value_name = "KEY", hide = true)]
    fault_kv_panic_key: Option<String>,
    /// Join a running cluster: start outside every configuration (no vote,
    /// never a candidate) and wait for `rast admin add-learner`; --peers
    /// then names the running nodes, this one need not be among them.
    #[arg(long)]
    #[serde(default)]
    join: bool,
    /// The key-value log snapshots its state and drops the log below it
    /// each time the stored log grew by this many bytes (0: only on
    /// `rast admin snapshot`) [default: 134217728, 128 MiB].
    #[arg(long, value_name = "BYTES")]
    snapshot_log_bytes: Option<u64>,
    /// Plain logs keep about this many bytes, dropping their oldest
    /// segments (64 MiB each) beyond it; reads below the first kept index
    /// answer "compacted" [default: 0, keep everything].
    #[arg(long, value_name = "BYTES")]
    retain_bytes: Option<u64>,
    /// Plain logs drop segments whose last write is older than this many
    /// seconds (never the one being written) [default: 0, keep everything].
    #[arg(long, value_name = "SECONDS")]
    retain_age_secs: Option<u64>,
    /// Size of each log segment file, the unit in which logs are dropped
    /// below a snapshot or by retention [default: 67108864, 64 MiB; at
    /// least 65536].
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// How a new segment file is made ahead of its roll: `zeros` writes
    /// zeros over it (in the background, once per segment), so each sync
    /// of appends into it overwrites written blocks and commits no journal;
    /// `reserve` only reserves its blocks [default: reserve].
    #[arg(long, value_name = "zeros|reserve")]
    segment_fill: Option<String>,
    /// Disk quota: past this many bytes of records across the node's logs,
    /// appends and key-value puts and cases are refused with "no space"
    /// while reads, tails, deletes, compaction and snapshots go on
    /// (checked by the node that takes the write) [default: 0, none].
    #[arg(long, value_name = "BYTES")]
    quota_bytes: Option<u64>,
    /// Bytes per second the background scrubber re-reads (past the page
    /// cache) and verifies of sealed segments and the newest snapshots;
    /// damage it finds is cut and repaired from the peers. 0 turns it off
    /// [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    scrub_bytes_per_sec: Option<u64>,
    /// A client connection that sends nothing for this many seconds (and
    /// follows no log) is closed; clients reconnect on their next request
    /// [default: 300].
    #[arg(long, value_name = "SECONDS")]
    client_idle_secs: Option<u64>,
    /// TLS: this node's certificate chain (PEM), signed by --tls-ca and
    /// valid for the name `node-<id>.rast` (`rast certs` makes them).
    /// With --tls-key and --tls-ca, every connection to and from the node
    /// is encrypted [default: none, plain TCP].
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// TLS: the cluster's CA certificate (PEM); peers must present a
    /// certificate it signed naming their node id.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// TLS: clients must present a certificate signed by --tls-ca.
    #[arg(long)]
    #[serde(default)]
    client_cert_auth: bool,
}

impl ServeArgs {
    /// Fills what the flags left unset from `file`.
    fn or(self, file: Self) -> Self {
        Self {
            config: self.config,
            id: self.id.or(file.id),
            listen: self.listen.or(file.listen),
            peers: self.peers.or(file.peers),
            data: self.data.or(file.data),
            cores: self.cores.or(file.cores),
            cluster_id: self.cluster_id.or(file.cluster_id),
            token_file: self.token_file.or(file.token_file),
            admin_token_file: self.admin_token_file.or(file.admin_token_file),
            read_only_token_file: self.read_only_token_file.or(file.read_only_token_file),
            peer_token_file: self.peer_token_file.or(file.peer_token_file),
            storage: self.storage.or(file.storage),
            zero_copy: self.zero_copy.or(file.zero_copy),
            logs: self.logs.or(file.logs),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            metrics_tls: self.metrics_tls || file.metrics_tls,
            fault_kv_panic_key: self.fault_kv_panic_key.or(file.fault_kv_panic_key),
            join: self.join || file.join,
            snapshot_log_bytes: self.snapshot_log_bytes.or(file.snapshot_log_bytes),
            retain_bytes: self.retain_bytes.or(file.retain_bytes),
            retain_age_secs: self.retain_age_secs.or(file.retain_age_secs),
            segment_bytes: self.segment_bytes.or(file.segment_bytes),
            segment_fill: self.segment_fill.or(file.segment_fill),
            quota_bytes: self.quota_bytes.or(file.quota_bytes),
            scrub_bytes_per_sec: self.scrub_bytes_per_sec.or(file.scrub_bytes_per_sec),
            client_idle_secs: self.client_idle_secs.or(file.client_idle_secs),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_ca: self.tls_ca.or(file.tls_ca),
            client_cert_auth: self.client_cert_auth || file.client_cert_auth,
        }
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let args = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let file: ServeArgs = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            args.or(file)
        }
        None => args,
    };
    rast::server::serve(settings(args)?)?;
    Ok(())
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let [token, admin_token, read_only_token, peer_token] = tokens(&args)?;
    let Some(id) = args.id else {
        bail!("--id is required (or `id` in the config file)")
    };
    let Some(listen) = args.listen else {
        bail!("--listen is required (or `listen` in the config file)")
    };
    let Some(peers) = args.peers else {
        bail!("--peers is required (or `peers` in the config file)")
    };
    let Some(data) = args.data else {
        bail!("--data is required (or `data` in the config file)")
    };
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |cores| cores.get() as u32)
    });
    let segment_bytes = args.segment_bytes.unwrap_or(SEGMENT_BYTES_MAX);
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes) {
        bail!(
            "--segment-bytes {segment_bytes}: expected {SEGMENT_BYTES_MIN} to {SEGMENT_BYTES_MAX}"
        );
    }
    let tls = tls_of(
        args.tls_cert,
        args.tls_key,
        args.tls_ca,
        args.client_cert_auth,
    )?;
    Ok(Settings {
        id: NodeId(id),
        listen,
        peers: parse_peers(&peers)?,
        data,
        cores,
        cluster_id: args.cluster_id.unwrap_or_else(|| "rast".to_owned()),
        token,
        admin_token,
        read_only_token,
        peer_token,
        storage: choice(args.storage.as_deref(), StorageMode::Disk, "storage")?,
        zero_copy: choice(args.zero_copy.as_deref(), ZeroCopy::Splice, "zero-copy")?,
        logs: args
            .logs
            .as_deref()
            .unwrap_or("default,kv")
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect(),
        metrics_addr: args.metrics_addr,
        metrics_tls: args.metrics_tls,
        fault_kv_panic_key: args.fault_kv_panic_key.map(String::into_bytes),
        join: args.join,
        segment_bytes,
        zero_fill: match args.segment_fill.as_deref().unwrap_or("reserve") {
            "zeros" => true,
            "reserve" => false,
            other => bail!("--segment-fill {other}: expected zeros or reserve"),
        },
        snapshots: SnapshotPolicy {
            log_bytes: args
                .snapshot_log_bytes
                .unwrap_or(SNAPSHOT_LOG_BYTES_DEFAULT),
            retention: Retention {
                bytes_max: args.retain_bytes.filter(|bytes| *bytes > 0),
                age_max_ms: args
                    .retain_age_secs
                    .filter(|secs| *secs > 0)
                    .map(|secs| secs.saturating_mul(1000)),
            },
        },
        quota_bytes: args.quota_bytes.unwrap_or(0),
        scrub_bytes_per_sec: args
            .scrub_bytes_per_sec
            .unwrap_or(SCRUB_BYTES_PER_SEC_DEFAULT),
        client_idle_ms: args
            .client_idle_secs
            .map_or(CLIENT_IDLE_MS_DEFAULT, |secs| {
                secs.saturating_mul(1000).max(1000)
            }),
        tls,
    })
}

/// The tokens of the roles: clients', admin's, read-only clients', peers'
/// (empty: none), checked for sense.
fn tokens(args: &ServeArgs) -> anyhow::Result<[Vec<u8>; 4]> {
    let token = read_token(args.token_file.as_deref())?;
    let admin_token = read_token(args.admin_token_file.as_deref())?;
    let read_only_token = read_token(args.read_only_token_file.as_deref())?;
    let peer_token = read_token(args.peer_token_file.as_deref())?;
    if !read_only_token.is_empty() && token.is_empty() {
        bail!("--read-only-token-file needs --token-file: without a token every client may write");
    }
    for (name, other) in [
        ("--admin-token-file", &admin_token),
        ("--read-only-token-file", &read_only_token),
        ("--peer-token-file", &peer_token),
    ] {
        if !other.is_empty() && *other == token {
            bail!("{name} holds the same token as --token-file: each role needs its own");
        }
    }
    Ok([token, admin_token, read_only_token, peer_token])
}

/// The TLS setup the three files (all or none) make.
fn tls_of(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_cert_auth: bool,
) -> anyhow::Result<Option<std::sync::Arc<Tls>>> {
    Ok(match (cert, key, ca) {
        (None, None, None) => {
            if client_cert_auth {
                bail!("--client-cert-auth needs TLS: --tls-cert, --tls-key and --tls-ca");
            }
            None
        }
        (Some(cert), Some(key), Some(ca)) => {
            let files = TlsFiles {
                cert,
                key,
                ca,
                client_cert_auth,
            };
            Some(std::sync::Arc::new(Tls::load(&files)?))
        }
        _ => bail!("TLS needs all three of --tls-cert, --tls-key and --tls-ca"),
    })
}

/// The token in `path` (whitespace around it trimmed); empty without one.
fn read_token(path: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(path) => Ok(std::fs::read(path)
            .with_context(|| format!("reading token file {}", path.display()))?
            .trim_ascii()
            .to_vec()),
        None => Ok(Vec::new()),
    }
}

/// Parses `ID=ADDR,ID=ADDR,…`.
fn parse_peers(text: &str) -> anyhow::Result<Vec<(NodeId, String)>> {
    let mut peers = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, address) = item
            .split_once('=')
            .with_context(|| format!("--peers item {item:?} is not ID=ADDR"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--peers id {id:?} is not a number"))?;
        if peers.iter().any(|(known, _)| *known == NodeId(id)) {
            bail!("--peers names node {id} twice");
        }
        peers.push((NodeId(id), address.to_owned()));
    }
    Ok(peers)
}

/// A named setting (`server::Named`) given as text, or its default.
fn choice<T: Named>(value: Option<&str>, default: T, name: &str) -> anyhow::Result<T> {
    match value {
        None => Ok(default),
        Some(text) => T::parse_named(text).map_err(|error| anyhow::anyhow!("--{name} {error}")),
    }
}
