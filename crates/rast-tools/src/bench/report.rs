//! The report: derived figures, ratios to the machine's limits, the table,
//! the JSON, the live progress line.
//!
//! Copies per payload byte (from the nodes' `rast_payload_bytes*` counters;
//! "—" in the table and null in the JSON when the nodes export none): on the
//! leader, the node whose ingest payload grew most, bytes copied on the
//! ingest, replicate and read paths ÷ bytes ingested; on the followers,
//! bytes copied on the follower path ÷ bytes received on it, over all of
//! them. The JSON also has each node's raw per-path deltas.
//!
//! Ratios (a limit missing from the run gives no ratio):
//!
//! | ratio | meaning |
//! |---|---|
//! | `p50_vs_fio_sync_p50` | latency p50 ÷ fio's 4 KiB write + fdatasync p50 (W1: goal ≤ 2) |
//! | `p99_vs_fio_sync_p50` | latency p99 ÷ the same (W1: goal ≤ 4) |
//! | `p50_vs_fio_overwrite_sync_p50` | latency p50 ÷ fio's fdatasync p50 over already-written blocks |
//! | `p50_vs_fio_3jobs_sync_p50`, `p99_vs_fio_3jobs_sync_p50` | the same against three fio writers at once (one per node on one disk) |
//! | `syncs_vs_fio_3jobs_sync_rate` | node fdatasyncs/s ÷ the three writers' syncs/s |
//! | `p99_vs_fio_sync_p99` | latency p99 ÷ fio's fdatasync p99 |
//! | `disk_vs_fio_durable` | node disk writes/s (all nodes) ÷ fio's 1 MiB durable bandwidth (W2: goal ≥ 0.7) |
//! | `disk_vs_fio_3jobs_durable` | the same against three 1 MiB fio writers at once |
//! | `payload_vs_fio_durable_third` | payload bytes/s ÷ (fio durable bandwidth ÷ 3) (W3: goal ≥ 0.8) |
//! | `syncs_vs_fio_sync_rate` | node fdatasyncs/s (all nodes) ÷ fio's 4 KiB syncs/s |
//! | `network_vs_loopback` | node bytes sent/s ÷ iperf3's loopback bandwidth |

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use super::Measured;
use super::json::{Json, JsonObject};
use super::limits::Limits;
use super::load::Workload;
use super::plot;
use super::stats::{self, CopyFigures};
use crate::server::metrics::PayloadPath;

/// One measured point with its derived figures.
#[derive(Debug)]
pub struct Point {
    /// The swept parameter's value, if a sweep.
    pub load: Option<f64>,
    /// The workload.
    pub workload: Workload,
    /// What was measured.
    pub measured: Measured,
    /// Derived figures, by name, in display order.
    pub figures: Vec<(&'static str, f64)>,
    /// Ratios to the limits, by name.
    pub ratios: Vec<(&'static str, f64)>,
    /// User-space copies per payload byte on the leader and the followers.
    pub copies: CopyFigures,
}

impl Point {
    /// Derives the figures and ratios of a measurement (a flat list of
    /// formulas: long, but read top to bottom).
    #[allow(clippy::too_many_lines)]
    pub fn new(
        workload: &Workload,
        load: Option<f64>,
        measured: Measured,
        limits: &Limits,
    ) -> Self {
        let seconds = measured.seconds.max(1e-9);
        let entries = measured.entries as f64;
        let per_entry = |value: f64| {
            if entries > 0.0 {
                value / entries
            } else {
                f64::NAN
            }
        };
        let quantile_us = |q: f64| measured.latencies.value_at_quantile(q) as f64 / 1e3;
        let payload_bytes = entries * workload.payload as f64;
        let mut figures = vec![
            ("ops_per_s", measured.operations as f64 / seconds),
            ("entries_per_s", entries / seconds),
            ("payload_mb_per_s", payload_bytes / seconds / 1e6),
            ("p50_us", quantile_us(0.5)),
            ("p90_us", quantile_us(0.9)),
            ("p99_us", quantile_us(0.99)),
            ("p999_us", quantile_us(0.999)),
            ("max_us", measured.latencies.max() as f64 / 1e3),
            ("errors", measured.errors as f64),
            (
                "node_cpu_s_per_million_entries",
                per_entry(measured.node_cpu_seconds) * 1e6,
            ),
            ("node_cpu_cores", measured.node_cpu_seconds / seconds),
            ("client_cpu_cores", measured.client_cpu_seconds / seconds),
            (
                "disk_bytes_per_entry",
                per_entry(measured.disk_bytes as f64),
            ),
            ("disk_mb_per_s", measured.disk_bytes as f64 / seconds / 1e6),
            (
                "network_bytes_per_entry",
                per_entry(measured.network_bytes as f64),
            ),
            (
                "rss_peak_mib",
                measured
                    .rss_peak
                    .iter()
                    .map(|rss| rss.total_kib)
                    .max()
                    .unwrap_or(0) as f64
                    / 1024.0,
            ),
            (
                "rss_anon_peak_mib",
                measured
                    .rss_peak
                    .iter()
                    .map(|rss| rss.anon_kib)
                    .max()
                    .unwrap_or(0) as f64
                    / 1024.0,
            ),
            (
                "rss_file_peak_mib",
                measured
                    .rss_peak
                    .iter()
                    .map(|rss| rss.file_kib)
                    .max()
                    .unwrap_or(0) as f64
                    / 1024.0,
            ),
        ];
        if let Some(counters) = &measured.counters {
            figures.push((
                "entries_per_fsync",
                if counters.syncs > 0.0 {
                    counters.synced_entries / counters.syncs
                } else {
                    f64::NAN
                },
            ));
            figures.push(("fsyncs_per_s", counters.syncs / seconds));
            figures.push((
                "node_sync_mean_us",
                if counters.syncs > 0.0 {
                    counters.sync_seconds / counters.syncs * 1e6
                } else {
                    f64::NAN
                },
            ));
            figures.push(("spliced_mb_per_s", counters.bytes_spliced / seconds / 1e6));
            figures.push(("copied_mb_per_s", counters.bytes_copied / seconds / 1e6));
            figures.push(("leader_changes", counters.leader_changes));
        }
        // NaN (shown "—", null in JSON) when the nodes export no per-path
        // payload counters, so an older build can be measured as a baseline.
        let copies = stats::copies_per_payload_byte(&measured.node_counters);
        figures.push((
            "leader_copies_per_payload_byte",
            copies.leader.unwrap_or(f64::NAN),
        ));
        figures.push((
            "follower_copies_per_payload_byte",
            copies.followers.unwrap_or(f64::NAN),
        ));
        let figure = |name: &str| {
            figures
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        };
        let limit = |name: &str| limits.get(name).copied().filter(|value| *value > 0.0);
        let mut ratios = Vec::new();
        let mut ratio = |name: &'static str, numerator: Option<f64>, denominator: Option<f64>| {
            if let (Some(numerator), Some(denominator)) = (numerator, denominator)
                && numerator.is_finite()
            {
                ratios.push((name, numerator / denominator));
            }
        };
        ratio(
            "p50_vs_fio_sync_p50",
            figure("p50_us"),
            limit("sync4k.op_p50_us"),
        );
        ratio(
            "p99_vs_fio_sync_p50",
            figure("p99_us"),
            limit("sync4k.op_p50_us"),
        );
        ratio(
            "p50_vs_fio_overwrite_sync_p50",
            figure("p50_us"),
            limit("sync4k_overwrite.sync_p50_us"),
        );
        ratio(
            "p50_vs_fio_3jobs_sync_p50",
            figure("p50_us"),
            limit("sync4k_3jobs.sync_p50_us").map(|sync| {
                sync + limits
                    .get("sync4k_3jobs.write_p50_us")
                    .copied()
                    .unwrap_or(0.0)
            }),
        );
        ratio(
            "p99_vs_fio_3jobs_sync_p50",
            figure("p99_us"),
            limit("sync4k_3jobs.sync_p50_us").map(|sync| {
                sync + limits
                    .get("sync4k_3jobs.write_p50_us")
                    .copied()
                    .unwrap_or(0.0)
            }),
        );
        ratio(
            "syncs_vs_fio_3jobs_sync_rate",
            figure("fsyncs_per_s"),
            limit("sync4k_3jobs.iops"),
        );
        ratio(
            "p99_vs_fio_sync_p99",
            figure("p99_us"),
            limit("sync4k.sync_p99_us"),
        );
        ratio(
            "disk_vs_fio_durable",
            figure("disk_mb_per_s").map(|value| value * 1e6),
            limit("durable1m.bytes_per_s"),
        );
        ratio(
            "disk_vs_fio_3jobs_durable",
            figure("disk_mb_per_s").map(|value| value * 1e6),
            limit("durable1m_3jobs.bytes_per_s"),
        );
        ratio(
            "payload_vs_fio_durable_third",
            Some(payload_bytes / seconds),
            limit("durable1m.bytes_per_s").map(|value| value / 3.0),
        );
        ratio(
            "syncs_vs_fio_sync_rate",
            figure("fsyncs_per_s"),
            limit("sync4k.iops"),
        );
        ratio(
            "network_vs_loopback",
            Some(measured.network_bytes as f64 * 8.0 / seconds),
            limit("loopback.bits_per_s"),
        );
        Self {
            load,
            workload: workload.clone(),
            measured,
            figures,
            ratios,
            copies,
        }
    }

    /// A figure by name (NaN when absent).
    pub fn figure(&self, name: &str) -> f64 {
        self.figures
            .iter()
            .find(|(key, _)| *key == name)
            .map_or(f64::NAN, |(_, value)| *value)
    }

    fn json(&self) -> Json {
        let workload = &self.workload;
        let mut parameters = Json::object();
        parameters
            .set("clients", workload.clients)
            .set("inflight", workload.inflight)
            .set("rate", workload.rate)
            .set("payload_bytes", workload.payload as u64)
            .set("batch_entries", workload.batch)
            .set("logs", workload.logs.len() as u64)
            .set("kv_percent", workload.kv_percent)
            .set("kv_get_percent", workload.kv_get_percent)
            .set(
                "duration_s",
                workload.duration.map(|duration| duration.as_secs_f64()),
            )
            .set("operations", workload.operations)
            .set("warmup_s", workload.warmup.as_secs_f64());
        let mut figures = Json::object();
        figures
            .set("seconds", self.measured.seconds)
            .set("operations", self.measured.operations)
            .set("entries", self.measured.entries);
        for (name, value) in &self.figures {
            figures.set(name, *value);
        }
        figures
            .set("node_cpu_seconds", self.measured.node_cpu_seconds)
            .set("client_cpu_seconds", self.measured.client_cpu_seconds)
            .set("disk_bytes", self.measured.disk_bytes)
            .set("network_bytes", self.measured.network_bytes)
            .set(
                "rss_peak_mib_per_node",
                Json::Array(
                    self.measured
                        .rss_peak
                        .iter()
                        .map(|rss| {
                            let mut node = Json::object();
                            node.set("total", rss.total_kib as f64 / 1024.0)
                                .set("anon", rss.anon_kib as f64 / 1024.0)
                                .set("file", rss.file_kib as f64 / 1024.0);
                            node
                        })
                        .collect(),
                ),
            )
            .set(
                "node_figures_include_load_generator",
                self.measured.in_process,
            )
            .set("last_client_error", self.measured.last_error.clone())
            .set("first_error_reply", self.measured.first_error_reply.clone());
        figures
            .set(
                "leader_node",
                self.copies.leader_node.map(|node| node as u64 + 1),
            )
            .set("payload_bytes_per_node", self.payload_json());
        if let Some(fault) = &self.measured.fault {
            let mut w6 = Json::object();
            w6.set("killed", fault.killed.as_str())
                .set("to_new_leader_ms", fault.to_new_leader_ms)
                .set("to_first_answer_ms", fault.to_first_answer_ms)
                .set("to_recovered_ms", fault.to_recovered_ms);
            figures.set("leader_killed", w6);
        }
        let mut ratios = Json::object();
        for (name, value) in &self.ratios {
            ratios.set(name, *value);
        }
        let mut point = Json::object();
        point
            .set("load", self.load)
            .set("workload", parameters)
            .set("figures", figures)
            .set("ratios", ratios);
        point
    }

    /// Each node's payload byte counters over the point, per path (node 1
    /// first, in the order of the metrics addresses; `null` for a node that
    /// exports none or did not answer).
    fn payload_json(&self) -> Json {
        Json::Array(
            self.measured
                .node_counters
                .iter()
                .map(|counters| {
                    let Some(paths) = counters.as_ref().and_then(|counters| counters.payload)
                    else {
                        return Json::Null;
                    };
                    let mut node = Json::object();
                    for path in PayloadPath::ALL {
                        let figures = paths[path as usize];
                        let mut bytes = Json::object();
                        bytes
                            .set("payload", figures.payload)
                            .set("copied", figures.copied)
                            .set("spliced", figures.spliced)
                            .set("from_file", figures.from_file);
                        node.set(path.label(), bytes);
                    }
                    node
                })
                .collect(),
        )
    }
}

/// A ratio for the table: two decimals, or "—" when there is none.
fn ratio_cell(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.2}")
    } else {
        "—".to_owned()
    }
}

/// The whole run.
#[derive(Debug)]
pub struct Report {
    /// Workload name (W1, …), may be empty.
    pub label: String,
    /// The command line.
    pub command: String,
    /// The swept parameter.
    pub sweep: Option<String>,
    /// Nodes.
    pub nodes: usize,
    /// Storage mode.
    pub storage: String,
    /// Follower receive path.
    pub zero_copy: String,
    /// Connections encrypted with TLS.
    pub tls: bool,
    /// Cores per node.
    pub cores_per_node: u32,
    /// Nodes were threads of the benchmark process.
    pub in_process: bool,
    /// The machine's limits.
    pub limits: Limits,
    /// The points.
    pub points: Vec<Point>,
}

impl Report {
    /// The JSON report.
    pub fn json(&self) -> Json {
        let mut limits = Json::object();
        for (name, value) in &self.limits {
            limits.set(name, *value);
        }
        let mut cluster = Json::object();
        cluster
            .set("nodes", self.nodes as u64)
            .set("storage", self.storage.as_str())
            .set("zero_copy", self.zero_copy.as_str())
            .set("tls", self.tls)
            .set("cores_per_node", self.cores_per_node)
            .set("in_process", self.in_process);
        let mut machine = Json::object();
        machine
            .set(
                "cpus",
                std::thread::available_parallelism().map_or(0, |cpus| cpus.get() as u64),
            )
            .set(
                "kernel",
                std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim(),
            )
            .set(
                "unix_time",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs()),
            );
        let mut report = Json::object();
        report
            .set("rast_version", env!("CARGO_PKG_VERSION"))
            .set("label", self.label.as_str())
            .set("command", self.command.as_str())
            .set("machine", machine)
            .set("limits", limits)
            .set("cluster", cluster)
            .set("sweep", self.sweep.clone())
            .set(
                "points",
                Json::Array(self.points.iter().map(Point::json).collect()),
            );
        report
    }

    /// The table printed at the end.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}{} nodes, storage {}, follower path {}, {} core(s) per node{}",
            if self.label.is_empty() {
                String::new()
            } else {
                format!("{}: ", self.label)
            },
            self.nodes,
            self.storage,
            self.zero_copy,
            self.cores_per_node,
            if self.tls { ", TLS" } else { "" }
        );
        if let (Some(iops), Some(p50), Some(bandwidth)) = (
            self.limits.get("sync4k.iops"),
            self.limits.get("sync4k.op_p50_us"),
            self.limits.get("durable1m.bytes_per_s"),
        ) {
            let _ = writeln!(
                out,
                "machine: fio 4 KiB write+fdatasync {iops:.0}/s, p50 {p50:.0} µs; 1 MiB durable {:.0} MB/s{}",
                bandwidth / 1e6,
                self.limits
                    .get("loopback.bits_per_s")
                    .map(|bits| format!("; loopback {:.1} Gbit/s", bits / 1e9))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>9} {:>8} {:>8} {:>9} {:>9} {:>11}",
            "load",
            "ops/s",
            "entries/s",
            "MB/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "ent/sync",
            "cpu s/M",
            "ldr cp/B",
            "fol cp/B",
            "disk B/e",
            "net B/e",
            "RSS/anon MiB"
        );
        for point in &self.points {
            let load = point.load.map_or_else(
                || format!("{}x{}", point.workload.clients, point.workload.inflight),
                |load| format!("{load}"),
            );
            let _ = writeln!(
                out,
                "{load:>10} {:>10.0} {:>11.0} {:>8.2} {:>8.3} {:>8.3} {:>8.3} {:>8.2} {:>6.0} {:>7.1} {:>9.1} {:>8} {:>8} {:>9.0} {:>9.0} {:>11}",
                point.figure("ops_per_s"),
                point.figure("entries_per_s"),
                point.figure("payload_mb_per_s"),
                point.figure("p50_us") / 1e3,
                point.figure("p99_us") / 1e3,
                point.figure("p999_us") / 1e3,
                point.figure("max_us") / 1e3,
                point.figure("errors"),
                point.figure("entries_per_fsync"),
                point.figure("node_cpu_s_per_million_entries"),
                ratio_cell(point.figure("leader_copies_per_payload_byte")),
                ratio_cell(point.figure("follower_copies_per_payload_byte")),
                point.figure("disk_bytes_per_entry"),
                point.figure("network_bytes_per_entry"),
                format!(
                    "{:.0}/{:.0}",
                    point.figure("rss_peak_mib"),
                    point.figure("rss_anon_peak_mib")
                ),
            );
            notes(&mut out, point);
            if !point.ratios.is_empty() {
                let ratios: Vec<String> = point
                    .ratios
                    .iter()
                    .map(|(name, value)| format!("{name} {value:.2}"))
                    .collect();
                let _ = writeln!(out, "{:>10} ratios: {}", "", ratios.join(", "));
            }
        }
        if self.in_process {
            let _ = writeln!(
                out,
                "(in-process: CPU, disk and network figures are the whole process, load generator included)"
            );
        }
        out
    }

    /// The title of the sweep plot.
    pub fn plot_title(&self) -> String {
        let first = self.points.first().map(|point| &point.workload);
        format!(
            "rast bench {}{} B x{}, {} nodes, {}",
            if self.label.is_empty() {
                String::new()
            } else {
                format!("{} ", self.label)
            },
            first.map_or(0, |workload| workload.payload),
            first.map_or(1, |workload| workload.batch),
            self.nodes,
            self.storage
        )
    }

    /// The sweep's points for the plot.
    pub fn plot_points(&self) -> Vec<plot::Point> {
        self.points
            .iter()
            .filter_map(|point| {
                Some(plot::Point {
                    load: point.load?,
                    throughput: point.figure("entries_per_s"),
                    p50_ms: point.figure("p50_us") / 1e3,
                    p99_ms: point.figure("p99_us") / 1e3,
                })
            })
            .collect()
    }
}

/// The lines under a point's row: W6's figures and errors seen.
fn notes(out: &mut String, point: &Point) {
    if let Some(fault) = &point.measured.fault {
        let show = |value: Option<f64>| {
            value.map_or_else(|| "never".to_owned(), |ms| format!("{ms:.0} ms"))
        };
        let _ = writeln!(
            out,
            "{:>10} leader {} killed: new leader after {}, answers again after {}, throughput back to 90 % after {}",
            "",
            fault.killed,
            show(fault.to_new_leader_ms),
            show(fault.to_first_answer_ms),
            show(fault.to_recovered_ms)
        );
    }
    if let Some(reply) = &point.measured.first_error_reply {
        let _ = writeln!(out, "{:>10} first error answer: {reply}", "");
    }
    if let Some(error) = &point.measured.last_error {
        let _ = writeln!(out, "{:>10} last connection error: {error}", "");
    }
}

/// The live progress line on stderr (rewritten in place on a terminal).
#[derive(Debug)]
pub struct Progress {
    quiet: bool,
    terminal: bool,
    printed: bool,
}

impl Progress {
    /// A progress line; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            printed: false,
        }
    }

    /// One update.
    pub fn line(&mut self, elapsed: Duration, ops_per_s: f64, p99_ns: u64, errors: u64) {
        if self.quiet {
            return;
        }
        let text = format!(
            "  {:>5.1} s  {:>10.0} ops/s  p99 {:>8.3} ms  errors {errors}",
            elapsed.as_secs_f64(),
            ops_per_s,
            p99_ns as f64 / 1e6
        );
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r{text}\x1b[K");
        } else {
            let _ = writeln!(stderr, "{text}");
        }
        let _ = stderr.flush();
        self.printed = true;
    }

    /// Ends the line.
    pub fn finish(&mut self) {
        if self.printed && self.terminal {
            eprintln!();
        }
        self.printed = false;
    }
}
