//! The daemon: one pinned thread per core, each with its own io_uring, its
//! own connections and its own Raft groups.
//!
//! ```text
//!            SO_REUSEPORT listeners (one per core, same address)
//!   core 0 ──────────────┐        core 1 ──────────────┐
//!   ring: accept recv    │        ring: accept recv    │
//!   send connect timeout │ ◄────► send connect timeout │   bounded channels
//!   write fdatasync      │ handoff write fdatasync     │   + eventfd wake-ups
//!   groups: id % 2 == 0  │        groups: id % 2 == 1  │
//!   ─────────────────────┘        ─────────────────────┘
//! ```
//!
//! A log's group lives on core `log_id % cores` on every node (the
//! handshake refuses a peer with another core count), so a peer connection
//! from core *i* of one node is handed to core *i* of the other and carries
//! only that core's groups. A client connection is handed to the core that
//! owns the log of its request (with its unread bytes), never proxied.
//! Nothing on the hot path takes a lock.

pub mod connection;
pub mod group;
pub mod metrics;
pub mod scrub;
pub mod shard;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::types::NodeId;

/// Where logs are stored (`disk`, `memory`; see [`StorageMode::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageMode {
    /// Segment files through io_uring, fdatasync before acknowledging.
    Disk,
    /// In memory, lost on exit (benchmarks of the consensus path only).
    Memory,
}

/// How followers move the bytes of large AppendEntries batches (64 KiB
/// or more) to their log. Either way no payload byte is copied in user
/// space: smaller batches are received into memory and written from there.
/// Named `splice`, `buffer` (see [`ZeroCopy::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Socket → pipe → file with io_uring splice, never through user space
    /// (the default: it measured faster, W3 in docs/performance.md).
    Splice,
    /// Received into memory, then written from there (the comparison
    /// baseline of the benchmarks).
    Buffer,
}

/// A setting named by a word on the command line or in the config file:
/// the names are the server's, so every front end (the CLI, the config
/// file, the bench) parses them alike.
pub trait Named: Sized + Copy + 'static {
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];

    /// Its name.
    fn name(self) -> &'static str;

    /// The value named `text` (ASCII case ignored), or an error that lists
    /// the names.
    fn parse_named(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|value| value.name()).collect();
                format!("{text:?}: expected one of {}", names.join(", "))
            })
    }
}

impl Named for StorageMode {
    const ALL: &'static [Self] = &[StorageMode::Disk, StorageMode::Memory];

    fn name(self) -> &'static str {
        match self {
            StorageMode::Disk => "disk",
            StorageMode::Memory => "memory",
        }
    }
}

impl Named for ZeroCopy {
    const ALL: &'static [Self] = &[ZeroCopy::Splice, ZeroCopy::Buffer];

    fn name(self) -> &'static str {
        match self {
            ZeroCopy::Splice => "splice",
            ZeroCopy::Buffer => "buffer",
        }
    }
}

/// Everything `rast serve` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node.
    pub id: NodeId,
    /// Address to listen on (peers and clients).
    pub listen: SocketAddr,
    /// Every voter of the cluster with its address, this node included.
    pub peers: Vec<(NodeId, String)>,
    /// Data directory.
    pub data: PathBuf,
    /// Cores (threads) to run.
    pub cores: u32,
    /// Cluster id presented and required in handshakes.
    pub cluster_id: String,
    /// Shared token required of peers and clients (empty: none).
    pub token: Vec<u8>,
    /// Token of the admin role (`--admin-token-file`; empty: every
    /// client that presents `token` is admin).
    pub admin_token: Vec<u8>,
    /// Token of read-only clients (`--read-only-token-file`; empty: none).
    pub read_only_token: Vec<u8>,
    /// Token peers present instead of `token` (`--peer-token-file`;
    /// empty: `token`), so a client's credential is not a peer's.
    pub peer_token: Vec<u8>,
    /// Where logs live.
    pub storage: StorageMode,
    /// Follower receive path.
    pub zero_copy: ZeroCopy,
    /// Logs created at start-up (others are created on first use).
    pub logs: Vec<String>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the metrics endpoint over TLS (HTTPS) with the node's
    /// certificate (`--metrics-tls`; needs `tls`).
    pub metrics_tls: bool,
    /// Fault injection: the key-value state machine panics when it applies
    /// a write to this key (to exercise the failed-group path on real
    /// processes). `None` in production.
    pub fault_kv_panic_key: Option<Vec<u8>>,
    /// Start outside every configuration (`--join`): `peers` are only where
    /// to reach the cluster; this node votes in no log until a leader adds
    /// it (as a learner, then promotes it).
    pub join: bool,
    /// Size of each log segment file.
    pub segment_bytes: u64,
    /// Write zeros over each new segment file ahead of its roll
    /// (`SegmentOptions::zero_fill`).
    pub zero_fill: bool,
    /// When logs snapshot themselves and how much plain logs retain.
    pub snapshots: group::snapshot::SnapshotPolicy,
    /// Disk quota of the node (`--quota-bytes`): past this many bytes of
    /// records across its logs, appends and key-value puts and cases are
    /// refused with `NoSpace` (reads, tails, deletes, compaction and
    /// snapshots go on). 0: none.
    pub quota_bytes: u64,
    /// A client connection silent this long (and following no log) is
    /// closed (`--client-idle-secs`).
    pub client_idle_ms: u64,
    /// Bytes per second the scrubber re-reads of sealed segments and
    /// snapshots (`--scrub-bytes-per-sec`; 0: no scrubbing).
    pub scrub_bytes_per_sec: u64,
    /// TLS for the listener and the peer links (`--tls-cert`, `--tls-key`,
    /// `--tls-ca`); `None`: plain TCP.
    pub tls: Option<Arc<tls::Tls>>,
}

impl Settings {
    /// How the node encrypts its connections, as `status` and `/metrics`
    /// say it: "off", or "user-space" (rustls on the core threads; this
    /// build does not hand sessions to kernel TLS).
    pub fn tls_mode(&self) -> &'static str {
        if self.tls.is_some() {
            "user-space"
        } else {
            "off"
        }
    }
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket or file could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The settings do not make sense.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A core thread panicked.
    #[error("core {0} panicked")]
    Panicked(u32),
}

pub use crate::io::signal::stopping;

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(settings: Settings) -> Result<(), ServerError> {
    validate(&settings)?;
    crate::fail_stop::abort_on_panic();
    crate::storage::hard_state::create_dir_durably(&settings.data).map_err(|source| {
        ServerError::Io {
            what: format!("creating data directory {}", settings.data.display()),
            source,
        }
    })?;
    install_signal_handlers()?;
    let settings = Arc::new(settings);
    let mut metrics = metrics::Metrics::new(settings.cores);
    metrics.data_dir = Some(settings.data.clone());
    metrics.quota_bytes = settings.quota_bytes;
    metrics.tls_mode = settings.tls_mode();
    if settings.tls.is_some() {
        tracing::info!(
            tls = settings.tls_mode(),
            "connections encrypted with TLS in user space: reads and followers use the buffer path, not splice ({})",
            if tls::kernel_tls_available() {
                "this kernel has kernel TLS, which this build does not use"
            } else {
                "this kernel has no kernel TLS (tls ULP)"
            }
        );
    } else {
        tracing::info!(
            tls = settings.tls_mode(),
            "connections in plain TCP (no --tls-cert)"
        );
    }
    let metrics = Arc::new(metrics);
    if let Some(address) = settings.metrics_addr {
        let tls = settings
            .tls
            .as_ref()
            .filter(|_| settings.metrics_tls)
            .map(|tls| Arc::clone(&tls.server));
        metrics::serve(address, Arc::clone(&metrics), tls).map_err(|source| ServerError::Io {
            what: format!("serving metrics on {address}"),
            source,
        })?;
    }
    let wiring = shard::Wiring::new(settings.cores)?;
    if settings.storage == StorageMode::Disk {
        scrub::spawn(
            settings.data.clone(),
            settings.scrub_bytes_per_sec,
            wiring.damage_reports(),
            Arc::clone(&metrics),
        )
        .map_err(|source| ServerError::Io {
            what: "spawning the scrubber thread".into(),
            source,
        })?;
    }
    // Pin each core's thread to its CPU only when this node has the whole
    // machine: nodes sharing a machine (a local cluster) would otherwise
    // all pile onto CPU 0, 1, … and leave the rest idle.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pin = settings.cores as usize >= cpus;
    let mut threads = Vec::new();
    for index in 0..settings.cores {
        let settings = Arc::clone(&settings);
        let wiring = wiring.for_core(index);
        let metrics = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name(format!("rast-core-{index}"))
            .spawn(move || -> Result<(), ServerError> {
                if pin {
                    pin_to_core(index);
                }
                shard::Shard::new(index, settings, wiring, metrics)?.run()
            })
            .map_err(|source| ServerError::Io {
                what: "spawning a core thread".into(),
                source,
            })?;
        threads.push(thread);
    }
    tracing::info!(id = %settings.id, listen = %settings.listen, cores = settings.cores, "serving");
    let mut outcome = Ok(());
    for (index, thread) in threads.into_iter().enumerate() {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                // One core failing to start stops the others.
                crate::io::signal::request_stop();
                outcome = Err(error);
            }
            Err(_) => {
                crate::io::signal::request_stop();
                outcome = Err(ServerError::Panicked(index as u32));
            }
        }
    }
    outcome
}

fn validate(settings: &Settings) -> Result<(), ServerError> {
    if settings.id == NodeId::ZERO {
        return Err(ServerError::Settings("--id must be at least 1".into()));
    }
    // A joining node reaches the cluster through --peers; it becomes a
    // member only when a leader adds it.
    if !settings.join && !settings.peers.iter().any(|(id, _)| *id == settings.id) {
        return Err(ServerError::Settings(format!(
            "--peers must include this node ({}), or start it with --join",
            settings.id
        )));
    }
    if settings.peers.len() > crate::constants::NODES_MAX {
        return Err(ServerError::Settings(format!(
            "at most {} nodes",
            crate::constants::NODES_MAX
        )));
    }
    if settings.cores == 0 || settings.cores > 256 {
        return Err(ServerError::Settings("--cores must be 1..=256".into()));
    }
    if settings.metrics_tls && (settings.tls.is_none() || settings.metrics_addr.is_none()) {
        return Err(ServerError::Settings(
            "--metrics-tls needs --metrics-addr and TLS (--tls-cert, --tls-key, --tls-ca)".into(),
        ));
    }
    Ok(())
}

fn install_signal_handlers() -> Result<(), ServerError> {
    crate::io::signal::install_stop_handlers().map_err(|source| ServerError::Io {
        what: "installing signal handlers".into(),
        source,
    })
}

/// Pins the calling thread to `core` (modulo the CPUs present); a failure
/// is logged, not fatal (a container may forbid it).
fn pin_to_core(core: u32) {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut set = nix::sched::CpuSet::new();
    if set.set(core as usize % cpus).is_ok()
        && let Err(error) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
    {
        tracing::warn!(core, %error, "could not pin the core thread");
    }
}
