//! Metrics in the Prometheus text format (`--metrics-addr`).
//!
//! Counters are relaxed atomics the cores bump on their own (no lock on the
//! hot path). Per-log gauges are published by each core once per tick into
//! its own slot, behind a mutex only the metrics thread and that core touch,
//! 20 times a second. A small blocking thread serves `GET /metrics`.
//!
//! At each scrape the values are read into the data model of the
//! `prometheus` crate (the Prometheus project's Rust client, maintained by
//! TiKV) and written by its text encoder, which escapes label values (log
//! names come from clients) and writes each family's `# HELP` and
//! `# TYPE`; its process collector gives the standard `process_*` families
//! (CPU, memory, descriptors, threads, start time). The cores never touch
//! the crate: their counters stay plain atomics.
//!
//! ```text
//!  core 0 ─ counters (atomics) ─┐
//!  core 0 ─ gauges per tick ────┼──► metrics thread ──► GET /metrics
//!  core 1 ─ …                  ─┘
//! ```
//!
//! Payload bytes (entry-batch frames) are counted per [`PayloadPath`]: how
//! many a node handled on that path, how many it copied in user space (a
//! byte copied twice counts twice), how many it spliced socket → file and
//! how many it sent file → socket. `copied / payload` per path is what a
//! zero-copy data path drives to zero, and `rast bench` reports it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::TextEncoder;
use prometheus::core::Collector;
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// Upper bounds (µs) of the fsync latency histogram buckets.
pub const SYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400,
];

/// A way payload bytes (entry-batch frames) go through a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadPath {
    /// Batches a leader receives from clients.
    Ingest,
    /// Batches a leader sends to followers (AppendEntries payloads).
    Replicate,
    /// Batches a follower receives from its leader.
    Follower,
    /// Batches served to readers and tails.
    Read,
}

impl PayloadPath {
    /// Every path, in the order of the counter arrays and of `/metrics`.
    pub const ALL: [Self; 4] = [Self::Ingest, Self::Replicate, Self::Follower, Self::Read];

    /// The `path` label value (stable: dashboards and `rast bench` read it).
    pub fn label(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Replicate => "replicate",
            Self::Follower => "follower",
            Self::Read => "read",
        }
    }
}

/// One path's payload byte counters (relaxed atomics: the cores add, the
/// metrics thread reads).
#[derive(Debug, Default)]
pub struct PathCounters {
    payload: AtomicU64,
    copied: AtomicU64,
    spliced: AtomicU64,
    from_file: AtomicU64,
}

impl PathCounters {
    /// Payload bytes handled on this path.
    pub fn add_payload(&self, bytes: u64) {
        self.payload.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Payload bytes copied in user space (each copy counts).
    pub fn add_copied(&self, bytes: u64) {
        self.copied.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Payload bytes moved socket → pipe → file without entering user space.
    pub fn add_spliced(&self, bytes: u64) {
        self.spliced.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Payload bytes sent from the log file (file → pipe → socket) without
    /// entering user space.
    pub fn add_from_file(&self, bytes: u64) {
        self.from_file.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds a tally collected without atomics (see [`PayloadTally`]).
    pub fn add_bytes(&self, bytes: &PathBytes) {
        for (counter, value) in [
            (&self.payload, bytes.payload),
            (&self.copied, bytes.copied),
            (&self.spliced, bytes.spliced),
            (&self.from_file, bytes.from_file),
        ] {
            if value > 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        }
    }

    /// The counters now.
    pub fn load(&self) -> PathBytes {
        PathBytes {
            payload: self.payload.load(Ordering::Relaxed),
            copied: self.copied.load(Ordering::Relaxed),
            spliced: self.spliced.load(Ordering::Relaxed),
            from_file: self.from_file.load(Ordering::Relaxed),
        }
    }
}

/// One path's payload byte counts as plain numbers: a reading of
/// [`PathCounters`], or a tally a group keeps while it works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathBytes {
    /// Payload bytes handled.
    pub payload: u64,
    /// Payload bytes copied in user space (each copy counts).
    pub copied: u64,
    /// Payload bytes spliced socket → pipe → file.
    pub spliced: u64,
    /// Payload bytes sent from the log file by splice.
    pub from_file: u64,
}

impl PathBytes {
    /// Payload bytes handled on this path.
    pub fn add_payload(&mut self, bytes: u64) {
        self.payload += bytes;
    }

    /// Payload bytes copied in user space (each copy counts).
    pub fn add_copied(&mut self, bytes: u64) {
        self.copied += bytes;
    }

    /// Payload bytes moved socket → pipe → file.
    pub fn add_spliced(&mut self, bytes: u64) {
        self.spliced += bytes;
    }

    /// Payload bytes sent from the log file by splice.
    pub fn add_from_file(&mut self, bytes: u64) {
        self.from_file += bytes;
    }
}

/// Payload byte counts per path, collected without atomics where the code
/// has no handle on the counters (a group fills the one in its
/// `Outbound`; the shard adds it to [`Counters`] when it delivers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadTally {
    paths: [PathBytes; PayloadPath::ALL.len()],
}

impl PayloadTally {
    /// The tally of one path.
    pub fn path(&mut self, path: PayloadPath) -> &mut PathBytes {
        &mut self.paths[path as usize]
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries appended by clients (leader side).
    pub entries_appended: AtomicU64,
    /// Payload bytes per path, indexed by `PayloadPath as usize` (use
    /// [`Counters::payload`]).
    paths: [PathCounters; PayloadPath::ALL.len()],
    /// Times a group of this node changed leader.
    pub leader_changes: AtomicU64,
    /// Log syncs completed, and the entries they covered.
    pub syncs: AtomicU64,
    /// Entries made durable by syncs.
    pub synced_entries: AtomicU64,
    /// Sync latency histogram (cumulative buckets are computed on export).
    pub sync_buckets: [AtomicU64; SYNC_BUCKETS_US.len() + 1],
    /// Sum of sync latencies in µs.
    pub sync_us_sum: AtomicU64,
    /// Bytes of sealed segments and snapshots the scrubber re-read.
    pub scrub_bytes: AtomicU64,
    /// Damaged records and snapshot files recovery found and cut (at
    /// start, or at a reopen after the scrubber pointed at them).
    pub corruptions_found: AtomicU64,
    /// Batches a damaged copy received from its leader until repaired.
    pub repaired_batches: AtomicU64,
}

impl Counters {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// The payload byte counters of `path`, e.g.
    /// `counters.payload(PayloadPath::Ingest).add_copied(n)`.
    pub fn payload(&self, path: PayloadPath) -> &PathCounters {
        &self.paths[path as usize]
    }

    /// Adds a group's tally and empties it.
    pub fn take_tally(&self, tally: &mut PayloadTally) {
        for path in PayloadPath::ALL {
            self.payload(path).add_bytes(tally.path(path));
        }
        *tally = PayloadTally::default();
    }

    /// Records one sync that took `micros` and covered `entries`.
    pub fn record_sync(&self, micros: u64, entries: u64) {
        Self::add(&self.syncs, 1);
        Self::add(&self.synced_entries, entries);
        Self::add(&self.sync_us_sum, micros);
        let bucket = SYNC_BUCKETS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(SYNC_BUCKETS_US.len());
        Self::add(&self.sync_buckets[bucket], 1);
    }
}

/// One log's gauges, as a core last published them.
#[derive(Clone, Debug, Default)]
pub struct LogGauges {
    /// Log name.
    pub name: String,
    /// One of [`ROLES`].
    pub role: String,
    /// The leader this node knows, 0 when none.
    pub leader: u64,
    /// Bytes of the log's records on disk.
    pub stored: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Last index.
    pub last: u64,
    /// (peer id, entries behind the leader's last index), leader only.
    pub lag: Vec<(u64, u64)>,
    /// The log or its state machine stopped (see `rast status`).
    pub failed: bool,
    /// Recovery cut entries this node may have acknowledged; it does not
    /// vote until a leader has repaired its log.
    pub damaged: bool,
}

/// Everything the metrics thread exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Counters.
    pub counters: Counters,
    /// Per-core gauge slots.
    pub gauges: Vec<Mutex<Vec<LogGauges>>>,
    /// The data directory, whose file system's free and total bytes are
    /// exported (`rast_data_*_bytes`).
    pub data_dir: Option<std::path::PathBuf>,
    /// Bytes of records each core's logs hold, published every tick: what
    /// the disk quota is checked against without a lock.
    pub stored: Vec<AtomicU64>,
    /// The node's disk quota (0: none), exported as `rast_quota_bytes`.
    pub quota_bytes: u64,
    /// How the node encrypts its connections ([`TLS_MODES`]), exported as
    /// the state set `rast_tls`.
    pub tls_mode: &'static str,
}

/// The values of `rast_tls`: one series each, always, 1 for the mode the
/// node runs in.
pub const TLS_MODES: [&str; 3] = ["off", "user-space", "kernel"];

impl Metrics {
    /// Metrics for `cores` cores.
    pub fn new(cores: u32) -> Self {
        Self {
            counters: Counters::default(),
            gauges: (0..cores).map(|_| Mutex::new(Vec::new())).collect(),
            data_dir: None,
            stored: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            quota_bytes: 0,
            tls_mode: "off",
        }
    }

    /// Bytes of records across the node's logs, as of each core's last
    /// tick.
    pub fn stored_total(&self) -> u64 {
        self.stored
            .iter()
            .map(|bytes| bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Replaces core `core`'s gauges (and its stored bytes).
    pub fn publish(&self, core: u32, gauges: Vec<LogGauges>) {
        if let Some(stored) = self.stored.get(core as usize) {
            stored.store(gauges.iter().map(|log| log.stored).sum(), Ordering::Relaxed);
        }
        if let Some(slot) = self.gauges.get(core as usize)
            && let Ok(mut slot) = slot.lock()
        {
            *slot = gauges;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        let mut families = Vec::new();
        for (name, help, value) in [
            (
                "rast_entries_appended_total",
                "Entries appended by clients on this node as leader.",
                load(&counters.entries_appended),
            ),
            (
                "rast_leader_changes_total",
                "Leader changes seen by this node's logs.",
                load(&counters.leader_changes),
            ),
            (
                "rast_syncs_total",
                "Log syncs (fdatasync) completed.",
                load(&counters.syncs),
            ),
            (
                "rast_synced_entries_total",
                "Entries made durable by syncs (entries per fsync = this / rast_syncs_total).",
                load(&counters.synced_entries),
            ),
            (
                "rast_scrub_bytes_total",
                "Bytes of sealed segments and snapshots re-read and verified by the scrubber.",
                load(&counters.scrub_bytes),
            ),
            (
                "rast_corruptions_found_total",
                "Damaged records and snapshot files found and cut by recovery (at start, or after the scrubber pointed at them); the leader repairs them.",
                load(&counters.corruptions_found),
            ),
            (
                "rast_repaired_batches_total",
                "Batches a damaged copy of a log received from its leader until it was repaired.",
                load(&counters.repaired_batches),
            ),
        ] {
            families.push(family(
                name,
                help,
                MetricType::COUNTER,
                vec![sample(MetricType::COUNTER, value, &[])],
            ));
        }
        families.extend(payload_families(counters));
        families.push(family(
            "rast_tls",
            "How the node encrypts its connections: 1 for the mode it runs in (user-space: TLS records made by its threads; kernel: kernel TLS), 0 for the others.",
            MetricType::GAUGE,
            TLS_MODES
                .iter()
                .map(|mode| gauge(f64::from(u8::from(*mode == self.tls_mode)), &[("mode", mode)]))
                .collect(),
        ));
        families.push(sync_histogram(counters));
        families.extend(log_families(&self.gauges));
        families.push(family(
            "rast_stored_bytes",
            "Bytes of records across this node's logs.",
            MetricType::GAUGE,
            vec![gauge(self.stored_total() as f64, &[])],
        ));
        families.push(family(
            "rast_quota_bytes",
            "The node's disk quota (--quota-bytes); 0: none.",
            MetricType::GAUGE,
            vec![gauge(self.quota_bytes as f64, &[])],
        ));
        if let Some(dir) = &self.data_dir {
            families.extend(disk_families(dir));
        }
        families.extend(ProcessCollector::for_self().collect());
        // A family without samples (no log open yet, no peer to lag) is
        // left out: the text format has no empty families.
        families.retain(|family| !family.get_metric().is_empty());
        let mut text = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut text) {
            tracing::warn!("metrics: encoding the exposition: {error}");
        }
        text
    }

    /// Whether every log on this node has a leader and serves: the answer
    /// of `/ready`, with the reason when not.
    pub fn ready(&self) -> Result<(), String> {
        let mut logs = 0;
        for slot in &self.gauges {
            let Ok(slot) = slot.lock() else {
                return Err("a core's gauges are unreadable".to_owned());
            };
            for log in slot.iter() {
                logs += 1;
                if log.failed {
                    return Err(format!("log {} stopped (see rast status)", log.name));
                }
                if log.leader == 0 {
                    return Err(format!("log {} has no leader", log.name));
                }
            }
        }
        if logs == 0 {
            return Err("no log is open yet".to_owned());
        }
        Ok(())
    }
}

/// A metric family of `kind` with its samples.
fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// One sample of a counter or gauge, with its labels (in this order).
fn sample(kind: MetricType, value: f64, labels: &[(&str, &str)]) -> Metric {
    let mut metric = Metric::default();
    metric.set_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect(),
    );
    if kind == MetricType::COUNTER {
        let mut counter = prometheus::proto::Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = prometheus::proto::Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    metric
}

fn gauge(value: f64, labels: &[(&str, &str)]) -> Metric {
    sample(MetricType::GAUGE, value, labels)
}

/// `rast_sync_seconds`: the sync latency histogram, from its
/// per-bucket counters (made cumulative here).
fn sync_histogram(counters: &Counters) -> MetricFamily {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(SYNC_BUCKETS_US.len());
    for (bucket, bound) in SYNC_BUCKETS_US.iter().enumerate() {
        cumulative += load(&counters.sync_buckets[bucket]);
        let mut entry = Bucket::default();
        entry.set_upper_bound(*bound as f64 / 1e6);
        entry.set_cumulative_count(cumulative);
        buckets.push(entry);
    }
    cumulative += load(&counters.sync_buckets[SYNC_BUCKETS_US.len()]);
    let mut histogram = Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(cumulative);
    histogram.set_sample_sum(load(&counters.sync_us_sum) as f64 / 1e6);
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    family(
        "rast_sync_seconds",
        "Log sync latency.",
        MetricType::HISTOGRAM,
        vec![metric],
    )
}

/// The roles a log can be in: `rast_role` has one series for each, always,
/// so a role change moves a 1 between series instead of making new ones.
pub const ROLES: [&str; 4] = ["leader", "follower", "candidate", "pre-candidate"];

/// Families whose samples exist only on a leader with followers (a
/// single node exports none of them, and the text format has no empty
/// families).
pub const LEADER_WITH_PEERS_FAMILIES: [&str; 1] = ["rast_peer_lag_entries"];

/// One gauge of a log.
type LogValue = fn(&LogGauges) -> u64;

/// The per-log gauge families, labelled by log name.
fn log_families(slots: &[Mutex<Vec<LogGauges>>]) -> Vec<MetricFamily> {
    let mut logs = Vec::new();
    for slot in slots {
        if let Ok(slot) = slot.lock() {
            logs.extend(slot.iter().cloned());
        }
    }
    let mut families = Vec::new();
    for (name, help, value) in [
        (
            "rast_term",
            "The log's current Raft term on this node.",
            (|log: &LogGauges| log.term) as LogValue,
        ),
        (
            "rast_commit_index",
            "The highest index this node knows committed.",
            |log| log.commit,
        ),
        (
            "rast_last_index",
            "The last index in this node's copy of the log.",
            |log| log.last,
        ),
        (
            "rast_log_bytes",
            "Bytes of the log's records on this node's disk.",
            |log| log.stored,
        ),
        ("rast_is_leader", "1 when this node leads the log.", |log| {
            u64::from(log.role == "leader")
        }),
        (
            "rast_has_leader",
            "1 when this node knows a leader for the log.",
            |log| u64::from(log.leader != 0),
        ),
        (
            "rast_failed",
            "1 when the log or its state machine stopped on this node (see rast status).",
            |log| u64::from(log.failed),
        ),
        (
            "rast_damaged",
            "1 while this node's copy of the log is damaged (recovery cut entries it may have acknowledged): it does not campaign, and votes only for logs that hold what it may have acknowledged, until a leader has repaired it.",
            |log| u64::from(log.damaged),
        ),
    ] {
        let samples = logs
            .iter()
            .map(|log| gauge(value(log) as f64, &[("log", &log.name)]))
            .collect();
        families.push(family(name, help, MetricType::GAUGE, samples));
    }
    let roles = logs
        .iter()
        .flat_map(|log| {
            ROLES.map(|role| {
                gauge(
                    f64::from(u8::from(log.role == role)),
                    &[("log", &log.name), ("role", role)],
                )
            })
        })
        .collect();
    families.push(family(
        "rast_role",
        "The log's role on this node: 1 for the role it is in, 0 for the others.",
        MetricType::GAUGE,
        roles,
    ));
    let lags = logs
        .iter()
        .flat_map(|log| {
            log.lag.iter().map(|(peer, lag)| {
                gauge(
                    *lag as f64,
                    &[("log", &log.name), ("peer", &peer.to_string())],
                )
            })
        })
        .collect();
    families.push(family(
        "rast_peer_lag_entries",
        "Entries a peer is behind the leader's last index (on the leader).",
        MetricType::GAUGE,
        lags,
    ));
    families
}

/// The data directory's file system space (none when it cannot be read).
fn disk_families(dir: &std::path::Path) -> Vec<MetricFamily> {
    let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
        return Vec::new();
    };
    let fragment = stat.fragment_size();
    [
        (
            "rast_data_available_bytes",
            "Bytes available to this node on the data directory's file system.",
            stat.blocks_available(),
        ),
        (
            "rast_data_size_bytes",
            "Size of the data directory's file system in bytes.",
            stat.blocks(),
        ),
    ]
    .into_iter()
    .map(|(name, help, blocks)| {
        family(
            name,
            help,
            MetricType::GAUGE,
            vec![gauge(blocks.saturating_mul(fragment) as f64, &[])],
        )
    })
    .collect()
}

/// The per-path payload counters: one family per kind of byte, one
/// sample per path (every path, zeros included, so the series are stable).
fn payload_families(counters: &Counters) -> Vec<MetricFamily> {
    let paths = PayloadPath::ALL.map(|path| (path.label(), counters.payload(path).load()));
    [
        (
            "rast_payload_bytes_total",
            "Entry-batch bytes handled, by path: ingest (from clients), replicate (to followers), follower (from the leader), read (to readers and tails).",
            (|bytes: &PathBytes| bytes.payload) as fn(&PathBytes) -> u64,
        ),
        (
            "rast_payload_bytes_copied_total",
            "Entry-batch bytes copied in user space, by path (a byte copied twice counts twice).",
            |bytes| bytes.copied,
        ),
        (
            "rast_payload_bytes_spliced_total",
            "Entry-batch bytes spliced socket to pipe to file, never in user space, by path.",
            |bytes| bytes.spliced,
        ),
        (
            "rast_payload_bytes_from_file_total",
            "Entry-batch bytes sent from the log file by splice (file to pipe to socket), by path.",
            |bytes| bytes.from_file,
        ),
    ]
    .into_iter()
    .map(|(name, help, pick)| {
        let samples = paths
            .iter()
            .map(|(label, bytes)| {
                sample(MetricType::COUNTER, pick(bytes) as f64, &[("path", label)])
            })
            .collect();
        family(name, help, MetricType::COUNTER, samples)
    })
    .collect()
}

mod http;
#[cfg(test)]
use http::route;
pub use http::serve;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each payload family has its HELP and TYPE lines and one sample per
    /// path, labelled, with the values added directly and through a tally.
    #[test]
    fn renders_payload_counters_per_path() {
        let metrics = Metrics::new(1);
        let counters = &metrics.counters;
        counters.payload(PayloadPath::Ingest).add_payload(1_000);
        counters.payload(PayloadPath::Ingest).add_copied(1_000);
        counters.payload(PayloadPath::Follower).add_payload(700);
        counters.payload(PayloadPath::Follower).add_copied(100);
        counters.payload(PayloadPath::Follower).add_spliced(600);
        let mut tally = PayloadTally::default();
        tally.path(PayloadPath::Replicate).add_payload(1_000);
        tally.path(PayloadPath::Replicate).add_copied(2_000);
        tally.path(PayloadPath::Read).add_payload(300);
        tally.path(PayloadPath::Read).add_from_file(300);
        counters.take_tally(&mut tally);
        assert_eq!(tally, PayloadTally::default(), "the tally is emptied");
        let text = metrics.render();
        for name in [
            "rast_payload_bytes_total",
            "rast_payload_bytes_copied_total",
            "rast_payload_bytes_spliced_total",
            "rast_payload_bytes_from_file_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} HELP");
            assert!(
                text.contains(&format!("# TYPE {name} counter\n")),
                "{name} TYPE"
            );
            for path in ["ingest", "replicate", "follower", "read"] {
                assert!(
                    text.contains(&format!("{name}{{path=\"{path}\"}} ")),
                    "{name} {path}"
                );
            }
        }
        for line in [
            "rast_payload_bytes_total{path=\"ingest\"} 1000",
            "rast_payload_bytes_copied_total{path=\"ingest\"} 1000",
            "rast_payload_bytes_total{path=\"replicate\"} 1000",
            "rast_payload_bytes_copied_total{path=\"replicate\"} 2000",
            "rast_payload_bytes_total{path=\"follower\"} 700",
            "rast_payload_bytes_copied_total{path=\"follower\"} 100",
            "rast_payload_bytes_spliced_total{path=\"follower\"} 600",
            "rast_payload_bytes_spliced_total{path=\"ingest\"} 0",
            "rast_payload_bytes_total{path=\"read\"} 300",
            "rast_payload_bytes_from_file_total{path=\"read\"} 300",
            "rast_payload_bytes_copied_total{path=\"read\"} 0",
        ] {
            assert!(
                text.lines().any(|got| got == line),
                "no line {line}:\n{text}"
            );
        }
        // The HELP line comes right before its TYPE line, before the samples.
        let help = text.find("# HELP rast_payload_bytes_total ").unwrap();
        let type_line = text
            .find("# TYPE rast_payload_bytes_total counter")
            .unwrap();
        let sample = text.find("rast_payload_bytes_total{").unwrap();
        assert!(help < type_line && type_line < sample);
    }

    fn log(name: &str, role: &str, leader: u64, failed: bool) -> LogGauges {
        LogGauges {
            name: name.to_owned(),
            role: role.to_owned(),
            leader,
            stored: 4096,
            term: 3,
            commit: 10,
            last: 12,
            lag: if role == "leader" {
                vec![(2, 2)]
            } else {
                Vec::new()
            },
            failed,
            damaged: failed,
        }
    }

    /// The exposition is well formed: every sample's family has its HELP
    /// and TYPE lines before its first sample, and a family's samples are
    /// together (the text format's rule; interleaved families are refused
    /// by strict parsers). Roles are a stable set of series.
    #[test]
    fn families_are_whole_and_described() {
        let mut metrics = Metrics::new(2);
        metrics.data_dir = Some(std::env::temp_dir());
        metrics.publish(
            0,
            vec![
                log("default", "leader", 1, false),
                log("kv", "follower", 2, false),
            ],
        );
        metrics.publish(
            1,
            vec![
                log("orders", "candidate", 0, true),
                log("a\"b\\c\nd", "follower", 1, false),
            ],
        );
        let text = metrics.render();
        let mut described = std::collections::HashSet::new();
        let mut typed = std::collections::HashSet::new();
        let mut finished = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                described.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| typed.contains(*base))
                })
                .unwrap_or(name)
                .to_owned();
            assert!(
                described.contains(&family) && typed.contains(&family),
                "{family} undescribed"
            );
            if family != current {
                assert!(finished.insert(current.clone()), "{current} split:\n{text}");
                current = family;
            }
        }
        for role in ROLES {
            assert!(text.contains(&format!("rast_role{{log=\"kv\",role=\"{role}\"}} ")));
        }
        assert!(text.contains("rast_role{log=\"kv\",role=\"follower\"} 1"));
        assert!(text.contains("rast_is_leader{log=\"default\"} 1"));
        assert!(text.contains("rast_has_leader{log=\"orders\"} 0"));
        assert!(text.contains("rast_failed{log=\"orders\"} 1"));
        assert!(text.contains("rast_damaged{log=\"orders\"} 1"));
        assert!(text.contains("rast_damaged{log=\"kv\"} 0"));
        assert!(text.contains("\nprocess_resident_memory_bytes "));
        assert!(text.contains("\nprocess_open_fds "));
        assert!(text.contains("rast_log_bytes{log=\"kv\"} 4096"));
        assert!(text.contains("\nrast_data_available_bytes "));
        assert!(text.contains("rast_peer_lag_entries{log=\"default\",peer=\"2\"} 2"));
        for family in LEADER_WITH_PEERS_FAMILIES {
            assert!(typed.contains(family), "{family} not rendered");
        }
        // A log name (chosen by a client) is escaped, never a new line.
        assert!(
            text.contains("rast_term{log=\"a\\\"b\\\\c\\nd\"} 3"),
            "{text}"
        );
    }

    /// `/ready` answers 200 only when every log has a leader and none has
    /// stopped; `/health` always; anything else is 404.
    #[test]
    fn ready_needs_a_leader_for_every_log() {
        let metrics = Metrics::new(1);
        assert_eq!(
            route(b"GET /ready HTTP/1.1\r\n", &metrics).0,
            "503 Service Unavailable"
        );
        metrics.publish(
            0,
            vec![
                log("default", "leader", 1, false),
                log("kv", "follower", 0, false),
            ],
        );
        let (status, body) = route(b"GET /ready HTTP/1.1\r\n", &metrics);
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("log kv has no leader"), "{body}");
        metrics.publish(
            0,
            vec![
                log("default", "leader", 1, false),
                log("kv", "follower", 1, true),
            ],
        );
        assert!(
            route(b"GET /ready HTTP/1.1\r\n", &metrics)
                .1
                .contains("log kv stopped")
        );
        metrics.publish(
            0,
            vec![
                log("default", "leader", 1, false),
                log("kv", "follower", 1, false),
            ],
        );
        assert_eq!(route(b"GET /ready HTTP/1.1\r\n", &metrics).0, "200 OK");
        assert_eq!(route(b"GET /health HTTP/1.1\r\n", &metrics).0, "200 OK");
        assert_eq!(
            route(b"GET /metricsx HTTP/1.1\r\n", &metrics).0,
            "404 Not Found"
        );
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n", &metrics).0, "200 OK");
    }
}
