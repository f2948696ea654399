//! Hands a run's client history to the independent checkers in `check`.
//!
//! The simulator's log has Raft indexes, which count the leaders' no-op
//! entries; a client's log is the sequence of *data* entries. The committed
//! log maps one onto the other:
//!
//! ```text
//!  raft index   1     2    3    4     5    6
//!  entry        noop  a    b    noop  c    d
//!  data index   -     1    2    -     3    4
//! ```
//!
//! * An append of a batch of `k` entries becomes `k` single-payload appends
//!   with the same invoke and completion times (one process each, so the
//!   checker may order them freely: a little weaker than the truth, never
//!   stronger).
//! * A read that saw Raft index `R` becomes `read (L + 1) nil`, where `L` is
//!   the number of data entries up to `R`: "the log had at most `L` entries
//!   at the read's linearization point". That is what catches a stale read
//!   (an append acknowledged before the read was invoked lies beyond `L`);
//!   the read's payload is checked against the committed log separately.

use crate::check::history::{EventKind, History, ProcessId};
use crate::check::linearizable::check_log;
use crate::check::log::{LogOp, NodeLog, check};
use crate::check::wgl::{Budget, Verdict};
use crate::constants::SIM_SEARCH_STEPS_MAX;
use crate::sim::checker::{Checker, HistoryEntry, Operation, Outcome, Violation};
use crate::types::{LogIndex, NodeId};

/// What the checkers concluded about a history that broke nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryVerdict {
    /// Operations handed to the checkers.
    pub operations: usize,
    /// The exact search ran and proved the history linearizable (false: it
    /// did not run, or its budget ran out first; the fast log checker
    /// passed either way).
    pub linearizable: bool,
}

/// Runs the fast log checker, and the bounded exact search when `exact`,
/// on the history.
pub fn check_history(checker: &Checker, exact: bool) -> Result<HistoryVerdict, Violation> {
    let (data, position) = data_log(checker);
    let history = build_history(&checker.history, &position)?;
    let operations = history.operations();
    let final_log = NodeLog {
        node: NodeId(1),
        payloads: data.clone(),
    };
    let report = check(
        &operations,
        std::slice::from_ref(&final_log),
        LogIndex(data.len() as u64),
    );
    if !report.is_ok() {
        return Err(Violation {
            property: "log history (check::log)",
            detail: report.to_string(),
        });
    }
    if !exact {
        return Ok(HistoryVerdict {
            operations: operations.len(),
            linearizable: false,
        });
    }
    let search = check_log(&operations, &Budget::steps(SIM_SEARCH_STEPS_MAX));
    match search.verdict {
        Verdict::NotLinearizable(dead_end) => Err(Violation {
            property: "linearizability (check::linearizable)",
            detail: format!("{dead_end:?}"),
        }),
        verdict => Ok(HistoryVerdict {
            operations: operations.len(),
            linearizable: verdict.is_linearizable(),
        }),
    }
}

/// The committed data payloads, and for each Raft index the number of data
/// entries up to it.
fn data_log(checker: &Checker) -> (Vec<u64>, Vec<u64>) {
    let length = checker.committed_length().get();
    let mut data = Vec::new();
    let mut position = Vec::with_capacity(length as usize + 1);
    position.push(0);
    for index in 1..=length {
        let (_, value) = checker
            .committed_entry(LogIndex(index))
            .expect("committed prefix is contiguous");
        if value != 0 {
            data.push(value);
        }
        position.push(data.len() as u64);
    }
    (data, position)
}

/// One event to record: its time, whether it is an invocation (which sorts
/// before completions at the same time, the weaker order), the process and
/// the operation.
type Pending = (u64, bool, u64, EventKind, LogOp);

fn build_history(entries: &[HistoryEntry], position: &[u64]) -> Result<History<LogOp>, Violation> {
    let mut events: Vec<Pending> = Vec::with_capacity(entries.len() * 4);
    for (number, entry) in entries.iter().enumerate() {
        let invoked = entry.invoked_ms * 1_000_000;
        let completed = entry.completed_ms.saturating_mul(1_000_000);
        let kind = match entry.outcome {
            Outcome::Appended { .. } | Outcome::Read { .. } => EventKind::Ok,
            Outcome::Fail => EventKind::Fail,
            Outcome::Info => EventKind::Info,
        };
        match entry.operation {
            Operation::Append { first_value, count } => {
                for offset in 0..u64::from(count) {
                    let process = number as u64 * 8 + offset;
                    let payload = first_value + offset;
                    events.push((
                        invoked,
                        false,
                        process,
                        EventKind::Invoke,
                        LogOp::Append {
                            payload,
                            index: None,
                        },
                    ));
                    let index = match entry.outcome {
                        Outcome::Appended { index } => {
                            let raft = index.get() + offset;
                            let data = position
                                .get(raft as usize)
                                .copied()
                                .ok_or_else(|| unknown_index(raft))?;
                            Some(LogIndex(data))
                        }
                        _ => None,
                    };
                    if entry.completed_ms != u64::MAX {
                        events.push((
                            completed,
                            true,
                            process,
                            kind,
                            LogOp::Append { payload, index },
                        ));
                    }
                }
            }
            Operation::Read => {
                let process = number as u64 * 8;
                let seen = match entry.outcome {
                    Outcome::Read { length, .. } => position
                        .get(length.get() as usize)
                        .copied()
                        .ok_or_else(|| unknown_index(length.get()))?,
                    _ => 0,
                };
                let op = LogOp::Read {
                    index: LogIndex(seen + 1),
                    payload: None,
                };
                events.push((invoked, false, process, EventKind::Invoke, op));
                if entry.completed_ms != u64::MAX {
                    events.push((completed, true, process, kind, op));
                }
            }
        }
    }
    events.sort_by_key(|(time, completion, process, _, _)| (*time, *completion, *process));
    let mut history = History::default();
    for (time, _, process, kind, op) in events {
        let recorded = if kind == EventKind::Invoke {
            history.invoke(time, ProcessId(process), op)
        } else {
            history.complete(time, ProcessId(process), kind, op)
        };
        recorded.map_err(|error| Violation {
            property: "history is well formed",
            detail: error.to_string(),
        })?;
    }
    Ok(history)
}

fn unknown_index(index: u64) -> Violation {
    Violation {
        property: "no acknowledged append lost",
        detail: format!("a client saw Raft index {index}, beyond the committed log"),
    }
}
