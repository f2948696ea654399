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
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::NemesisError;
use super::lazyfs::{LazyMount, Tear};
use super::net::Network;
use crate::launch::{Launch, Output, Processes};

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

/// One node's disk.
#[derive(Debug)]
struct Disk {
    path: PathBuf,
    full: bool,
    lazy: Option<LazyMount>,
}

/// The nodes of a run.
#[derive(Debug)]
pub struct Nodes {
    run: PathBuf,
    disks: Disks,
    processes: Processes,
    members: Vec<Disk>,
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
        let count = network.addresses().len();
        let disk_path = |node: usize| run.join("disk").join(format!("node{}", node + 1));
        let mut args = vec![
            "--logs".to_owned(),
            format!("{},kv", super::workload::LOGS.join(",")),
        ];
        args.extend(serve_args.iter().cloned());
        let launch = Launch {
            binary: binary.to_owned(),
            addresses: network.addresses().to_vec(),
            metrics: Vec::new(),
            data: (0..count)
                .map(|node| disk_path(node).join("data"))
                .collect(),
            cores,
            args,
            env: vec![("RAST_LOG".to_owned(), "info".to_owned())],
            output: Output::Files(
                (0..count)
                    .map(|node| run.join(format!("node{}.log", node + 1)))
                    .collect(),
            ),
            die_with_parent: true,
            tls: None,
        };
        let mut nodes = Self {
            run: run.to_owned(),
            disks,
            processes: Processes::new(launch).with_prepare(network.preparer()),
            members: Vec::new(),
            exits: Vec::new(),
        };
        for node in 0..count {
            let disk = disk_path(node);
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
            nodes.members.push(Disk {
                path: disk.clone(),
                full: false,
                lazy,
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

    /// Node `node`'s data directory (`--data`).
    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.members[node].path.join("data")
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
        self.processes.is_up(node)
    }

    /// Whether node `node` is stopped by SIGSTOP.
    pub fn is_paused(&self, node: usize) -> bool {
        self.processes.is_paused(node)
    }

    /// Whether node `node` is up and not paused (it can answer).
    pub fn is_running(&self, node: usize) -> bool {
        self.is_up(node) && !self.is_paused(node)
    }

    /// Whether node `node`'s disk is filled.
    pub fn is_disk_full(&self, node: usize) -> bool {
        self.members[node].full
    }

    /// Starts node `node` over its data directory.
    pub fn start(&mut self, node: usize) -> Result<(), NemesisError> {
        let started = self
            .processes
            .start(node)
            .map_err(|error| NemesisError::Setup(error.to_string()));
        self.write_pids();
        started
    }

    /// SIGKILLs node `node` (paused or not) and reaps it.
    pub fn kill(&mut self, node: usize) {
        self.processes.kill(node);
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
        self.processes.pause(node);
    }

    /// SIGCONTs node `node`.
    pub fn resume(&mut self, node: usize) {
        self.processes.resume(node);
    }

    /// SIGTERMs node `node` and waits for it (SIGKILL after a while);
    /// returns how it exited.
    pub fn terminate(&mut self, node: usize) -> String {
        if !self.is_up(node) {
            return "not running".into();
        }
        let status = match self.processes.terminate(node, TERMINATE_WAIT) {
            Some(status) => status.to_string(),
            None => format!("did not exit within {TERMINATE_WAIT:?} of SIGTERM; killed"),
        };
        self.write_pids();
        status
    }

    /// Reaps nodes that exited on their own; returns them (also kept in
    /// [`Self::exits`]).
    pub fn reap(&mut self) -> Vec<(usize, String)> {
        let exited: Vec<(usize, String)> = self
            .processes
            .reap()
            .into_iter()
            .map(|(node, status)| (node, status.to_string()))
            .collect();
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
        let path = entry.path.join("fill");
        // Append mode: the page writes go past the preallocated space.
        let _ = std::fs::remove_file(&path);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|error| io("creating", &path, &error))?;
        entry.full = true;
        let stats = nix::sys::statvfs::statvfs(&entry.path).map_err(|errno| {
            NemesisError::Setup(format!("statvfs {}: {errno}", entry.path.display()))
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
        let _ = std::fs::remove_file(entry.path.join("fill"));
        entry.full = false;
    }

    /// Records the running nodes' pids, for the leftover sweep of a later
    /// run should this one die without cleaning up.
    fn write_pids(&self) {
        let mut pids = String::new();
        for pid in (0..self.processes.len()).filter_map(|node| self.processes.pid(node)) {
            let _ = writeln!(pids, "{pid}");
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
                .arg(entry.path.join("data"))
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
                    nix::mount::umount2(&entry.path, nix::mount::MntFlags::MNT_DETACH)
            {
                tracing::warn!(disk = %entry.path.display(), %errno, "unmounting a node's tmpfs");
            }
            let _ = std::fs::remove_dir_all(&entry.path);
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
