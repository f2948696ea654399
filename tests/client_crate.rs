//! The `rast-client` crate on its own: its example program (a Rust
//! application with only that crate as a dependency) appends to a real
//! cluster and reads the entries back.

mod common;

use std::process::Command;

#[test]
fn the_client_crate_example_appends_and_reads_back() {
    let cluster = common::Cluster::start("client-crate", 3, 1);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "-p",
            "rast-client",
            "--example",
            "append_read",
            "--",
        ])
        .arg(cluster.addresses.join(","))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<(u64, &str)> = stdout
        .lines()
        .map(|line| {
            let (index, payload) = line.split_once('\t').expect("index<TAB>payload");
            (index.parse().unwrap(), payload)
        })
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!((lines[0].1, lines[1].1), ("hello", "world"));
    assert_eq!(lines[1].0, lines[0].0 + 1);
    // The entries are the cluster's: read back through another client.
    let entries = cluster.read_all(0, "default", lines[1].0);
    assert_eq!(
        entries.get(&lines[0].0).map(Vec::as_slice),
        Some(b"hello".as_slice())
    );
}
