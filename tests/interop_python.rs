//! Interop: the Python example (on the `rast_client` package, pycapnp and
//! `schema/rast.capnp`) appends to a real cluster and the Rust client reads
//! the same entries: the protocol is standard Cap'n Proto that other
//! languages speak (`scripts/setup` installs pycapnp).

mod common;

use std::process::Command;

/// The Python example appends two payloads and prints them back with the
/// indexes the cluster assigned; the Rust client reads the same entries.
#[test]
fn python_pycapnp_client_appends_and_reads() {
    let cluster = common::Cluster::start("python", 3, 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/append_read.py"
    );
    let output = Command::new("python3")
        .arg(script)
        // The package from the source tree (tests/python_package.rs checks
        // it installed).
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python"),
        )
        .arg(cluster.addresses.join(","))
        .args(["from-python-1", "from-python-2"])
        .output()
        .expect("running python3 (scripts/setup installs it and pycapnp)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<(u64, String)> = stdout
        .lines()
        .map(|line| {
            let (index, payload) = line.split_once('\t').expect("index<TAB>payload");
            (index.parse().unwrap(), payload.to_owned())
        })
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0].1, "from-python-1");
    assert_eq!(lines[1].1, "from-python-2");
    assert_eq!(lines[1].0, lines[0].0 + 1);

    let mut client = cluster.client();
    let entries = client
        .read("default", rast::types::LogIndex(lines[0].0), 2)
        .unwrap();
    assert_eq!(entries[0].1, b"from-python-1");
    assert_eq!(entries[1].1, b"from-python-2");
}
