//! `rast cluster`: a local N-node cluster of real `rast serve` processes in
//! the foreground. It waits for a leader, shows an append and a read, then
//! runs until Ctrl-C (or stops at once with `--demo-only`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rast::client::{Client, ClientOptions};
use rast::launch::{Launch, Output, Processes};

use super::ClusterArgs;

/// How long the nodes get to exit after SIGTERM when the cluster stops.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    rast::io::signal::install_stop_handlers().context("installing signal handlers")?;
    let executable = std::env::current_exe().context("finding the rast executable")?;
    let addresses: Vec<String> = (0..args.nodes)
        .map(|node| format!("127.0.0.1:{}", args.port + node))
        .collect();
    let data: Vec<PathBuf> = (0..args.nodes)
        .map(|node| args.data.join(format!("node{}", node + 1)))
        .collect();
    let certs = args.data.join("certs");
    if args.tls && !(certs.join("ca.pem").exists() && certs.join("ca.key").exists()) {
        crate::certs::run(&crate::certs::CertsArgs {
            out: certs.clone(),
            nodes: (1..=args.nodes)
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(","),
            hosts: "127.0.0.1,localhost".to_owned(),
            force: false,
        })
        .context("making TLS certificates")?;
    }
    let tls = args.tls.then(|| certs.clone());
    let mut processes = Processes::new(Launch {
        binary: executable,
        addresses: addresses.clone(),
        metrics: Vec::new(),
        data: data.clone(),
        cores: args.cores,
        args: vec![
            "--storage".to_owned(),
            rast::server::Named::name(args.storage).to_owned(),
        ],
        env: Vec::new(),
        output: Output::Inherit,
        die_with_parent: true,
        tls: tls.clone(),
    });
    for (node, address) in addresses.iter().enumerate() {
        if let Err(error) = processes.start(node) {
            processes.stop_all(STOP_GRACE);
            return Err(error).with_context(|| format!("starting node {}", node + 1));
        }
        println!(
            "node {} listening on {address} (data {})",
            node + 1,
            data[node].display()
        );
    }
    if let Some(certs) = &tls {
        println!(
            "TLS on: clients need --tls-ca {} (or RAST_TLS_CA)",
            certs.join("ca.pem").display()
        );
    }
    let outcome = demo(&addresses, tls.as_deref());
    if let Err(error) = &outcome {
        eprintln!("rast cluster: demo failed: {error:#}");
    }
    if outcome.is_ok() && !args.demo_only {
        println!(
            "cluster running; try: rast append hello / rast read / rast status. Ctrl-C stops it."
        );
        while !rast::io::signal::stopping() {
            for (node, status) in processes.reap() {
                eprintln!(
                    "rast cluster: node {} exited ({status}); stopping",
                    node + 1
                );
                rast::io::signal::request_stop();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    processes.stop_all(STOP_GRACE);
    println!("cluster stopped");
    outcome
}

/// Waits for a leader, appends two entries and reads them back.
fn demo(addresses: &[String], certs: Option<&std::path::Path>) -> anyhow::Result<()> {
    let tls = certs
        .map(|certs| rast_client::TlsOptions::from_files(&certs.join("ca.pem"), None))
        .transpose()?;
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        tls,
        ..ClientOptions::default()
    };
    let mut client = Client::new(addresses, options)?;
    let started = Instant::now();
    let appended = client
        .append(
            "default",
            &[b"hello from rast".as_slice(), b"replicated on a majority"],
        )
        .context("appending the demo entries")?;
    println!(
        "appended 2 entries at index {} (term {}) in {:.0?}",
        appended.first_index,
        appended.term,
        started.elapsed()
    );
    for (index, payload) in client.read("default", appended.first_index, 2)? {
        println!("read back {index}\t{}", String::from_utf8_lossy(&payload));
    }
    for address in addresses {
        let status = client.status_of(address, "default")?;
        println!(
            "node {} at {address}: {} term {} commit {}",
            status.node_id, status.role, status.term, status.commit_index
        );
    }
    Ok(())
}
