//! The one launcher of local `rast serve` processes, used by `rast
//! cluster`, `rast bench`, `rast nemesis` and the tests.
//!
//! ```text
//!  Launch { binary, addresses, metrics, data, cores, args, env, output, tls }
//!     │  node i has id i+1, listens on addresses[i], keeps data[i];
//!     │  --peers names every initial node; a node added later gets --join
//!     ▼
//!  Processes ── start(i) ─ kill(i) ─ terminate(i) ─ pause(i) ─ resume(i)
//!               reap() ─ stop_all(grace) ─ drop: SIGKILL and reap all
//! ```
//!
//! What differs between the users is data, not code: where the output
//! goes (inherited, discarded, appended to a log file per node), extra
//! arguments and environment, whether a node dies with the thread that
//! started it (`die_with_parent`), and a hook that prepares each command
//! (the nemesis moves a node into its network namespace there).

use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How often a wait for an exit looks again.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Where a node's standard output and error go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// This process's own.
    Inherit,
    /// Nowhere.
    Null,
    /// Appended to one file per node (every life of the node).
    Files(Vec<PathBuf>),
}

/// What every node of a local cluster is started with.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `rast` binary.
    pub binary: PathBuf,
    /// Listen address of each node (node `i` has id `i + 1`).
    pub addresses: Vec<String>,
    /// Metrics address of each node (`--metrics-addr`), if any.
    pub metrics: Vec<String>,
    /// Data directory of each node (`--data`).
    pub data: Vec<PathBuf>,
    /// Cores per node (`--cores`).
    pub cores: u32,
    /// More `rast serve` arguments for every node.
    pub args: Vec<String>,
    /// More environment for every node.
    pub env: Vec<(String, String)>,
    /// Where each node's output goes.
    pub output: Output,
    /// A node is SIGKILLed when the thread that started it ends.
    pub die_with_parent: bool,
    /// Serve TLS with the certificates `rast certs` wrote to this
    /// directory (`ca.pem`, `node-<id>.pem`, `node-<id>.key`).
    pub tls: Option<PathBuf>,
}

/// Prepares the command of node `i` before it is spawned.
pub type Prepare = Box<dyn FnMut(usize, &mut Command) + Send>;

/// The processes of a local cluster.
pub struct Processes {
    launch: Launch,
    /// Nodes named in `--peers`; later ones start with `--join`.
    initial: usize,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    prepare: Option<Prepare>,
}

impl std::fmt::Debug for Processes {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Processes")
            .field("launch", &self.launch)
            .field("initial", &self.initial)
            .field("children", &self.children)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

impl Processes {
    /// The cluster `launch` describes, no node started yet.
    pub fn new(launch: Launch) -> Self {
        let nodes = launch.addresses.len();
        assert_eq!(launch.data.len(), nodes, "a data directory per node");
        assert!(
            launch.metrics.is_empty() || launch.metrics.len() == nodes,
            "a metrics address per node, or none"
        );
        Self {
            launch,
            initial: nodes,
            children: (0..nodes).map(|_| None).collect(),
            paused: vec![false; nodes],
            prepare: None,
        }
    }

    /// Runs `prepare` on each node's command before it is spawned.
    #[must_use]
    pub fn with_prepare(mut self, prepare: Prepare) -> Self {
        self.prepare = Some(prepare);
        self
    }

    /// Nodes, started or not.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// What the nodes are started with.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// Replaces the extra `rast serve` arguments of later starts.
    pub fn set_args(&mut self, args: Vec<String>) {
        self.launch.args = args;
    }

    /// `1=addr,2=addr,…` for the initial nodes.
    pub fn peers(&self) -> String {
        self.launch.addresses[..self.initial]
            .iter()
            .enumerate()
            .map(|(node, address)| format!("{}={address}", node + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds a node (started with `--join` when started); returns its index.
    pub fn add(&mut self, address: String, metrics: Option<String>, data: PathBuf) -> usize {
        self.launch.addresses.push(address);
        if let Some(metrics) = metrics {
            self.launch.metrics.push(metrics);
        }
        self.launch.data.push(data);
        self.children.push(None);
        self.paused.push(false);
        self.children.len() - 1
    }

    /// Starts node `node` over its data directory.
    pub fn start(&mut self, node: usize) -> io::Result<()> {
        assert!(self.children[node].is_none(), "node {} is up", node + 1);
        let launch = &self.launch;
        let mut command = Command::new(&launch.binary);
        command
            .args(["serve", "--id", &(node + 1).to_string()])
            .args([
                "--listen",
                &launch.addresses[node],
                "--peers",
                &self.peers(),
            ])
            .args(["--cores", &launch.cores.to_string()]);
        if let Some(metrics) = launch.metrics.get(node) {
            command.args(["--metrics-addr", metrics]);
        }
        if node >= self.initial {
            command.arg("--join");
        }
        if let Some(certs) = &launch.tls {
            let id = node + 1;
            command
                .arg("--tls-cert")
                .arg(certs.join(format!("node-{id}.pem")))
                .arg("--tls-key")
                .arg(certs.join(format!("node-{id}.key")))
                .arg("--tls-ca")
                .arg(certs.join("ca.pem"));
        }
        command
            .args(&launch.args)
            .arg("--data")
            .arg(&launch.data[node])
            .envs(launch.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null());
        match &launch.output {
            Output::Inherit => {}
            Output::Null => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
            Output::Files(files) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&files[node])
                    .map_err(|error| {
                        io::Error::new(error.kind(), format!("{}: {error}", files[node].display()))
                    })?;
                command.stdout(file.try_clone()?).stderr(file);
            }
        }
        if launch.die_with_parent {
            crate::io::process::kill_with_parent(&mut command);
        }
        if let Some(prepare) = &mut self.prepare {
            prepare(node, &mut command);
        }
        let child = command.spawn().map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("starting {}: {error}", launch.binary.display()),
            )
        })?;
        self.children[node] = Some(child);
        self.paused[node] = false;
        Ok(())
    }

    /// Whether node `node` has a process (running or paused).
    pub fn is_up(&self, node: usize) -> bool {
        self.children[node].is_some()
    }

    /// Whether node `node` is stopped by SIGSTOP.
    pub fn is_paused(&self, node: usize) -> bool {
        self.is_up(node) && self.paused[node]
    }

    /// Its process id, if it has a process.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.children[node].as_ref().map(Child::id)
    }

    fn signal(&self, node: usize, signal: Signal) {
        if let Some(pid) = self.pid(node) {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILLs node `node` (paused or not) and reaps it.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused[node] = false;
    }

    /// SIGSTOPs node `node`.
    pub fn pause(&mut self, node: usize) {
        if self.is_up(node) {
            self.signal(node, Signal::SIGSTOP);
            self.paused[node] = true;
        }
    }

    /// SIGCONTs node `node`.
    pub fn resume(&mut self, node: usize) {
        self.signal(node, Signal::SIGCONT);
        self.paused[node] = false;
    }

    /// SIGTERMs node `node` and waits up to `grace` for it to exit, then
    /// SIGKILLs it; its exit status, or `None` when it had to be killed
    /// (or was not running).
    pub fn terminate(&mut self, node: usize, grace: Duration) -> Option<ExitStatus> {
        self.terminate_all(&[node], grace).pop().flatten()
    }

    /// SIGTERMs `nodes` at once, then waits as [`Self::terminate`] does;
    /// their exit statuses in order.
    pub fn terminate_all(&mut self, nodes: &[usize], grace: Duration) -> Vec<Option<ExitStatus>> {
        for &node in nodes {
            self.resume(node);
            self.signal(node, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut statuses = Vec::new();
        for &node in nodes {
            let Some(mut child) = self.children[node].take() else {
                statuses.push(None);
                continue;
            };
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(EXIT_POLL),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            statuses.push(status);
        }
        statuses
    }

    /// SIGTERMs every node, waits up to `grace`, SIGKILLs what is left.
    pub fn stop_all(&mut self, grace: Duration) {
        let nodes: Vec<usize> = (0..self.len()).collect();
        self.terminate_all(&nodes, grace);
    }

    /// Reaps nodes that exited on their own: (node, status).
    pub fn reap(&mut self) -> Vec<(usize, ExitStatus)> {
        let mut exited = Vec::new();
        for (node, slot) in self.children.iter_mut().enumerate() {
            let Some(child) = slot.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                *slot = None;
                self.paused[node] = false;
                exited.push((node, status));
            }
        }
        exited
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
    }
}

/// A loopback address (`127.0.0.1:port`) nobody listens on right now, and
/// never handed out before by this process: clusters started side by side
/// (tests run in parallel threads) pick their ports before their nodes
/// bind them, and the kernel may offer a port it just offered again.
pub fn free_loopback_address() -> io::Result<String> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..FREE_PORT_ATTEMPTS {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        if !handed_out.contains(&address.port()) {
            handed_out.push(address.port());
            return Ok(address.to_string());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no loopback port left that this process has not handed out",
    ))
}

/// Tries at finding a loopback port not handed out before.
const FREE_PORT_ATTEMPTS: usize = 1000;
