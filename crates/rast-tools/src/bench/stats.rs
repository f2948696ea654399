//! What the nodes spent: CPU and disk writes from `/proc/<pid>`, resident
//! memory sampled while the run goes on, bytes sent on their sockets (from
//! `ss`, the kernel's per-socket `tcp_info`), and the nodes' own Prometheus
//! counters.
//!
//! ```text
//!  /proc/<pid>/stat    fields 14, 15: utime, stime (clock ticks, 100 per s)
//!  /proc/<pid>/io      write_bytes: bytes this process caused to be written
//!                      to storage (io_uring workers are threads of it)
//!  /proc/<pid>/status  VmRSS
//!  ss -tinpH           bytes_sent of every TCP socket, with its owner's pid
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::server::metrics::PayloadPath;

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Counters of one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessSample {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Bytes written to storage.
    pub disk_write_bytes: u64,
}

/// Reads `pid`'s CPU time and disk writes; `None` if it is gone.
pub fn sample_process(pid: u32) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let disk_write_bytes = io
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    Some(ProcessSample {
        cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
        disk_write_bytes,
    })
}

/// Resident memory of one process, KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// VmRSS: everything resident.
    pub total_kib: u64,
    /// RssAnon: heap and stacks (what the process itself holds).
    pub anon_kib: u64,
    /// RssFile: mapped file pages (the log segments read through mmap);
    /// page cache the kernel can drop.
    pub file_kib: u64,
}

/// Resident memory of `pid`.
pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Some(Rss {
        total_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
    })
}

/// Samples the RSS of some processes every 100 ms on a thread of its own
/// and keeps each one's peak.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Rss>>>,
}

impl RssSampler {
    /// Starts sampling `pids`.
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rast-bench-rss".into())
            .spawn(move || {
                let mut peaks = vec![Rss::default(); pids.len()];
                while !flag.load(Ordering::Relaxed) {
                    for (peak, pid) in peaks.iter_mut().zip(&pids) {
                        let now = rss(*pid).unwrap_or_default();
                        peak.total_kib = peak.total_kib.max(now.total_kib);
                        peak.anon_kib = peak.anon_kib.max(now.anon_kib);
                        peak.file_kib = peak.file_kib.max(now.file_kib);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                peaks
            })
            .ok();
        Self { stop, thread }
    }

    /// Stops sampling; the peaks of each process (each field its own peak).
    pub fn finish(mut self) -> Vec<Rss> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

/// Bytes sent so far on the TCP sockets of each process (0 when `ss` is
/// missing or a process has none).
pub fn socket_bytes_sent(pids: &[u32]) -> Vec<u64> {
    let Ok(output) = Command::new("ss").args(["-tinpH"]).output() else {
        return vec![0; pids.len()];
    };
    parse_socket_bytes(&String::from_utf8_lossy(&output.stdout), pids)
}

/// Sums `bytes_sent` of `ss -tinpH` output per owning pid.
fn parse_socket_bytes(text: &str, pids: &[u32]) -> Vec<u64> {
    let mut sent: HashMap<u32, u64> = HashMap::new();
    let mut owner: Option<u32> = None;
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            // A socket line; its owner is in users:(("rast",pid=123,fd=9)).
            owner = line
                .split("pid=")
                .nth(1)
                .and_then(|rest| rest.split([',', ')']).next())
                .and_then(|pid| pid.parse().ok());
            continue;
        }
        let Some(pid) = owner.filter(|pid| pids.contains(pid)) else {
            continue;
        };
        if let Some(bytes) = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("bytes_sent:"))
            .and_then(|value| value.parse::<u64>().ok())
        {
            *sent.entry(pid).or_default() += bytes;
        }
    }
    pids.iter()
        .map(|pid| sent.get(pid).copied().unwrap_or(0))
        .collect()
}

/// The pids listening on the ports of `addresses` (external clusters), in
/// the same order; `None` where none is found.
pub fn listening_pids(addresses: &[String]) -> Vec<Option<u32>> {
    let text = Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    addresses
        .iter()
        .map(|address| {
            let port = address.rsplit(':').next()?;
            text.lines()
                .find(|line| {
                    line.split_whitespace()
                        .nth(3)
                        .is_some_and(|local| local.rsplit(':').next() == Some(port))
                })
                .and_then(|line| line.split("pid=").nth(1))
                .and_then(|rest| rest.split([',', ')']).next())
                .and_then(|pid| pid.parse().ok())
        })
        .collect()
}

/// The node counters the report uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeCounters {
    /// `rast_syncs_total`.
    pub syncs: f64,
    /// `rast_synced_entries_total`.
    pub synced_entries: f64,
    /// Batch bytes followers spliced: `rast_payload_bytes_spliced_total`
    /// on the follower path (`rast_bytes_spliced_total` before it).
    pub bytes_spliced: f64,
    /// Batch bytes followers copied: `rast_payload_bytes_copied_total` on
    /// the follower path (`rast_bytes_copied_total` before it).
    pub bytes_copied: f64,
    /// `rast_leader_changes_total`.
    pub leader_changes: f64,
    /// `rast_sync_seconds_sum`.
    pub sync_seconds: f64,
    /// The payload byte counters per path, indexed by `PayloadPath as
    /// usize`; `None` when the node exports none (a build older than them).
    pub payload: Option<[PathFigures; PayloadPath::ALL.len()]>,
}

/// One payload path's byte counters on a node (the
/// `rast_payload_bytes*_total{path=…}` samples).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PathFigures {
    /// Payload bytes handled.
    pub payload: f64,
    /// Payload bytes copied in user space (each copy counts).
    pub copied: f64,
    /// Payload bytes spliced socket → file.
    pub spliced: f64,
    /// Payload bytes sent from the log file.
    pub from_file: f64,
}

impl PathFigures {
    fn combine(&self, other: &Self, operation: fn(f64, f64) -> f64) -> Self {
        Self {
            payload: operation(self.payload, other.payload),
            copied: operation(self.copied, other.copied),
            spliced: operation(self.spliced, other.spliced),
            from_file: operation(self.from_file, other.from_file),
        }
    }
}

/// Combines two nodes' (or two moments') per-path counters path by path;
/// `None` unless both have them.
fn combine_paths(
    first: Option<[PathFigures; PayloadPath::ALL.len()]>,
    second: Option<[PathFigures; PayloadPath::ALL.len()]>,
    operation: fn(f64, f64) -> f64,
) -> Option<[PathFigures; PayloadPath::ALL.len()]> {
    let (first, second) = (first?, second?);
    Some(std::array::from_fn(|path| {
        first[path].combine(&second[path], operation)
    }))
}

impl NodeCounters {
    /// `self - earlier`, counter by counter.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            syncs: self.syncs - earlier.syncs,
            synced_entries: self.synced_entries - earlier.synced_entries,
            bytes_spliced: self.bytes_spliced - earlier.bytes_spliced,
            bytes_copied: self.bytes_copied - earlier.bytes_copied,
            leader_changes: self.leader_changes - earlier.leader_changes,
            sync_seconds: self.sync_seconds - earlier.sync_seconds,
            payload: combine_paths(self.payload, earlier.payload, |now, then| now - then),
        }
    }

    /// The counters of one payload path, if the node exports them.
    pub fn path(&self, path: PayloadPath) -> Option<PathFigures> {
        self.payload.map(|paths| paths[path as usize])
    }

    /// The sum of several nodes' counters.
    pub fn sum<'a>(all: impl Iterator<Item = &'a Self>) -> Self {
        all.fold(Self::default(), |total, one| Self {
            syncs: total.syncs + one.syncs,
            synced_entries: total.synced_entries + one.synced_entries,
            bytes_spliced: total.bytes_spliced + one.bytes_spliced,
            bytes_copied: total.bytes_copied + one.bytes_copied,
            leader_changes: total.leader_changes + one.leader_changes,
            sync_seconds: total.sync_seconds + one.sync_seconds,
            // Nodes without the per-path counters add nothing.
            payload: if total.payload.is_none() && one.payload.is_none() {
                None
            } else {
                combine_paths(
                    total.payload.or(Some(Default::default())),
                    one.payload.or(Some(Default::default())),
                    |left, right| left + right,
                )
            },
        })
    }
}

/// Scrapes a node's `/metrics`; `None` when it does not answer.
pub fn scrape(address: &str) -> Option<NodeCounters> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(parse_counters(&text))
}

/// The counters in a `/metrics` text; a counter it lacks reads 0.
pub fn parse_counters(text: &str) -> NodeCounters {
    let value = |name: &str| sample(text, name).unwrap_or(0.0);
    // Nodes older than the per-path payload counters export the follower
    // path's bytes under the old names.
    let follower = |new: &str, old: &str| {
        sample(text, &format!("{new}{{path=\"follower\"}}"))
            .or_else(|| sample(text, old))
            .unwrap_or(0.0)
    };
    NodeCounters {
        syncs: value("rast_syncs_total"),
        synced_entries: value("rast_synced_entries_total"),
        bytes_spliced: follower(
            "rast_payload_bytes_spliced_total",
            "rast_bytes_spliced_total",
        ),
        bytes_copied: follower("rast_payload_bytes_copied_total", "rast_bytes_copied_total"),
        leader_changes: value("rast_leader_changes_total"),
        sync_seconds: value("rast_sync_seconds_sum"),
        payload: parse_payload(text),
    }
}

/// The per-path payload counters in a `/metrics` text; `None` when it has
/// none.
fn parse_payload(text: &str) -> Option<[PathFigures; PayloadPath::ALL.len()]> {
    sample(text, "rast_payload_bytes_total")?;
    Some(PayloadPath::ALL.map(|path| {
        let value = |name: &str| {
            sample(text, &format!("{name}{{path=\"{}\"}}", path.label())).unwrap_or(0.0)
        };
        PathFigures {
            payload: value("rast_payload_bytes_total"),
            copied: value("rast_payload_bytes_copied_total"),
            spliced: value("rast_payload_bytes_spliced_total"),
            from_file: value("rast_payload_bytes_from_file_total"),
        }
    }))
}

/// User-space copies per payload byte over one point.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CopyFigures {
    /// The node taken for the leader (index into the nodes given): the one
    /// whose ingest payload grew most; `None` when no node ingested any.
    pub leader_node: Option<usize>,
    /// On the leader: bytes copied on the ingest, replicate and read paths
    /// ÷ payload bytes ingested.
    pub leader: Option<f64>,
    /// Over every other node: bytes copied on the follower path ÷ payload
    /// bytes received on it; `None` when they received none.
    pub followers: Option<f64>,
}

/// Copies per payload byte from each node's counters over the point (in
/// node order; `None` for a node that did not answer both scrapes). A node
/// without the per-path counters counts as neither leader nor follower.
pub fn copies_per_payload_byte(nodes: &[Option<NodeCounters>]) -> CopyFigures {
    let paths: Vec<(usize, [PathFigures; PayloadPath::ALL.len()])> = nodes
        .iter()
        .enumerate()
        .filter_map(|(node, counters)| Some((node, counters.as_ref()?.payload?)))
        .collect();
    let ingested =
        |paths: &[PathFigures; PayloadPath::ALL.len()]| paths[PayloadPath::Ingest as usize].payload;
    let leader = paths
        .iter()
        .filter(|(_, paths)| ingested(paths) > 0.0)
        .max_by(|(_, left), (_, right)| ingested(left).total_cmp(&ingested(right)));
    let leader_ratio = leader.map(|(_, paths)| {
        let copied: f64 = [
            PayloadPath::Ingest,
            PayloadPath::Replicate,
            PayloadPath::Read,
        ]
        .iter()
        .map(|path| paths[*path as usize].copied)
        .sum();
        copied / ingested(paths)
    });
    let leader_node = leader.map(|(node, _)| *node);
    let (copied, received) = paths
        .iter()
        .filter(|(node, _)| Some(*node) != leader_node)
        .map(|(_, paths)| paths[PayloadPath::Follower as usize])
        .fold((0.0, 0.0), |(copied, received), follower| {
            (copied + follower.copied, received + follower.payload)
        });
    CopyFigures {
        leader_node,
        leader: leader_ratio,
        followers: (received > 0.0).then(|| copied / received),
    }
}

/// The value of the sample `name` in a `/metrics` text: `name` with its
/// labels written as the node writes them (`a_total{path="read"}`) is that
/// sample; a bare name is the first sample of that metric.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    let separators: &[char] = if name.contains('{') {
        &[' ']
    } else {
        &[' ', '{']
    };
    text.lines()
        .find(|line| line.split(separators).next() == Some(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
}

/// CPU seconds this process (the load generator) has used.
pub fn own_cpu_seconds() -> f64 {
    sample_process(std::process::id()).map_or(0.0, |sample| sample.cpu_seconds)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// Bytes sent are summed per owner; sockets of other processes and
    /// sockets without an owner are ignored.
    #[test]
    fn sums_socket_bytes_per_process() {
        let text = "ESTAB 0 0 127.0.0.1:7001 127.0.0.1:5000 users:((\"rast\",pid=10,fd=9))\n\t cubic bytes_sent:100 bytes_acked:101 bytes_received:7\nESTAB 0 0 127.0.0.1:7001 127.0.0.1:5001 users:((\"rast\",pid=10,fd=10))\n\t cubic bytes_sent:50 bytes_received:3\nESTAB 0 0 127.0.0.1:9 127.0.0.1:5002 users:((\"other\",pid=11,fd=3))\n\t cubic bytes_sent:999\nESTAB 0 0 127.0.0.1:8 127.0.0.1:5003\n\t cubic bytes_sent:777\n";
        assert_eq!(parse_socket_bytes(text, &[10, 12]), vec![150, 0]);
    }

    /// A node's per-path payload samples, as it renders them.
    fn payload_text(
        ingest: [u64; 4],
        replicate: [u64; 4],
        follower: [u64; 4],
        read: [u64; 4],
    ) -> String {
        let paths = [
            ("ingest", ingest),
            ("replicate", replicate),
            ("follower", follower),
            ("read", read),
        ];
        let mut text = String::from("rast_syncs_total 7\n");
        for (position, name) in [
            "rast_payload_bytes_total",
            "rast_payload_bytes_copied_total",
            "rast_payload_bytes_spliced_total",
            "rast_payload_bytes_from_file_total",
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(text, "# HELP {name} …\n# TYPE {name} counter");
            for (label, values) in paths {
                let _ = writeln!(text, "{name}{{path=\"{label}\"}} {}", values[position]);
            }
        }
        text
    }

    /// The per-path samples are read by label; a node without them has
    /// none, and its follower bytes come from the old unlabelled names.
    #[test]
    fn parses_payload_counters_and_older_nodes() {
        let counters = parse_counters(&payload_text(
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            [9, 10, 11, 12],
            [13, 14, 15, 16],
        ));
        let read = counters.path(PayloadPath::Read).unwrap();
        assert_eq!(
            read,
            PathFigures {
                payload: 13.0,
                copied: 14.0,
                spliced: 15.0,
                from_file: 16.0
            }
        );
        assert_eq!(
            counters.path(PayloadPath::Replicate),
            Some(PathFigures {
                payload: 5.0,
                copied: 6.0,
                spliced: 7.0,
                from_file: 8.0
            })
        );
        // The follower path's bytes also feed the older figures.
        assert_eq!(
            (
                counters.syncs,
                counters.bytes_copied,
                counters.bytes_spliced
            ),
            (7.0, 10.0, 11.0)
        );
        let older = parse_counters(
            "rast_syncs_total 3\nrast_bytes_spliced_total 40\nrast_bytes_copied_total 2\n",
        );
        assert_eq!(older.payload, None);
        assert_eq!((older.bytes_copied, older.bytes_spliced), (2.0, 40.0));
    }

    /// The leader is the node that ingested most; its copies on ingest,
    /// replicate and read are divided by what it ingested, the other
    /// nodes' follower copies by what they received. Nodes without the
    /// counters, or that did not answer, are left out; with none at all
    /// there is no figure.
    #[test]
    fn copies_per_payload_byte_of_leader_and_followers() {
        let node = |ingest: [u64; 4], replicate: [u64; 4], follower: [u64; 4], read: [u64; 4]| {
            Some(parse_counters(&payload_text(
                ingest, replicate, follower, read,
            )))
        };
        let before = node([0; 4], [0; 4], [0; 4], [0; 4]).unwrap();
        let nodes = [
            // A follower that also took a few appends (answered "not leader").
            node([10, 10, 0, 0], [0; 4], [1_000, 1_000, 0, 0], [0; 4]),
            // The leader: one copy in, two per replicated byte, reads copied.
            node(
                [1_000, 1_000, 0, 0],
                [2_000, 4_000, 0, 0],
                [0; 4],
                [500, 100, 0, 400],
            ),
            // A splicing follower.
            node([0; 4], [0; 4], [1_000, 40, 960, 0], [0; 4]),
            // Did not answer both scrapes.
            None,
            // An older build.
            Some(parse_counters("rast_bytes_copied_total 99999\n")),
        ];
        let deltas: Vec<Option<NodeCounters>> = nodes
            .iter()
            .map(|counters| counters.as_ref().map(|counters| counters.since(&before)))
            .collect();
        let figures = copies_per_payload_byte(&deltas);
        assert_eq!(figures.leader_node, Some(1));
        assert_eq!(figures.leader, Some(5.1));
        assert_eq!(figures.followers, Some(0.52));
        let none = copies_per_payload_byte(&[None, Some(parse_counters("rast_syncs_total 1\n"))]);
        assert_eq!(none, CopyFigures::default());
        // Nothing ingested: no leader, and every node counts as a follower.
        let idle = copies_per_payload_byte(&[node([0; 4], [0; 4], [100, 100, 0, 0], [0; 4])]);
        assert_eq!(
            (idle.leader_node, idle.leader, idle.followers),
            (None, None, Some(1.0))
        );
    }
}
