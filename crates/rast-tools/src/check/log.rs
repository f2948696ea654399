//! A fast checker for the properties an append-only replicated log owes its
//! clients, for histories too long for an exact linearizability search.
//!
//! Input: the history of `append` and `read` operations, the final log of
//! every node (collected after the cluster has quiesced), and the commit
//! index every node must have reached. Each append carries a payload
//! *identity* (`u64`) the harness makes unique, so an entry can be traced
//! back to the one request that put it there. Output: every violation
//! found, typed, each with a message a human can act on.
//!
//! Properties, each its own [`Violation`]:
//!
//! * **No acknowledged append lost**: an append that completed `ok` at
//!   index `i` is in every node's committed log at `i` (Rast acknowledges
//!   only committed entries).
//! * **One payload per index**: acknowledgements, reads and the committed
//!   logs never put two different payloads at one index.
//! * **No duplicates**: no payload at two indices (a retried append applied
//!   twice); no payload reused by two appends (a harness bug, reported too).
//! * **No invention**: a committed or read payload was appended by some
//!   client, and not by an append that `fail`ed (certainly no effect).
//! * **Real-time order**: if append `A` completed before append `B` was
//!   invoked, `index(A) < index(B)`; a read invoked after an append at `i`
//!   completed sees an entry at every index `<= i`; a read never sees an
//!   append invoked after the read completed.
//! * **Final logs agree**: every node holds the committed prefix
//!   `1..=index_commit`, and they are identical there.
//!
//! Together these are what linearizability of the log means for appends
//! with unique payloads and reads at an index, minus the orderings that
//! need search (an unacknowledged append's index relative to others);
//! [`linearizable::check_log`](super::linearizable::check_log) checks those
//! exactly on shorter histories. Cost: O(n log n) in operations plus the
//! size of the final logs.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::history::{OpParseError, Operation, Optional, Outcome, parse_optional};
use crate::types::{LogIndex, NodeId};

/// Most violations one check reports; past it the report says it was
/// truncated (a broken run produces them by the million).
pub const VIOLATIONS_MAX: usize = 1000;

/// An operation on an append-only log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogOp {
    /// Append a payload; at `ok`, `index` is where it went (`nil` at
    /// invoke). Text: `append PAYLOAD INDEX|nil`.
    Append {
        /// The payload's identity, unique per append.
        payload: u64,
        /// The index assigned.
        index: Option<LogIndex>,
    },
    /// Read the entry at an index; at `ok`, `payload` is what was there
    /// (`nil`: nothing yet). Text: `read INDEX PAYLOAD|nil`.
    Read {
        /// The index read.
        index: LogIndex,
        /// The payload found.
        payload: Option<u64>,
    },
}

impl fmt::Display for LogOp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Append { payload, index } => {
                write!(
                    formatter,
                    "append {payload} {}",
                    Optional(index.map(LogIndex::get))
                )
            }
            Self::Read { index, payload } => {
                write!(formatter, "read {index} {}", Optional(payload))
            }
        }
    }
}

impl FromStr for LogOp {
    type Err = OpParseError;

    fn from_str(text: &str) -> Result<Self, OpParseError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let number = |word: &str| {
            word.parse::<u64>()
                .map_err(|_| OpParseError(format!("bad integer {word:?} in {text:?}")))
        };
        match words.as_slice() {
            ["append", payload] => Ok(Self::Append {
                payload: number(payload)?,
                index: None,
            }),
            ["append", payload, index] => Ok(Self::Append {
                payload: number(payload)?,
                index: parse_optional(index)?.map(LogIndex),
            }),
            ["read", index] => Ok(Self::Read {
                index: LogIndex(number(index)?),
                payload: None,
            }),
            ["read", index, payload] => Ok(Self::Read {
                index: LogIndex(number(index)?),
                payload: parse_optional(payload)?,
            }),
            _ => Err(OpParseError(format!("not a log operation: {text:?}"))),
        }
    }
}

/// A node's log at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLog {
    /// Whose log.
    pub node: NodeId,
    /// Payload identities, index 1 first.
    pub payloads: Vec<u64>,
}

/// Where a claim "index `i` holds payload `p`" comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The acknowledgement of the append at this operation index.
    Append(usize),
    /// The `ok` read at this operation index.
    Read(usize),
    /// The committed prefix of the final logs.
    Committed,
}

impl fmt::Display for Source {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Append(operation) => write!(formatter, "append #{operation}"),
            Self::Read(operation) => write!(formatter, "read #{operation}"),
            Self::Committed => formatter.write_str("the committed log"),
        }
    }
}

/// A broken promise. Operation numbers index the checked operations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An acknowledged append is not in the committed log at its index.
    #[error(
        "acknowledged append #{operation} (payload {payload}) at index {index} is lost: \
         the committed log has {} there (commit index {index_commit})",
        Optional(*.found)
    )]
    AcknowledgedLost {
        /// The append.
        operation: usize,
        /// Its payload.
        payload: u64,
        /// The index it was acknowledged at.
        index: LogIndex,
        /// What the committed log holds there, if anything.
        found: Option<u64>,
        /// The commit index checked against.
        index_commit: LogIndex,
    },
    /// Two sources put different payloads at one index.
    #[error(
        "index {index} holds two payloads: {first} says {first_payload}, {second} says {second_payload}"
    )]
    Conflict {
        /// The index.
        index: LogIndex,
        /// The first claim's source.
        first: Source,
        /// Its payload.
        first_payload: u64,
        /// The contradicting claim's source.
        second: Source,
        /// Its payload.
        second_payload: u64,
    },
    /// One payload at two indices: an append applied twice.
    #[error(
        "payload {payload} is at index {first_index} ({first}) and at index {second_index} ({second})"
    )]
    Duplicate {
        /// The payload.
        payload: u64,
        /// One index.
        first_index: LogIndex,
        /// Who says so.
        first: Source,
        /// The other index.
        second_index: LogIndex,
        /// Who says so.
        second: Source,
    },
    /// Two appends used the same payload, so entries cannot be traced (a
    /// harness bug, not the system's).
    #[error("appends #{first} and #{second} both use payload {payload}: payloads must be unique")]
    PayloadReused {
        /// The payload.
        payload: u64,
        /// The first append.
        first: usize,
        /// The second.
        second: usize,
    },
    /// An append completed `ok` without saying where it went (a harness
    /// bug).
    #[error("append #{operation} completed ok without an index")]
    AckWithoutIndex {
        /// The append.
        operation: usize,
    },
    /// A payload no client appended is in the log.
    #[error("index {index} holds payload {payload} ({source_}), which no append wrote")]
    Invented {
        /// Where.
        index: LogIndex,
        /// The unknown payload.
        payload: u64,
        /// Who says so.
        source_: Source,
    },
    /// An append that failed (certainly no effect) took effect.
    #[error(
        "append #{operation} failed, yet its payload {payload} is at index {index} ({source_})"
    )]
    FailedAppendVisible {
        /// The failed append.
        operation: usize,
        /// Its payload.
        payload: u64,
        /// Where it is.
        index: LogIndex,
        /// Who says so.
        source_: Source,
    },
    /// An append was acknowledged at an index not after that of an append
    /// that completed before it began.
    #[error(
        "append #{later} got index {index_later}, but append #{earlier} completed before it \
         began and got index {index_earlier}"
    )]
    RealTimeOrder {
        /// The append that completed first.
        earlier: usize,
        /// Its index.
        index_earlier: LogIndex,
        /// The append invoked after that completion.
        later: usize,
        /// Its index, not greater.
        index_later: LogIndex,
    },
    /// A read found nothing at an index that an append completed before the
    /// read began had already filled (or passed).
    #[error(
        "read #{read} found nothing at index {index}, but append #{append} completed at index \
         {index_append} before the read began"
    )]
    StaleRead {
        /// The read.
        read: usize,
        /// The index it read.
        index: LogIndex,
        /// The append.
        append: usize,
        /// Its index, at least `index`.
        index_append: LogIndex,
    },
    /// A read saw the payload of an append invoked after the read
    /// completed.
    #[error(
        "read #{read} saw payload {payload} of append #{append}, which began after the read ended"
    )]
    FutureRead {
        /// The read.
        read: usize,
        /// The payload.
        payload: u64,
        /// The append.
        append: usize,
    },
    /// A node's final log is shorter than the commit index.
    #[error("node {node} has {length} entries, fewer than the commit index {index_commit}")]
    FinalLogShort {
        /// The node.
        node: NodeId,
        /// Its log's length.
        length: u64,
        /// The commit index.
        index_commit: LogIndex,
    },
    /// Two nodes' final logs differ at a committed index.
    #[error(
        "nodes {node_first} and {node_second} differ at committed index {index}: {payload_first} vs {payload_second}"
    )]
    FinalLogsDiverge {
        /// The reference node (the first with the full committed prefix).
        node_first: NodeId,
        /// Its payload.
        payload_first: u64,
        /// The node that differs.
        node_second: NodeId,
        /// Its payload.
        payload_second: u64,
        /// The first index where they differ.
        index: LogIndex,
    },
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogReport {
    /// The violations, at most [`VIOLATIONS_MAX`].
    pub violations: Vec<Violation>,
    /// Whether more were found than kept.
    pub truncated: bool,
}

impl LogReport {
    /// Whether nothing was found.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn push(&mut self, violation: Violation) {
        if self.violations.len() < VIOLATIONS_MAX {
            self.violations.push(violation);
        } else {
            self.truncated = true;
        }
    }
}

impl fmt::Display for LogReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for violation in &self.violations {
            writeln!(formatter, "{violation}")?;
        }
        if self.truncated {
            writeln!(formatter, "(more violations not shown)")?;
        }
        Ok(())
    }
}

/// Checks a log history against the final logs of the nodes; see the
/// module docs for the properties.
pub fn check(
    operations: &[Operation<LogOp>],
    final_logs: &[NodeLog],
    index_commit: LogIndex,
) -> LogReport {
    let mut report = LogReport::default();
    let committed = check_final_logs(final_logs, index_commit, &mut report);
    let appends = Appends::collect(operations, &mut report);
    check_acknowledged(operations, &appends, committed, index_commit, &mut report);
    let claims = Claims::collect(operations, &appends, committed, &mut report);
    claims.check_origin(operations, &appends, &mut report);
    check_real_time(operations, &mut report);
    report
}

/// Checks that every node holds the committed prefix and that all agree on
/// it; returns it (from the first node that holds it in full).
fn check_final_logs<'a>(
    final_logs: &'a [NodeLog],
    index_commit: LogIndex,
    report: &mut LogReport,
) -> &'a [u64] {
    let commit = index_commit.get();
    let mut reference: Option<&NodeLog> = None;
    for log in final_logs {
        let length = log.payloads.len() as u64;
        if length < commit {
            report.push(Violation::FinalLogShort {
                node: log.node,
                length,
                index_commit,
            });
            continue;
        }
        let Some(first) = reference else {
            reference = Some(log);
            continue;
        };
        let prefix = commit as usize;
        let differ = first.payloads[..prefix]
            .iter()
            .zip(&log.payloads[..prefix])
            .position(|(a, b)| a != b);
        if let Some(offset) = differ {
            report.push(Violation::FinalLogsDiverge {
                node_first: first.node,
                payload_first: first.payloads[offset],
                node_second: log.node,
                payload_second: log.payloads[offset],
                index: LogIndex(offset as u64 + 1),
            });
        }
    }
    reference.map_or(&[], |log| &log.payloads[..commit as usize])
}

/// The appends, by payload.
struct Appends {
    /// Payload → index of the (first) append operation that used it.
    by_payload: HashMap<u64, usize>,
}

impl Appends {
    fn collect(operations: &[Operation<LogOp>], report: &mut LogReport) -> Self {
        let mut by_payload = HashMap::new();
        for (operation, op) in operations.iter().enumerate() {
            let LogOp::Append { payload, .. } = op.invoke else {
                continue;
            };
            if let Some(&first) = by_payload.get(&payload) {
                report.push(Violation::PayloadReused {
                    payload,
                    first,
                    second: operation,
                });
            } else {
                by_payload.insert(payload, operation);
            }
        }
        Self { by_payload }
    }
}

/// The index an append was acknowledged at, if it completed `ok` with one.
fn acknowledged_index(operation: &Operation<LogOp>) -> Option<LogIndex> {
    match (operation.invoke, &operation.outcome) {
        (LogOp::Append { .. }, Outcome::Ok(LogOp::Append { index, .. })) => *index,
        _ => None,
    }
}

/// What an `ok` read found: the index and payload, if any.
fn read_result(operation: &Operation<LogOp>) -> Option<(LogIndex, Option<u64>)> {
    match (operation.invoke, &operation.outcome) {
        (LogOp::Read { index, .. }, Outcome::Ok(LogOp::Read { payload, .. })) => {
            Some((index, *payload))
        }
        _ => None,
    }
}

/// No acknowledged append lost: each is in the committed log at its index.
fn check_acknowledged(
    operations: &[Operation<LogOp>],
    appends: &Appends,
    committed: &[u64],
    index_commit: LogIndex,
    report: &mut LogReport,
) {
    for (operation, op) in operations.iter().enumerate() {
        let LogOp::Append { payload, .. } = op.invoke else {
            continue;
        };
        if !matches!(op.outcome, Outcome::Ok(_))
            || appends.by_payload.get(&payload) != Some(&operation)
        {
            continue;
        }
        let Some(index) = acknowledged_index(op) else {
            report.push(Violation::AckWithoutIndex { operation });
            continue;
        };
        let found = committed_at(committed, index);
        if found != Some(payload) {
            report.push(Violation::AcknowledgedLost {
                operation,
                payload,
                index,
                found,
                index_commit,
            });
        }
    }
}

fn committed_at(committed: &[u64], index: LogIndex) -> Option<u64> {
    let offset = usize::try_from(index.get().checked_sub(1)?).ok()?;
    committed.get(offset).copied()
}

/// Every claim "index holds payload", first claim per index and per
/// payload.
struct Claims {
    by_index: HashMap<LogIndex, (u64, Source)>,
    by_payload: HashMap<u64, (LogIndex, Source)>,
}

impl Claims {
    /// Gathers claims from the committed log, acknowledgements and reads, in
    /// that order, reporting conflicts and duplicates. An acknowledgement
    /// contradicted by the committed log is already reported as lost.
    fn collect(
        operations: &[Operation<LogOp>],
        appends: &Appends,
        committed: &[u64],
        report: &mut LogReport,
    ) -> Self {
        let mut claims = Self {
            by_index: HashMap::new(),
            by_payload: HashMap::new(),
        };
        for (offset, &payload) in committed.iter().enumerate() {
            claims.add(
                LogIndex(offset as u64 + 1),
                payload,
                Source::Committed,
                report,
            );
        }
        for (operation, op) in operations.iter().enumerate() {
            let LogOp::Append { payload, .. } = op.invoke else {
                continue;
            };
            let Some(index) = acknowledged_index(op) else {
                continue;
            };
            let lost = committed_at(committed, index) != Some(payload);
            let reused = appends.by_payload.get(&payload) != Some(&operation);
            if !lost && !reused {
                claims.add(index, payload, Source::Append(operation), report);
            }
        }
        for (operation, op) in operations.iter().enumerate() {
            if let Some((index, Some(payload))) = read_result(op) {
                claims.add(index, payload, Source::Read(operation), report);
            }
        }
        claims
    }

    fn add(&mut self, index: LogIndex, payload: u64, source: Source, report: &mut LogReport) {
        match self.by_index.get(&index) {
            Some(&(first_payload, first)) if first_payload != payload => {
                report.push(Violation::Conflict {
                    index,
                    first,
                    first_payload,
                    second: source,
                    second_payload: payload,
                });
                return;
            }
            Some(_) => return,
            None => {
                self.by_index.insert(index, (payload, source));
            }
        }
        match self.by_payload.get(&payload) {
            Some(&(first_index, first)) if first_index != index => {
                report.push(Violation::Duplicate {
                    payload,
                    first_index,
                    first,
                    second_index: index,
                    second: source,
                });
            }
            Some(_) => {}
            None => {
                self.by_payload.insert(payload, (index, source));
            }
        }
    }

    /// Every payload seen was appended, by an append that did not fail and
    /// began before any read that saw it had ended.
    fn check_origin(
        &self,
        operations: &[Operation<LogOp>],
        appends: &Appends,
        report: &mut LogReport,
    ) {
        let mut claims: Vec<(u64, LogIndex, Source)> = self
            .by_payload
            .iter()
            .map(|(&payload, &(index, source))| (payload, index, source))
            .collect();
        claims.sort_unstable_by_key(|&(_, index, _)| index);
        for (payload, index, source_) in claims {
            let Some(&operation) = appends.by_payload.get(&payload) else {
                report.push(Violation::Invented {
                    index,
                    payload,
                    source_,
                });
                continue;
            };
            if matches!(operations[operation].outcome, Outcome::Fail(_)) {
                report.push(Violation::FailedAppendVisible {
                    operation,
                    payload,
                    index,
                    source_,
                });
            }
        }
        for (read, op) in operations.iter().enumerate() {
            let Some((_, Some(payload))) = read_result(op) else {
                continue;
            };
            if let Some(&append) = appends.by_payload.get(&payload)
                && op.precedes(&operations[append])
            {
                report.push(Violation::FutureRead {
                    read,
                    payload,
                    append,
                });
            }
        }
    }
}

/// Real-time order: sweeps invocations in order, knowing at each the
/// highest index acknowledged by an append that completed before it.
fn check_real_time(operations: &[Operation<LogOp>], report: &mut LogReport) {
    let mut acknowledged: Vec<(usize, LogIndex, usize)> = Vec::new();
    let mut queries: Vec<(usize, LogIndex, usize)> = Vec::new();
    for (operation, op) in operations.iter().enumerate() {
        if let Some(index) = acknowledged_index(op) {
            let complete = op.position_complete.expect("an ok operation completed");
            acknowledged.push((complete, index, operation));
            queries.push((op.position_invoke, index, operation));
        } else if let Some((index, None)) = read_result(op) {
            queries.push((op.position_invoke, index, operation));
        }
    }
    acknowledged.sort_unstable();
    queries.sort_unstable();
    let mut done = acknowledged.iter().peekable();
    let mut highest: Option<(LogIndex, usize)> = None;
    for &(invoke, index, operation) in &queries {
        while let Some(&(_, index_done, append)) =
            done.next_if(|&&(complete, ..)| complete < invoke)
        {
            if highest.is_none_or(|(index_highest, _)| index_done > index_highest) {
                highest = Some((index_done, append));
            }
        }
        let Some((index_highest, earlier)) = highest else {
            continue;
        };
        if index_highest < index {
            continue;
        }
        let violation = if matches!(operations[operation].invoke, LogOp::Append { .. }) {
            Violation::RealTimeOrder {
                earlier,
                index_earlier: index_highest,
                later: operation,
                index_later: index,
            }
        } else {
            Violation::StaleRead {
                read: operation,
                index,
                append: earlier,
                index_append: index_highest,
            }
        };
        report.push(violation);
    }
}

#[cfg(test)]
mod tests;
