//! `rast cluster`: a local N-node cluster of real `rast serve` processes in
//! the foreground. It waits for a leader, shows an append and a read, then
//! runs until Ctrl-C (or stops at once with `--demo-only`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rast::client::{Client, ClientOptions};

use super::ClusterArgs;

pub fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    rast::io::signal::install_stop_handlers().context("installing signal handlers")?;
    let executable = std::env::current_exe().context("finding the rast executable")?;
    let addresses: Vec<String> = (0..args.nodes)
        .map(|node| format!("127.0.0.1:{}", args.port + node))
        .collect();
    let peers = addresses
        .iter()
        .enumerate()
        .map(|(node, address)| format!("{}={address}", node + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children: Vec<Child> = Vec::new();
    for (node, address) in addresses.iter().enumerate() {
        let data = args.data.join(format!("node{}", node + 1));
        let child = Command::new(&executable)
            .args([
                "serve",
                "--id",
                &(node + 1).to_string(),
                "--listen",
                address,
            ])
            .args(["--peers", &peers, "--cores", &args.cores.to_string()])
            .arg("--data")
            .arg(&data)
            .args(["--storage", storage_name(args.storage)])
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting node {}", node + 1));
        match child {
            Ok(child) => children.push(child),
            Err(error) => {
                stop(&mut children);
                return Err(error);
            }
        }
        println!(
            "node {} listening on {address} (data {})",
            node + 1,
            data.display()
        );
    }
    let outcome = demo(&addresses);
    if let Err(error) = &outcome {
        eprintln!("rast cluster: demo failed: {error:#}");
    }
    if outcome.is_ok() && !args.demo_only {
        println!(
            "cluster running; try: rast append hello / rast read / rast status. Ctrl-C stops it."
        );
        while !rast::io::signal::stopping() {
            for (node, child) in children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!(
                        "rast cluster: node {} exited ({status}); stopping",
                        node + 1
                    );
                    rast::io::signal::request_stop();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stop(&mut children);
    println!("cluster stopped");
    outcome
}

fn storage_name(mode: rast::server::StorageMode) -> &'static str {
    match mode {
        rast::server::StorageMode::Disk => "disk",
        rast::server::StorageMode::Memory => "memory",
    }
}

/// Waits for a leader, appends two entries and reads them back.
fn demo(addresses: &[String]) -> anyhow::Result<()> {
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
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

/// SIGTERM to every node, then wait for each to exit.
fn stop(children: &mut [Child]) {
    for child in children.iter() {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}
