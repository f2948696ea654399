//! `rast bench` end to end: it starts its own 3-node cluster (in-memory
//! storage, so the test does not depend on the disk), runs a two-point sweep,
//! writes the JSON report and the plot (PNG and SVG), and stops every node it
//! started.
//! A smoke test of the harness, not a performance assertion.

use std::process::Command;

/// A short sweep completes without errors, reports entries for both
/// points, and leaves the plot as a well-formed PNG and an SVG beside the
/// report, and no node processes behind.
#[test]
fn bench_sweep_writes_report_and_plot() {
    let directory = std::env::temp_dir().join(format!("rast-it-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let json = directory.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(["bench", "--no-limits", "--quiet", "--storage", "memory"])
        .args(["--clients", "2", "--sweep", "inflight=1,8"])
        .args(["--duration", "1", "--warmup", "0.3", "--label", "smoke"])
        .arg("--data")
        .arg(&directory)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running rast bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rast bench failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("entries/s"), "no table:\n{stdout}");
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(report.contains("\"label\": \"smoke\""), "{report}");
    assert_eq!(report.matches("\"load\": ").count(), 2, "{report}");
    assert_eq!(report.matches("\"errors\": 0,").count(), 2, "{report}");
    for line in report.lines().filter(|line| line.contains("\"entries\": ")) {
        let value: f64 = line
            .trim()
            .trim_start_matches("\"entries\": ")
            .trim_end_matches(',')
            .parse()
            .unwrap();
        assert!(value > 0.0, "a point measured no entries: {line}");
    }
    // Every point has copies per payload byte (the nodes export the
    // per-path counters) and each node's raw per-path bytes.
    for figure in [
        "leader_copies_per_payload_byte",
        "follower_copies_per_payload_byte",
    ] {
        assert_eq!(report.matches(&format!("\"{figure}\": ")).count(), 2);
        assert!(
            !report.contains(&format!("\"{figure}\": null")),
            "{figure} missing:\n{report}"
        );
    }
    assert_eq!(report.matches("\"payload_bytes_per_node\": [").count(), 2);
    assert!(stdout.contains("ldr cp/B"), "no copies column:\n{stdout}");
    let png = std::fs::read(json.with_extension("png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(json.with_extension("svg")).unwrap();
    assert!(svg.contains("rast bench smoke"), "no title in the SVG");
    assert!(
        stderr.contains("report.png and ") && stderr.contains("report.svg"),
        "{stderr}"
    );
    // The nodes' data directories are gone with the nodes.
    let leftovers: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("rast-bench-")
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&directory);
}
