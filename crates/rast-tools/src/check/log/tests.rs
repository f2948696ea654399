//! Tests of the log checker: a correct history passes; each property of
//! the module docs is broken on purpose in a history of its own, which must
//! be reported as exactly that violation; the report stays bounded; and
//! operations survive their text form.
//!
//! Why a file of its own: the histories are long to write out, and the
//! checker reads better without them.

use super::*;
use crate::check::history::{EventKind, History, ProcessId};

/// Records a history with one tick per event.
#[derive(Default)]
struct Recorder {
    history: History<LogOp>,
}

impl Recorder {
    fn event(&mut self, process: u64, kind: EventKind, op: LogOp) -> &mut Self {
        let time_ns = self.history.len() as u64;
        let process = ProcessId(process);
        self.history.complete(time_ns, process, kind, op).unwrap();
        self
    }

    fn invoke(&mut self, process: u64, op: LogOp) -> &mut Self {
        self.event(process, EventKind::Invoke, op)
    }

    fn ok(&mut self, process: u64, op: LogOp) -> &mut Self {
        self.event(process, EventKind::Ok, op)
    }

    /// A whole append, acknowledged at `index`, before the next event.
    fn append_ok(&mut self, process: u64, payload: u64, index: u64) -> &mut Self {
        self.invoke(process, append(payload))
            .ok(process, appended(payload, index))
    }

    /// A whole read of `index` that saw `payload`.
    fn read_ok(&mut self, process: u64, index: u64, payload: Option<u64>) -> &mut Self {
        self.invoke(process, read(index))
            .ok(process, read_saw(index, payload))
    }

    fn check(&self, logs: &[&[u64]], index_commit: u64) -> LogReport {
        let final_logs: Vec<NodeLog> = logs
            .iter()
            .enumerate()
            .map(|(node, payloads)| NodeLog {
                node: NodeId(node as u64 + 1),
                payloads: payloads.to_vec(),
            })
            .collect();
        check(
            &self.history.operations(),
            &final_logs,
            LogIndex(index_commit),
        )
    }
}

fn append(payload: u64) -> LogOp {
    LogOp::Append {
        payload,
        index: None,
    }
}

fn appended(payload: u64, index: u64) -> LogOp {
    LogOp::Append {
        payload,
        index: Some(LogIndex(index)),
    }
}

fn read(index: u64) -> LogOp {
    LogOp::Read {
        index: LogIndex(index),
        payload: None,
    }
}

fn read_saw(index: u64, payload: Option<u64>) -> LogOp {
    LogOp::Read {
        index: LogIndex(index),
        payload,
    }
}

/// Asserts the report holds exactly one violation and returns it.
fn only(report: &LogReport) -> &Violation {
    assert_eq!(report.violations.len(), 1, "{report}");
    &report.violations[0]
}

/// A correct run passes: concurrent appends, an unknown-outcome append
/// that was committed and one that was not, a failed append that left
/// no trace, reads of present and absent entries.
#[test]
fn correct_history_passes() {
    let mut recorder = Recorder::default();
    recorder
        .invoke(1, append(10))
        .invoke(2, append(20))
        .ok(2, appended(20, 1))
        .ok(1, appended(10, 2))
        .invoke(3, append(30))
        .event(3, EventKind::Info, append(30))
        .invoke(3, append(40))
        .read_ok(1, 1, Some(20))
        .read_ok(2, 4, None)
        .invoke(2, append(50))
        .event(2, EventKind::Fail, append(50))
        .append_ok(1, 60, 4)
        .read_ok(2, 3, Some(30));
    let report = recorder.check(
        &[&[20, 10, 30, 60], &[20, 10, 30, 60, 70], &[20, 10, 30, 60]],
        4,
    );
    assert!(report.is_ok(), "{report}");
}

/// An acknowledged append missing from the committed log is lost,
/// whether the log is shorter or holds something else there.
#[test]
fn catches_lost_acknowledged_append() {
    let mut recorder = Recorder::default();
    recorder.append_ok(1, 10, 1).append_ok(1, 20, 2);
    let report = recorder.check(&[&[10], &[10]], 1);
    let violation = only(&report);
    assert!(
        matches!(
            violation,
            Violation::AcknowledgedLost {
                operation: 1,
                payload: 20,
                found: None,
                ..
            }
        ),
        "{violation}"
    );
    assert!(
        violation
            .to_string()
            .starts_with("acknowledged append #1 (payload 20) at index 2 is lost")
    );

    let mut recorder = Recorder::default();
    recorder.append_ok(1, 10, 1).invoke(2, append(30));
    let report = recorder.check(&[&[30]], 1);
    assert!(
        matches!(
            only(&report),
            Violation::AcknowledgedLost {
                operation: 0,
                found: Some(30),
                ..
            }
        ),
        "{report}"
    );
}

/// Two reads that see different payloads at one index conflict.
#[test]
fn catches_two_payloads_at_one_index() {
    let mut recorder = Recorder::default();
    recorder
        .invoke(1, append(10))
        .invoke(2, append(20))
        .read_ok(3, 1, Some(10))
        .read_ok(3, 1, Some(20));
    let report = recorder.check(&[], 0);
    let violation = only(&report);
    assert!(
        matches!(
            violation,
            Violation::Conflict {
                first: Source::Read(2),
                second: Source::Read(3),
                first_payload: 10,
                second_payload: 20,
                ..
            }
        ),
        "{violation}"
    );
}

/// One payload at two committed indices is a duplicate (a retried
/// append applied twice).
#[test]
fn catches_duplicate_entry() {
    let mut recorder = Recorder::default();
    recorder
        .invoke(1, append(10))
        .event(1, EventKind::Info, append(10));
    let report = recorder.check(&[&[10, 10]], 2);
    let violation = only(&report);
    assert!(
        matches!(
            violation,
            Violation::Duplicate {
                payload: 10,
                first_index: LogIndex(1),
                second_index: LogIndex(2),
                ..
            }
        ),
        "{violation}"
    );
}

/// Two appends with one payload make entries untraceable: reported.
#[test]
fn catches_reused_payload() {
    let mut recorder = Recorder::default();
    recorder.append_ok(1, 10, 1).invoke(1, append(10));
    let report = recorder.check(&[&[10]], 1);
    assert!(
        matches!(
            only(&report),
            Violation::PayloadReused {
                payload: 10,
                first: 0,
                second: 1
            }
        ),
        "{report}"
    );
}

/// An `ok` append must say where it went.
#[test]
fn catches_ack_without_index() {
    let mut recorder = Recorder::default();
    recorder.invoke(1, append(10)).ok(1, append(10));
    let report = recorder.check(&[&[10]], 1);
    assert!(
        matches!(only(&report), Violation::AckWithoutIndex { operation: 0 }),
        "{report}"
    );
}

/// A committed payload nobody appended was invented.
#[test]
fn catches_invented_entry() {
    let mut recorder = Recorder::default();
    recorder.append_ok(1, 10, 1);
    let report = recorder.check(&[&[10, 99]], 2);
    assert!(
        matches!(
            only(&report),
            Violation::Invented {
                payload: 99,
                index: LogIndex(2),
                source_: Source::Committed
            }
        ),
        "{report}"
    );
}

/// A failed append (certainly no effect) must leave no entry.
#[test]
fn catches_failed_append_visible() {
    let mut recorder = Recorder::default();
    recorder
        .invoke(1, append(10))
        .event(1, EventKind::Fail, append(10))
        .read_ok(2, 1, Some(10));
    let report = recorder.check(&[], 0);
    assert!(
        matches!(
            only(&report),
            Violation::FailedAppendVisible {
                operation: 0,
                payload: 10,
                source_: Source::Read(1),
                ..
            }
        ),
        "{report}"
    );
}

/// An append that began after another was acknowledged must get a
/// higher index.
#[test]
fn catches_real_time_order_inversion() {
    let mut recorder = Recorder::default();
    recorder
        .invoke(1, append(10))
        .append_ok(2, 20, 2)
        .ok(1, appended(10, 1))
        .append_ok(2, 30, 1);
    let report = recorder.check(&[], 0);
    let order = report
        .violations
        .iter()
        .find(|v| matches!(v, Violation::RealTimeOrder { .. }));
    assert!(
        matches!(
            order,
            Some(Violation::RealTimeOrder {
                earlier: 1,
                index_earlier: LogIndex(2),
                later: 2,
                index_later: LogIndex(1)
            })
        ),
        "{report}"
    );
    // Concurrent appends may take either order.
    let mut recorder = Recorder::default();
    recorder
        .invoke(1, append(10))
        .append_ok(2, 20, 1)
        .ok(1, appended(10, 2));
    assert!(recorder.check(&[&[20, 10]], 2).is_ok());
}

/// A read that began after an append at index 2 was acknowledged must
/// find entries at 1 and 2.
#[test]
fn catches_stale_read() {
    let mut recorder = Recorder::default();
    recorder
        .append_ok(1, 10, 1)
        .append_ok(1, 20, 2)
        .read_ok(2, 1, None);
    let report = recorder.check(&[&[10, 20]], 2);
    assert!(
        matches!(
            only(&report),
            Violation::StaleRead {
                read: 2,
                index: LogIndex(1),
                append: 1,
                index_append: LogIndex(2)
            }
        ),
        "{report}"
    );
}

/// A read cannot see an append that began after the read ended.
#[test]
fn catches_read_from_the_future() {
    let mut recorder = Recorder::default();
    recorder.read_ok(2, 1, Some(10)).append_ok(1, 10, 1);
    let report = recorder.check(&[&[10]], 1);
    assert!(
        matches!(
            only(&report),
            Violation::FutureRead {
                read: 0,
                payload: 10,
                append: 1
            }
        ),
        "{report}"
    );
}

/// Every node holds the committed prefix, and they agree on it; past
/// the commit index, logs may differ.
#[test]
fn catches_final_logs_short_or_diverging() {
    let mut recorder = Recorder::default();
    recorder
        .append_ok(1, 10, 1)
        .invoke(1, append(20))
        .invoke(2, append(30));
    let report = recorder.check(&[&[10, 20], &[10]], 2);
    assert!(
        matches!(
            only(&report),
            Violation::FinalLogShort {
                node: NodeId(2),
                length: 1,
                index_commit: LogIndex(2)
            }
        ),
        "{report}"
    );
    let report = recorder.check(&[&[10, 20], &[10, 30]], 2);
    let diverge = report
        .violations
        .iter()
        .find(|v| matches!(v, Violation::FinalLogsDiverge { .. }));
    assert!(
        matches!(
            diverge,
            Some(Violation::FinalLogsDiverge {
                node_first: NodeId(1),
                payload_first: 20,
                node_second: NodeId(2),
                payload_second: 30,
                index: LogIndex(2)
            })
        ),
        "{report}"
    );
    assert!(recorder.check(&[&[10, 20], &[10, 30]], 1).is_ok());
}

/// Past [`VIOLATIONS_MAX`], the report is truncated, not unbounded.
#[test]
fn report_is_bounded() {
    let mut recorder = Recorder::default();
    for payload in 0..(VIOLATIONS_MAX as u64 + 5) {
        recorder.append_ok(1, payload, payload + 1);
    }
    let report = recorder.check(&[&[]], 0);
    assert_eq!(report.violations.len(), VIOLATIONS_MAX);
    assert!(report.truncated);
    assert!(
        report
            .to_string()
            .ends_with("(more violations not shown)\n")
    );
}

/// Operation text round-trips through the history file format.
#[test]
fn op_text_round_trip() {
    for op in [append(7), appended(7, 3), read(3), read_saw(3, Some(7))] {
        assert_eq!(op.to_string().parse::<LogOp>(), Ok(op));
    }
    assert_eq!(appended(7, 3).to_string(), "append 7 3");
    assert_eq!(read(3).to_string(), "read 3 nil");
    assert!("append x".parse::<LogOp>().is_err());
    assert!("read".parse::<LogOp>().is_err());
}
