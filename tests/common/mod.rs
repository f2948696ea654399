//! A cluster of real `rast serve` processes for integration tests: free
//! loopback ports, a temporary data directory per node, SIGKILL on drop.

#![allow(dead_code)]

pub mod kv_history;
pub mod lazy;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rast::client::{Client, ClientOptions};
use rast::launch::{Launch, Output, Processes};
use rast::wire::client::Status;

/// A local cluster; every process is killed when it drops.
pub struct Cluster {
    pub addresses: Vec<String>,
    pub metrics: Vec<String>,
    pub data: PathBuf,
    processes: Processes,
    /// The certificates of a TLS cluster (`rast certs` output).
    pub certs: Option<PathBuf>,
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
        Self::create_with_tls(name, nodes, cores, extra, false)
    }

    /// Starts nodes that serve TLS with certificates `rast certs` makes
    /// under the cluster's data directory (`certs`), with extra arguments.
    pub fn start_tls(name: &str, nodes: usize, extra: &[&str]) -> Self {
        let mut cluster = Self::create_with_tls(name, nodes, 1, extra, true);
        for node in 0..nodes {
            cluster.restart(node);
        }
        cluster
    }

    fn create_with_tls(name: &str, nodes: usize, cores: u32, extra: &[&str], tls: bool) -> Self {
        let data = std::env::temp_dir().join(format!("rast-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let addresses: Vec<String> = (0..nodes).map(|_| free_address()).collect();
        let metrics: Vec<String> = (0..nodes).map(|_| free_address()).collect();
        let certs = tls.then(|| {
            let certs = data.join("certs");
            let ids: Vec<String> = (1..=nodes).map(|id| id.to_string()).collect();
            let made = std::process::Command::new(env!("CARGO_BIN_EXE_rast"))
                .args(["certs", "--nodes", &ids.join(","), "--out"])
                .arg(&certs)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("running rast certs");
            assert!(made.success(), "rast certs failed");
            certs
        });
        let processes = Processes::new(Launch {
            binary: env!("CARGO_BIN_EXE_rast").into(),
            addresses: addresses.clone(),
            metrics: metrics.clone(),
            data: (0..nodes).map(|node| node_dir(&data, node)).collect(),
            cores,
            args: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            env: vec![(
                "RAST_LOG".to_owned(),
                std::env::var("RAST_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )],
            output: Output::Inherit,
            die_with_parent: false,
            tls: certs.clone(),
        });
        Self {
            addresses,
            metrics,
            data,
            processes,
            certs,
        }
    }

    /// Node `node`'s data directory.
    pub fn data_dir(&self, node: usize) -> PathBuf {
        node_dir(&self.data, node)
    }

    /// (Re)starts node `node` (0-based) over its data directory.
    pub fn restart(&mut self, node: usize) {
        self.processes.start(node).expect("spawning rast serve");
    }

    /// Replaces the extra `rast serve` arguments of later (re)starts.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.processes
            .set_args(extra.iter().map(|arg| (*arg).to_owned()).collect());
    }

    /// Starts one more node with `--join` (outside every configuration,
    /// `--peers` naming the initial nodes); returns its index (0-based; its
    /// id is the index plus one).
    pub fn join(&mut self) -> usize {
        let address = free_address();
        let metrics = free_address();
        self.addresses.push(address.clone());
        self.metrics.push(metrics.clone());
        let node = self.addresses.len() - 1;
        let data = self.data_dir(node);
        assert_eq!(self.processes.add(address, Some(metrics), data), node);
        self.restart(node);
        node
    }

    /// The process id of node `node`, if it runs.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.processes.pid(node)
    }

    /// SIGKILLs node `node` and reaps it.
    pub fn kill(&mut self, node: usize) {
        self.processes.kill(node);
    }

    /// SIGTERMs node `node` and returns its exit status.
    pub fn terminate(&mut self, node: usize) -> std::process::ExitStatus {
        assert!(self.processes.is_up(node), "node {node} is not running");
        self.processes
            .terminate(node, Duration::from_mins(1))
            .expect("exited within a minute of SIGTERM")
    }

    /// A client over every address.
    pub fn client(&self) -> Client {
        let options = ClientOptions {
            deadline: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            tls: self.tls(),
            ..ClientOptions::default()
        };
        Client::new(&self.addresses, options).unwrap()
    }

    /// How a client speaks to this cluster: TLS trusting its CA, or plain.
    pub fn tls(&self) -> Option<rast_client::TlsOptions> {
        self.certs
            .as_ref()
            .map(|certs| rast_client::TlsOptions::from_files(&certs.join("ca.pem"), None).unwrap())
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

    /// Appends each payload to `log` as a batch of its own; the index of
    /// each.
    pub fn append_each(&self, log: &str, payloads: &[Vec<u8>]) -> Vec<u64> {
        let mut client = self.client();
        payloads
            .iter()
            .map(|payload| {
                client
                    .append(log, &[payload.as_slice()])
                    .unwrap()
                    .first_index
                    .get()
            })
            .collect()
    }

    /// Status of node `node`, if it answers.
    pub fn status(&self, node: usize, log: &str) -> Option<Status> {
        let client = self.client();
        client.status_of(&self.addresses[node], log).ok()
    }

    /// Every committed entry of `log` at node `node` (read through a client
    /// pinned to it), from 1 to `last`: the entries clients appended (a
    /// read skips the log's own no-op and configuration entries).
    pub fn read_all(
        &self,
        node: usize,
        log: &str,
        last: u64,
    ) -> std::collections::BTreeMap<u64, Vec<u8>> {
        let options = ClientOptions {
            deadline: Duration::from_secs(10),
            tls: self.tls(),
            ..ClientOptions::default()
        };
        let mut client = Client::new(&[self.addresses[node].as_str()], options).unwrap();
        let mut entries = std::collections::BTreeMap::new();
        let mut next = 1;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while next <= last {
            let batch = client.read(log, rast::types::LogIndex(next), 0).unwrap();
            if batch.is_empty() {
                // Nothing appended by clients from `next` to what this node
                // knows committed. If that reaches `last`, the rest are the
                // log's own entries (read again after the status, which
                // saw the commit first). Else: reads are local, a follower
                // serves what it knows committed and learns the leader's
                // commit index with its next message. Polled until it does.
                if self
                    .status(node, log)
                    .is_some_and(|status| status.commit_index >= last)
                    && client
                        .read(log, rast::types::LogIndex(next), 0)
                        .unwrap()
                        .is_empty()
                {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "node {node} returned nothing at {next} for 10 s"
                );
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
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
            for node in 0..self.processes.len() {
                if self.processes.is_up(node)
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
            let lagging: Vec<usize> = (0..self.processes.len())
                .filter(|node| self.processes.is_up(*node))
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
        for node in 0..self.processes.len() {
            self.kill(node);
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn node_dir(data: &std::path::Path, node: usize) -> PathBuf {
    data.join(format!("node{}", node + 1))
}

/// A loopback address nobody listens on right now.
pub fn free_address() -> String {
    rast::launch::free_loopback_address().unwrap()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    free_address()
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap()
}
