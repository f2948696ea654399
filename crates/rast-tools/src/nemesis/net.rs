//! Where the nodes' network lives, and how links between them are cut.
//!
//! As root, the harness first moves itself into a network namespace and a
//! mount namespace of its own ([`isolate`]); that namespace is the *hub*.
//! Each node gets one more namespace, joined to the hub by a veth pair;
//! the hub routes between them:
//!
//! ```text
//!   node ns n1                 hub ns (the harness, its clients)         node ns n2
//!  ┌────────────────┐        ┌──────────────────────────────────┐     ┌────────────────┐
//!  │ rast serve     │        │  n1 10.77.1.1    n2 10.77.2.1    │     │ rast serve     │
//!  │ eth0 10.77.1.2 ├─veth───┤  ip_forward=1                    ├─veth┤ eth0 10.77.2.2 │
//!  │ :7000          │        │  iptables FORWARD -s A -d B DROP │     │ :7000          │
//!  └────────────────┘        └──────────────────────────────────┘     └────────────────┘
//! ```
//!
//! Why this and not every node on one loopback: a link is then named by
//! two addresses. A node dials its peers from ephemeral ports, so on a
//! shared loopback a rule cannot tell which node a packet of an outgoing
//! connection comes from; here every packet between two nodes crosses the
//! hub's FORWARD chain with the sender's and the receiver's own address,
//! so one stateless DROP rule per direction cuts exactly that link
//! (`-s A -d B` alone is a one-way cut; no conntrack, so established
//! connections are cut too, not only new ones). Clients run in the hub and
//! reach every node directly (their packets are not forwarded), so a
//! partition separates nodes, never the clients from them: Jepsen's model.
//!
//! Nothing leaves: the hub has no link but the veths, and the host's
//! interfaces, routes and iptables are never touched. Every namespace is
//! anonymous: the kernel frees it, its veths and its rules with the last
//! process or descriptor that holds it, so even a harness killed with
//! SIGKILL leaves nothing behind (its nodes die with it, see
//! [`crate::io::process::kill_with_parent`]).
//!
//! Without root, every node listens on its own loopback port and no link
//! can be cut; the faults that need root are not drawn.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::Arc;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::NemesisError;

/// Port every node listens on inside its namespace.
const NODE_PORT: u16 = 7000;

/// Moves the calling process into new network and mount namespaces (the
/// hub). Must run before the process starts a thread: a mount namespace
/// cannot be unshared by a multi-threaded process.
pub fn isolate() -> Result<(), NemesisError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|error| NemesisError::Setup(format!("/proc/self/task: {error}")))?
        .count();
    if threads != 1 {
        return Err(NemesisError::Setup(format!(
            "isolate() needs a single-threaded process, found {threads} threads"
        )));
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .map_err(|errno| NemesisError::Setup(format!("unshare(net, mount): {errno}")))?;
    // Mounts made from here on (the nodes' tmpfs) stay in this namespace.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|errno| NemesisError::Setup(format!("making mounts private: {errno}")))?;
    run("ip", &["link", "set", "lo", "up"])
}

/// Runs a tool to completion; its failure is an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<(), NemesisError> {
    let output = Command::new(program).args(args).output().map_err(|error| {
        NemesisError::Setup(format!(
            "{program}: {error} (scripts/setup installs iproute2 and iptables)"
        ))
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NemesisError::Setup(format!(
            "{program} {}: {} {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The nodes' network.
#[derive(Debug)]
pub struct Network {
    /// Per node, its namespace (empty on loopback).
    namespaces: Vec<Arc<OwnedFd>>,
    /// Per node, the address it listens on and clients dial.
    addresses: Vec<String>,
    /// Directed links cut, with how many active faults cut each.
    cuts: BTreeMap<(usize, usize), u32>,
}

impl Network {
    /// One namespace per node behind the hub (the caller ran [`isolate`]).
    pub fn namespaces(nodes: usize) -> Result<Self, NemesisError> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|error| NemesisError::Setup(format!("hub ip_forward: {error}")))?;
        let mut network = Self {
            namespaces: Vec::new(),
            addresses: Vec::new(),
            cuts: BTreeMap::new(),
        };
        for node in 0..nodes {
            network.namespaces.push(Arc::new(node_namespace(node)?));
            let hub_side = format!("n{}", node + 1);
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/24", hub_address(node)),
                    "dev",
                    &hub_side,
                ],
            )?;
            run("ip", &["link", "set", &hub_side, "up"])?;
            network
                .addresses
                .push(format!("{}:{NODE_PORT}", node_address(node)));
        }
        // A rule on a table that does not exist yet fails later, far from
        // the cause: check that iptables works here now.
        run("iptables", &["-w", "-F", "FORWARD"])?;
        Ok(network)
    }

    /// Every node on its own loopback port (no root: no cuts).
    pub fn loopback(nodes: usize) -> Result<Self, NemesisError> {
        let mut addresses = Vec::new();
        for _ in 0..nodes {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|error| NemesisError::Setup(format!("finding a free port: {error}")))?;
            let port = listener
                .local_addr()
                .map_err(|error| NemesisError::Setup(format!("finding a free port: {error}")))?
                .port();
            addresses.push(format!("127.0.0.1:{port}"));
        }
        Ok(Self {
            namespaces: Vec::new(),
            addresses,
            cuts: BTreeMap::new(),
        })
    }

    /// Whether links can be cut.
    pub fn can_cut(&self) -> bool {
        !self.namespaces.is_empty()
    }

    /// The address node `node` listens on.
    pub fn address(&self, node: usize) -> &str {
        &self.addresses[node]
    }

    /// Every node's address, in node order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// A hook for [`crate::launch::Processes`] that starts every node in
    /// its own namespace.
    pub fn preparer(&self) -> crate::launch::Prepare {
        let namespaces = self.namespaces.clone();
        Box::new(move |node, command| {
            if let Some(namespace) = namespaces.get(node) {
                crate::io::process::enter_network_namespace(command, namespace);
            }
        })
    }

    /// Cuts the directed links `(from, to)`: packets from `from` to `to`
    /// are dropped. Cuts count: a link cut twice needs two mends.
    pub fn cut(&mut self, links: &[(usize, usize)]) -> Result<(), NemesisError> {
        if !self.can_cut() {
            return Err(NemesisError::Setup("links can be cut only as root".into()));
        }
        for &link in links {
            let count = self.cuts.entry(link).or_insert(0);
            *count += 1;
            if *count == 1 {
                iptables("-A", link)?;
            }
        }
        Ok(())
    }

    /// Undoes one [`Self::cut`] of each link.
    pub fn mend(&mut self, links: &[(usize, usize)]) -> Result<(), NemesisError> {
        for link in links {
            let Some(count) = self.cuts.get_mut(link) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.cuts.remove(link);
                iptables("-D", *link)?;
            }
        }
        Ok(())
    }

    /// Mends every link.
    pub fn mend_all(&mut self) -> Result<(), NemesisError> {
        self.cuts.clear();
        if self.can_cut() {
            run("iptables", &["-w", "-F", "FORWARD"])?;
        }
        Ok(())
    }

    /// The links cut now.
    pub fn cut_links(&self) -> Vec<(usize, usize)> {
        self.cuts.keys().copied().collect()
    }
}

fn iptables(action: &str, (from, to): (usize, usize)) -> Result<(), NemesisError> {
    run(
        "iptables",
        &[
            "-w",
            action,
            "FORWARD",
            "-s",
            &node_address(from),
            "-d",
            &node_address(to),
            "-j",
            "DROP",
        ],
    )
}

/// Node `node`'s address inside its namespace.
fn node_address(node: usize) -> String {
    format!("10.77.{}.2", node + 1)
}

/// The hub's end of node `node`'s veth.
fn hub_address(node: usize) -> String {
    format!("10.77.{}.1", node + 1)
}

/// Creates node `node`'s namespace with its end of the veth configured, and
/// returns a descriptor that keeps it alive. A helper thread moves itself
/// into the new namespace (a namespace is per thread), runs `ip` there
/// (children start in their parent thread's namespace), and ends; the
/// hub-side end of the veth is created straight in the hub (named by the
/// harness's pid, whose main thread stays in the hub).
fn node_namespace(node: usize) -> Result<OwnedFd, NemesisError> {
    let hub = std::process::id().to_string();
    let hub_side = format!("n{}", node + 1);
    let thread = std::thread::Builder::new()
        .name(format!("netns-n{}", node + 1))
        .spawn(move || -> Result<OwnedFd, NemesisError> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|errno| NemesisError::Setup(format!("unshare(net): {errno}")))?;
            let namespace = File::open("/proc/thread-self/ns/net")
                .map_err(|error| NemesisError::Setup(format!("opening a netns: {error}")))?;
            run("ip", &["link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "link", "add", "eth0", "type", "veth", "peer", "name", &hub_side, "netns", &hub,
                ],
            )?;
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/24", node_address(node)),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["link", "set", "eth0", "up"])?;
            run(
                "ip",
                &["route", "add", "default", "via", &hub_address(node)],
            )?;
            Ok(OwnedFd::from(namespace))
        })
        .map_err(|error| NemesisError::Setup(format!("spawning a thread: {error}")))?;
    thread
        .join()
        .map_err(|_| NemesisError::Setup("the namespace thread panicked".into()))?
}
