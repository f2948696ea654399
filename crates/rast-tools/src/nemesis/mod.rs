//! The real-process fault harness (`rast nemesis`): a local Jepsen-style
//! nemesis with an independent checker.
//!
//! A run starts 3 or 5 `rast serve` processes, drives a recorded workload
//! at them while a seeded schedule injects faults, heals everything, and
//! judges the history with the checkers of [`crate::check`]:
//!
//! ```text
//!  isolate (root: own net + mount namespaces) ─► nodes up ─► writes accepted
//!    │
//!    ├─ workload threads: appends to two logs, reads, kv ──► history (one lock, one clock)
//!    └─ main thread: schedule  kill │ pause │ restart │ partition │ disk full │ power │ both
//!                                   └──────── heal ─────────┘
//!  heal all ─► writes accepted again (timed) ─► stop clients ─► quiet ─► converge
//!    ─► read every node's committed log ─► checks ─► history.txt, verdict.json, summary.txt
//! ```
//!
//! * [`schedule`]: faults drawn from a seed; `--seed S` replays a schedule.
//! * [`net`]: namespaces, veths and iptables cuts (why a namespace per node:
//!   see there).
//! * [`nodes`]: the processes and their tmpfs disks.
//! * [`workload`]: the clients and the history recorder.
//! * [`verdict`]: the checks and the reports.
//! * [`corrupt`]: the `corrupt` scenario's damage to one node's files.
//! * `files`: the run's directory and files, and judging a run again.
//!
//! The harness is a subcommand of the `rast` binary (so the node binary is
//! the harness's own executable) and not a library call from a test: it
//! must move itself into new namespaces before it starts a thread, which a
//! test harness (multi-threaded) cannot do. `tests/nemesis.rs` runs it as a
//! child process; `scripts/nemesis` runs it for long.
//!
//! Cleanup: nodes die with the harness's main thread (parent-death
//! signal), namespaces and tmpfs mounts are anonymous and die with their
//! last user, and [`nodes::Nodes`] kills, reaps and unmounts on drop. A run
//! still sweeps leftovers of earlier runs under the same output directory
//! at start ([`nodes::sweep_leftovers`]).

pub mod corrupt;
mod files;
pub mod lazyfs;
pub mod net;
pub mod nodes;
pub mod schedule;
pub mod verdict;
pub mod workload;

pub use files::recheck;
use files::{make_run_dir, write, write_final_logs, write_history};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::check::history::ProcessId;
use crate::check::log::NodeLog;
use crate::check::wgl::Budget;
use crate::client::{Client, ClientOptions, Connection};
use crate::types::{LogIndex, NodeId};
use crate::wire::client::{RequestBody, ResponseBody, Status};
use net::Network;
use nodes::{Disks, Nodes};
use schedule::{Fault, Plan, Scenario, Schedule, Target};
use verdict::{Evidence, KvStatus, Verdict};
use workload::{LOGS, Shared};

/// What can stop a run before it reaches a verdict.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    /// Setting up namespaces, disks, processes or files failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The cluster never became usable.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of the schedule and of the clients' choices.
    pub seed: u64,
    /// What to stress.
    pub scenario: Scenario,
    /// Cluster size (3 or 5).
    pub nodes: usize,
    /// Seconds of workload and faults.
    pub seconds: u64,
    /// Directory under which the run's directory is made.
    pub out: PathBuf,
    /// The `rast` binary the nodes run.
    pub binary: PathBuf,
    /// Log clients.
    pub clients: usize,
    /// Key-value clients.
    pub kv_clients: usize,
    /// Fail when the key-value store is not served.
    pub require_kv: bool,
    /// Bound on the time from the last heal to writes accepted again.
    pub recovery_seconds: u64,
    /// Cores per node.
    pub cores: u32,
    /// Copy the nodes' data out of their tmpfs when the run fails.
    pub keep_data: bool,
    /// Stay on loopback even as root (no partitions, no full disks).
    pub no_namespace: bool,
    /// More `rast serve` arguments for every node (e.g. small snapshot
    /// intervals, to run InstallSnapshot under the faults).
    pub serve_args: Vec<String>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The run's directory (history, verdict, summary, node logs).
    pub run: PathBuf,
}

/// Quiet period after the workload stops, before the final logs are read.
const QUIET: Duration = Duration::from_secs(2);
/// How long the nodes may take to agree on their commit indexes at the end.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// How long a fresh cluster may take to accept its first writes.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How often the schedule loop looks for crashed nodes and interrupts.
const POLL: Duration = Duration::from_millis(50);

/// Runs the harness. Call it before the process starts any thread (see the
/// module docs).
pub fn run(options: &Options) -> Result<Outcome, NemesisError> {
    assert!(options.nodes == 3 || options.nodes == 5, "3 or 5 nodes");
    let privileged = !options.no_namespace && nix::unistd::geteuid().is_root();
    if !privileged
        && matches!(
            options.scenario,
            Scenario::Partition | Scenario::Disk | Scenario::Power
        )
    {
        return Err(NemesisError::Setup(format!(
            "the {} scenario needs root (a network namespace, a tmpfs or a FUSE mount per node)",
            options.scenario.name()
        )));
    }
    let disks = match options.scenario {
        Scenario::Power => {
            let lazyfs = options.binary.with_file_name("rast-lazyfs");
            if !lazyfs.exists() {
                return Err(NemesisError::Setup(format!(
                    "the power scenario needs rast-lazyfs beside {} (cargo build --bins)",
                    options.binary.display()
                )));
            }
            Disks::Lazy(lazyfs)
        }
        _ if privileged => Disks::Tmpfs,
        _ => Disks::Directory,
    };
    if privileged {
        net::isolate()?;
    }
    let mut options = options.clone();
    if options.scenario == Scenario::Corrupt {
        corrupt::default_serve_args(&mut options.serve_args);
    }
    let options = &options;
    let _ = crate::io::signal::install_stop_handlers();
    std::fs::create_dir_all(&options.out).map_err(|error| {
        NemesisError::Setup(format!("creating {}: {error}", options.out.display()))
    })?;
    let out = options
        .out
        .canonicalize()
        .map_err(|error| NemesisError::Setup(format!("{}: {error}", options.out.display())))?;
    for line in nodes::sweep_leftovers(&out) {
        tracing::warn!("{line}");
    }
    let run_dir = make_run_dir(&out, options)?;
    let plan = Plan {
        seed: options.seed,
        scenario: options.scenario,
        nodes: options.nodes,
        duration_ms: options.seconds * 1000,
        privileged,
    };
    let schedule = Schedule::draw(plan);
    write(&run_dir.join("schedule.txt"), &schedule.to_text())?;
    let mut network = if privileged {
        Network::namespaces(options.nodes)?
    } else {
        Network::loopback(options.nodes)?
    };
    let mut nodes = Nodes::new(
        &options.binary,
        &run_dir,
        &network,
        options.cores,
        disks,
        &options.serve_args,
    )?;
    for node in 0..options.nodes {
        nodes.start(node)?;
    }
    let client_options = ClientOptions {
        timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(6),
        ..ClientOptions::default()
    };
    let shared = Arc::new(Shared::new(network.addresses().to_vec(), client_options));
    let mut harness = Harness {
        options,
        run_dir: &run_dir,
        shared: &shared,
        network: &mut network,
        nodes: &mut nodes,
        timeline: Timeline::create(&run_dir.join("nemesis.txt"))?,
        faults: BTreeMap::new(),
        skipped: BTreeMap::new(),
        heals_ns: Vec::new(),
        damaged_seen: std::collections::BTreeSet::new(),
    };
    let verdict = harness.run(&schedule)?;
    if !verdict.pass && options.keep_data {
        nodes.keep_data();
    }
    let _ = std::fs::remove_file(run_dir.join("driver.pid"));
    Ok(Outcome {
        verdict,
        run: run_dir,
    })
}

/// The harness during a run.
struct Harness<'a> {
    options: &'a Options,
    run_dir: &'a Path,
    shared: &'a Arc<Shared>,
    network: &'a mut Network,
    nodes: &'a mut Nodes,
    timeline: Timeline,
    faults: BTreeMap<String, u64>,
    skipped: BTreeMap<String, u64>,
    /// When the cluster became fault-free, and when the next fault started.
    heals_ns: Vec<(u64, Option<u64>)>,
    /// Damaged copies seen (node, log, term of the damage): each one a
    /// repair the run must see through.
    damaged_seen: std::collections::BTreeSet<(usize, String, u64)>,
}

/// How to undo a fault that started.
#[derive(Debug)]
enum Undo {
    Start(usize),
    /// SIGTERM, then start again.
    Restart(usize),
    StartEach(Vec<usize>),
    Resume(usize),
    Mend(Vec<(usize, usize)>),
    FreeDisk(usize),
    Nothing,
}

impl Harness<'_> {
    fn run(&mut self, schedule: &Schedule) -> Result<Verdict, NemesisError> {
        self.note(&format!(
            "{} nodes {} ({})",
            self.options.nodes,
            self.network.addresses().join(" "),
            if self.network.can_cut() {
                "a namespace per node"
            } else {
                "loopback: no partitions, no full disks"
            }
        ));
        self.wait_ready()?;
        let kv = match workload::kv_not_served(self.shared) {
            Some(reason) => KvStatus::NotServed(reason),
            None => KvStatus::Served,
        };
        self.note(&format!("key-value store: {kv:?}"));
        let workers = Workers::start(self.shared, self.options, kv == KvStatus::Served);
        self.execute(schedule);
        let heal_ns = self.heal_all();
        let recovery_final = self.wait_recovered(heal_ns);
        let repaired = self.wait_repaired();
        drop(workers);
        self.note("workload stopped; quiet");
        std::thread::sleep(QUIET);
        let mut final_logs: [Vec<NodeLog>; 2] = [Vec::new(), Vec::new()];
        let mut index_commit = [LogIndex(0); 2];
        let mut convergence = [None, None];
        for (log, name) in LOGS.iter().enumerate() {
            let (commit, problem) = self.converge(log);
            self.note(&format!(
                "log {name}: commit index {commit}{}",
                problem
                    .as_ref()
                    .map_or(String::new(), |p| format!(" ({p})"))
            ));
            index_commit[log] = commit;
            convergence[log] = problem;
            final_logs[log] = self.final_logs(log, commit);
        }
        self.nodes.reap();
        let history = self.shared.recorder.history();
        write_history(&self.run_dir.join("history.txt"), &history)?;
        write_final_logs(
            &self.run_dir.join("final-logs.txt"),
            &final_logs,
            index_commit,
        )?;
        let evidence = Evidence {
            history,
            final_logs,
            index_commit,
            convergence,
            kv,
            require_kv: self.options.require_kv,
            heals_ns: self.heals_ns.clone(),
            recovery_final,
            recovery_ms_max: self.options.recovery_seconds * 1000,
            faults: self.faults.clone(),
            skipped: self.skipped.clone(),
            exits: self.nodes.exits.clone(),
            repaired,
            run: self.facts(schedule),
            replay: replay_command(self.options),
            from_files: false,
        };
        let budget = Budget {
            time_max: Some(Duration::from_mins(1)),
            ..Budget::DEFAULT
        };
        let verdict = verdict::judge(&evidence, &budget);
        let json = serde_json::to_string_pretty(&verdict.json).unwrap_or_default();
        write(&self.run_dir.join("verdict.json"), &format!("{json}\n"))?;
        write(&self.run_dir.join("summary.txt"), &verdict.summary)?;
        Ok(verdict)
    }

    fn facts(&self, schedule: &Schedule) -> Vec<(String, serde_json::Value)> {
        vec![
            ("seed".into(), self.options.seed.into()),
            ("scenario".into(), self.options.scenario.name().into()),
            ("nodes".into(), self.options.nodes.into()),
            ("seconds".into(), self.options.seconds.into()),
            ("namespaces".into(), self.network.can_cut().into()),
            ("steps".into(), schedule.steps.len().into()),
            (
                "repairs".into(),
                corrupt::damage_found(self.run_dir, self.nodes.len()).into(),
            ),
            ("damaged_copies_seen".into(), self.damaged_seen.len().into()),
            ("run".into(), self.run_dir.display().to_string().into()),
        ]
    }

    fn note(&mut self, text: &str) {
        let now = self.shared.recorder.now_ns();
        self.timeline.note(now, text);
    }

    /// Waits for both logs to accept an append (recorded, by process 0).
    fn wait_ready(&mut self) -> Result<(), NemesisError> {
        let options = ClientOptions {
            deadline: READY_WITHIN,
            ..self.shared.options.clone()
        };
        for (log, name) in LOGS.iter().enumerate() {
            let mut client = Client::new(&self.shared.addresses, options.clone())
                .map_err(|error| NemesisError::Cluster(error.to_string()))?;
            let started = Instant::now();
            while workload::append(self.shared, &mut client, ProcessId(0), log).is_none() {
                if started.elapsed() > READY_WITHIN {
                    return Err(NemesisError::Cluster(format!(
                        "log {name} accepted no write within {READY_WITHIN:?}; see {}/node*.log",
                        self.run_dir.display()
                    )));
                }
            }
        }
        self.note("cluster ready: both logs accepted a write");
        Ok(())
    }

    /// Runs the schedule: each fault starts, then heals.
    fn execute(&mut self, schedule: &Schedule) {
        // (time, 0 = start / 1 = heal, step): a restart's heal (length 0)
        // comes after its start.
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (index, step) in schedule.steps.iter().enumerate() {
            events.push((step.start_ms, 0, index));
            events.push((step.start_ms + step.duration_ms, 1, index));
        }
        events.sort_unstable();
        let begin = Instant::now();
        let mut active: BTreeMap<usize, Undo> = BTreeMap::new();
        let mut started_any = false;
        for (at_ms, phase, index) in events {
            if !self.sleep_until(begin + Duration::from_millis(at_ms)) {
                self.note("interrupted: ending the schedule early");
                break;
            }
            let fault = &schedule.steps[index].fault;
            if phase == 0 {
                if let Some(undo) = self.start(fault) {
                    active.insert(index, undo);
                    started_any = true;
                    if let Some((_, next @ None)) = self.heals_ns.last_mut() {
                        *next = Some(self.shared.recorder.now_ns());
                    }
                }
            } else if let Some(undo) = active.remove(&index) {
                self.heal(fault, undo);
                if active.is_empty() && started_any {
                    self.heals_ns.push((self.shared.recorder.now_ns(), None));
                }
            }
        }
        let end = begin + Duration::from_millis(schedule.plan.duration_ms);
        let _ = self.sleep_until(end);
    }

    /// Sleeps until `deadline`, reaping crashed nodes; false if
    /// interrupted (SIGINT / SIGTERM).
    fn sleep_until(&mut self, deadline: Instant) -> bool {
        loop {
            for (node, status) in self.nodes.reap() {
                self.note(&format!("n{} EXITED on its own: {status}", node + 1));
            }
            if crate::io::signal::stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(POLL));
        }
    }

    /// Starts a fault; `None` if it could not apply (target down, ...).
    fn start(&mut self, fault: &Fault) -> Option<Undo> {
        let leader = self.leader(0);
        let resolve = |target: Target| schedule::resolve(target, leader);
        let outcome: Result<(Undo, String), String> = match fault {
            Fault::Kill(target) => {
                let node = resolve(*target);
                if self.nodes.is_up(node) {
                    self.nodes.kill(node);
                    Ok((Undo::Start(node), format!("killed n{}", node + 1)))
                } else {
                    Err(format!("n{} is down", node + 1))
                }
            }
            Fault::Pause(target) => {
                let node = resolve(*target);
                if self.nodes.is_running(node) {
                    self.nodes.pause(node);
                    Ok((Undo::Resume(node), format!("paused n{}", node + 1)))
                } else {
                    Err(format!("n{} is not running", node + 1))
                }
            }
            Fault::Restart(target) => {
                let node = resolve(*target);
                if self.nodes.is_up(node) {
                    let status = self.nodes.terminate(node);
                    match self.nodes.start(node) {
                        Ok(()) => Ok((
                            Undo::Nothing,
                            format!("restarted n{} (it exited: {status})", node + 1),
                        )),
                        Err(error) => Err(format!("restarting n{}: {error}", node + 1)),
                    }
                } else {
                    Err(format!("n{} is down", node + 1))
                }
            }
            Fault::Partition(partition) => {
                let links = schedule::cut_links(partition, self.nodes.len(), leader);
                match self.network.cut(&links) {
                    Ok(()) => {
                        let text = format!("cut {}", describe_links(&links));
                        Ok((Undo::Mend(links), text))
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            Fault::Power { targets, tear } => {
                let mut cut: Vec<usize> = targets.iter().map(|target| resolve(*target)).collect();
                cut.sort_unstable();
                cut.dedup();
                match self.nodes.power_cut(&cut, *tear) {
                    Ok(reports) => Ok((
                        Undo::StartEach(cut),
                        format!("cut the power ({})", reports.join("; ")),
                    )),
                    Err(error) => Err(error.to_string()),
                }
            }
            Fault::Corrupt {
                target,
                running,
                seed,
            } => self.corrupt(resolve(*target), *running, *seed),
            Fault::DiskFull(target) => {
                let node = resolve(*target);
                if self.nodes.is_disk_full(node) {
                    Err(format!("n{}'s disk is already full", node + 1))
                } else {
                    match self.nodes.fill_disk(node) {
                        Ok(bytes) => Ok((
                            Undo::FreeDisk(node),
                            format!("filled n{}'s disk ({bytes} bytes)", node + 1),
                        )),
                        Err(error) => Err(error.to_string()),
                    }
                }
            }
        };
        let leader_text = leader.map_or("none".to_owned(), |node| format!("n{}", node + 1));
        match outcome {
            Ok((undo, text)) => {
                *self.faults.entry(fault.kind().to_owned()).or_default() += 1;
                self.note(&format!(
                    "start  {fault}: {text} (leader of a: {leader_text})"
                ));
                Some(undo)
            }
            Err(reason) => {
                *self.skipped.entry(fault.kind().to_owned()).or_default() += 1;
                self.note(&format!("skip   {fault}: {reason}"));
                None
            }
        }
    }

    /// Heals a fault.
    fn heal(&mut self, fault: &Fault, undo: Undo) {
        let text = match undo {
            Undo::Start(node) => self.start_if_down(node),
            Undo::Restart(node) => {
                if self.nodes.is_up(node) {
                    let status = self.nodes.terminate(node);
                    format!(
                        "n{} exited ({status}); {}",
                        node + 1,
                        self.start_if_down(node)
                    )
                } else {
                    self.start_if_down(node)
                }
            }
            Undo::StartEach(nodes) => nodes
                .into_iter()
                .map(|node| self.start_if_down(node))
                .collect::<Vec<_>>()
                .join("; "),
            Undo::Resume(node) => {
                if self.nodes.is_paused(node) {
                    self.nodes.resume(node);
                    format!("resumed n{}", node + 1)
                } else {
                    format!("n{} is no longer paused", node + 1)
                }
            }
            Undo::Mend(links) => match self.network.mend(&links) {
                Ok(()) => format!("mended {}", describe_links(&links)),
                Err(error) => format!("mending failed: {error}"),
            },
            Undo::FreeDisk(node) => {
                self.nodes.free_disk(node);
                let restarted = self.restart_if_failed(node);
                format!("freed n{}'s disk{restarted}", node + 1)
            }
            Undo::Nothing => return,
        };
        self.note(&format!("heal   {fault}: {text}"));
    }

    fn start_if_down(&mut self, node: usize) -> String {
        if self.nodes.is_up(node) {
            return format!("n{} is already up", node + 1);
        }
        match self.nodes.start(node) {
            Ok(()) => format!("started n{}", node + 1),
            Err(error) => format!("starting n{} failed: {error}", node + 1),
        }
    }

    /// Storage errors stop a log for good (fail-stop): a node whose log
    /// stopped, or that does not answer, is restarted.
    fn restart_if_failed(&mut self, node: usize) -> String {
        if !self.nodes.is_running(node) {
            return String::new();
        }
        let failed: Vec<String> = (0..LOGS.len())
            .filter_map(|log| match self.status(node, log) {
                Some(status) if status.failed.is_empty() => None,
                Some(status) => Some(format!("log {} stopped: {}", LOGS[log], status.failed)),
                None => Some(format!("log {} does not answer", LOGS[log])),
            })
            .collect();
        if failed.is_empty() {
            return String::new();
        }
        self.nodes.kill(node);
        match self.nodes.start(node) {
            Ok(()) => format!("; restarted n{} ({})", node + 1, failed.join("; ")),
            Err(error) => format!("; restarting n{} failed: {error}", node + 1),
        }
    }

    /// Heals everything: links, pauses, disks, dead nodes, stopped logs.
    /// Returns the time (history clock) it finished.
    fn heal_all(&mut self) -> u64 {
        if let Err(error) = self.network.mend_all() {
            self.note(&format!("mending all links failed: {error}"));
        }
        let mut started = Vec::new();
        for node in 0..self.nodes.len() {
            if self.nodes.is_paused(node) {
                self.nodes.resume(node);
            }
            self.nodes.free_disk(node);
            if !self.nodes.is_up(node) {
                started.push(node);
                let text = self.start_if_down(node);
                self.note(&format!("heal all: {text}"));
            }
        }
        // A node whose log stopped on a full disk says so once it runs.
        std::thread::sleep(Duration::from_millis(500));
        for node in (0..self.nodes.len()).filter(|node| !started.contains(node)) {
            let text = self.restart_if_failed(node);
            if !text.is_empty() {
                self.note(&format!("heal all{text}"));
            }
        }
        let now = self.shared.recorder.now_ns();
        self.note("healed all");
        now
    }

    /// Waits until both logs acknowledged an append invoked after
    /// `heal_ns`; returns the milliseconds it took.
    fn wait_recovered(&mut self, heal_ns: u64) -> Result<u64, String> {
        let bound = Duration::from_secs(self.options.recovery_seconds);
        let started = Instant::now();
        loop {
            let acknowledged: Vec<Option<u64>> = (0..LOGS.len())
                .map(|log| self.shared.recorder.first_ack_since(log, heal_ns))
                .collect();
            if acknowledged.iter().all(Option::is_some) {
                let last = acknowledged.into_iter().flatten().max().unwrap_or(heal_ns);
                let ms = (last - heal_ns) / 1_000_000;
                self.note(&format!(
                    "writes accepted again {ms} ms after the last heal"
                ));
                return Ok(ms);
            }
            if started.elapsed() > bound + Duration::from_secs(10) {
                let text = format!(
                    "no write accepted on {} within {} s of the last heal",
                    (0..LOGS.len())
                        .filter(|log| acknowledged[*log].is_none())
                        .map(|log| LOGS[log])
                        .collect::<Vec<_>>()
                        .join(" and "),
                    started.elapsed().as_secs()
                );
                self.note(&text);
                return Err(text);
            }
            for (node, status) in self.nodes.reap() {
                self.note(&format!("n{} EXITED on its own: {status}", node + 1));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Status of node `node` for log `log`, if it answers.
    fn status(&self, node: usize, log: usize) -> Option<Status> {
        self.status_named(node, LOGS[log])
    }

    fn status_named(&self, node: usize, log: &str) -> Option<Status> {
        let options = ClientOptions {
            timeout: Duration::from_millis(500),
            ..self.shared.options.clone()
        };
        let client = Client::new(&self.shared.addresses, options).ok()?;
        client.status_of(&self.shared.addresses[node], log).ok()
    }

    /// The node that says it leads log `log` in the highest term.
    fn leader(&self, log: usize) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|node| self.nodes.is_running(*node))
            .filter_map(|node| self.status(node, log).map(|status| (node, status)))
            .filter(|(_, status)| status.role == "leader")
            .max_by_key(|(_, status)| status.term)
            .map(|(node, _)| node)
    }

    /// Waits until every node answers for log `log` with one commit index
    /// under one leader; returns the highest commit index seen and, if they
    /// never agreed, what was wrong.
    fn converge(&mut self, log: usize) -> (LogIndex, Option<String>) {
        let started = Instant::now();
        loop {
            let statuses: Vec<Option<Status>> = (0..self.nodes.len())
                .map(|node| self.status(node, log))
                .collect();
            let commit = statuses
                .iter()
                .flatten()
                .map(|status| status.commit_index)
                .max()
                .unwrap_or(0);
            let leaders = statuses
                .iter()
                .flatten()
                .filter(|status| status.role == "leader")
                .count();
            let agreed = statuses.iter().all(|status| {
                status
                    .as_ref()
                    .is_some_and(|s| s.failed.is_empty() && s.commit_index == commit)
            });
            if agreed && leaders == 1 && commit > 0 {
                return (LogIndex(commit), None);
            }
            if started.elapsed() > CONVERGE_WITHIN {
                let report: Vec<String> = statuses
                    .iter()
                    .enumerate()
                    .map(|(node, status)| match status {
                        Some(s) => format!(
                            "n{}: {} term {} commit {} last {}{}",
                            node + 1,
                            s.role,
                            s.term,
                            s.commit_index,
                            s.last_index,
                            if s.failed.is_empty() {
                                String::new()
                            } else {
                                format!(" failed: {}", s.failed)
                            }
                        ),
                        None => format!("n{}: no answer", node + 1),
                    })
                    .collect();
                return (
                    LogIndex(commit),
                    Some(format!("after {CONVERGE_WITHIN:?}: {}", report.join("; "))),
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every node's committed entries of log `log` up to `commit`.
    fn final_logs(&self, log: usize, commit: LogIndex) -> Vec<NodeLog> {
        (0..self.nodes.len())
            .map(|node| NodeLog {
                node: NodeId(node as u64 + 1),
                payloads: read_committed(
                    &self.shared.addresses[node],
                    &self.shared.options,
                    LOGS[log],
                    commit,
                ),
            })
            .collect()
    }
}

/// The committed entries of `log` at `address`, from index 1 up to `upto`,
/// as identities (fewer if the node has fewer or stops answering).
fn read_committed(address: &str, options: &ClientOptions, log: &str, upto: LogIndex) -> Vec<u64> {
    let mut identities = Vec::new();
    let mut failures = 0;
    let mut connection: Option<Connection> = None;
    while (identities.len() as u64) < upto.get() && failures < 5 {
        let from = LogIndex(identities.len() as u64 + 1);
        let answer = (|| -> Result<Vec<(LogIndex, u64)>, crate::client::ClientError> {
            if connection.is_none() {
                connection = Some(Connection::open(address, options)?);
            }
            let connection = connection.as_mut().expect("opened");
            let body = RequestBody::Read {
                from_index: from.get(),
                max_entries: 0,
            };
            match connection.call(log, body, None)? {
                (ResponseBody::Batches(_), batches) => Ok(workload::entries_of(&batches, from)?),
                (other, _) => Err(crate::client::ClientError::Unexpected(format!("{other:?}"))),
            }
        })();
        match answer {
            Ok(entries) if entries.is_empty() => break,
            Ok(entries) => {
                for (index, identity) in entries {
                    if index.get() == identities.len() as u64 + 1 && index <= upto {
                        identities.push(identity);
                    }
                }
            }
            Err(_) => {
                connection = None;
                failures += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    identities
}

/// The workload's threads; dropping stops and joins them.
struct Workers {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(shared: &Arc<Shared>, options: &Options, kv: bool) -> Self {
        let mut threads = Vec::new();
        for worker in 0..options.clients {
            let shared = Arc::clone(shared);
            let seed = options.seed.wrapping_mul(1000).wrapping_add(worker as u64);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("log-client-{worker}"))
                    .spawn(move || {
                        workload::log_worker(&shared, ProcessId(worker as u64 + 1), seed);
                    })
                    .expect("spawning a client thread"),
            );
        }
        for worker in 0..if kv { options.kv_clients } else { 0 } {
            let shared = Arc::clone(shared);
            let seed = options
                .seed
                .wrapping_mul(1000)
                .wrapping_add(500 + worker as u64);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("kv-client-{worker}"))
                    .spawn(move || {
                        workload::kv_worker(&shared, ProcessId(worker as u64 + 101), seed);
                    })
                    .expect("spawning a client thread"),
            );
        }
        Self {
            shared: Arc::clone(shared),
            threads,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The nemesis's own log: what it did and when, on the history's clock.
struct Timeline {
    file: std::fs::File,
}

impl Timeline {
    fn create(path: &Path) -> Result<Self, NemesisError> {
        let file = std::fs::File::create(path).map_err(|error| {
            NemesisError::Setup(format!("creating {}: {error}", path.display()))
        })?;
        Ok(Self { file })
    }

    fn note(&mut self, time_ns: u64, text: &str) {
        let line = format!("{:>10.3}  {text}\n", time_ns as f64 / 1e9);
        let _ = self.file.write_all(line.as_bytes());
        tracing::info!("{}", line.trim_end());
    }
}

fn describe_links(links: &[(usize, usize)]) -> String {
    let texts: Vec<String> = links
        .iter()
        .map(|(from, to)| format!("n{}->n{}", from + 1, to + 1))
        .collect();
    texts.join(" ")
}

/// The command that replays `options`' schedule.
pub fn replay_command(options: &Options) -> String {
    format!(
        "scripts/nemesis --seed {} --scenario {} --nodes {} --seconds {}",
        options.seed,
        options.scenario.name(),
        options.nodes,
        options.seconds
    )
}
