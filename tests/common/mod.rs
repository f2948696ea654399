//! A cluster of real `rast serve` processes for integration tests: free
//! loopback ports, a temporary data directory per node, SIGKILL on drop.

#![allow(dead_code)]

pub mod kv_history;
pub mod lazy;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rast::client::{Client, ClientOptions};
use rast::wire::client::Status;

/// A local cluster; every process is killed when it drops.
pub struct Cluster {
    pub addresses: Vec<String>,
    pub metrics: Vec<String>,
    pub data: PathBuf,
    children: Vec<Option<Child>>,
    peers: String,
    cores: u32,
    extra: Vec<String>,
    /// Nodes started with the cluster; later ones joined (`--join`).
    initial: usize,
}

impl Cluster {
    /// Starts `nodes` nodes with `cores` cores each.
    pub fn start(name: &str, nodes: usize, cores: u32) -> Self {
        Self::start_with(name, nodes, cores, &[])
    }

    /// Starts nodes with extra `rast serve` arguments.
    pub fn start_with(name: &str, nodes: usize, cores: u32, extra: &[&str]) -> Self {
        let mut cluster = Self::create(name, nodes, cores, extra);
        for node in 0..nodes {
            cluster.restart(node);
        }
        cluster
    }

    /// Prepares a cluster (ports, data directory) without starting a node.
    pub fn create(name: &str, nodes: usize, cores: u32, extra: &[&str]) -> Self {
        let data = std::env::temp_dir().join(format!("rast-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let addresses: Vec<String> = (0..nodes)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = addresses
            .iter()
            .enumerate()
            .map(|(node, address)| format!("{}={address}", node + 1))
            .collect::<Vec<_>>()
            .join(",");
        let metrics = (0..nodes)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        Self {
            addresses,
            metrics,
            data,
            children: (0..nodes).map(|_| None).collect(),
            peers,
            cores,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            initial: nodes,
        }
    }

    /// Node `node`'s data directory.
    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.data.join(format!("node{}", node + 1))
    }

    /// (Re)starts node `node` (0-based) over its data directory.
    pub fn restart(&mut self, node: usize) {
        assert!(self.children[node].is_none(), "node {node} is running");
        let child = Command::new(env!("CARGO_BIN_EXE_rast"))
            .args(["serve", "--id", &(node + 1).to_string()])
            .args(["--listen", &self.addresses[node], "--peers", &self.peers])
            .args(["--metrics-addr", &self.metrics[node]])
            .args(["--cores", &self.cores.to_string()])
            .args(if node >= self.initial {
                &["--join"][..]
            } else {
                &[][..]
            })
            .args(&self.extra)
            .arg("--data")
            .arg(self.data_dir(node))
            .env(
                "RAST_LOG",
                std::env::var("RAST_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning rast serve");
        self.children[node] = Some(child);
    }

    /// Replaces the extra `rast serve` arguments of later (re)starts.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|arg| (*arg).to_owned()).collect();
    }

    /// Starts one more node with `--join` (outside every configuration,
    /// `--peers` naming the initial nodes); returns its index (0-based; its
    /// id is the index plus one).
    pub fn join(&mut self) -> usize {
        let node = self.children.len();
        self.addresses.push(format!("127.0.0.1:{}", free_port()));
        self.metrics.push(format!("127.0.0.1:{}", free_port()));
        self.children.push(None);
        self.restart(node);
        node
    }

    /// The process id of node `node`, if it runs.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.children[node].as_ref().map(Child::id)
    }

    /// SIGKILLs node `node` and reaps it.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERMs node `node` and returns its exit status.
    pub fn terminate(&mut self, node: usize) -> std::process::ExitStatus {
        let mut child = self.children[node].take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        child.wait().unwrap()
    }

    /// A client over every address.
    pub fn client(&self) -> Client {
        let options = ClientOptions {
            deadline: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        Client::new(&self.addresses, options).unwrap()
    }

    /// The value of metric `name` at node `node`: the sample with exactly
    /// these labels when `name` has some (`name{path="read"}`), else the
    /// first sample.
    pub fn metric(&self, node: usize, name: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.metrics[node]).ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        rast::bench::stats::sample(&text, name)
    }

    /// Status of node `node`, if it answers.
    pub fn status(&self, node: usize, log: &str) -> Option<Status> {
        let client = self.client();
        client.status_of(&self.addresses[node], log).ok()
    }

    /// Every committed entry of `log` at node `node` (read through a client
    /// pinned to it), from 1 to `last`.
    pub fn read_all(
        &self,
        node: usize,
        log: &str,
        last: u64,
    ) -> std::collections::BTreeMap<u64, Vec<u8>> {
        let options = ClientOptions {
            deadline: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        let mut client = Client::new(&[self.addresses[node].as_str()], options).unwrap();
        let mut entries = std::collections::BTreeMap::new();
        let mut next = 1;
        while next <= last {
            let batch = client.read(log, rast::types::LogIndex(next), 0).unwrap();
            assert!(!batch.is_empty(), "node {node} returned nothing at {next}");
            for (index, payload) in batch {
                if index.get() <= last {
                    entries.insert(index.get(), payload);
                }
                next = next.max(index.get() + 1);
            }
        }
        entries
    }

    /// Waits until a running node reports itself leader; returns it.
    pub fn wait_for_leader(&self, log: &str, within: Duration) -> usize {
        let started = Instant::now();
        loop {
            for node in 0..self.children.len() {
                if self.children[node].is_some()
                    && self
                        .status(node, log)
                        .is_some_and(|status| status.role == "leader")
                {
                    return node;
                }
            }
            assert!(started.elapsed() < within, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (30 s at most) until every node answers a status of `log`
    /// for which `check` holds; returns them. `what` names the wait.
    pub fn wait_for_status(
        &self,
        log: &str,
        what: &str,
        check: impl Fn(&Status) -> bool,
    ) -> Vec<Status> {
        let started = Instant::now();
        loop {
            let statuses: Vec<Status> = (0..self.addresses.len())
                .filter_map(|node| self.status(node, log))
                .collect();
            if statuses.len() == self.addresses.len() && statuses.iter().all(&check) {
                return statuses;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{log} logs never {what}: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running node has committed `index`.
    pub fn wait_for_commit(&self, log: &str, index: u64, within: Duration) {
        let started = Instant::now();
        loop {
            let lagging: Vec<usize> = (0..self.children.len())
                .filter(|node| self.children[*node].is_some())
                .filter(|node| {
                    self.status(*node, log)
                        .is_none_or(|status| status.commit_index < index)
                })
                .collect();
            if lagging.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < within,
                "nodes {lagging:?} did not commit {index} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
