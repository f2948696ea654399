//! A history: what clients asked for and what they were told, in real-time
//! order.
//!
//! A history is the only evidence a checker gets. It is recorded by whoever
//! drives the system (the simulator, the fault-test harness) one event at a
//! time, and it follows Jepsen's model:
//!
//! * an operation begins with an `invoke` event and ends with at most one
//!   completion: `ok` (it took effect, and the completion carries what it
//!   returned), `fail` (it certainly took no effect) or `info` (nobody knows:
//!   a timeout, a lost connection, a crashed client);
//! * an operation still open when the history ends counts as `info`;
//! * each process runs one operation at a time; after `info` it may invoke
//!   again (the old operation is then still "in flight" forever);
//! * events are in real-time order: if event `a` comes before event `b` in
//!   the history, `a` happened no later than `b`. Timestamps are monotonic
//!   nanoseconds, never decreasing; they are for humans and tools, the
//!   *position* of an event is what checkers use for ordering.
//!
//! The operation type `O` is the checker's business (a register read, a log
//! append, ...). As in Jepsen, the invoke and the completion each carry an
//! `O`: the invoke says what was asked (`read nil`), the `ok` what came back
//! (`read 3`).
//!
//! # File format
//!
//! One event per line, four fields separated by one tab (shown as two
//! spaces below); `#` starts a comment line, blank lines are skipped:
//!
//! ```text
//! # rast history v1
//! 1200  0  invoke  write 3
//! 1450  1  invoke  read nil
//! 1700  0  ok  write 3
//! 1800  1  ok  read 3
//! ```
//!
//! Fields: time (ns, monotonic), process id, kind (`invoke|ok|fail|info`),
//! the operation's `Display` text (parsed back with `FromStr`; may contain
//! spaces and tabs, never a newline). Text, not JSON, because the crate has
//! no serde and a line a human can read in a failing test is worth more than
//! a schema.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::str::FromStr;

use super::{HISTORY_EVENTS_MAX, HISTORY_LINE_BYTES_MAX};

/// A client process: one sequential thread of operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId(pub u64);

impl fmt::Display for ProcessId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The operation starts.
    Invoke,
    /// The operation took effect; the event carries its results.
    Ok,
    /// The operation certainly took no effect.
    Fail,
    /// The outcome is unknown: it may take effect at any time after its
    /// invocation, or never.
    Info,
}

impl EventKind {
    /// The name used in history files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Invoke => "invoke",
            Self::Ok => "ok",
            Self::Fail => "fail",
            Self::Info => "info",
        }
    }

    /// Parses a name as written by [`EventKind::name`] (a leading `:`, as in
    /// Jepsen's EDN, is accepted).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.strip_prefix(':').unwrap_or(name) {
            "invoke" => Some(Self::Invoke),
            "ok" => Some(Self::Ok),
            "fail" => Some(Self::Fail),
            "info" => Some(Self::Info),
            _ => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<O> {
    /// When it happened: monotonic nanoseconds, never decreasing along the
    /// history.
    pub time_ns: u64,
    /// Who did it.
    pub process: ProcessId,
    /// Invoke or one of the completions.
    pub kind: EventKind,
    /// The operation as invoked, or as completed (with its results).
    pub op: O,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// It took effect; the completion's operation carries the results.
    Ok(O),
    /// It certainly took no effect; the completion's operation (checkers
    /// may read observations from it, e.g. a compare that did not match).
    Fail(O),
    /// Unknown: completed `info`, or never completed before the history
    /// ended.
    Unknown,
}

/// An invocation paired with its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation<O> {
    /// Who ran it.
    pub process: ProcessId,
    /// The operation as invoked.
    pub invoke: O,
    /// How it ended.
    pub outcome: Outcome<O>,
    /// Position of the invoke event in the history (real-time order).
    pub position_invoke: usize,
    /// Position of the completion event; `None` if it never completed.
    pub position_complete: Option<usize>,
    /// Time of the invoke event.
    pub time_ns_invoke: u64,
    /// Time of the completion event, if any.
    pub time_ns_complete: Option<u64>,
}

impl<O> Operation<O> {
    /// The same call (process, positions, times) as an operation of
    /// another type: a history taken apart per object.
    pub fn retyped<P>(&self, invoke: P, outcome: Outcome<P>) -> Operation<P> {
        Operation {
            process: self.process,
            invoke,
            outcome,
            position_invoke: self.position_invoke,
            position_complete: self.position_complete,
            time_ns_invoke: self.time_ns_invoke,
            time_ns_complete: self.time_ns_complete,
        }
    }

    /// Whether `self` completed before `other` was invoked: then any correct
    /// system ordered `self` first.
    pub fn precedes<P>(&self, other: &Operation<P>) -> bool {
        self.position_complete
            .is_some_and(|complete| complete < other.position_invoke)
    }
}

/// A history that breaks the rules of the model, or a file that is not one.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A timestamp went backwards.
    #[error("event {position}: time {time_ns} ns is before the previous event's {previous_ns} ns")]
    TimeBackwards {
        /// Position of the offending event.
        position: usize,
        /// Its time.
        time_ns: u64,
        /// The previous event's time.
        previous_ns: u64,
    },
    /// A process invoked while its previous operation was still open.
    #[error(
        "event {position}: process {process} invokes while its operation from event {open} is open"
    )]
    InvokeWhileOpen {
        /// Position of the offending event.
        position: usize,
        /// The process.
        process: ProcessId,
        /// Position of the open invocation.
        open: usize,
    },
    /// A completion arrived for a process with nothing open.
    #[error("event {position}: process {process} completes ({kind}) with no open operation")]
    CompleteWithoutInvoke {
        /// Position of the offending event.
        position: usize,
        /// The process.
        process: ProcessId,
        /// The completion's kind.
        kind: EventKind,
    },
    /// The history reached [`HISTORY_EVENTS_MAX`].
    #[error("history exceeds {HISTORY_EVENTS_MAX} events")]
    TooManyEvents,
    /// A line of a history file could not be read.
    #[error("line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An operation's text contains a newline, so it cannot be written.
    #[error("event {position}: operation text contains a newline")]
    NewlineInOperation {
        /// Position of the offending event.
        position: usize,
    },
    /// Reading or writing the file failed.
    #[error("history io: {0}")]
    Io(#[from] io::Error),
}

/// A well-formed history: every event passed the model's rules when pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<O> {
    events: Vec<Event<O>>,
    /// Per process: position of its open invocation, if any. Kept sorted by
    /// process id (few processes: a sorted vector beats a map here).
    open: Vec<(ProcessId, usize)>,
}

impl<O> Default for History<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O> History<O> {
    /// An empty history.
    pub const fn new() -> Self {
        Self {
            events: Vec::new(),
            open: Vec::new(),
        }
    }

    /// The events, in real-time order.
    pub fn events(&self) -> &[Event<O>] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Appends an event after checking it against the model: time never
    /// goes backwards, a process invokes only when idle and completes only
    /// what it invoked.
    pub fn push(&mut self, event: Event<O>) -> Result<(), HistoryError> {
        let position = self.events.len();
        if position >= HISTORY_EVENTS_MAX {
            return Err(HistoryError::TooManyEvents);
        }
        if let Some(previous) = self.events.last()
            && event.time_ns < previous.time_ns
        {
            return Err(HistoryError::TimeBackwards {
                position,
                time_ns: event.time_ns,
                previous_ns: previous.time_ns,
            });
        }
        let slot = self.open.binary_search_by_key(&event.process, |(p, _)| *p);
        match (event.kind, slot) {
            (EventKind::Invoke, Ok(found)) => {
                return Err(HistoryError::InvokeWhileOpen {
                    position,
                    process: event.process,
                    open: self.open[found].1,
                });
            }
            (EventKind::Invoke, Err(insert)) => {
                self.open.insert(insert, (event.process, position));
            }
            (kind, Err(_)) => {
                return Err(HistoryError::CompleteWithoutInvoke {
                    position,
                    process: event.process,
                    kind,
                });
            }
            (_, Ok(found)) => {
                self.open.remove(found);
            }
        }
        self.events.push(event);
        Ok(())
    }

    /// Records an invocation.
    pub fn invoke(&mut self, time_ns: u64, process: ProcessId, op: O) -> Result<(), HistoryError> {
        self.push(Event {
            time_ns,
            process,
            kind: EventKind::Invoke,
            op,
        })
    }

    /// Records a completion (`kind` must not be [`EventKind::Invoke`] for
    /// the model to accept it).
    pub fn complete(
        &mut self,
        time_ns: u64,
        process: ProcessId,
        kind: EventKind,
        op: O,
    ) -> Result<(), HistoryError> {
        self.push(Event {
            time_ns,
            process,
            kind,
            op,
        })
    }
}

impl<O: Clone> History<O> {
    /// Pairs each invocation with its completion, in invocation order.
    /// Invocations still open at the end have [`Outcome::Unknown`].
    pub fn operations(&self) -> Vec<Operation<O>> {
        let mut operations: Vec<Operation<O>> = Vec::new();
        // Per process: index into `operations` of its open invocation.
        let mut open: Vec<(ProcessId, usize)> = Vec::new();
        for (position, event) in self.events.iter().enumerate() {
            let slot = open.binary_search_by_key(&event.process, |(p, _)| *p);
            match (event.kind, slot) {
                (EventKind::Invoke, Err(insert)) => {
                    open.insert(insert, (event.process, operations.len()));
                    operations.push(Operation {
                        process: event.process,
                        invoke: event.op.clone(),
                        outcome: Outcome::Unknown,
                        position_invoke: position,
                        position_complete: None,
                        time_ns_invoke: event.time_ns,
                        time_ns_complete: None,
                    });
                }
                (kind, Ok(found)) if kind != EventKind::Invoke => {
                    let operation = &mut operations[open.remove(found).1];
                    operation.outcome = match kind {
                        EventKind::Ok => Outcome::Ok(event.op.clone()),
                        EventKind::Fail => Outcome::Fail(event.op.clone()),
                        _ => Outcome::Unknown,
                    };
                    operation.position_complete = Some(position);
                    operation.time_ns_complete = Some(event.time_ns);
                }
                _ => unreachable!("push() admitted an event that breaks the model"),
            }
        }
        operations
    }
}

impl<O: fmt::Display> History<O> {
    /// Writes the history in the text format of the module docs.
    pub fn write_text<W: Write>(&self, mut writer: W) -> Result<(), HistoryError> {
        writeln!(writer, "# rast history v1")?;
        let mut op_text = String::new();
        for (position, event) in self.events.iter().enumerate() {
            op_text.clear();
            fmt::write(&mut op_text, format_args!("{}", event.op))
                .map_err(|_| io::Error::other("operation Display failed"))?;
            if op_text.contains(['\n', '\r']) {
                return Err(HistoryError::NewlineInOperation { position });
            }
            writeln!(
                writer,
                "{}\t{}\t{}\t{}",
                event.time_ns, event.process, event.kind, op_text
            )?;
        }
        writer.flush()?;
        Ok(())
    }

    /// The history in the text format, as a string.
    pub fn to_text(&self) -> Result<String, HistoryError> {
        let mut bytes = Vec::new();
        self.write_text(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| io::Error::other("operation text is not UTF-8").into())
    }
}

impl<O: FromStr> History<O>
where
    O::Err: fmt::Display,
{
    /// Parses the text format. Any malformed line, or a history that breaks
    /// the model, is an error naming the line; never a panic.
    pub fn parse_text(text: &str) -> Result<Self, HistoryError> {
        let mut history = Self::new();
        for (index, line) in text.lines().enumerate() {
            history.parse_line(index + 1, line)?;
        }
        Ok(history)
    }

    /// Reads the text format from a stream, a line at a time (lines are
    /// limited to [`HISTORY_LINE_BYTES_MAX`]).
    pub fn read_text<R: BufRead>(mut reader: R) -> Result<Self, HistoryError> {
        let mut history = Self::new();
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            number += 1;
            let limit = HISTORY_LINE_BYTES_MAX as u64 + 1;
            let read = io::Read::take(reader.by_ref(), limit).read_until(b'\n', &mut line)?;
            if read == 0 {
                return Ok(history);
            }
            if line.len() > HISTORY_LINE_BYTES_MAX {
                return Err(parse_error(number, "line too long"));
            }
            let text = std::str::from_utf8(&line).map_err(|_| parse_error(number, "not UTF-8"))?;
            history.parse_line(number, text.trim_end_matches(['\n', '\r']))?;
        }
    }

    fn parse_line(&mut self, number: usize, line: &str) -> Result<(), HistoryError> {
        if line.trim().is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let mut fields = line.splitn(4, '\t');
        let (Some(time), Some(process), Some(kind), Some(op)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(parse_error(number, "expected 4 tab-separated fields"));
        };
        let time_ns = time
            .parse()
            .map_err(|_| parse_error(number, &format!("bad time {time:?}")))?;
        let process = process
            .parse()
            .map(ProcessId)
            .map_err(|_| parse_error(number, &format!("bad process {process:?}")))?;
        let kind = EventKind::from_name(kind)
            .ok_or_else(|| parse_error(number, &format!("bad kind {kind:?}")))?;
        let op = op
            .parse()
            .map_err(|error| parse_error(number, &format!("bad operation {op:?}: {error}")))?;
        self.push(Event {
            time_ns,
            process,
            kind,
            op,
        })
        .map_err(|error| parse_error(number, &error.to_string()))
    }
}

/// Why an operation's text did not parse (the `FromStr` error of the
/// operation types in this module's siblings).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpParseError(pub String);

/// Parses `nil` as `None` and a decimal `u64` as `Some`: the optional value
/// of operation texts ("absent", "not yet known").
pub fn parse_optional(word: &str) -> Result<Option<u64>, OpParseError> {
    if word == "nil" {
        return Ok(None);
    }
    word.parse()
        .map(Some)
        .map_err(|_| OpParseError(format!("expected an integer or nil, found {word:?}")))
}

/// Formats an optional value the way [`parse_optional`] reads it.
pub struct Optional(pub Option<u64>);

impl fmt::Display for Optional {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(formatter, "{value}"),
            None => formatter.write_str("nil"),
        }
    }
}

fn parse_error(line: usize, reason: &str) -> HistoryError {
    HistoryError::Parse {
        line,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History<String> {
        let mut history = History::new();
        history.invoke(10, ProcessId(0), "write 3".into()).unwrap();
        history.invoke(11, ProcessId(1), "read nil".into()).unwrap();
        history
            .complete(12, ProcessId(0), EventKind::Ok, "write 3".into())
            .unwrap();
        history
            .complete(12, ProcessId(1), EventKind::Info, "read nil".into())
            .unwrap();
        history.invoke(13, ProcessId(1), "cas 3\t4".into()).unwrap();
        history
    }

    /// Writing then parsing gives back the same history, tabs in operation
    /// text included.
    #[test]
    fn text_round_trip() {
        let history = sample();
        let text = history.to_text().unwrap();
        assert!(text.starts_with("# rast history v1\n10\t0\tinvoke\twrite 3\n"));
        assert_eq!(History::<String>::parse_text(&text).unwrap(), history);
        let read = History::<String>::read_text(text.as_bytes()).unwrap();
        assert_eq!(read, history);
    }

    /// Operations pair invoke and completion per process; an operation left
    /// open at the end is unknown.
    #[test]
    fn operations_pair_events() {
        let operations = sample().operations();
        assert_eq!(operations.len(), 3);
        assert_eq!(operations[0].outcome, Outcome::Ok("write 3".into()));
        assert_eq!(operations[0].position_complete, Some(2));
        assert_eq!(operations[1].outcome, Outcome::Unknown);
        assert_eq!(operations[1].position_complete, Some(3));
        assert_eq!(operations[2].outcome, Outcome::Unknown);
        assert_eq!(operations[2].position_complete, None);
        assert!(operations[0].precedes(&operations[2]));
        assert!(!operations[0].precedes(&operations[1]));
        assert!(!operations[2].precedes(&operations[0]));
    }

    /// The model's rules are enforced at push time.
    #[test]
    fn push_rejects_broken_model() {
        let mut history = sample();
        assert!(matches!(
            history.invoke(13, ProcessId(1), "read nil".into()),
            Err(HistoryError::InvokeWhileOpen { open: 4, .. })
        ));
        assert!(matches!(
            history.complete(14, ProcessId(7), EventKind::Ok, "x".into()),
            Err(HistoryError::CompleteWithoutInvoke { .. })
        ));
        assert!(matches!(
            history.invoke(5, ProcessId(2), "x".into()),
            Err(HistoryError::TimeBackwards { .. })
        ));
        history.invoke(13, ProcessId(2), "a\nb".into()).unwrap();
        assert!(matches!(
            history.to_text(),
            Err(HistoryError::NewlineInOperation { position: 5 })
        ));
    }

    /// Malformed files are errors naming the line, never panics.
    #[test]
    fn parse_rejects_malformed_lines() {
        let cases = [
            ("1\t0\tinvoke", 1),
            ("# c\nx\t0\tinvoke\top", 2),
            ("1\t-1\tinvoke\top", 1),
            ("1\t0\tstart\top", 1),
            ("1\t0\tok\top", 1),
            ("2\t0\tinvoke\top\n1\t1\tinvoke\top", 2),
        ];
        for (text, line_bad) in cases {
            match History::<String>::parse_text(text) {
                Err(HistoryError::Parse { line, .. }) => assert_eq!(line, line_bad, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let long = "9".repeat(HISTORY_LINE_BYTES_MAX + 10);
        assert!(History::<String>::read_text(long.as_bytes()).is_err());
        assert!(History::<String>::read_text(&b"1\t0\tinvoke\t\xff\n"[..]).is_err());
    }
}
