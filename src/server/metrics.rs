//! Metrics in the Prometheus text format (`--metrics-addr`).
//!
//! Counters are relaxed atomics the cores bump on their own (no lock on the
//! hot path). Per-log gauges are published by each core once per tick into
//! its own slot, behind a mutex only the metrics thread and that core touch,
//! 20 times a second. A small blocking thread serves `GET /metrics`.
//!
//! ```text
//!  core 0 ─ counters (atomics) ─┐
//!  core 0 ─ gauges per tick ────┼──► metrics thread ──► GET /metrics
//!  core 1 ─ …                  ─┘
//! ```

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds (µs) of the fsync latency histogram buckets.
pub const SYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400,
];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries appended by clients (leader side).
    pub entries_appended: AtomicU64,
    /// Batch bytes a follower spliced socket → pipe → file.
    pub bytes_spliced: AtomicU64,
    /// Batch bytes a follower received into a buffer and wrote.
    pub bytes_copied: AtomicU64,
    /// Stored batch bytes sent to readers straight from the log file.
    pub bytes_read_from_file: AtomicU64,
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
}

impl Counters {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
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
    /// "leader", "follower", …
    pub role: String,
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
}

/// Everything the metrics thread exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Counters.
    pub counters: Counters,
    /// Per-core gauge slots.
    pub gauges: Vec<Mutex<Vec<LogGauges>>>,
}

impl Metrics {
    /// Metrics for `cores` cores.
    pub fn new(cores: u32) -> Self {
        Self {
            counters: Counters::default(),
            gauges: (0..cores).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Replaces core `core`'s gauges.
    pub fn publish(&self, core: u32, gauges: Vec<LogGauges>) {
        if let Some(slot) = self.gauges.get(core as usize)
            && let Ok(mut slot) = slot.lock()
        {
            *slot = gauges;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "rast_entries_appended_total",
                "Entries appended by clients on this node as leader.",
                load(&counters.entries_appended),
            ),
            (
                "rast_bytes_spliced_total",
                "Batch bytes followers spliced socket to file.",
                load(&counters.bytes_spliced),
            ),
            (
                "rast_bytes_copied_total",
                "Batch bytes followers received into a buffer.",
                load(&counters.bytes_copied),
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
        ] {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            text,
            "# HELP rast_sync_seconds Log sync latency.\n# TYPE rast_sync_seconds histogram"
        );
        let mut cumulative = 0;
        for (bucket, bound) in SYNC_BUCKETS_US.iter().enumerate() {
            cumulative += load(&counters.sync_buckets[bucket]);
            let _ = writeln!(
                text,
                "rast_sync_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative += load(&counters.sync_buckets[SYNC_BUCKETS_US.len()]);
        let _ = writeln!(text, "rast_sync_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            text,
            "rast_sync_seconds_sum {}",
            load(&counters.sync_us_sum) as f64 / 1e6
        );
        let _ = writeln!(text, "rast_sync_seconds_count {cumulative}");
        let _ = writeln!(
            text,
            "# TYPE rast_term gauge\n# TYPE rast_commit_index gauge\n# TYPE rast_last_index gauge\n# TYPE rast_is_leader gauge\n# TYPE rast_peer_lag_entries gauge\n# TYPE rast_failed gauge"
        );
        for slot in &self.gauges {
            let Ok(logs) = slot.lock() else { continue };
            for log in logs.iter() {
                let label = format!("log=\"{}\"", log.name.replace(['"', '\\', '\n'], "_"));
                let _ = writeln!(text, "rast_term{{{label}}} {}", log.term);
                let _ = writeln!(text, "rast_commit_index{{{label}}} {}", log.commit);
                let _ = writeln!(text, "rast_last_index{{{label}}} {}", log.last);
                let _ = writeln!(text, "rast_failed{{{label}}} {}", u8::from(log.failed));
                let _ = writeln!(
                    text,
                    "rast_is_leader{{{label},role=\"{}\"}} {}",
                    log.role,
                    u8::from(log.role == "leader")
                );
                for (peer, lag) in &log.lag {
                    let _ = writeln!(
                        text,
                        "rast_peer_lag_entries{{{label},peer=\"{peer}\"}} {lag}"
                    );
                }
            }
        }
        text
    }
}

/// Serves `GET /metrics` on `address` from a thread of its own; returns
/// once the socket is bound.
pub fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(address)?;
    std::thread::Builder::new()
        .name("rast-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut request_line = String::new();
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(clone) => clone,
                    Err(_) => continue,
                });
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let (status, body) = if request_line.starts_with("GET /metrics") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "try /metrics\n".to_owned())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(())
}
