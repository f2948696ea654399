//! A run's files: its directory, the history and the final logs it
//! writes, and judging a finished run again from them (`rast nemesis
//! --check DIR`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::verdict::{self, Evidence, KvStatus, Verdict};
use super::{NemesisError, Options, workload};
use crate::check::log::NodeLog;
use crate::check::wgl::Budget;
use crate::types::{LogIndex, NodeId};

pub(super) fn make_run_dir(out: &Path, options: &Options) -> Result<PathBuf, NemesisError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let run = out.join(format!(
        "{stamp}-{}-seed{}-{}",
        options.scenario.name(),
        options.seed,
        std::process::id()
    ));
    std::fs::create_dir_all(&run)
        .map_err(|error| NemesisError::Setup(format!("creating {}: {error}", run.display())))?;
    write(
        &run.join("driver.pid"),
        &format!("{}\n", std::process::id()),
    )?;
    Ok(run)
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), NemesisError> {
    std::fs::write(path, text)
        .map_err(|error| NemesisError::Setup(format!("writing {}: {error}", path.display())))
}

pub(super) fn write_history(
    path: &Path,
    history: &crate::check::history::History<workload::NemesisOp>,
) -> Result<(), NemesisError> {
    let file = std::fs::File::create(path)
        .map_err(|error| NemesisError::Setup(format!("creating {}: {error}", path.display())))?;
    history
        .write_text(std::io::BufWriter::new(file))
        .map_err(|error| NemesisError::Setup(format!("writing {}: {error}", path.display())))
}

/// `log node index identity` per line, after the commit indexes.
pub(super) fn write_final_logs(
    path: &Path,
    final_logs: &[Vec<NodeLog>; 2],
    index_commit: [LogIndex; 2],
) -> Result<(), NemesisError> {
    let mut text = format!(
        "# commit {} {}\n# log node index identity\n",
        index_commit[0], index_commit[1]
    );
    for (log, node_logs) in final_logs.iter().enumerate() {
        for node_log in node_logs {
            for (offset, identity) in node_log.payloads.iter().enumerate() {
                let _ = writeln!(
                    text,
                    "{} {} {} {identity}",
                    workload::LOG_LETTERS[log],
                    node_log.node,
                    offset + 1
                );
            }
        }
    }
    write(path, &text)
}

/// Judges a finished run again from its files (`history.txt`,
/// `final-logs.txt`): the log and key-value checks, with this build's
/// checkers. For runs whose checks changed, or to look at a failure again.
pub fn recheck(run: &Path) -> Result<Verdict, NemesisError> {
    let read = |name: &str| {
        std::fs::read_to_string(run.join(name)).map_err(|error| {
            NemesisError::Setup(format!("reading {}: {error}", run.join(name).display()))
        })
    };
    let history =
        crate::check::history::History::<workload::NemesisOp>::parse_text(&read("history.txt")?)
            .map_err(|error| NemesisError::Setup(format!("history.txt: {error}")))?;
    let (final_logs, index_commit) = parse_final_logs(&read("final-logs.txt")?)?;
    let kv = if history
        .events()
        .iter()
        .any(|event| matches!(event.op, workload::NemesisOp::Kv(_)))
    {
        KvStatus::Served
    } else {
        KvStatus::NotServed("no key-value operation in the history".into())
    };
    let evidence = Evidence {
        history,
        final_logs,
        index_commit,
        convergence: [None, None],
        kv,
        require_kv: false,
        heals_ns: Vec::new(),
        recovery_final: Ok(0),
        recovery_ms_max: 0,
        faults: BTreeMap::new(),
        skipped: BTreeMap::new(),
        exits: Vec::new(),
        repaired: Ok(0),
        run: vec![("rechecked".into(), run.display().to_string().into())],
        replay: format!("rast nemesis --check {}", run.display()),
        from_files: true,
    };
    Ok(verdict::judge(&evidence, &Budget::DEFAULT))
}

/// Reads what [`write_final_logs`] wrote (files without the commit line
/// take each log's longest node log as its commit index).
fn parse_final_logs(text: &str) -> Result<([Vec<NodeLog>; 2], [LogIndex; 2]), NemesisError> {
    let bad = |line: &str| NemesisError::Setup(format!("final-logs.txt: bad line {line:?}"));
    let mut logs: [BTreeMap<u64, Vec<u64>>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let mut commit: Option<[LogIndex; 2]> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# commit ") {
            let numbers: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| bad(line))?;
            let [a, b] = numbers[..] else {
                return Err(bad(line));
            };
            commit = Some([LogIndex(a), LogIndex(b)]);
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [letter, node, _index, identity] = fields[..] else {
            return Err(bad(line));
        };
        let log = workload::LOG_LETTERS
            .iter()
            .position(|name| *name == letter)
            .ok_or_else(|| bad(line))?;
        let node: u64 = node.parse().map_err(|_| bad(line))?;
        let identity: u64 = identity.parse().map_err(|_| bad(line))?;
        logs[log].entry(node).or_default().push(identity);
    }
    let index_commit = commit.unwrap_or_else(|| {
        [0, 1].map(|log| {
            LogIndex(
                logs[log]
                    .values()
                    .map(|payloads| payloads.len() as u64)
                    .max()
                    .unwrap_or(0),
            )
        })
    });
    let final_logs = logs.map(|nodes| {
        nodes
            .into_iter()
            .map(|(node, payloads)| NodeLog {
                node: NodeId(node),
                payloads,
            })
            .collect()
    });
    Ok((final_logs, index_commit))
}
