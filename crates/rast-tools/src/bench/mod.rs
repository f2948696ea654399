//! `rast bench`: the load generator and its report (see docs/benchmarks.md).
//!
//! ```text
//!  limits (scripts/bench-limits --machine: fio, iperf3)      measured first
//!  cluster (given, or started: processes or --in-process)
//!  for each point of the sweep (or the one point):
//!     warm-up ─► measure (clients: closed or open loop) ─► stop
//!     /proc and ss before/after, RSS sampled, /metrics before/after
//!  table on stdout, JSON report (--json), PNG + SVG plot (--sweep)
//! ```
//!
//! Every figure that can be is also given as a ratio to a limit measured in
//! the same run, because the machines are small and shared and absolute
//! numbers drift.

pub mod cluster;
pub mod json;
pub mod limits;
pub mod link;
pub mod load;
pub mod plot;
pub mod report;
pub mod stats;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::client::{ClientError, ClientOptions};
use crate::server::{Named, StorageMode, ZeroCopy};
use crate::wire::WireError;
use crate::wire::client::{RequestBody, ResponseBody};

/// Everything that can stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket or file failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A node sent bytes we cannot read.
    #[error("protocol: {0}")]
    Wire(#[from] WireError),
    /// The client library failed.
    #[error("client: {0}")]
    Client(#[from] ClientError),
    /// The run cannot be set up or went wrong.
    #[error("{0}")]
    Setup(String),
}

/// Options of `rast bench` (command-line switches, hence the bools).
#[derive(clap::Args, Clone, Debug)]
#[allow(clippy::struct_excessive_bools)]
pub struct Args {
    /// A running cluster's comma-separated addresses; without it the
    /// benchmark starts its own cluster and stops it at the end.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Metrics addresses of a running cluster (for entries per fsync).
    #[arg(long)]
    pub metrics: Option<String>,
    /// Nodes of the cluster it starts.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Cores per node of the cluster it starts.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Storage of the cluster it starts: disk or memory.
    #[arg(long, default_value = "disk", value_parser = StorageMode::parse_named)]
    pub storage: StorageMode,
    /// Follower receive path of the cluster it starts: splice or buffer.
    #[arg(long, default_value = "splice", value_parser = ZeroCopy::parse_named)]
    pub zero_copy: ZeroCopy,
    /// Run the nodes as threads of this process (W5; implies --storage memory).
    #[arg(long)]
    pub in_process: bool,
    /// Encrypt every connection with TLS (certificates made with `rast
    /// certs` under the data directory) in the cluster it starts as
    /// processes; closed loop only.
    #[arg(long)]
    pub tls: bool,
    /// One more `rast serve` argument for every node of the cluster it
    /// starts as processes (repeat it), e.g.
    /// `--serve-arg=--segment-bytes=1048576` for segments that roll often.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// Parent directory for the nodes' data and fio's files (default: the
    /// temp dir); it decides which filesystem is measured.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Client threads (one connection each).
    #[arg(long, default_value_t = 1)]
    pub clients: u32,
    /// Requests outstanding per client (closed loop), or the cap per client
    /// (open loop).
    #[arg(long, default_value_t = 1)]
    pub inflight: u32,
    /// Open loop: requests per second in total, latencies corrected for
    /// coordinated omission.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bytes per entry.
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// Entries per append request.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Number of logs (Raft groups); clients spread over them.
    #[arg(long, default_value_t = 1)]
    pub logs: u32,
    /// Percent of requests that are key-value operations instead of appends.
    #[arg(long, default_value_t = 0)]
    pub kv_percent: u32,
    /// Percent of key-value operations that are gets (the rest are puts).
    #[arg(long, default_value_t = 0)]
    pub kv_get_percent: u32,
    /// Distinct keys for key-value operations.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Seconds to measure (per sweep point).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Measure this many requests instead of a duration (capped at 600 s).
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds of unrecorded load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Sweep one parameter: clients, inflight, rate, payload or batch, as
    /// NAME=V1,V2,…
    #[arg(long)]
    pub sweep: Option<String>,
    /// Where a sweep's plot goes: NAME.png and NAME.svg, a .png or .svg
    /// extension given being replaced (default: the JSON path's name, or
    /// rast-bench-sweep).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// A name for this workload in the report (W1, W2, …).
    #[arg(long, default_value = "")]
    pub label: String,
    /// The script that measures the machine's limits.
    #[arg(long, default_value = "scripts/bench-limits")]
    pub limits_script: PathBuf,
    /// Seconds per limit measurement.
    #[arg(long, default_value_t = 5)]
    pub limits_seconds: u32,
    /// Do not measure the machine's limits.
    #[arg(long)]
    pub no_limits: bool,
    /// W6: SIGKILL the leader of the first log this many seconds into each
    /// measurement (a cluster this benchmark started, as processes), and
    /// report the time to a new leader and to recover throughput.
    #[arg(long)]
    pub kill_leader_after: Option<f64>,
    /// Keep the nodes' own CPU pinning (by default the benchmark lets the
    /// scheduler spread the local nodes over all CPUs; see
    /// `cluster::LocalCluster::unpin_threads`).
    #[arg(long)]
    pub keep_pinning: bool,
    /// Do not print the live progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the benchmark the arguments describe, prints its table and writes
/// its files. `command` is the command line, for the report.
pub fn run(args: &Args, command: &str) -> Result<(), BenchError> {
    crate::io::signal::install_stop_handlers()?;
    let sweep = parse_sweep(args.sweep.as_deref())?;
    if !args.serve_args.is_empty() && (args.in_process || args.cluster.is_some()) {
        return Err(BenchError::Setup(
            "--serve-arg is for the cluster this benchmark starts as processes".into(),
        ));
    }
    if args.tls && (args.in_process || args.cluster.is_some() || args.rate.is_some()) {
        return Err(BenchError::Setup(
            "--tls is for a closed-loop run against the cluster this benchmark starts as processes"
                .into(),
        ));
    }
    let base = args.data.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let limits = if args.no_limits {
        limits::Limits::new()
    } else {
        eprintln!(
            "rast bench: measuring the machine's limits ({} s each)…",
            args.limits_seconds
        );
        limits::measure(&args.limits_script, &base, args.limits_seconds)?
    };
    let logs: Vec<String> = if args.logs <= 1 {
        vec!["default".to_owned()]
    } else {
        (0..args.logs).map(|log| format!("bench-{log}")).collect()
    };
    let storage = if args.in_process {
        StorageMode::Memory
    } else {
        args.storage
    };
    let mut local = match &args.cluster {
        Some(_) => None,
        None => Some(cluster::LocalCluster::start(&cluster::ClusterPlan {
            nodes: args.nodes,
            cores: args.cores,
            storage,
            zero_copy: args.zero_copy,
            logs: logs.clone(),
            data: cluster::data_directory(&base),
            in_process: args.in_process,
            serve_args: args.serve_args.clone(),
            tls: args.tls,
        })?),
    };
    let outcome = run_points(args, &sweep, &logs, local.as_mut(), &limits, command);
    if let Some(mut local) = local {
        local.stop();
    }
    outcome
}

/// The target: addresses, metrics, pids.
struct Target {
    addresses: Vec<String>,
    metrics: Vec<String>,
    pids: Vec<u32>,
    in_process: bool,
}

/// The nodes a run talks to and watches.
fn target_of(args: &Args, local: Option<&cluster::LocalCluster>) -> Target {
    if let Some(local) = local {
        Target {
            addresses: local.addresses.clone(),
            metrics: local.metrics.clone(),
            pids: local.pids(),
            in_process: local.in_process(),
        }
    } else {
        let addresses = split_list(args.cluster.as_deref().unwrap_or_default());
        Target {
            pids: stats::listening_pids(&addresses)
                .into_iter()
                .flatten()
                .collect(),
            metrics: split_list(args.metrics.as_deref().unwrap_or_default()),
            addresses,
            in_process: false,
        }
    }
}

fn run_points(
    args: &Args,
    sweep: &Sweep,
    logs: &[String],
    mut local: Option<&mut cluster::LocalCluster>,
    limits: &limits::Limits,
    command: &str,
) -> Result<(), BenchError> {
    let target = target_of(args, local.as_deref());
    let tls = match local.as_deref().and_then(cluster::LocalCluster::certs) {
        Some(certs) => Some(
            rast_client::TlsOptions::from_files(&certs.join("ca.pem"), None)
                .map_err(|error| BenchError::Setup(format!("TLS: {error}")))?,
        ),
        None => None,
    };
    let options = ClientOptions {
        timeout: Duration::from_secs(10),
        tls,
        ..ClientOptions::default()
    };
    let mut leaders = Vec::new();
    for log in logs {
        let leader = find_leader(&target.addresses, log, &options, Duration::from_secs(30));
        if let (Err(_), Some(local)) = (&leader, local.as_mut()) {
            local.check_alive()?;
        }
        leaders.push(leader?);
    }
    if let Some(local) = &local
        && !args.keep_pinning
    {
        local.unpin_threads();
    }
    if args.kill_leader_after.is_some() && (local.is_none() || target.in_process) {
        return Err(BenchError::Setup(
            "--kill-leader-after needs a cluster this benchmark starts as processes".into(),
        ));
    }
    let mut points = Vec::new();
    let values = sweep.values.clone().unwrap_or_else(|| vec![f64::NAN]);
    for value in values {
        let mut point_args = args.clone();
        if let Some(name) = &sweep.name {
            apply_sweep(&mut point_args, name, value);
        }
        let workload = workload(&point_args, logs);
        let mut kill_leader = |addresses: &[String]| -> Option<String> {
            let leader = find_leader(addresses, &logs[0], &options, Duration::from_secs(2)).ok()?;
            local.as_mut()?.kill(&leader).then_some(leader)
        };
        let fault = args.kill_leader_after.map(|after| Fault {
            after: Duration::from_secs_f64(after.max(0.0)),
            kill: &mut kill_leader,
        });
        let measured = measure_point(&workload, &target, &leaders, &options, args.quiet, fault)?;
        if let Some(local) = local.as_mut() {
            local.check_alive()?;
        }
        let load = sweep.name.as_ref().map(|_| value);
        points.push(report::Point::new(&workload, load, measured, limits));
        if crate::io::signal::stopping() {
            break;
        }
    }
    let report = report::Report {
        label: args.label.clone(),
        command: command.to_owned(),
        sweep: sweep.name.clone(),
        nodes: target.addresses.len(),
        storage: if args.in_process {
            "memory (in-process)".to_owned()
        } else if args.cluster.is_some() {
            "external cluster".to_owned()
        } else {
            format!("{:?}", args.storage).to_lowercase()
        },
        zero_copy: format!("{:?}", args.zero_copy).to_lowercase(),
        tls: args.tls,
        cores_per_node: args.cores,
        in_process: target.in_process,
        limits: limits.clone(),
        points,
    };
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{}\n", json::pretty(&report.json())))?;
        eprintln!("rast bench: report written to {}", path.display());
    }
    if let Some(name) = &sweep.name {
        write_plot(args, name, &report)?;
    }
    Ok(())
}

/// A sweep's plot, as NAME.png and NAME.svg: NAME from --plot, else the
/// JSON report's, else rast-bench-sweep.
fn write_plot(args: &Args, name: &str, report: &report::Report) -> Result<(), BenchError> {
    let path = args.plot.clone().unwrap_or_else(|| {
        args.json.as_ref().map_or_else(
            || PathBuf::from("rast-bench-sweep.png"),
            |json| json.with_extension("png"),
        )
    });
    let caption = if name == "inflight" {
        format!("in flight per client, {} clients", args.clients)
    } else {
        name.to_owned()
    };
    let files = plot::write(&path, &report.plot_title(), &caption, &report.plot_points())?;
    eprintln!(
        "rast bench: plot written to {} and {}",
        files.png.display(),
        files.svg.display()
    );
    Ok(())
}

/// The workload of one point.
fn workload(args: &Args, logs: &[String]) -> load::Workload {
    load::Workload {
        clients: args.clients.max(1),
        inflight: args.inflight.max(1),
        rate: args.rate,
        payload: args.payload,
        batch: args.batch.max(1),
        logs: logs.to_vec(),
        kv_percent: args.kv_percent.min(100),
        kv_get_percent: args.kv_get_percent.min(100),
        keys: args.keys,
        duration: args
            .count
            .is_none()
            .then(|| Duration::from_secs_f64(args.duration.max(0.1))),
        operations: args.count,
        warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
    }
}

/// A parsed `--sweep`.
#[derive(Debug, Default)]
struct Sweep {
    name: Option<String>,
    values: Option<Vec<f64>>,
}

fn parse_sweep(text: Option<&str>) -> Result<Sweep, BenchError> {
    let Some(text) = text else {
        return Ok(Sweep::default());
    };
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| BenchError::Setup(format!("--sweep {text:?} is not NAME=V1,V2")))?;
    if !["clients", "inflight", "rate", "payload", "batch"].contains(&name) {
        return Err(BenchError::Setup(format!(
            "--sweep: {name} is not one of clients, inflight, rate, payload, batch"
        )));
    }
    let values = values
        .split(',')
        .map(|value| {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|value| *value > 0.0)
                .ok_or_else(|| BenchError::Setup(format!("--sweep value {value:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sweep {
        name: Some(name.to_owned()),
        values: Some(values),
    })
}

fn apply_sweep(args: &mut Args, name: &str, value: f64) {
    match name {
        "clients" => args.clients = value as u32,
        "inflight" => args.inflight = value as u32,
        "rate" => args.rate = Some(value),
        "payload" => args.payload = value as usize,
        "batch" => args.batch = value as u32,
        _ => unreachable!("checked by parse_sweep"),
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The address of the node that leads `log`, asking each node its status.
pub fn find_leader(
    addresses: &[String],
    log: &str,
    options: &ClientOptions,
    within: Duration,
) -> Result<String, BenchError> {
    let started = Instant::now();
    let mut last = String::from("no node answered");
    loop {
        for address in addresses {
            match link::Link::open(address, options)
                .and_then(|mut link| link.call(log, RequestBody::Status))
            {
                Ok(ResponseBody::Status(status)) if status.role == "leader" => {
                    return Ok(address.clone());
                }
                Ok(other) => last = format!("{address}: {other:?}"),
                Err(error) => last = format!("{address}: {error}"),
            }
        }
        if started.elapsed() > within || crate::io::signal::stopping() {
            return Err(BenchError::Setup(format!(
                "no leader for log {log:?} within {within:?} ({last})"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one point measured (raw; the report derives the rest).
#[derive(Debug)]
pub struct Measured {
    /// Seconds measured.
    pub seconds: f64,
    /// Requests answered successfully.
    pub operations: u64,
    /// Entries they carried.
    pub entries: u64,
    /// Errors and lost requests.
    pub errors: u64,
    /// Latency histogram (ns).
    pub latencies: hdrhistogram::Histogram<u64>,
    /// Node CPU seconds.
    pub node_cpu_seconds: f64,
    /// Load generator CPU seconds (in-process: the whole process, nodes included).
    pub client_cpu_seconds: f64,
    /// Bytes the nodes wrote to storage.
    pub disk_bytes: u64,
    /// Bytes the nodes sent on TCP sockets.
    pub network_bytes: u64,
    /// Peak resident memory of each node.
    pub rss_peak: Vec<stats::Rss>,
    /// Node counters summed over nodes, over the measured time.
    pub counters: Option<stats::NodeCounters>,
    /// Each node's counters over the measured time, in the order of the
    /// metrics addresses (`None`: the node did not answer both scrapes).
    pub node_counters: Vec<Option<stats::NodeCounters>>,
    /// Whether the node figures include the load generator (in-process).
    pub in_process: bool,
    /// The last connection error a client saw.
    pub last_error: Option<String>,
    /// The first error answer a node gave.
    pub first_error_reply: Option<String>,
    /// W6's figures, when a leader was killed.
    pub fault: Option<FaultFigures>,
}

/// Resource counters at one moment.
struct Snapshot {
    processes: Vec<Option<stats::ProcessSample>>,
    sockets: Vec<u64>,
    counters: Vec<Option<stats::NodeCounters>>,
    own_cpu: f64,
    at: Instant,
}

impl Snapshot {
    fn take(target: &Target) -> Self {
        let counters = target
            .metrics
            .iter()
            .map(|address| stats::scrape(address))
            .collect();
        Self {
            processes: target
                .pids
                .iter()
                .map(|pid| stats::sample_process(*pid))
                .collect(),
            sockets: stats::socket_bytes_sent(&target.pids),
            counters,
            own_cpu: stats::own_cpu_seconds(),
            at: Instant::now(),
        }
    }
}

/// W6: when to kill the leader, and how (returns the killed address).
struct Fault<'a> {
    after: Duration,
    kill: &'a mut dyn FnMut(&[String]) -> Option<String>,
}

/// What W6 measured, in ms from the kill.
#[derive(Clone, Debug, Default)]
pub struct FaultFigures {
    /// The node killed.
    pub killed: String,
    /// Until another node reported itself leader of the first log.
    pub to_new_leader_ms: Option<f64>,
    /// Until answers flowed again (end of the longest silence after the kill).
    pub to_first_answer_ms: Option<f64>,
    /// Until a 200 ms window reached 90 % of the second before the kill.
    pub to_recovered_ms: Option<f64>,
}

fn measure_point(
    workload: &load::Workload,
    target: &Target,
    leaders: &[String],
    options: &ClientOptions,
    quiet: bool,
    fault: Option<Fault<'_>>,
) -> Result<Measured, BenchError> {
    let shared = load::Shared::new(workload.clients);
    let plans: Vec<load::ClientPlan> = (0..workload.clients)
        .map(|index| {
            let log = index as usize % workload.logs.len();
            load::ClientPlan {
                index,
                log: workload.logs[log].clone(),
                addresses: target.addresses.clone(),
                leader: leaders[log].clone(),
                options: options.clone(),
            }
        })
        .collect();
    let rss = stats::RssSampler::start(target.pids.clone());
    let (before, after, outcomes, fault) = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("rast-bench-client-{}", plan.index))
                    .spawn_scoped(scope, move || load::run_client(plan, workload, shared))
            })
            .collect::<Result<_, _>>()?;
        let (before, after, fault) = drive(workload, target, &shared, &handles, quiet, fault);
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|handle| handle.join().expect("client thread"))
            .collect();
        Ok::<_, BenchError>((before, after, outcomes, fault))
    })?;
    let rss_peak = rss.finish();
    let mut latencies = load::histogram();
    let mut last_error = None;
    for outcome in outcomes {
        let outcome = outcome?;
        latencies
            .add(&outcome.latencies)
            .expect("same histogram bounds");
        last_error = last_error.or(outcome.last_error);
    }
    // Nodes that answered both times (a node killed by W6 drops out).
    let node_counters: Vec<Option<stats::NodeCounters>> = after
        .counters
        .iter()
        .zip(&before.counters)
        .map(|(after, before)| Some(after.as_ref()?.since(before.as_ref()?)))
        .collect();
    let counters = node_counters
        .iter()
        .any(Option::is_some)
        .then(|| stats::NodeCounters::sum(node_counters.iter().flatten()));
    // A node killed mid-run (W6) has no "after": it drops out of the sums.
    let delta = |pick: fn(&stats::ProcessSample) -> f64| -> f64 {
        after
            .processes
            .iter()
            .zip(&before.processes)
            .filter_map(|(after, before)| Some(pick(&(*after)?) - pick(&(*before)?)))
            .sum()
    };
    Ok(Measured {
        seconds: (after.at - before.at).as_secs_f64(),
        operations: shared.completed.load(Ordering::Relaxed),
        entries: shared.entries.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        latencies,
        node_cpu_seconds: delta(|sample| sample.cpu_seconds),
        client_cpu_seconds: after.own_cpu - before.own_cpu,
        disk_bytes: delta(|sample| sample.disk_write_bytes as f64).max(0.0) as u64,
        network_bytes: after
            .sockets
            .iter()
            .zip(&before.sockets)
            .map(|(after, before)| after.saturating_sub(*before))
            .sum(),
        rss_peak,
        counters,
        node_counters,
        in_process: target.in_process,
        last_error,
        first_error_reply: shared
            .first_error
            .lock()
            .ok()
            .and_then(|first| first.clone()),
        fault,
    })
}

/// Runs the clock of one point: warm-up, measuring, stop; prints the live
/// progress line once a second, and kills the leader when W6 asks. Returns
/// the snapshots at the start and end of measuring, and W6's figures.
fn drive<T>(
    workload: &load::Workload,
    target: &Target,
    shared: &load::Shared,
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
    quiet: bool,
    mut fault: Option<Fault<'_>>,
) -> (Snapshot, Snapshot, Option<FaultFigures>) {
    let all_done = || {
        handles
            .iter()
            .all(std::thread::ScopedJoinHandle::is_finished)
    };
    let warmup_end = Instant::now() + workload.warmup;
    while Instant::now() < warmup_end && !all_done() && !crate::io::signal::stopping() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = Snapshot::take(target);
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let limit = workload
        .duration
        .unwrap_or(Duration::from_mins(10))
        .min(Duration::from_mins(10));
    let mut progress = report::Progress::new(quiet);
    let mut last_tick = Instant::now();
    let mut last_completed = 0;
    // (time since start, completed) every ~20 ms, for W6.
    let mut series: Vec<(Duration, u64)> = Vec::new();
    let mut killed: Option<(Duration, String)> = None;
    let mut new_leader_at: Option<Duration> = None;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let finished = all_done();
        let over = started.elapsed() >= limit || crate::io::signal::stopping();
        series.push((started.elapsed(), shared.completed.load(Ordering::Relaxed)));
        if let Some(fault) = fault.as_mut()
            && killed.is_none()
            && started.elapsed() >= fault.after
            && let Some(address) = (fault.kill)(&target.addresses)
        {
            killed = Some((started.elapsed(), address));
        }
        if let Some((_, address)) = &killed
            && new_leader_at.is_none()
        {
            new_leader_at =
                probe_new_leader(target, address, &workload.logs[0]).then(|| started.elapsed());
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            let completed = shared.completed.load(Ordering::Relaxed);
            let mut interval = load::histogram();
            for slot in &shared.interval {
                if let Ok(mut slot) = slot.lock() {
                    let _ = interval.add(&*slot);
                    slot.reset();
                }
            }
            progress.line(
                started.elapsed(),
                (completed - last_completed) as f64 / last_tick.elapsed().as_secs_f64(),
                interval.value_at_quantile(0.99),
                shared.errors.load(Ordering::Relaxed),
            );
            last_completed = completed;
            last_tick = Instant::now();
        }
        if finished || over {
            break;
        }
    }
    let after = Snapshot::take(target);
    shared.measuring.store(false, Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    progress.finish();
    let figures = killed.map(|(at, address)| fault_figures(&series, at, address, new_leader_at));
    (before, after, figures)
}

/// Whether a node other than the killed one leads `log` now (one quick
/// round of status requests).
fn probe_new_leader(target: &Target, killed: &str, log: &str) -> bool {
    let others: Vec<String> = target
        .addresses
        .iter()
        .filter(|other| *other != killed)
        .cloned()
        .collect();
    let quick = ClientOptions {
        timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    find_leader(&others, log, &quick, Duration::ZERO).is_ok()
}

/// W6's figures from the completion series around the kill at `at`.
fn fault_figures(
    series: &[(Duration, u64)],
    at: Duration,
    killed: String,
    new_leader_at: Option<Duration>,
) -> FaultFigures {
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let completed_at = |time: Duration| {
        series
            .iter()
            .take_while(|(when, _)| *when <= time)
            .last()
            .map_or(0, |(_, completed)| *completed)
    };
    let second = Duration::from_secs(1);
    let before_rate = (completed_at(at) - completed_at(at.saturating_sub(second))) as f64
        / at.min(second).as_secs_f64().max(1e-3);
    let after: Vec<(Duration, u64)> = series
        .iter()
        .copied()
        .filter(|(when, _)| *when >= at)
        .collect();
    // The end of the longest stretch without a new answer after the kill.
    let mut longest: (Duration, Option<Duration>) = (Duration::ZERO, None);
    let mut silent_since: Option<Duration> = None;
    for pair in after.windows(2) {
        let ((earlier_when, earlier), (when, later)) = (pair[0], pair[1]);
        if later == earlier {
            silent_since.get_or_insert(earlier_when);
        } else if let Some(since) = silent_since.take()
            && when.saturating_sub(since) > longest.0
        {
            longest = (when.saturating_sub(since), Some(when));
        }
    }
    let window = Duration::from_millis(200);
    let recovered = after.iter().find(|(when, completed)| {
        *when >= at + window
            && (*completed - completed_at(when.saturating_sub(window))) as f64
                / window.as_secs_f64()
                >= 0.9 * before_rate
    });
    FaultFigures {
        killed,
        to_new_leader_ms: new_leader_at.map(|when| ms(when.saturating_sub(at))),
        to_first_answer_ms: longest.1.map(|when| ms(when.saturating_sub(at))),
        to_recovered_ms: recovered.map(|(when, _)| ms(when.saturating_sub(at))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep names a known parameter and positive values.
    #[test]
    fn parses_sweeps() {
        let sweep = parse_sweep(Some("clients=1,4,16")).unwrap();
        assert_eq!(sweep.name.as_deref(), Some("clients"));
        assert_eq!(sweep.values, Some(vec![1.0, 4.0, 16.0]));
        assert!(parse_sweep(Some("colour=1")).is_err());
        assert!(parse_sweep(Some("clients=0")).is_err());
        assert!(parse_sweep(Some("clients")).is_err());
        assert!(parse_sweep(None).unwrap().name.is_none());
    }

    /// The kill at 1 s is followed by 300 ms of silence, then full speed:
    /// answers resume at 1.32 s and throughput is back once a 200 ms window
    /// after the kill holds 90 % of the rate before it (nine of ten ticks: 1.48 s).
    #[test]
    fn fault_figures_from_a_series() {
        let step = Duration::from_millis(20);
        let mut series = Vec::new();
        let mut completed = 0u64;
        for tick in 1..=100u32 {
            let when = step * tick;
            let silent = when > Duration::from_secs(1) && when <= Duration::from_millis(1300);
            if !silent {
                completed += 100; // 5,000 per second
            }
            series.push((when, completed));
        }
        let figures = fault_figures(
            &series,
            Duration::from_secs(1),
            "node".into(),
            Some(Duration::from_millis(1250)),
        );
        assert_eq!(figures.to_new_leader_ms.map(f64::round), Some(250.0));
        assert_eq!(figures.to_first_answer_ms.map(f64::round), Some(320.0));
        assert_eq!(figures.to_recovered_ms.map(f64::round), Some(480.0));
    }
}
