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
        }
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
    }
}

/// The value of the sample `name` in a `/metrics` text: `name` with its
/// labels written as the node writes them (`a_total{path="read"}`) is that
/// sample; a bare name is the first sample of that metric.
fn sample(text: &str, name: &str) -> Option<f64> {
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
    use super::*;

    /// Bytes sent are summed per owner; sockets of other processes and
    /// sockets without an owner are ignored.
    #[test]
    fn sums_socket_bytes_per_process() {
        let text = "ESTAB 0 0 127.0.0.1:7001 127.0.0.1:5000 users:((\"rast\",pid=10,fd=9))\n\t cubic bytes_sent:100 bytes_acked:101 bytes_received:7\nESTAB 0 0 127.0.0.1:7001 127.0.0.1:5001 users:((\"rast\",pid=10,fd=10))\n\t cubic bytes_sent:50 bytes_received:3\nESTAB 0 0 127.0.0.1:9 127.0.0.1:5002 users:((\"other\",pid=11,fd=3))\n\t cubic bytes_sent:999\nESTAB 0 0 127.0.0.1:8 127.0.0.1:5003\n\t cubic bytes_sent:777\n";
        assert_eq!(parse_socket_bytes(text, &[10, 12]), vec![150, 0]);
    }
}
