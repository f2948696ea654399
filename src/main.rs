//! The `rast` command line: the server, a local cluster, and client verbs.
//!
//! Errors are one clear line on stderr and a non-zero exit code: 1 for "the
//! answer is no" (a missing key, a cas mismatch), 2 for everything else.
//!
//! The client options (`--cluster`, `--log`, `--output`, …) are global: they
//! may come anywhere on the line, before or after a verb's own arguments
//! (`rast admin snapshot --cluster A` as well as `rast admin --cluster A
//! snapshot`), as etcdctl users expect.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use rast::client::{CasOutcome, Client, ClientOptions};
use rast::types::LogIndex;
use rast::wire::client::{AdminRequest, ResponseBody};

mod certs;
mod cluster;
mod serve;

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

/// Options shared by every client verb (global: accepted anywhere after
/// the verb).
#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// Comma-separated node addresses.
    #[arg(long, default_value = DEFAULT_CLUSTER, env = "RAST_CLUSTER", global = true)]
    cluster: String,
    /// The named log.
    #[arg(long, default_value = "default", global = true)]
    log: String,
    /// Cluster id to present in the handshake.
    #[arg(long, default_value = "rast", global = true)]
    cluster_id: String,
    /// File holding the cluster's shared token.
    #[arg(long, global = true)]
    token_file: Option<std::path::PathBuf>,
    /// Seconds to keep looking for a leader.
    #[arg(long, default_value_t = 15, global = true)]
    timeout_seconds: u64,
    /// Output format of `status`, `read` and `admin members`: lines for
    /// people, or one JSON document for scripts.
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: Output,
    /// TLS: the cluster's CA certificate (PEM); set it to talk to nodes
    /// that serve TLS.
    #[arg(long, value_name = "PEM", env = "RAST_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// TLS: this client's certificate chain (PEM), for nodes that require
    /// one (--client-cert-auth); with --tls-key.
    #[arg(long, value_name = "PEM", env = "RAST_TLS_CERT", global = true)]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", env = "RAST_TLS_KEY", global = true)]
    tls_key: Option<std::path::PathBuf>,
    /// TLS: the name the nodes' certificates must carry [default: the host
    /// of each address].
    #[arg(long, value_name = "NAME", global = true)]
    tls_server_name: Option<String>,
}

/// How results are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// Lines for people.
    Text,
    /// One JSON document.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(Box<serve::ServeArgs>),
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
    /// Follow a log: print `index<TAB>payload` lines as entries commit.
    Tail {
        #[command(flatten)]
        client: ClientArgs,
        /// First index [default: the first entry the log still keeps].
        #[arg(long, default_value_t = 0)]
        from: u64,
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
    /// Fault-test a local cluster of real processes: a seeded schedule of
    /// kills, pauses, partitions and full disks under a recorded workload,
    /// then an independent check of the history (exit 1 when a check fails).
    Nemesis(NemesisArgs),
    /// Measure throughput and latency against a cluster (started here, or
    /// --cluster), with the machine's limits and ratios; see docs/benchmarks.md.
    Bench(rast::bench::Args),
    /// Print a completion script for SHELL (e.g. `rast completions bash >
    /// /etc/bash_completion.d/rast`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `rast man | man -l -`).
    Man,
    /// Make a CA and node and client certificates for a cluster's TLS
    /// (files for `rast serve --tls-*` and the clients' --tls-*).
    Certs(certs::CertsArgs),
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
    /// Where logs are stored: disk or memory.
    #[arg(long, default_value = "disk", value_parser = <rast::server::StorageMode as rast::server::Named>::parse_named)]
    storage: rast::server::StorageMode,
    /// Start, show one append and read, then stop (for scripts and CI).
    #[arg(long)]
    demo_only: bool,
    /// Serve TLS: make a CA and certificates under DATA/certs (`rast
    /// certs`) unless they are there, and start every node with them.
    #[arg(long)]
    tls: bool,
}

/// Options of `rast nemesis`.
#[derive(clap::Args, Debug)]
struct NemesisArgs {
    /// Seed of the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// What to stress.
    #[arg(long, value_enum, default_value = "mixed")]
    scenario: rast::nemesis::schedule::Scenario,
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload and faults (default 60).
    #[arg(long, conflicts_with = "minutes")]
    seconds: Option<u64>,
    /// Minutes of workload and faults.
    #[arg(long)]
    minutes: Option<u64>,
    /// Directory for the run's directory (history, verdict, node logs).
    #[arg(long, default_value = "target/nemesis")]
    out: std::path::PathBuf,
    /// Log clients (each appends to both logs and reads them back).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Key-value clients (when the server serves the store).
    #[arg(long, default_value_t = 2)]
    kv_clients: usize,
    /// Do not fail the run when the key-value store is not served (for
    /// servers that predate it); the verdict then says "KV not served".
    #[arg(long)]
    kv_optional: bool,
    /// Seconds the cluster may take to accept writes after the last fault.
    #[arg(long, default_value_t = 30)]
    recovery_seconds: u64,
    /// Cores per node.
    #[arg(long, default_value_t = 1)]
    cores: u32,
    /// Copy the nodes' data directories into the run directory on failure.
    #[arg(long)]
    keep_data: bool,
    /// Stay on loopback even as root (no partitions, no full disks).
    #[arg(long)]
    no_namespace: bool,
    /// One more `rast serve` argument for every node (repeat it), e.g.
    /// `--serve-arg=--snapshot-log-bytes=1048576` to snapshot often.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Run no cluster: judge the run in this directory again from its
    /// files (history and final logs) with this build's checkers.
    #[arg(long)]
    check: Option<std::path::PathBuf>,
}

/// A "no" answer that is not a failure of the tool (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Negative(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Verbs that print for people and pipes end quietly when the reader
    // goes away; the long-running ones keep SIGPIPE ignored (sockets).
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Cluster(_) | Command::Bench(_) | Command::Nemesis(_)
    ) {
        let _ = rast::io::signal::end_quietly_on_closed_pipe();
    }
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
        Command::Serve(args) => serve::run(*args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Append { client, payloads } => append(&client, &payloads),
        Command::Read {
            client,
            from,
            count,
        } => {
            let mut connection = connect(&client)?;
            let entries = connection.read(&client.log, LogIndex(from), count)?;
            let mut out = std::io::stdout().lock();
            if client.output == Output::Json {
                let entries: Vec<_> = entries
                    .iter()
                    .map(|(index, payload)| {
                        serde_json::json!({
                            "index": index.get(),
                            "payload": String::from_utf8_lossy(payload),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(entries))?;
                return Ok(());
            }
            for (index, payload) in entries {
                writeln!(out, "{index}\t{}", String::from_utf8_lossy(&payload))?;
            }
            Ok(())
        }
        Command::Tail { client, from } => {
            let mut connection = connect(&client)?;
            let mut out = std::io::stdout().lock();
            for entry in connection.tail(&client.log, LogIndex(from))? {
                let (index, payload) = entry?;
                writeln!(out, "{index}\t{}", String::from_utf8_lossy(&payload))?;
                out.flush()?;
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rast", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Nemesis(args) => nemesis(args),
        Command::Bench(args) => {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            Ok(rast::bench::run(&args, &command)?)
        }
    }
}

fn nemesis(args: NemesisArgs) -> anyhow::Result<()> {
    if let Some(run) = &args.check {
        let verdict = rast::nemesis::recheck(run)?;
        print!("{}", verdict.summary);
        anyhow::ensure!(verdict.pass, Negative("a check failed".into()));
        return Ok(());
    }
    anyhow::ensure!(args.nodes == 3 || args.nodes == 5, "--nodes must be 3 or 5");
    let seconds = args
        .seconds
        .or(args.minutes.map(|minutes| minutes * 60))
        .unwrap_or(60);
    let options = rast::nemesis::Options {
        seed: args.seed,
        scenario: args.scenario,
        nodes: args.nodes,
        seconds,
        out: args.out,
        binary: std::env::current_exe().context("finding the rast binary")?,
        clients: args.clients,
        kv_clients: args.kv_clients,
        require_kv: !args.kv_optional,
        recovery_seconds: args.recovery_seconds,
        cores: args.cores,
        keep_data: args.keep_data,
        no_namespace: args.no_namespace,
        serve_args: args.serve_args.clone(),
    };
    let outcome = rast::nemesis::run(&options)?;
    print!("{}", outcome.verdict.summary);
    println!("files       {}", outcome.run.display());
    if outcome.verdict.pass {
        Ok(())
    } else {
        Err(Negative(format!(
            "a check failed (seed {}); replay: {}",
            options.seed,
            rast::nemesis::replay_command(&options)
        ))
        .into())
    }
}

fn options(args: &ClientArgs) -> anyhow::Result<ClientOptions> {
    let token = match &args.token_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading token file {}", path.display()))?
            .trim_ascii()
            .to_vec(),
        None => Vec::new(),
    };
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (None, None, None) => None,
        (Some(ca), cert, key) => {
            let identity = match (cert, key) {
                (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                (None, None) => None,
                _ => anyhow::bail!("--tls-cert and --tls-key go together"),
            };
            let mut tls = rast_client::TlsOptions::from_files(ca, identity)?;
            tls.server_name.clone_from(&args.tls_server_name);
            Some(tls)
        }
        (None, _, _) => anyhow::bail!("TLS needs --tls-ca (the cluster's CA certificate)"),
    };
    Ok(ClientOptions {
        cluster_id: args.cluster_id.clone(),
        token,
        deadline: std::time::Duration::from_secs(args.timeout_seconds),
        tls,
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
    let mut nodes = Vec::new();
    for address in addresses(args) {
        let status = client.status_of(&address, &args.log);
        if status.is_err() {
            failures += 1;
        }
        if args.output == Output::Json {
            nodes.push(status_json(&address, status));
            continue;
        }
        match status {
            Ok(status) => {
                println!(
                    "node {} at {address}: {} term {} leader {} first {} snapshot {} last {} commit {} applied {}{}{}{}",
                    status.node_id,
                    status.role,
                    status.term,
                    status.leader,
                    status.first_index,
                    status.snapshot_index,
                    status.last_index,
                    status.commit_index,
                    status.applied_index,
                    if status.tls.is_empty() || status.tls == "off" {
                        String::new()
                    } else {
                        format!(" tls {}", status.tls)
                    },
                    if status.damaged_in == 0 {
                        String::new()
                    } else if status.damaged_in == u64::MAX {
                        " DAMAGED: its hard state (term, vote) was lost; it acts once it has heard every other voter's term".to_owned()
                    } else {
                        let votes = match status.acked_end {
                            Some((term, index)) => format!(
                                "votes only for a log at least as up to date as term {term} index {index}, the end of what it may have acknowledged"
                            ),
                            None => "votes again once it holds a committed entry of a later term"
                                .to_owned(),
                        };
                        format!(
                            " DAMAGED in term {}: repairing from the leader (holds up to {}); {votes}",
                            status.damaged_in, status.last_index
                        )
                    },
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
            Err(error) => println!("{address}: unreachable ({error})"),
        }
    }
    if args.output == Output::Json {
        println!("{}", serde_json::Value::Array(nodes));
    }
    anyhow::ensure!(failures == 0, "{failures} node(s) unreachable");
    Ok(())
}

/// One node's status as JSON: its fields, or `error` when unreachable.
fn status_json<E: std::fmt::Display>(
    address: &str,
    status: Result<rast::wire::client::Status, E>,
) -> serde_json::Value {
    match status {
        Ok(status) => {
            let peers: Vec<_> = status
                .peers
                .iter()
                .map(|peer| {
                    serde_json::json!({
                        "id": peer.id,
                        "match_index": peer.match_index,
                        "next_index": peer.next_index,
                        "state": peer.state,
                    })
                })
                .collect();
            serde_json::json!({
                "address": address,
                "node_id": status.node_id,
                "role": status.role,
                "term": status.term,
                "leader": status.leader,
                "first_index": status.first_index,
                "snapshot_index": status.snapshot_index,
                "last_index": status.last_index,
                "commit_index": status.commit_index,
                "applied_index": status.applied_index,
                "failed": status.failed,
                "tls": status.tls,
                "damaged_in": status.damaged_in,
                "acked_end": status.acked_end.map(|(term, index)| serde_json::json!({"term": term, "index": index})),
                "peers": peers,
            })
        }
        Err(error) => serde_json::json!({"address": address, "error": error.to_string()}),
    }
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
    // Each log is its own Raft group with its own configuration: the
    // request goes to the leader of each log named by --log (a,b,...).
    let mut client = connect(args)?;
    let logs: Vec<&str> = args
        .log
        .split(',')
        .map(str::trim)
        .filter(|log| !log.is_empty())
        .collect();
    anyhow::ensure!(!logs.is_empty(), "--log names no log");
    for log in logs {
        let answer = client
            .admin_on(log, request.clone())
            .with_context(|| format!("log {log}"))?;
        match answer {
            ResponseBody::Members(members) if args.output == Output::Json => {
                let addresses: serde_json::Map<_, _> = members
                    .addresses
                    .iter()
                    .map(|(id, address)| (id.to_string(), address.clone().into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "log": log,
                        "voters": members.voters,
                        "voters_outgoing": members.voters_outgoing,
                        "learners": members.learners,
                        "addresses": addresses,
                    })
                );
            }
            ResponseBody::Members(members) => {
                println!("log {log}:");
                println!("  voters: {:?}", members.voters);
                if !members.voters_outgoing.is_empty() {
                    println!("  outgoing voters: {:?}", members.voters_outgoing);
                }
                println!("  learners: {:?}", members.learners);
                for (id, address) in members.addresses {
                    println!("  node {id} = {address}");
                }
            }
            ResponseBody::Done => println!("log {log}: done"),
            ResponseBody::Status(status) => println!(
                "log {log}: node {} snapshot at {}; the log holds {}..={}",
                status.node_id, status.snapshot_index, status.first_index, status.last_index
            ),
            other => anyhow::bail!("log {log}: unexpected answer: {other:?}"),
        }
    }
    Ok(())
}
