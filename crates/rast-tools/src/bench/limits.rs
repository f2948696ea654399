//! The machine's own limits, measured in the same run by
//! `scripts/bench-limits --machine` (fio, and iperf3 when present), which
//! prints one `LIMIT key=value …` line per measurement:
//!
//! ```text
//! LIMIT name=sync4k iops=4210.5 sync_p50_us=221.2 sync_p99_us=410.6 op_p50_us=236.0 …
//! LIMIT name=durable1m bytes_per_s=2.1e8
//! LIMIT name=loopback bits_per_s=1.6e10
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::BenchError;

/// Measured limits: `name.key` → value.
pub type Limits = BTreeMap<String, f64>;

/// Runs the script on the filesystem of `directory` for `seconds` per
/// measurement.
pub fn measure(script: &Path, directory: &Path, seconds: u32) -> Result<Limits, BenchError> {
    let output = Command::new(script)
        .arg("--machine")
        .env("RAST_BENCH_DIR", directory)
        .env("RAST_BENCH_SECONDS", seconds.to_string())
        .output()
        .map_err(|error| BenchError::Setup(format!("running {}: {error}", script.display())))?;
    if !output.status.success() {
        return Err(BenchError::Setup(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(parse(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses `LIMIT` lines.
pub fn parse(text: &str) -> Limits {
    let mut limits = Limits::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("LIMIT ") else {
            continue;
        };
        let fields: Vec<(&str, &str)> = rest
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .collect();
        let Some(name) = fields
            .iter()
            .find(|(key, _)| *key == "name")
            .map(|(_, value)| *value)
        else {
            continue;
        };
        for (key, value) in fields {
            if let Ok(value) = value.parse::<f64>() {
                limits.insert(format!("{name}.{key}"), value);
            }
        }
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's lines become `name.key` entries; text and junk are skipped.
    #[test]
    fn parses_limit_lines() {
        let limits = parse(
            "fio on /dev/vda\nLIMIT name=sync4k iops=4210.5 sync_p50_us=221\nLIMIT name=durable1m bytes_per_s=2.5e8 unit=B\nnoise",
        );
        assert_eq!(limits.get("sync4k.iops"), Some(&4210.5));
        assert_eq!(limits.get("sync4k.sync_p50_us"), Some(&221.0));
        assert_eq!(limits.get("durable1m.bytes_per_s"), Some(&2.5e8));
        assert!(!limits.contains_key("durable1m.unit"));
    }
}
