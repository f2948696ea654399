//! The end of a run: the checks, the JSON verdict, the human summary.
//!
//! Every check is an independent checker from [`crate::check`] run over the
//! recorded history and the final logs; this module only takes the history
//! apart per object and says what the findings mean:
//!
//! | check | how |
//! |---|---|
//! | no acknowledged append lost, one entry per index, no duplicates, no invention, real-time order, logs identical up to the commit index | [`check::log::check`] per log |
//! | key-value history linearizable | [`check::linearizable::check_kv`], per key, and again with the reference checker ([`check::linearizable::check_kv_reference`], todc-utils) on every key of up to 400 calls with at most 4 of unknown outcome |
//! | writes accepted again within a bound after the last fault | the history: first acknowledged append invoked after the last heal, per log |
//! | no node exited on its own | the harness reaps its children |
//!
//! Two readings fixed here, both written in the verdict:
//!
//! * A log read is served from the *local* committed prefix of whichever
//!   node is asked, so it may lag (the protocol promises committed entries,
//!   not the latest ones). A read that found nothing where an earlier
//!   acknowledged append had written is therefore reported as a "stale
//!   read" count, not a failure; a read that found a *wrong* entry is a
//!   failure (a conflict or an invention).
//! * Entries the server writes itself (each new leader's no-op) are in the
//!   log but in no client's history: each gets an operation of unknown
//!   outcome invoked at the start, so the checker accounts for its index
//!   without calling it invented.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Map, Value, json};

use super::workload::{LOG_LETTERS, NemesisOp, is_server_entry};
use crate::check;
use crate::check::history::{EventKind, History, Operation, Outcome, ProcessId};
use crate::check::linearizable::{FailedCas, KvOp, ReferenceLimits};
use crate::check::log::{LogOp, NodeLog, Violation};
use crate::check::wgl::{Budget, Verdict as Search};
use crate::types::LogIndex;

/// Whether the key-value store was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvStatus {
    /// The server answered that it does not serve it (this reason).
    NotServed(String),
    /// It is served; the workload ran.
    Served,
}

/// Everything a run leaves for the checks.
#[derive(Debug)]
pub struct Evidence {
    /// The history.
    pub history: History<NemesisOp>,
    /// Per log, every node's final committed log.
    pub final_logs: [Vec<NodeLog>; 2],
    /// Per log, the commit index every node must have reached.
    pub index_commit: [LogIndex; 2],
    /// Per log, why the nodes did not converge, if they did not.
    pub convergence: [Option<String>; 2],
    /// Key-value status.
    pub kv: KvStatus,
    /// Whether a key-value store that is not served fails the run.
    pub require_kv: bool,
    /// Times (history clock, ns) when the cluster became fault-free, each
    /// with when the next fault started (if one did).
    pub heals_ns: Vec<(u64, Option<u64>)>,
    /// Milliseconds from the final heal to writes accepted on both logs,
    /// or why they were not.
    pub recovery_final: Result<u64, String>,
    /// The bound on [`Self::recovery_final`].
    pub recovery_ms_max: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Faults skipped (target already down, ...), by kind.
    pub skipped: BTreeMap<String, u64>,
    /// Nodes that exited on their own: (node, status).
    pub exits: Vec<(usize, String)>,
    /// Milliseconds after recovery until no copy of any log said it was
    /// damaged (every damaged copy repaired), or the copies still damaged.
    pub repaired: Result<u64, String>,
    /// Facts about the run for the JSON (seed, scenario, ...).
    pub run: Vec<(String, Value)>,
    /// How to replay the schedule.
    pub replay: String,
    /// Judged again from a run's files: only the history checks apply (no
    /// recovery, no process exits).
    pub from_files: bool,
}

/// The outcome.
#[derive(Debug)]
pub struct Verdict {
    /// Whether every check passed.
    pub pass: bool,
    /// The JSON verdict.
    pub json: Value,
    /// A short human summary.
    pub summary: String,
}

/// One check's result.
struct Finding {
    name: String,
    pass: bool,
    detail: String,
    violations: Vec<String>,
}

/// Runs every check and writes up the result.
pub fn judge(evidence: &Evidence, kv_budget: &Budget) -> Verdict {
    let operations = evidence.history.operations();
    let mut findings = Vec::new();
    let mut stale_reads = [0u64; 2];
    for (log, stale_count) in stale_reads.iter_mut().enumerate() {
        let (finding, stale) = check_log(evidence, &operations, log);
        *stale_count = stale;
        findings.push(finding);
    }
    findings.push(check_kv(evidence, &operations, kv_budget));
    if !matches!(evidence.kv, KvStatus::NotServed(_)) {
        findings.push(check_kv_by_reference(&operations));
    }
    if !evidence.from_files {
        findings.push(check_recovery(evidence));
        findings.push(match &evidence.repaired {
            Ok(ms) => Finding {
                name: "every damaged copy repaired".into(),
                pass: true,
                detail: format!("{ms} ms after recovery"),
                violations: Vec::new(),
            },
            Err(copies) => Finding {
                name: "every damaged copy repaired".into(),
                pass: false,
                detail: copies.clone(),
                violations: vec![format!("still damaged or silent: {copies}")],
            },
        });
        findings.push(Finding {
            name: "no node exited on its own".into(),
            pass: evidence.exits.is_empty(),
            detail: format!("{} unexpected exits", evidence.exits.len()),
            violations: evidence
                .exits
                .iter()
                .map(|(node, status)| format!("node n{} exited: {status}", node + 1))
                .collect(),
        });
    }
    let pass = findings.iter().all(|finding| finding.pass);
    let counts = count_operations(&operations);
    let acknowledged = acknowledged_appends(evidence);
    let availability = Availability {
        recoveries: recoveries_ms(evidence, &acknowledged),
        gaps: longest_write_gaps_ms(&acknowledged),
    };
    let json = to_json(
        evidence,
        pass,
        &findings,
        &counts,
        &availability,
        stale_reads,
    );
    let summary = summarize(
        evidence,
        pass,
        &findings,
        &counts,
        &availability,
        stale_reads,
    );
    Verdict {
        pass,
        json,
        summary,
    }
}

/// The operations on log `log`, with their history positions, plus one
/// unknown-outcome append per server-written entry seen anywhere.
fn log_operations(
    evidence: &Evidence,
    operations: &[Operation<NemesisOp>],
    log: usize,
) -> Vec<Operation<LogOp>> {
    let mut selected: Vec<Operation<LogOp>> = Vec::new();
    let mut server_entries = std::collections::BTreeSet::new();
    for operation in operations {
        let NemesisOp::Log { log: which, op } = operation.invoke else {
            continue;
        };
        if which != log {
            continue;
        }
        let outcome = match operation.outcome {
            Outcome::Ok(NemesisOp::Log { op: done, .. }) => Outcome::Ok(done),
            Outcome::Fail(NemesisOp::Log { op: done, .. }) => Outcome::Fail(done),
            Outcome::Ok(_) | Outcome::Fail(_) | Outcome::Unknown => Outcome::Unknown,
        };
        if let Outcome::Ok(LogOp::Read {
            payload: Some(payload),
            ..
        }) = outcome
            && is_server_entry(payload)
        {
            server_entries.insert(payload);
        }
        selected.push(operation.retyped(op, outcome));
    }
    for node_log in &evidence.final_logs[log] {
        server_entries.extend(
            node_log
                .payloads
                .iter()
                .copied()
                .filter(|p| is_server_entry(*p)),
        );
    }
    for payload in server_entries {
        selected.push(Operation {
            process: ProcessId(u64::MAX),
            invoke: LogOp::Append {
                payload,
                index: None,
            },
            outcome: Outcome::Unknown,
            position_invoke: 0,
            position_complete: None,
            time_ns_invoke: 0,
            time_ns_complete: None,
        });
    }
    selected
}

fn check_log(
    evidence: &Evidence,
    operations: &[Operation<NemesisOp>],
    log: usize,
) -> (Finding, u64) {
    let selected = log_operations(evidence, operations, log);
    // Reads that found nothing prove something only of linearizable reads,
    // which log reads are not (module docs): judge without them, and count
    // separately how many lagged (at most the checker's report size).
    let found_nothing = |operation: &Operation<LogOp>| {
        matches!(
            operation.outcome,
            Outcome::Ok(LogOp::Read { payload: None, .. })
        )
    };
    let stale = if selected.iter().any(found_nothing) {
        let lagging = check::log::check(
            &selected,
            &evidence.final_logs[log],
            evidence.index_commit[log],
        );
        lagging
            .violations
            .iter()
            .filter(|violation| matches!(violation, Violation::StaleRead { .. }))
            .count() as u64
    } else {
        0
    };
    let judged: Vec<Operation<LogOp>> = selected
        .into_iter()
        .filter(|operation| !found_nothing(operation))
        .collect();
    let report = check::log::check(
        &judged,
        &evidence.final_logs[log],
        evidence.index_commit[log],
    );
    let mut violations: Vec<String> = report
        .violations
        .iter()
        .map(|violation| describe(violation, &judged))
        .collect();
    if report.truncated {
        violations.push(format!(
            "(more violations not shown: the checker keeps {})",
            check::log::VIOLATIONS_MAX
        ));
    }
    if let Some(reason) = &evidence.convergence[log] {
        violations.push(format!("nodes did not converge: {reason}"));
    }
    let nodes = evidence.final_logs[log].len();
    let finding = Finding {
        name: format!("log {}", LOG_LETTERS[log]),
        pass: violations.is_empty(),
        detail: format!(
            "commit index {}, {nodes} nodes' logs compared, {} operations checked",
            evidence.index_commit[log],
            judged.len()
        ),
        violations,
    };
    (finding, stale)
}

/// A violation with the operations it names spelled out (the checker
/// numbers operations by their place in the checked list).
fn describe(violation: &Violation, operations: &[Operation<LogOp>]) -> String {
    let named = |operation: usize| {
        operations.get(operation).map_or_else(String::new, |op| {
            format!(
                " [#{operation}: process {} invoked at {:.3}s: {}]",
                op.process,
                op.time_ns_invoke as f64 / 1e9,
                op.invoke
            )
        })
    };
    let mentioned: Vec<usize> = match violation {
        Violation::AcknowledgedLost { operation, .. }
        | Violation::AckWithoutIndex { operation }
        | Violation::FailedAppendVisible { operation, .. } => vec![*operation],
        Violation::PayloadReused { first, second, .. } => vec![*first, *second],
        Violation::RealTimeOrder { earlier, later, .. } => vec![*earlier, *later],
        Violation::FutureRead { read, append, .. } => vec![*read, *append],
        _ => Vec::new(),
    };
    let mut text = violation.to_string();
    for operation in mentioned {
        text.push_str(&named(operation));
    }
    text
}

/// The key-value operations of the history.
fn kv_operations(operations: &[Operation<NemesisOp>]) -> Vec<Operation<KvOp>> {
    operations
        .iter()
        .filter_map(|operation| {
            let NemesisOp::Kv(invoke) = operation.invoke else {
                return None;
            };
            let outcome = match operation.outcome {
                Outcome::Ok(NemesisOp::Kv(done)) => Outcome::Ok(done),
                Outcome::Fail(NemesisOp::Kv(done)) => Outcome::Fail(done),
                _ => Outcome::Unknown,
            };
            Some(operation.retyped(invoke, outcome))
        })
        .collect()
}

/// Keys beyond these are left to [`check_kv`] alone: the reference checker
/// has no budget and its search is exponential.
const REFERENCE_LIMITS: ReferenceLimits = ReferenceLimits {
    calls_max: 400,
    unknown_max: 4,
};

/// A second, independent opinion on the key-value history: the reference
/// checker (`todc_utils::WGLChecker`, none of our prunings), per key.
fn check_kv_by_reference(operations: &[Operation<NemesisOp>]) -> Finding {
    let selected = kv_operations(operations);
    let reference = check::linearizable::check_kv_reference(
        &selected,
        FailedCas::CompareMismatch,
        REFERENCE_LIMITS,
    );
    Finding {
        name: "kv linearizable (reference checker)".into(),
        pass: reference.linearizable,
        detail: format!(
            "{} keys checked, {} left out (over {} calls or {} of unknown outcome)",
            reference.keys_checked,
            reference.keys_skipped,
            REFERENCE_LIMITS.calls_max,
            REFERENCE_LIMITS.unknown_max
        ),
        violations: match reference.key {
            Some(key) => vec![format!("key {key} is not linearizable")],
            None => Vec::new(),
        },
    }
}

fn check_kv(evidence: &Evidence, operations: &[Operation<NemesisOp>], budget: &Budget) -> Finding {
    let name = "kv linearizable".to_owned();
    if let KvStatus::NotServed(reason) = &evidence.kv {
        return Finding {
            name,
            pass: !evidence.require_kv,
            detail: format!("KV not served: {reason}"),
            violations: if evidence.require_kv {
                vec!["the key-value store is required but not served".into()]
            } else {
                Vec::new()
            },
        };
    }
    let selected = kv_operations(operations);
    let search = check::linearizable::check_kv(&selected, FailedCas::CompareMismatch, budget);
    let detail = format!(
        "{} operations on {} keys, {} search steps",
        selected.len(),
        search.keys,
        search.steps
    );
    match &search.verdict {
        Search::Linearizable => Finding {
            name,
            pass: true,
            detail,
            violations: Vec::new(),
        },
        Search::NotLinearizable(dead_end) => {
            let blocked = selected
                .get(dead_end.blocked)
                .map_or_else(String::new, |op| {
                    format!(
                        "process {} invoked at {:.3}s: {}",
                        op.process,
                        op.time_ns_invoke as f64 / 1e9,
                        op.invoke
                    )
                });
            Finding {
                name,
                pass: false,
                detail,
                violations: vec![format!(
                    "key {} is not linearizable: after {} operations (value {:?}) no order admits {blocked}",
                    search.key.unwrap_or_default(),
                    dead_end.linearized,
                    dead_end.state
                )],
            }
        }
        Search::Unknown(exhausted) => Finding {
            name,
            pass: false,
            detail,
            violations: vec![format!(
                "inconclusive: the search for key {} ran out of {exhausted:?}",
                search.key.unwrap_or_default()
            )],
        },
    }
}

fn check_recovery(evidence: &Evidence) -> Finding {
    let name = "writes accepted after the last fault".to_owned();
    match evidence.recovery_final {
        Ok(ms) => Finding {
            name,
            pass: ms <= evidence.recovery_ms_max,
            detail: format!("{ms} ms (bound {} ms)", evidence.recovery_ms_max),
            violations: if ms <= evidence.recovery_ms_max {
                Vec::new()
            } else {
                vec![format!("took {ms} ms, over the bound")]
            },
        },
        Err(ref reason) => Finding {
            name,
            pass: false,
            detail: reason.clone(),
            violations: vec![reason.clone()],
        },
    }
}

/// Per log, (invoke ns, complete ns) of every acknowledged append.
fn acknowledged_appends(evidence: &Evidence) -> [Vec<(u64, u64)>; 2] {
    let operations = evidence.history.operations();
    let mut acknowledged: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for operation in &operations {
        if let (
            NemesisOp::Log { log, .. },
            Outcome::Ok(NemesisOp::Log {
                op: LogOp::Append { .. },
                ..
            }),
            Some(complete),
        ) = (
            operation.invoke,
            operation.outcome,
            operation.time_ns_complete,
        ) {
            acknowledged[log].push((operation.time_ns_invoke, complete));
        }
    }
    acknowledged
}

/// Per log, the longest time (ms) with no append acknowledged, between the
/// first and the last acknowledgement: how long the log was unavailable.
fn longest_write_gaps_ms(acknowledged: &[Vec<(u64, u64)>; 2]) -> [u64; 2] {
    let mut gaps = [0; 2];
    for (gap, log) in gaps.iter_mut().zip(acknowledged) {
        let mut completions: Vec<u64> = log.iter().map(|(_, complete)| *complete).collect();
        completions.sort_unstable();
        *gap = completions
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or(0)
            / 1_000_000;
    }
    gaps
}

/// Per heal to a fault-free cluster: ms until both logs acknowledged an
/// append invoked after it (`None`: not before the next fault or the end).
fn recoveries_ms(evidence: &Evidence, acknowledged: &[Vec<(u64, u64)>; 2]) -> Vec<Option<u64>> {
    evidence
        .heals_ns
        .iter()
        .map(|&(heal, next_fault)| {
            let mut slowest = 0;
            for log in acknowledged {
                let first = log
                    .iter()
                    .filter(|(invoked, _)| *invoked >= heal)
                    .map(|(_, complete)| *complete)
                    .min()?;
                if next_fault.is_some_and(|next| first > next) {
                    return None;
                }
                slowest = slowest.max(first - heal);
            }
            Some(slowest / 1_000_000)
        })
        .collect()
}

/// How available the logs were.
struct Availability {
    /// Per heal to a fault-free cluster, ms until writes were accepted.
    recoveries: Vec<Option<u64>>,
    /// Per log, the longest stretch without an acknowledged append (ms).
    gaps: [u64; 2],
}

/// Operations by function and outcome: `append` → `ok` → count.
type Counts = BTreeMap<&'static str, BTreeMap<&'static str, u64>>;

fn count_operations(operations: &[Operation<NemesisOp>]) -> Counts {
    let mut counts: Counts = BTreeMap::new();
    for operation in operations {
        let function = match operation.invoke {
            NemesisOp::Log {
                op: LogOp::Append { .. },
                ..
            } => "append",
            NemesisOp::Log {
                op: LogOp::Read { .. },
                ..
            } => "read",
            NemesisOp::Kv(KvOp::Get { .. }) => "get",
            NemesisOp::Kv(KvOp::Put { .. }) => "put",
            NemesisOp::Kv(KvOp::Cas { .. }) => "cas",
            NemesisOp::Kv(KvOp::Delete { .. }) => "delete",
        };
        let outcome = match operation.outcome {
            Outcome::Ok(_) => EventKind::Ok.name(),
            Outcome::Fail(_) => EventKind::Fail.name(),
            Outcome::Unknown => EventKind::Info.name(),
        };
        *counts
            .entry(function)
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
    counts
}

fn to_json(
    evidence: &Evidence,
    pass: bool,
    findings: &[Finding],
    counts: &Counts,
    availability: &Availability,
    stale_reads: [u64; 2],
) -> Value {
    let recoveries = &availability.recoveries;
    let mut object = Map::new();
    object.insert("verdict".into(), json!(if pass { "pass" } else { "fail" }));
    object.extend(evidence.run.iter().cloned());
    object.insert("replay".into(), json!(evidence.replay));
    object.insert("operations".into(), json!(counts));
    object.insert("faults".into(), json!(evidence.faults));
    object.insert("faults_skipped".into(), json!(evidence.skipped));
    object.insert(
        "recovery_ms".into(),
        json!({
            "after_each_heal": recoveries,
            "max": recoveries.iter().flatten().max(),
            "final": evidence.recovery_final.as_ref().ok(),
            "bound": evidence.recovery_ms_max,
        }),
    );
    object.insert(
        "longest_write_gap_ms".into(),
        json!({"a": availability.gaps[0], "b": availability.gaps[1]}),
    );
    object.insert(
        "stale_reads".into(),
        json!({
            "a": stale_reads[0],
            "b": stale_reads[1],
            "note": "log reads are served from the asked node's committed prefix and may lag; counted, not failed",
        }),
    );
    object.insert(
        "kv".into(),
        json!(match &evidence.kv {
            KvStatus::NotServed(_) => "KV not served",
            KvStatus::Served => "served",
        }),
    );
    let checks: Vec<Value> = findings
        .iter()
        .map(|finding| {
            json!({
                "name": finding.name,
                "pass": finding.pass,
                "detail": finding.detail,
                "violations": finding.violations,
            })
        })
        .collect();
    object.insert("checks".into(), Value::Array(checks));
    Value::Object(object)
}

/// The faults and recovery lines of the summary.
fn write_faults_and_recovery(text: &mut String, evidence: &Evidence, recoveries: &[Option<u64>]) {
    let faults: Vec<String> = evidence
        .faults
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    let skipped: u64 = evidence.skipped.values().sum();
    let _ = writeln!(
        *text,
        "faults      {} (skipped {skipped})",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        }
    );
    let mut known: Vec<u64> = recoveries.iter().flatten().copied().collect();
    known.sort_unstable();
    let final_text = match &evidence.recovery_final {
        Ok(ms) => format!("{ms} ms"),
        Err(reason) => reason.clone(),
    };
    let _ = writeln!(
        *text,
        "recovery    after {} heals: median {} ms, max {} ms; after the last: {final_text} (bound {} ms)",
        known.len(),
        known.get(known.len() / 2).copied().unwrap_or(0),
        known.last().copied().unwrap_or(0),
        evidence.recovery_ms_max
    );
}

fn summarize(
    evidence: &Evidence,
    pass: bool,
    findings: &[Finding],
    counts: &Counts,
    availability: &Availability,
    stale_reads: [u64; 2],
) -> String {
    let recoveries = &availability.recoveries;
    let mut text = String::new();
    let facts: Vec<String> = evidence
        .run
        .iter()
        .map(|(key, value)| format!("{key} {}", value.to_string().trim_matches('"')))
        .collect();
    let _ = writeln!(
        text,
        "rast nemesis: {}  ({})",
        if pass { "PASS" } else { "FAIL" },
        facts.join(", ")
    );
    let operations: Vec<String> = counts
        .iter()
        .map(|(function, outcomes)| {
            let outcomes: Vec<String> = outcomes
                .iter()
                .map(|(outcome, count)| format!("{outcome} {count}"))
                .collect();
            format!("{function}: {}", outcomes.join(" "))
        })
        .collect();
    let _ = writeln!(text, "operations  {}", operations.join("; "));
    if !evidence.from_files {
        write_faults_and_recovery(&mut text, evidence, recoveries);
    }
    let _ = writeln!(
        text,
        "unavailable longest stretch without an acknowledged append: {} ms on log a, {} ms on log b",
        availability.gaps[0], availability.gaps[1]
    );
    let _ = writeln!(
        text,
        "stale reads {} on log a, {} on log b (allowed: reads are local; counted up to {})",
        stale_reads[0],
        stale_reads[1],
        check::log::VIOLATIONS_MAX
    );
    for finding in findings {
        let _ = writeln!(
            text,
            "{:<5} {}: {}",
            if finding.pass { "ok" } else { "FAIL" },
            finding.name,
            finding.detail
        );
        for violation in finding.violations.iter().take(20) {
            let _ = writeln!(text, "        {violation}");
        }
        if finding.violations.len() > 20 {
            let _ = writeln!(
                text,
                "        ... {} more in verdict.json",
                finding.violations.len() - 20
            );
        }
    }
    if !pass {
        let _ = writeln!(text, "replay the schedule: {}", evidence.replay);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::workload::IDENTITY_NOOP;
    use crate::types::NodeId;

    const NOOP: u64 = IDENTITY_NOOP | (1 << 32) | 1;

    fn log_op(op: LogOp) -> NemesisOp {
        NemesisOp::Log { log: 0, op }
    }

    fn append(payload: u64, index: Option<u64>) -> NemesisOp {
        log_op(LogOp::Append {
            payload,
            index: index.map(LogIndex),
        })
    }

    fn read(index: u64, payload: Option<u64>) -> NemesisOp {
        log_op(LogOp::Read {
            index: LogIndex(index),
            payload,
        })
    }

    /// A history where process 1 appends 10 (index 2) and 20 (index 3) on
    /// log a, then process 2 reads index 3 and sees `read_saw`.
    fn history(read_saw: Option<u64>) -> History<NemesisOp> {
        let mut history = History::new();
        let mut time = 0;
        let mut event = |process: u64, kind: EventKind, op: NemesisOp| {
            time += 1;
            history
                .complete(time, ProcessId(process), kind, op)
                .unwrap();
        };
        event(1, EventKind::Invoke, append(10, None));
        event(1, EventKind::Ok, append(10, Some(2)));
        event(1, EventKind::Invoke, append(20, None));
        event(1, EventKind::Ok, append(20, Some(3)));
        event(2, EventKind::Invoke, read(3, None));
        event(2, EventKind::Ok, read(3, read_saw));
        history
    }

    fn evidence(history: History<NemesisOp>, logs: &[&[u64]]) -> Evidence {
        let node_logs: Vec<NodeLog> = logs
            .iter()
            .enumerate()
            .map(|(node, payloads)| NodeLog {
                node: NodeId(node as u64 + 1),
                payloads: payloads.to_vec(),
            })
            .collect();
        Evidence {
            history,
            final_logs: [node_logs, Vec::new()],
            index_commit: [LogIndex(3), LogIndex(0)],
            convergence: [None, None],
            kv: KvStatus::NotServed("not yet".into()),
            require_kv: false,
            heals_ns: vec![(0, None)],
            recovery_final: Ok(5),
            recovery_ms_max: 1000,
            faults: BTreeMap::new(),
            skipped: BTreeMap::new(),
            exits: Vec::new(),
            repaired: Ok(0),
            run: vec![("seed".into(), json!(7))],
            replay: "scripts/nemesis --seed 7".into(),
            from_files: false,
        }
    }

    fn failed_checks(verdict: &Verdict) -> Vec<String> {
        verdict.json["checks"]
            .as_array()
            .expect("checks is an array")
            .iter()
            .filter(|check| check["pass"] != Value::Bool(true))
            .map(|check| check["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// A correct run passes: the leader's no-op at index 1 is nobody's
    /// append yet is not invented; a read that lags is counted, not failed;
    /// an unserved KV store is reported, not passed off as checked.
    #[test]
    fn correct_run_passes_with_noops_and_stale_reads() {
        let logs: &[&[u64]] = &[&[NOOP, 10, 20], &[NOOP, 10, 20], &[NOOP, 10, 20]];
        let verdict = judge(&evidence(history(Some(20)), logs), &Budget::DEFAULT);
        assert!(verdict.pass, "{}", verdict.summary);
        let stale = judge(&evidence(history(None), logs), &Budget::DEFAULT);
        assert!(stale.pass, "{}", stale.summary);
        assert!(
            stale.summary.contains("stale reads 1 on log a"),
            "{}",
            stale.summary
        );
        assert!(stale.summary.contains("KV not served"), "{}", stale.summary);
        assert_eq!(verdict.json["verdict"], "pass");
    }

    /// A lost acknowledged append, a divergent node, a wrong read, a node
    /// that exited, a slow recovery and a required but unserved KV store
    /// each fail the run, and the summary says how to replay it.
    #[test]
    fn each_broken_promise_fails_the_run() {
        let lost = judge(
            &evidence(history(Some(20)), &[&[NOOP, 10, 30], &[NOOP, 10, 30]]),
            &Budget::DEFAULT,
        );
        assert!(!lost.pass);
        assert_eq!(failed_checks(&lost), vec!["log a"]);
        assert!(lost.summary.contains("is lost"), "{}", lost.summary);
        assert!(
            lost.summary
                .contains("replay the schedule: scripts/nemesis --seed 7")
        );

        let diverged = judge(
            &evidence(history(Some(20)), &[&[NOOP, 10, 20], &[NOOP, 20, 10]]),
            &Budget::DEFAULT,
        );
        assert_eq!(failed_checks(&diverged), vec!["log a"]);

        let wrong_read = judge(
            &evidence(history(Some(10)), &[&[NOOP, 10, 20]]),
            &Budget::DEFAULT,
        );
        assert_eq!(failed_checks(&wrong_read), vec!["log a"]);

        let logs: &[&[u64]] = &[&[NOOP, 10, 20]];
        let mut exited = evidence(history(Some(20)), logs);
        exited.exits.push((1, "signal 6".into()));
        exited.recovery_final = Ok(5000);
        exited.require_kv = true;
        exited.repaired = Err("n2's copy of kv is damaged".into());
        let verdict = judge(&exited, &Budget::DEFAULT);
        assert_eq!(
            failed_checks(&verdict),
            vec![
                "kv linearizable",
                "writes accepted after the last fault",
                "every damaged copy repaired",
                "no node exited on its own"
            ]
        );
    }

    /// Lagging reads are counted apart, however many: they neither fail a
    /// run nor crowd a real violation out of the checker's bounded report
    /// (a 30-minute run once failed on 1000 of them and hid the rest).
    #[test]
    fn many_stale_reads_hide_nothing() {
        let mut history = history(Some(20));
        for round in 0..1200 {
            let time = 10 + 2 * round;
            history.invoke(time, ProcessId(3), read(3, None)).unwrap();
            history
                .complete(time + 1, ProcessId(3), EventKind::Ok, read(3, None))
                .unwrap();
        }
        let logs: &[&[u64]] = &[&[NOOP, 10, 20], &[NOOP, 10, 20]];
        let verdict = judge(&evidence(history.clone(), logs), &Budget::DEFAULT);
        assert!(verdict.pass, "{}", verdict.summary);
        assert_eq!(verdict.json["stale_reads"]["a"], 1000);
        let lost = judge(&evidence(history, &[&[NOOP, 10, 30]]), &Budget::DEFAULT);
        assert_eq!(failed_checks(&lost), vec!["log a"]);
        assert!(lost.summary.contains("is lost"), "{}", lost.summary);
    }

    /// A key-value history is checked per key when the store is served, by
    /// our checker and by the reference one: a read of a value never
    /// written fails both.
    #[test]
    fn kv_history_is_checked_when_served() {
        let mut history = History::new();
        let put = KvOp::Put { key: 1, value: 5 };
        history.invoke(1, ProcessId(1), NemesisOp::Kv(put)).unwrap();
        history
            .complete(2, ProcessId(1), EventKind::Ok, NemesisOp::Kv(put))
            .unwrap();
        let get = |value| NemesisOp::Kv(KvOp::Get { key: 1, value });
        history.invoke(3, ProcessId(2), get(None)).unwrap();
        history
            .complete(4, ProcessId(2), EventKind::Ok, get(Some(5)))
            .unwrap();
        let mut good = evidence(history.clone(), &[]);
        good.index_commit = [LogIndex(0), LogIndex(0)];
        good.kv = KvStatus::Served;
        assert!(judge(&good, &Budget::DEFAULT).pass);
        history.invoke(5, ProcessId(2), get(None)).unwrap();
        history
            .complete(6, ProcessId(2), EventKind::Ok, get(Some(6)))
            .unwrap();
        let mut bad = evidence(history, &[]);
        bad.index_commit = [LogIndex(0), LogIndex(0)];
        bad.kv = KvStatus::Served;
        let verdict = judge(&bad, &Budget::DEFAULT);
        // Both checkers, independently.
        assert_eq!(
            failed_checks(&verdict),
            vec!["kv linearizable", "kv linearizable (reference checker)"]
        );
        assert!(
            verdict.summary.contains("key 1 is not linearizable"),
            "{}",
            verdict.summary
        );
    }
}
