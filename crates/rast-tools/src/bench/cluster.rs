//! The cluster `rast bench` starts when it is given none: real `rast serve`
//! processes on free loopback ports, each with its own data directory and
//! metrics address, stopped (SIGTERM, then SIGKILL) when it drops — on
//! success, on error and on panic alike.
//!
//! `--in-process` instead runs the nodes as threads of the benchmark
//! process itself (W5): each node is a whole `server::serve` with its own
//! io_uring core and in-memory storage, talking over loopback TCP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::BenchError;
use crate::launch::{Launch, Output, Processes, free_loopback_address};
use crate::server::{self, Named, Settings, StorageMode, ZeroCopy};
use crate::types::NodeId;

/// How long the node processes get to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to start the nodes.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    /// Nodes.
    pub nodes: u16,
    /// Cores per node.
    pub cores: u32,
    /// Storage of every node.
    pub storage: StorageMode,
    /// Follower receive path.
    pub zero_copy: ZeroCopy,
    /// Logs to create at start.
    pub logs: Vec<String>,
    /// Parent data directory (one subdirectory per node), removed at the end.
    pub data: PathBuf,
    /// Threads of this process instead of processes.
    pub in_process: bool,
    /// More `rast serve` arguments for every node process.
    pub serve_args: Vec<String>,
    /// Serve TLS (node processes only), with certificates `rast certs`
    /// makes under `data/certs`.
    pub tls: bool,
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    /// Client addresses.
    pub addresses: Vec<String>,
    /// Metrics addresses.
    pub metrics: Vec<String>,
    /// The node processes (none when the nodes are threads).
    processes: Option<Processes>,
    threads: Vec<std::thread::JoinHandle<Result<(), server::ServerError>>>,
    data: PathBuf,
    /// The TLS certificates the nodes serve with, if they do.
    certs: Option<PathBuf>,
}

impl LocalCluster {
    /// Starts the nodes; returns once they are spawned (not yet elected).
    pub fn start(plan: &ClusterPlan) -> Result<Self, BenchError> {
        std::fs::create_dir_all(&plan.data)?;
        let addresses: Vec<String> = (0..plan.nodes)
            .map(|_| free_loopback_address())
            .collect::<Result<_, _>>()?;
        let metrics: Vec<String> = (0..plan.nodes)
            .map(|_| free_loopback_address())
            .collect::<Result<_, _>>()?;
        let mut cluster = Self {
            addresses,
            metrics,
            processes: None,
            threads: Vec::new(),
            data: plan.data.clone(),
            certs: None,
        };
        if plan.in_process {
            for node in 0..usize::from(plan.nodes) {
                cluster.start_thread(plan, node)?;
            }
        } else {
            cluster.start_processes(plan)?;
        }
        Ok(cluster)
    }

    /// The process ids of the nodes (this process, once, when in-process).
    pub fn pids(&self) -> Vec<u32> {
        match &self.processes {
            Some(processes) => (0..processes.len())
                .filter_map(|node| processes.pid(node))
                .collect(),
            None => vec![std::process::id()],
        }
    }

    /// The directory of the CA and node certificates when the nodes serve
    /// TLS.
    pub fn certs(&self) -> Option<&std::path::Path> {
        self.certs.as_deref()
    }

    /// Whether the nodes are threads of this process.
    pub fn in_process(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Fails if a node process has exited.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        let exited = self
            .processes
            .as_mut()
            .and_then(|processes| processes.reap().into_iter().next());
        match exited {
            Some((node, status)) => Err(BenchError::Setup(format!(
                "node {} exited ({status}); its log ends:\n{}",
                node + 1,
                self.log_tail(node)
            ))),
            None => Ok(()),
        }
    }

    /// SIGKILLs the node listening on `address` (W6); false if it is not
    /// one of this cluster's node processes.
    pub fn kill(&mut self, address: &str) -> bool {
        let Some(node) = self.addresses.iter().position(|known| known == address) else {
            return false;
        };
        let Some(processes) = self.processes.as_mut() else {
            return false;
        };
        processes.kill(node);
        true
    }

    fn start_processes(&mut self, plan: &ClusterPlan) -> Result<(), BenchError> {
        let nodes = usize::from(plan.nodes);
        let mut args: Vec<String> = [
            "--storage",
            Named::name(plan.storage),
            "--zero-copy",
            Named::name(plan.zero_copy),
            "--logs",
            &plan.logs.join(","),
        ]
        .map(str::to_owned)
        .into();
        args.extend(plan.serve_args.iter().cloned());
        if plan.tls {
            let certs = self.data.join("certs");
            let ids: Vec<String> = (1..=nodes).map(|id| id.to_string()).collect();
            let made = std::process::Command::new(std::env::current_exe()?)
                .args(["certs", "--nodes", &ids.join(","), "--out"])
                .arg(&certs)
                .stdout(std::process::Stdio::null())
                .status()?;
            if !made.success() {
                return Err(BenchError::Setup(format!("rast certs failed ({made})")));
            }
            self.certs = Some(certs);
        }
        let mut processes = Processes::new(Launch {
            binary: std::env::current_exe()?,
            addresses: self.addresses.clone(),
            metrics: self.metrics.clone(),
            data: (0..nodes)
                .map(|node| self.data.join(format!("node{}", node + 1)))
                .collect(),
            cores: plan.cores,
            args,
            env: vec![("RAST_LOG".to_owned(), "warn".to_owned())],
            output: Output::Files((0..nodes).map(|node| self.log_path(node)).collect()),
            die_with_parent: false,
            tls: self.certs.clone(),
        });
        for node in 0..nodes {
            processes.start(node)?;
        }
        self.processes = Some(processes);
        Ok(())
    }

    fn log_path(&self, node: usize) -> PathBuf {
        self.data.join(format!("node{}.log", node + 1))
    }

    fn start_thread(&mut self, plan: &ClusterPlan, node: usize) -> Result<(), BenchError> {
        let peers = self
            .addresses
            .iter()
            .enumerate()
            .map(|(index, address)| (NodeId(index as u64 + 1), address.clone()))
            .collect();
        let settings = Settings {
            id: NodeId(node as u64 + 1),
            listen: self.addresses[node]
                .parse()
                .map_err(|_| BenchError::Setup("bad loopback address".into()))?,
            peers,
            data: self.data.join(format!("node{}", node + 1)),
            cores: plan.cores,
            cluster_id: "rast".into(),
            token: Vec::new(),
            admin_token: Vec::new(),
            read_only_token: Vec::new(),
            peer_token: Vec::new(),
            storage: plan.storage,
            zero_copy: plan.zero_copy,
            logs: plan.logs.clone(),
            metrics_addr: self.metrics[node].parse().ok(),
            metrics_tls: false,
            fault_kv_panic_key: None,
            join: false,
            segment_bytes: crate::constants::SEGMENT_BYTES_MAX,
            zero_fill: false,
            snapshots: crate::server::group::snapshot::SnapshotPolicy::default(),
            quota_bytes: 0,
            scrub_bytes_per_sec: 0,
            client_idle_ms: crate::constants::CLIENT_IDLE_MS_DEFAULT,
            tls: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("rast-bench-node-{}", node + 1))
            .spawn(move || server::serve(settings))?;
        self.threads.push(thread);
        Ok(())
    }

    /// Lets the scheduler spread the nodes over every CPU. Each node pins
    /// its core *i* to CPU *i*, which is right for one node per machine but
    /// puts all of a local cluster's `--cores 1` nodes (and their io_uring
    /// workers, which inherit the mask) on CPU 0, leaving the other CPUs to
    /// the load generator. Only the nodes this benchmark started are touched.
    pub fn unpin_threads(&self) {
        let mut all = nix::sched::CpuSet::new();
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        for cpu in 0..cpus {
            let _ = all.set(cpu);
        }
        let tasks: Vec<(PathBuf, bool)> = if self.in_process() {
            vec![(PathBuf::from("/proc/self/task"), true)]
        } else {
            self.pids()
                .into_iter()
                .map(|pid| (PathBuf::from(format!("/proc/{pid}/task")), false))
                .collect()
        };
        for (directory, only_cores) in tasks {
            let Ok(entries) = std::fs::read_dir(&directory) else {
                continue;
            };
            for task in entries.flatten() {
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let tid = task
                    .file_name()
                    .to_str()
                    .and_then(|tid| tid.parse::<i32>().ok());
                if let Some(tid) = tid
                    && (!only_cores || name.starts_with("rast-core") || name.starts_with("iou-wrk"))
                {
                    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &all);
                }
            }
        }
    }

    /// The last lines of node `node`'s log (0-based), for an error message.
    fn log_tail(&self, node: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(node)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Stops every node and removes the data.
    pub fn stop(&mut self) {
        if let Some(mut processes) = self.processes.take() {
            processes.stop_all(STOP_GRACE);
        }
        if !self.threads.is_empty() {
            // The in-process nodes watch the process-wide stop flag.
            crate::io::signal::request_stop();
            for thread in self.threads.drain(..) {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh data directory under `base`.
pub fn data_directory(base: &Path) -> PathBuf {
    base.join(format!(
        "rast-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis())
    ))
}
