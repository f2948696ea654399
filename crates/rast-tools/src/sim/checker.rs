//! Invariant checkers, one per Raft property, run as the simulation steps,
//! and the client history with its end-of-run checks.
//!
//! Each check is event-driven, which is equivalent to checking after every
//! step because the property can only break at that event:
//! * **election safety** — when a node becomes leader: no other leader of
//!   that term was ever seen;
//! * **log matching** — when a node appends a batch: any batch seen before
//!   with the same first index and term has the same entries and the same
//!   previous term (inductively: same index and term, same prefix);
//! * **leader completeness** — when a node becomes leader: its log holds
//!   every committed entry;
//! * **state machine safety** — when a node applies an index: the entry
//!   equals the one every other node applied there;
//! * **commit never regresses** — on every apply, per node life;
//! * **a leader commits only entries of its term** — on every apply at a
//!   leader (Raft §5.4.2; earlier entries commit with one of its term);
//! * **committed entries survive crashes** — after every crash: every
//!   committed entry is durable on a majority of voters.
//!
//! The history (invoke / ok / fail / info with simulated times) is the input
//! of the linearizability checkers (`check`, merged separately); the log
//! checks here verify at the end that no acknowledged append is lost or
//! duplicated and that reads respect real time.

use std::collections::HashMap;

use crate::sim::disk::{BatchRef, DiskState, DurableView};
use crate::types::{LogIndex, NodeId, Term};

/// A violated property: what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property, by name.
    pub property: &'static str,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    fn new(property: &'static str, detail: String) -> Self {
        Self { property, detail }
    }
}

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Append a batch of `count` entries with values `first_value..`.
    Append {
        /// Value of the first entry (values are unique per run).
        first_value: u64,
        /// Entries.
        count: u32,
    },
    /// A linearizable read of the log's length and last value.
    Read,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Appended at `index` (the first entry's).
    Appended {
        /// First index.
        index: LogIndex,
    },
    /// Read the log up to `length` whose last entry holds `last_value`.
    Read {
        /// Read index.
        length: LogIndex,
        /// Value at that index (0 for a no-op or an empty log).
        last_value: u64,
    },
    /// Definitely did not happen.
    Fail,
    /// May or may not have happened (timeout, leader lost).
    Info,
}

/// One client operation with its simulated times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The client.
    pub client: u32,
    /// What it asked.
    pub operation: Operation,
    /// When it asked (simulated ms).
    pub invoked_ms: u64,
    /// When it got an answer (`u64::MAX` if never).
    pub completed_ms: u64,
    /// The answer.
    pub outcome: Outcome,
}

/// The running checks of one simulation.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: HashMap<Term, NodeId>,
    /// The committed log: entry `i` at position `i - 1`, (term, value).
    committed: Vec<(Term, u64)>,
    /// Every batch ever stored: (first index, term) → (values hash, count,
    /// previous term).
    batches: HashMap<(LogIndex, Term), (u64, u32, Term)>,
    /// The client history.
    pub history: Vec<HistoryEntry>,
}

impl Checker {
    /// Length of the committed log.
    pub fn committed_length(&self) -> LogIndex {
        LogIndex(self.committed.len() as u64)
    }

    /// The committed entry at `index`.
    pub fn committed_entry(&self, index: LogIndex) -> Option<(Term, u64)> {
        let position = index.get().checked_sub(1)? as usize;
        self.committed.get(position).copied()
    }

    /// Election safety: at most one leader per term.
    pub fn leader_elected(&mut self, term: Term, id: NodeId) -> Result<(), Violation> {
        match self.leaders.insert(term, id) {
            Some(other) if other != id => Err(Violation::new(
                "election safety",
                format!("nodes {other} and {id} both led term {term}"),
            )),
            _ => Ok(()),
        }
    }

    /// Leader completeness: a new leader's log holds every committed entry.
    pub fn leader_log(&self, id: NodeId, term: Term, log: &DiskState) -> Result<(), Violation> {
        for (position, expected) in self.committed.iter().enumerate() {
            let index = LogIndex(position as u64 + 1);
            if log.entry(index) != Some(*expected) {
                return Err(Violation::new(
                    "leader completeness",
                    format!(
                        "leader {id} of term {term} has {:?} at committed index {index}, \
                         committed {expected:?}",
                        log.entry(index)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Log matching: a batch appended by `id` after an entry of term
    /// `previous_term`.
    pub fn batch_stored(
        &mut self,
        id: NodeId,
        batch: &BatchRef,
        previous_term: Term,
    ) -> Result<(), Violation> {
        let summary = batch.summary;
        let hash = values_hash(&batch.values);
        let key = (summary.first_index, summary.term);
        let value = (hash, summary.count, previous_term);
        match self.batches.insert(key, value) {
            Some(seen) if seen != value => Err(Violation::new(
                "log matching",
                format!(
                    "node {id} stored batch at {} term {} as {value:?}, seen before as {seen:?}",
                    summary.first_index, summary.term
                ),
            )),
            _ => Ok(()),
        }
    }

    /// State machine safety: `id` applied `entry` at `index`, having applied
    /// everything before it.
    pub fn applied(
        &mut self,
        id: NodeId,
        index: LogIndex,
        entry: (Term, u64),
    ) -> Result<(), Violation> {
        match self.committed_entry(index) {
            Some(expected) if expected != entry => Err(Violation::new(
                "state machine safety",
                format!("node {id} applied {entry:?} at {index}, others applied {expected:?}"),
            )),
            Some(_) => Ok(()),
            None => {
                assert_eq!(
                    index,
                    self.committed_length().next(),
                    "applies are in order"
                );
                self.committed.push(entry);
                Ok(())
            }
        }
    }

    /// Committed entries survive crashes: each is held by a majority of
    /// the voters, given each voter's durable state (a damaged voter
    /// counted as holding it if its vote checks for it: see
    /// `DurableView::holds`).
    pub fn committed_durable(&self, durable: &[DurableView<'_>]) -> Result<(), Violation> {
        self.committed_durable_through(durable, LogIndex(u64::MAX))
    }

    /// [`Checker::committed_durable`] for the committed entries up to
    /// `through` only (a configuration's outgoing half holds what was
    /// committed up to that configuration's entry, not what its successor
    /// committed after it).
    pub fn committed_durable_through(
        &self,
        durable: &[DurableView<'_>],
        through: LogIndex,
    ) -> Result<(), Violation> {
        let majority = durable.len() / 2 + 1;
        let count = usize::try_from(through.get()).unwrap_or(usize::MAX);
        for (position, expected) in self.committed.iter().enumerate().take(count) {
            let index = LogIndex(position as u64 + 1);
            // A damaged node may have lost an entry it acknowledged; what
            // must hold is that no election can pass the entry by.
            let holders = durable
                .iter()
                .filter(|state| state.holds(index, *expected))
                .count();
            if holders < majority {
                return Err(Violation::new(
                    "committed entries survive crashes",
                    format!(
                        "committed entry {index} {expected:?} durable on {holders} of {} voters",
                        durable.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// End-of-run log checks over the history: every acknowledged append is
    /// in the committed log at its index, no value is committed twice, and
    /// reads respect real time.
    pub fn check_history(&self) -> Result<(), Violation> {
        let mut seen: HashMap<u64, LogIndex> = HashMap::new();
        for (position, (_, value)) in self.committed.iter().enumerate() {
            let index = LogIndex(position as u64 + 1);
            if *value != 0
                && let Some(first) = seen.insert(*value, index)
            {
                return Err(Violation::new(
                    "no duplicate",
                    format!("value {value} committed at {first} and {index}"),
                ));
            }
        }
        for entry in &self.history {
            if let (Operation::Append { first_value, count }, Outcome::Appended { index }) =
                (entry.operation, entry.outcome)
            {
                for offset in 0..u64::from(count) {
                    let at = LogIndex(index.get() + offset);
                    if seen.get(&(first_value + offset)) != Some(&at) {
                        return Err(Violation::new(
                            "no acknowledged append lost",
                            format!(
                                "value {} acknowledged at {at}, committed log has {:?}",
                                first_value + offset,
                                self.committed_entry(at)
                            ),
                        ));
                    }
                }
            }
        }
        self.check_reads()
    }

    /// A read sees every append acknowledged before it was invoked, no read
    /// sees less than a read that completed before it was invoked, and a
    /// read's last value is the committed one.
    fn check_reads(&self) -> Result<(), Violation> {
        let mut completed: Vec<(u64, LogIndex)> = self
            .history
            .iter()
            .filter_map(|entry| match entry.outcome {
                Outcome::Appended { index } => Some((
                    entry.completed_ms,
                    LogIndex(index.get() + append_count(entry) - 1),
                )),
                Outcome::Read { length, .. } => Some((entry.completed_ms, length)),
                _ => None,
            })
            .collect();
        completed.sort_unstable();
        // Highest index known to exist by the end of each completion time.
        let mut floor = LogIndex::ZERO;
        for slot in &mut completed {
            floor = floor.max(slot.1);
            slot.1 = floor;
        }
        for entry in &self.history {
            let Outcome::Read { length, last_value } = entry.outcome else {
                continue;
            };
            let before = completed.partition_point(|(time, _)| *time < entry.invoked_ms);
            let required = before
                .checked_sub(1)
                .map_or(LogIndex::ZERO, |position| completed[position].1);
            if length < required {
                return Err(Violation::new(
                    "reads respect real time",
                    format!(
                        "read invoked at {} ms saw length {length}, but {required} \
                         was complete before",
                        entry.invoked_ms
                    ),
                ));
            }
            let expected = self.committed_entry(length).map_or(0, |(_, value)| value);
            if length > LogIndex::ZERO && expected != last_value {
                return Err(Violation::new(
                    "reads see committed values",
                    format!("read at {length} saw {last_value}, committed {expected}"),
                ));
            }
        }
        Ok(())
    }
}

fn append_count(entry: &HistoryEntry) -> u64 {
    match entry.operation {
        Operation::Append { count, .. } => u64::from(count),
        Operation::Read => 1,
    }
}

/// FNV-1a over the values: a cheap identity of a batch's content.
fn values_hash(values: &[u64]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for value in values {
        for byte in value.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
