//! A parser for Jepsen's etcd register logs (the linearizability-checker
//! corpus in `testdata/jepsen-etcd/`), into a
//! [`History`]`<`[`RegisterOp`]`>`.
//!
//! The logs are Jepsen's console output, one event per line (tabs between
//! the fields after ` - `, shown as two spaces):
//!
//! ```text
//! INFO  jepsen.util - 2  :invoke  :cas  [3 0]
//! INFO  jepsen.util - 2  :ok  :cas  [3 0]
//! INFO  jepsen.util - 4  :info  :write  :timed-out
//! INFO  jepsen.util - 1  :fail  :read  :timed-out
//! ```
//!
//! After ` - `: process, type (`:invoke :ok :fail :info`), function
//! (`:read :write :cas`) and value (`nil`, an integer, `[FROM TO]`, or a
//! keyword such as `:timed-out`). Meanings: an invoked read says `nil`
//! (value not known yet), an `ok` read of `nil` means never written; a
//! completion whose value is a keyword carries the invoked operation
//! (`:info :write :timed-out` is the invoked write, outcome unknown). Lines
//! of other loggers and of the `:nemesis` process are skipped. Event
//! positions are line order; the time of an event is its line number.
//!
//! Anything else is an error naming the line, never a panic: these files
//! are outside bytes.

use std::io::Read;
use std::path::Path;

use super::history::{EventKind, History, HistoryError, ProcessId, parse_optional};
use super::linearizable::RegisterOp;

/// Largest Jepsen log read from a file.
pub const JEPSEN_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Reads and parses a Jepsen etcd log file.
pub fn read_file(path: &Path) -> Result<History<RegisterOp>, HistoryError> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(JEPSEN_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > JEPSEN_FILE_BYTES_MAX {
        return Err(HistoryError::Parse {
            line: 0,
            reason: format!("file exceeds {JEPSEN_FILE_BYTES_MAX} bytes"),
        });
    }
    parse(&text)
}

/// Parses the text of a Jepsen etcd log.
pub fn parse(text: &str) -> Result<History<RegisterOp>, HistoryError> {
    let mut history = History::new();
    // Per process, its open invocation (to fill in keyword completions).
    let mut open: Vec<(ProcessId, RegisterOp)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let Some(event) = parse_line(line).map_err(|reason| HistoryError::Parse {
            line: number,
            reason,
        })?
        else {
            continue;
        };
        let slot = open
            .iter()
            .position(|(process, _)| *process == event.process);
        let op = match (event.kind, slot) {
            (EventKind::Invoke, _) => {
                let op = event
                    .op
                    .ok_or_else(|| error(number, "invoke without a value"))?;
                open.push((event.process, op));
                op
            }
            (_, Some(slot)) => {
                let (_, invoked) = open.swap_remove(slot);
                completed(invoked, event.op)
                    .ok_or_else(|| error(number, "completion of a different function"))?
            }
            (_, None) => return Err(error(number, "completion without an invocation")),
        };
        let time_ns = number as u64;
        history
            .push(super::history::Event {
                time_ns,
                process: event.process,
                kind: event.kind,
                op,
            })
            .map_err(|problem| error(number, &problem.to_string()))?;
    }
    Ok(history)
}

/// One event line, before completions are matched to invocations.
struct JepsenEvent {
    process: ProcessId,
    kind: EventKind,
    /// `None` when the value was a keyword such as `:timed-out`.
    op: Option<RegisterOp>,
}

/// Parses a line; `Ok(None)` for lines that are not client events.
fn parse_line(line: &str) -> Result<Option<JepsenEvent>, String> {
    let Some((logger, event)) = line.split_once(" - ") else {
        return Ok(None);
    };
    if !logger.split_whitespace().any(|word| word == "jepsen.util") {
        return Ok(None);
    }
    let words: Vec<&str> = event.split_whitespace().collect();
    let [process, kind, function, value @ ..] = words.as_slice() else {
        return Err(format!(
            "expected process, type, function and value: {event:?}"
        ));
    };
    if *process == ":nemesis" {
        return Ok(None);
    }
    let process = process
        .parse()
        .map(ProcessId)
        .map_err(|_| format!("bad process {process:?}"))?;
    let kind = EventKind::from_name(kind).ok_or_else(|| format!("bad type {kind:?}"))?;
    let op = parse_op(function, value)?;
    Ok(Some(JepsenEvent { process, kind, op }))
}

/// Parses function and value; a keyword value (`:timed-out`) gives `None`.
fn parse_op(function: &str, value: &[&str]) -> Result<Option<RegisterOp>, String> {
    if let [keyword] = value
        && keyword.starts_with(':')
    {
        return Ok(None);
    }
    let op = match (function, value) {
        (":read", [value]) => RegisterOp::Read(parse_optional(value).map_err(|e| e.0)?),
        (":write", [value]) => RegisterOp::Write(Some(integer(value)?)),
        (":cas", [from, to]) => {
            let from = from
                .strip_prefix('[')
                .ok_or_else(|| format!("bad cas value {from:?}"))?;
            let to = to
                .strip_suffix(']')
                .ok_or_else(|| format!("bad cas value {to:?}"))?;
            RegisterOp::Cas {
                from: Some(integer(from)?),
                to: Some(integer(to)?),
            }
        }
        _ => return Err(format!("bad function and value: {function} {value:?}")),
    };
    Ok(Some(op))
}

fn integer(word: &str) -> Result<u64, String> {
    word.parse().map_err(|_| format!("bad integer {word:?}"))
}

/// The operation a completion records: its own if it has one of the same
/// function as the invocation, else the invocation's. `None` if the
/// functions differ.
fn completed(invoked: RegisterOp, done: Option<RegisterOp>) -> Option<RegisterOp> {
    let Some(done) = done else {
        return Some(invoked);
    };
    let same = matches!(
        (invoked, done),
        (RegisterOp::Read(_), RegisterOp::Read(_))
            | (RegisterOp::Write(_), RegisterOp::Write(_))
            | (RegisterOp::Cas { .. }, RegisterOp::Cas { .. })
    );
    same.then_some(done)
}

fn error(line: usize, reason: &str) -> HistoryError {
    HistoryError::Parse {
        line,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::Outcome;

    /// The four event types and three functions parse to the right
    /// operations and outcomes; keyword completions carry the invocation.
    #[test]
    fn parses_events() {
        let text = "\
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1\t:invoke\t:write\t3
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 2\t:invoke\t:cas\t[3 4]
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
INFO  jepsen.core - something else
INFO  jepsen.util - 1\t:info\t:write\t:timed-out
INFO  jepsen.util - 2\t:fail\t:cas\t[3 4]
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 0\t:fail\t:read\t:timed-out
";
        let history = parse(text).unwrap();
        assert_eq!(history.len(), 8);
        let operations = history.operations();
        assert_eq!(operations[0].outcome, Outcome::Ok(RegisterOp::Read(None)));
        assert_eq!(operations[1].invoke, RegisterOp::Write(Some(3)));
        assert_eq!(operations[1].outcome, Outcome::Unknown);
        let cas = RegisterOp::Cas {
            from: Some(3),
            to: Some(4),
        };
        assert_eq!(operations[2].outcome, Outcome::Fail(cas));
        assert_eq!(operations[3].outcome, Outcome::Fail(RegisterOp::Read(None)));
        assert_eq!(history.events()[2].time_ns, 3);
    }

    /// Malformed lines are errors naming the line, never panics.
    #[test]
    fn rejects_malformed_lines() {
        let cases = [
            ("INFO  jepsen.util - x\t:invoke\t:read\tnil", 1),
            ("INFO  jepsen.util - 0\t:start\t:read\tnil", 1),
            ("INFO  jepsen.util - 0\t:invoke\t:read", 1),
            ("INFO  jepsen.util - 0\t:invoke\t:cas\t[3", 1),
            ("INFO  jepsen.util - 0\t:invoke\t:cas\t3 4", 1),
            ("INFO  jepsen.util - 0\t:invoke\t:write\t-1", 1),
            ("INFO  jepsen.util - 0\t:invoke\t:write\t:x", 1),
            ("INFO  jepsen.util - 0\t:invoke\t:frob\t1", 1),
            ("INFO  jepsen.util - 0\t:ok\t:read\t1", 1),
            (
                "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:invoke\t:read\tnil",
                2,
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:write\t1",
                2,
            ),
        ];
        for (text, line_bad) in cases {
            match parse(text) {
                Err(HistoryError::Parse { line, .. }) => assert_eq!(line, line_bad, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(parse("").unwrap().is_empty());
    }
}
