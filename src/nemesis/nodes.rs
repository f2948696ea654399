//! The `rast serve` processes of a run: start, SIGKILL, SIGSTOP / SIGCONT,
//! SIGTERM, and their disks.
//!
//! ```text
//!  <run>/node1.log            the node's stderr, every life appended
//!  <run>/disk/node1/          a tmpfs of its own (root), a lazy filesystem
//!                             (the power scenario), else a directory
//!  <run>/backing/node1/       what the lazy filesystem keeps (synced bytes)
//!  <run>/disk/node1/data/     --data
//!  <run>/disk/node1/fill      the file that fills the disk (disk-full fault)
//!  <run>/nodes.pid            pids of the running nodes (leftover sweep)
//! ```
//!
//! Every node is spawned from the harness's main thread with a parent-death
//! SIGKILL, so it cannot outlive the harness; dropping [`Nodes`] kills and
//! reaps them all and unmounts their disks.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::NemesisError;
use super::lazyfs::{LazyMount, Tear};
use super::net::Network;

/// Size of each node's tmpfs. Pages are used only as written: the
/// preallocated segments of the logs and what is appended.
const DISK_BYTES: u64 = 1 << 30;
/// How long a SIGTERMed node may take to exit before it is killed.
const TERMINATE_WAIT: Duration = Duration::from_secs(10);

/// What each node's data lives on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disks {
    /// A plain directory.
    Directory,
    /// A tmpfs per node (root), so a disk can fill up.
    Tmpfs,
    /// A lazy filesystem per node (root, /dev/fuse), so power can be cut;
    /// the `rast-lazyfs` program.
    Lazy(PathBuf),
}

/// One node.
#[derive(Debug)]
struct Node {
    child: Option<Child>,
    paused: bool,
    disk: PathBuf,
    disk_full: bool,
    lazy: Option<LazyMount>,
    log: PathBuf,
}

/// The nodes of a run.
#[derive(Debug)]
pub struct Nodes {
    binary: PathBuf,
    run: PathBuf,
    peers: String,
    cores: u32,
    disks: Disks,
    /// More `rast serve` arguments.
    serve_args: Vec<String>,
    members: Vec<Node>,
    /// Nodes that exited on their own: (node, status), oldest first.
    pub exits: Vec<(usize, String)>,
}

impl Nodes {
    /// Prepares `count` nodes under `run` (their data on `disks`), without
    /// starting them; each runs with `serve_args` too.
    pub fn new(
        binary: &Path,
        run: &Path,
        network: &Network,
        cores: u32,
        disks: Disks,
        serve_args: &[String],
    ) -> Result<Self, NemesisError> {
        let peers = network
            .addresses()
            .iter()
            .enumerate()
            .map(|(node, address)| format!("{}={address}", node + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Self {
            binary: binary.to_owned(),
            run: run.to_owned(),
            peers,
            cores,
            disks,
            serve_args: serve_args.to_vec(),
            members: Vec::new(),
            exits: Vec::new(),
        };
        for node in 0..network.addresses().len() {
            let disk = run.join("disk").join(format!("node{}", node + 1));
            std::fs::create_dir_all(&disk).map_err(|error| io("creating", &disk, &error))?;
            let lazy = match &nodes.disks {
                Disks::Lazy(lazyfs) => {
                    let backing = run.join("backing").join(format!("node{}", node + 1));
                    Some(LazyMount::start(lazyfs, &backing, &disk).map_err(|error| {
                        NemesisError::Setup(format!(
                            "mounting a lazy filesystem on {}: {error}",
                            disk.display()
                        ))
                    })?)
                }
                Disks::Directory | Disks::Tmpfs => None,
            };
            nodes.members.push(Node {
                child: None,
                paused: false,
                disk: disk.clone(),
                disk_full: false,
                lazy,
                log: run.join(format!("node{}.log", node + 1)),
            });
            if nodes.disks == Disks::Tmpfs {
                nix::mount::mount(
                    Some("tmpfs"),
                    &disk,
                    Some("tmpfs"),
                    nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                    Some(format!("size={DISK_BYTES},mode=0700").as_str()),
                )
                .map_err(|errno| {
                    NemesisError::Setup(format!("mounting a tmpfs on {}: {errno}", disk.display()))
                })?;
            }
        }
        Ok(nodes)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether node `node` has a process (running or paused).
    pub fn is_up(&self, node: usize) -> bool {
        self.members[node].child.is_some()
    }

    /// Whether node `node` is stopped by SIGSTOP.
    pub fn is_paused(&self, node: usize) -> bool {
        self.members[node].child.is_some() && self.members[node].paused
    }

    /// Whether node `node` is up and not paused (it can answer).
    pub fn is_running(&self, node: usize) -> bool {
        self.is_up(node) && !self.members[node].paused
    }

    /// Whether node `node`'s disk is filled.
    pub fn is_disk_full(&self, node: usize) -> bool {
        self.members[node].disk_full
    }

    /// Starts node `node` over its data directory.
    pub fn start(&mut self, node: usize, network: &Network) -> Result<(), NemesisError> {
        assert!(self.members[node].child.is_none(), "node {node} is up");
        let entry = &self.members[node];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&entry.log)
            .map_err(|error| io("opening", &entry.log, &error))?;
        let stderr = log
            .try_clone()
            .map_err(|error| io("duplicating", &entry.log, &error))?;
        let mut command = Command::new(&self.binary);
        command
            .args(["serve", "--id", &(node + 1).to_string()])
            .args(["--listen", network.address(node), "--peers", &self.peers])
            .args(["--cores", &self.cores.to_string()])
            .args(["--logs", &format!("{},kv", super::workload::LOGS.join(","))])
            .args(&self.serve_args)
            .arg("--data")
            .arg(entry.disk.join("data"))
            .env("RAST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        crate::io::process::kill_with_parent(&mut command);
        network.prepare(node, &mut command);
        let child = command
            .spawn()
            .map_err(|error| io("starting", &self.binary, &error))?;
        let entry = &mut self.members[node];
        entry.child = Some(child);
        entry.paused = false;
        self.write_pids();
        Ok(())
    }

    /// SIGKILLs node `node` (paused or not) and reaps it.
    pub fn kill(&mut self, node: usize) {
        let entry = &mut self.members[node];
        if let Some(mut child) = entry.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        entry.paused = false;
        self.write_pids();
    }

    /// Cuts the power of `nodes` at once: their lazy filesystems drop
    /// everything not synced and refuse every request (so a node still
    /// running makes nothing more durable), then each is SIGKILLed and its
    /// filesystem mounted again with what survived. Returns each
    /// filesystem's report.
    pub fn power_cut(
        &mut self,
        nodes: &[usize],
        tear: Option<Tear>,
    ) -> Result<Vec<String>, NemesisError> {
        let mut reports = Vec::new();
        for &node in nodes {
            let report = self.lazy(node)?.power_off(tear).map_err(|error| {
                NemesisError::Setup(format!("cutting n{}'s power: {error}", node + 1))
            })?;
            reports.push(format!("n{}: {report}", node + 1));
        }
        for &node in nodes {
            self.kill(node);
            self.lazy(node)?.power_on().map_err(|error| {
                NemesisError::Setup(format!("bringing n{}'s power back: {error}", node + 1))
            })?;
        }
        Ok(reports)
    }

    fn lazy(&mut self, node: usize) -> Result<&mut LazyMount, NemesisError> {
        self.members[node]
            .lazy
            .as_mut()
            .ok_or_else(|| NemesisError::Setup(format!("n{} has no lazy filesystem", node + 1)))
    }

    /// SIGSTOPs node `node`.
    pub fn pause(&mut self, node: usize) {
        if let Some(pid) = self.pid(node) {
            let _ = kill(pid, Signal::SIGSTOP);
            self.members[node].paused = true;
        }
    }

    /// SIGCONTs node `node`.
    pub fn resume(&mut self, node: usize) {
        if let Some(pid) = self.pid(node) {
            let _ = kill(pid, Signal::SIGCONT);
        }
        self.members[node].paused = false;
    }

    /// SIGTERMs node `node` and waits for it (SIGKILL after a while);
    /// returns how it exited.
    pub fn terminate(&mut self, node: usize) -> String {
        self.resume(node);
        let Some(pid) = self.pid(node) else {
            return "not running".into();
        };
        let _ = kill(pid, Signal::SIGTERM);
        let started = Instant::now();
        let entry = &mut self.members[node];
        let mut child = entry.child.take().expect("pid() saw it");
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if started.elapsed() < TERMINATE_WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!("did not exit within {TERMINATE_WAIT:?} of SIGTERM; killed");
                }
            }
        };
        self.write_pids();
        status
    }

    /// Reaps nodes that exited on their own; returns them (also kept in
    /// [`Self::exits`]).
    pub fn reap(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (node, entry) in self.members.iter_mut().enumerate() {
            let Some(child) = entry.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                entry.child = None;
                entry.paused = false;
                exited.push((node, status.to_string()));
            }
        }
        self.exits.extend(exited.iter().cloned());
        if !exited.is_empty() {
            self.write_pids();
        }
        exited
    }

    /// Fills node `node`'s disk: a file takes every free byte.
    pub fn fill_disk(&mut self, node: usize) -> Result<u64, NemesisError> {
        assert!(
            self.disks == Disks::Tmpfs,
            "filling a disk needs the node's own tmpfs"
        );
        let entry = &mut self.members[node];
        let path = entry.disk.join("fill");
        // Append mode: the page writes go past the preallocated space.
        let _ = std::fs::remove_file(&path);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|error| io("creating", &path, &error))?;
        entry.disk_full = true;
        let stats = nix::sys::statvfs::statvfs(&entry.disk).map_err(|errno| {
            NemesisError::Setup(format!("statvfs {}: {errno}", entry.disk.display()))
        })?;
        let free = stats.blocks_available() * stats.fragment_size();
        let mut filled = 0;
        if free > 0
            && nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, free as i64)
                .is_ok()
        {
            filled = free;
        }
        // Whatever is left, a page at a time, until the disk says no.
        let page = [0u8; 4096];
        for _ in 0..1 << 16 {
            if file.write_all(&page).is_err() {
                break;
            }
            filled += page.len() as u64;
        }
        Ok(filled)
    }

    /// Frees node `node`'s disk.
    pub fn free_disk(&mut self, node: usize) {
        let entry = &mut self.members[node];
        let _ = std::fs::remove_file(entry.disk.join("fill"));
        entry.disk_full = false;
    }

    fn pid(&self, node: usize) -> Option<Pid> {
        self.members[node]
            .child
            .as_ref()
            .map(|child| Pid::from_raw(child.id() as i32))
    }

    /// Records the running nodes' pids, for the leftover sweep of a later
    /// run should this one die without cleaning up.
    fn write_pids(&self) {
        let mut pids = String::new();
        for child in self.members.iter().filter_map(|entry| entry.child.as_ref()) {
            let _ = writeln!(pids, "{}", child.id());
        }
        let _ = std::fs::write(self.run.join("nodes.pid"), pids);
    }

    /// Copies every node's data directory to `<run>/data-kept/` (for a
    /// post-mortem of a failed run; the tmpfs goes away).
    pub fn keep_data(&self) {
        let kept = self.run.join("data-kept");
        for (node, entry) in self.members.iter().enumerate() {
            let target = kept.join(format!("node{}", node + 1));
            let _ = std::fs::create_dir_all(&target);
            let _ = Command::new("cp")
                .args(["-a", "--sparse=always"])
                .arg(entry.disk.join("data"))
                .arg(&target)
                .status();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in 0..self.members.len() {
            self.kill(node);
        }
        for entry in &mut self.members {
            // Unmounts it.
            entry.lazy.take();
        }
        let _ = std::fs::remove_dir_all(self.run.join("backing"));
        for entry in &self.members {
            if self.disks == Disks::Tmpfs
                && let Err(errno) =
                    nix::mount::umount2(&entry.disk, nix::mount::MntFlags::MNT_DETACH)
            {
                tracing::warn!(disk = %entry.disk.display(), %errno, "unmounting a node's tmpfs");
            }
            let _ = std::fs::remove_dir_all(&entry.disk);
        }
        let _ = std::fs::remove_dir(self.run.join("disk"));
        let _ = std::fs::remove_file(self.run.join("nodes.pid"));
    }
}

fn io(what: &str, path: &Path, error: &std::io::Error) -> NemesisError {
    NemesisError::Setup(format!("{what} {}: {error}", path.display()))
}

/// Kills the nodes of earlier runs under `root` whose harness died without
/// cleaning up (normally impossible: nodes die with their harness), and
/// removes their disks. A pid is killed only if its command line names
/// that run's directory, so a reused pid is never hit.
pub fn sweep_leftovers(root: &Path) -> Vec<String> {
    let mut swept = Vec::new();
    let Ok(runs) = std::fs::read_dir(root) else {
        return swept;
    };
    for run in runs.flatten() {
        let run = run.path();
        let Ok(driver) = std::fs::read_to_string(run.join("driver.pid")) else {
            continue;
        };
        let driver_alive = driver
            .trim()
            .parse::<i32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if driver_alive {
            continue;
        }
        let pids = std::fs::read_to_string(run.join("nodes.pid")).unwrap_or_default();
        for pid in pids
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
        {
            let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let needle = run.to_string_lossy();
            if String::from_utf8_lossy(&command_line).contains(needle.as_ref()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                swept.push(format!(
                    "killed leftover node pid {pid} of {}",
                    run.display()
                ));
            }
        }
        let _ = std::fs::remove_file(run.join("nodes.pid"));
        if run.join("disk").exists() {
            let _ = std::fs::remove_dir_all(run.join("disk"));
            swept.push(format!("removed leftover disks of {}", run.display()));
        }
    }
    swept
}
