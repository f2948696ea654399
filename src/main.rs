//! The `rast` command line: the server, a local cluster, and client verbs.
//!
//! Errors are one clear line on stderr and a non-zero exit code: 1 for "the
//! answer is no" (a missing key, a cas mismatch), 2 for everything else.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rast::client::{CasOutcome, Client, ClientOptions};
use rast::types::LogIndex;
use rast::wire::client::{AdminRequest, ResponseBody};

mod cluster;

/// Default addresses: those `rast cluster` starts.
const DEFAULT_CLUSTER: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Parser, Debug)]
#[command(
    name = "rast",
    version,
    about = "A Raft replicated-log server and its client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every client verb.
#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// Comma-separated node addresses.
    #[arg(long, default_value = DEFAULT_CLUSTER, env = "RAST_CLUSTER")]
    cluster: String,
    /// The named log.
    #[arg(long, default_value = "default")]
    log: String,
    /// Cluster id to present in the handshake.
    #[arg(long, default_value = "rast")]
    cluster_id: String,
    /// File holding the cluster's shared token.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Seconds to keep looking for a leader.
    #[arg(long, default_value_t = 15)]
    timeout_seconds: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Start a local cluster of real `rast serve` processes in the foreground.
    Cluster(ClusterArgs),
    /// Append entries (arguments, or one entry per stdin line); prints each index.
    Append {
        #[command(flatten)]
        client: ClientArgs,
        /// Payloads; none means read stdin lines.
        payloads: Vec<String>,
    },
    /// Print committed entries as `index<TAB>payload`.
    Read {
        #[command(flatten)]
        client: ClientArgs,
        /// First index.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Number of entries (0: as many as one response holds).
        #[arg(long, default_value_t = 0)]
        count: u32,
    },
    /// Print each node's role, term, last and commit index, per-peer match.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set KEY to VALUE.
    Put {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value of KEY (exit 1 and "not found" when missing).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
        /// Read the local copy without a quorum round (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Set KEY to NEW only if it holds EXPECTED (exit 1 and the current value on mismatch).
    Cas {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
        /// The value it must hold.
        expected: String,
        /// The value to set.
        new: String,
        /// Require the key to be absent instead of holding EXPECTED.
        #[arg(long)]
        absent: bool,
    },
    /// Remove KEY.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
    },
    /// Measure throughput and latency against a cluster (started here, or
    /// --cluster), with the machine's limits and ratios; see BENCHMARKS.md.
    Bench(rast::bench::Args),
    /// Membership and maintenance.
    Admin {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand, Debug)]
enum AdminAction {
    /// Add a node as a learner.
    AddLearner {
        /// Node id.
        id: u64,
        /// Its address.
        address: String,
    },
    /// Promote a caught-up learner to voter.
    Promote {
        /// Node id.
        id: u64,
    },
    /// Remove a node.
    Remove {
        /// Node id.
        id: u64,
    },
    /// Transfer leadership to a node.
    TransferLeader {
        /// Node id.
        id: u64,
    },
    /// Print the configuration.
    Members,
    /// Take a snapshot now.
    Snapshot,
}

/// Options of `rast serve`.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// This node's id (one of --peers).
    #[arg(long)]
    id: u64,
    /// Address to listen on, for peers and clients.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Every node as ID=ADDR, comma-separated, this one included.
    #[arg(long)]
    peers: String,
    /// Data directory.
    #[arg(long)]
    data: std::path::PathBuf,
    /// Cores (threads) to run; default: all. Every node needs the same.
    #[arg(long)]
    cores: Option<u32>,
    /// Cluster id required in every handshake.
    #[arg(long, default_value = "rast")]
    cluster_id: String,
    /// File holding a shared token that peers and clients must present.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Where logs are stored.
    #[arg(long, value_enum, default_value = "disk")]
    storage: rast::server::StorageMode,
    /// Follower receive path.
    #[arg(long, value_enum, default_value = "buffer")]
    zero_copy: rast::server::ZeroCopy,
    /// Logs to create at start (others are created on first use).
    #[arg(long, default_value = "default")]
    logs: String,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Options of `rast cluster`.
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Parent data directory (one subdirectory per node).
    #[arg(long, default_value = "./rast-data")]
    data: std::path::PathBuf,
    /// Port of node 1; node N listens on port + N - 1.
    #[arg(long, default_value_t = 7001)]
    port: u16,
    /// Cores per node.
    #[arg(long, default_value_t = 1)]
    cores: u32,
    /// Where logs are stored.
    #[arg(long, value_enum, default_value = "disk")]
    storage: rast::server::StorageMode,
    /// Start, show one append and read, then stop (for scripts and CI).
    #[arg(long)]
    demo_only: bool,
}

/// A "no" answer that is not a failure of the tool (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Negative(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A benchmark's table should not drown in its in-process nodes' logs.
    let default_filter = if matches!(cli.command, Command::Bench(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let negative = error.downcast_ref::<Negative>().is_some();
            eprintln!("rast: {error:#}");
            ExitCode::from(if negative { 1 } else { 2 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Append { client, payloads } => append(&client, &payloads),
        Command::Read {
            client,
            from,
            count,
        } => {
            let mut connection = connect(&client)?;
            let entries = connection.read(&client.log, LogIndex(from), count)?;
            let mut out = std::io::stdout().lock();
            for (index, payload) in entries {
                writeln!(out, "{index}\t{}", String::from_utf8_lossy(&payload))?;
            }
            Ok(())
        }
        Command::Status { client } => status(&client),
        Command::Put { client, key, value } => {
            connect(&client)?.put(key.as_bytes(), value.as_bytes())?;
            Ok(())
        }
        Command::Get { client, key, stale } => {
            match connect(&client)?.get(key.as_bytes(), stale)? {
                Some(value) => {
                    println!("{}", String::from_utf8_lossy(&value));
                    Ok(())
                }
                None => Err(Negative(format!("{key}: not found")).into()),
            }
        }
        Command::Cas {
            client,
            key,
            expected,
            new,
            absent,
        } => {
            let expected = (!absent).then_some(expected.as_bytes());
            match connect(&client)?.cas(key.as_bytes(), expected, new.as_bytes())? {
                CasOutcome::Swapped => Ok(()),
                CasOutcome::Mismatch(Some(current)) => Err(Negative(format!(
                    "{key}: precondition failed; current value: {}",
                    String::from_utf8_lossy(&current)
                ))
                .into()),
                CasOutcome::Mismatch(None) => {
                    Err(Negative(format!("{key}: precondition failed; key is absent")).into())
                }
            }
        }
        Command::Delete { client, key } => {
            connect(&client)?.delete(key.as_bytes())?;
            Ok(())
        }
        Command::Admin { client, action } => admin(&client, action),
        Command::Bench(args) => {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            Ok(rast::bench::run(&args, &command)?)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut peers = Vec::new();
    for item in args
        .peers
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, address) = item
            .split_once('=')
            .with_context(|| format!("--peers item {item:?} is not ID=ADDR"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--peers id {id:?} is not a number"))?;
        peers.push((rast::types::NodeId(id), address.to_owned()));
    }
    let token = match &args.token_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading token file {}", path.display()))?
            .trim_ascii()
            .to_vec(),
        None => Vec::new(),
    };
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |cores| cores.get() as u32)
    });
    rast::server::serve(rast::server::Settings {
        id: rast::types::NodeId(args.id),
        listen: args.listen,
        peers,
        data: args.data,
        cores,
        cluster_id: args.cluster_id,
        token,
        storage: args.storage,
        zero_copy: args.zero_copy,
        logs: args
            .logs
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect(),
        metrics_addr: args.metrics_addr,
    })?;
    Ok(())
}

fn options(args: &ClientArgs) -> anyhow::Result<ClientOptions> {
    let token = match &args.token_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading token file {}", path.display()))?
            .trim_ascii()
            .to_vec(),
        None => Vec::new(),
    };
    Ok(ClientOptions {
        cluster_id: args.cluster_id.clone(),
        token,
        deadline: std::time::Duration::from_secs(args.timeout_seconds),
        ..ClientOptions::default()
    })
}

fn addresses(args: &ClientArgs) -> Vec<String> {
    args.cluster
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect()
}

fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&addresses(args), options(args)?)?)
}

fn append(args: &ClientArgs, payloads: &[String]) -> anyhow::Result<()> {
    let mut client = connect(args)?;
    let mut out = std::io::stdout().lock();
    let mut emit = |client: &mut Client, payloads: &[String]| -> anyhow::Result<()> {
        let appended = client.append(&args.log, payloads)?;
        for offset in 0..u64::from(appended.count) {
            writeln!(out, "{}", appended.first_index.get() + offset)?;
        }
        Ok(())
    };
    if payloads.is_empty() {
        for line in std::io::stdin().lock().lines() {
            emit(&mut client, &[line.context("reading stdin")?])?;
        }
        Ok(())
    } else {
        emit(&mut client, payloads)
    }
}

fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let client = connect(args)?;
    let mut failures = 0;
    for address in addresses(args) {
        match client.status_of(&address, &args.log) {
            Ok(status) => {
                println!(
                    "node {} at {address}: {} term {} leader {} last {} commit {} applied {}{}",
                    status.node_id,
                    status.role,
                    status.term,
                    status.leader,
                    status.last_index,
                    status.commit_index,
                    status.applied_index,
                    if status.failed.is_empty() {
                        String::new()
                    } else {
                        format!(" FAILED: {}", status.failed)
                    }
                );
                for peer in status.peers {
                    println!(
                        "  peer {}: match {} next {} {}",
                        peer.id, peer.match_index, peer.next_index, peer.state
                    );
                }
            }
            Err(error) => {
                failures += 1;
                println!("{address}: unreachable ({error})");
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} node(s) unreachable");
    Ok(())
}

fn admin(args: &ClientArgs, action: AdminAction) -> anyhow::Result<()> {
    let request = match action {
        AdminAction::AddLearner { id, address } => AdminRequest::AddLearner { id, address },
        AdminAction::Promote { id } => AdminRequest::Promote(id),
        AdminAction::Remove { id } => AdminRequest::Remove(id),
        AdminAction::TransferLeader { id } => AdminRequest::TransferLeader(id),
        AdminAction::Members => AdminRequest::Members,
        AdminAction::Snapshot => AdminRequest::Snapshot,
    };
    match connect(args)?.admin(request)? {
        ResponseBody::Members(members) => {
            println!("voters: {:?}", members.voters);
            if !members.voters_outgoing.is_empty() {
                println!("outgoing voters: {:?}", members.voters_outgoing);
            }
            println!("learners: {:?}", members.learners);
            for (id, address) in members.addresses {
                println!("  {id} = {address}");
            }
            Ok(())
        }
        ResponseBody::Done => Ok(()),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}
