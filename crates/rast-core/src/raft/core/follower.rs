//! The follower: a leader's AppendEntries and heartbeats, and the
//! acknowledgements, which cover only entries that are durable *and*
//! verified against the leader's log in the current term (rule 2 of the
//! `raft` module docs).
//!
//! Why apart: this is where outside bytes reach the log, so the checks that
//! they never panic the core (`append_is_well_formed`, `follower_store`)
//! sit with the code that trusts them.

#[cfg(feature = "planted-bugs")]
use super::PlantedBug;
use super::{Campaign, Core};
use crate::constants::{APPEND_MESSAGE_BATCHES_MAX, BATCH_ENTRIES_MAX};
use crate::raft::action::{Action, Role};
use crate::raft::log::Boundary;
use crate::raft::message::{
    AppendEntries, AppendResponse, Body, Heartbeat, HeartbeatResponse, Message, OutgoingBody,
};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::BatchKind;

impl Core {
    pub(super) fn step_follower(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        match message.body {
            Body::AppendEntries(append) => {
                self.heard_from_leader(message.from, actions);
                self.follower_append(message.term, &append, actions);
            }
            Body::Heartbeat(heartbeat) => {
                self.heard_from_leader(message.from, actions);
                self.follower_heartbeat(heartbeat, actions);
            }
            Body::InstallSnapshot(_) => self.heard_from_leader(message.from, actions),
            Body::TimeoutNow if self.promotable() => {
                self.campaign(Campaign::Transfer, actions);
            }
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, from: NodeId, actions: &mut Vec<Action>) {
        self.elapsed_ms_election = 0;
        if self.leader != from {
            self.become_follower(self.term, from, actions);
        }
    }

    /// The index this follower may acknowledge: durable, and verified equal
    /// to the leader's log in this term.
    fn acknowledgeable(&self) -> LogIndex {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(PlantedBug::AcknowledgeBeforeDurable) {
            return self.verified_index;
        }
        self.log.durable_index().min(self.verified_index)
    }

    /// Sends an acknowledgement if more became acknowledgeable.
    pub(super) fn acknowledge(&mut self, actions: &mut Vec<Action>) {
        let match_index = self.acknowledgeable();
        if self.role != Role::Follower
            || self.leader == NodeId::ZERO
            || match_index <= self.acknowledged_index
        {
            return;
        }
        self.acknowledged_index = match_index;
        self.send_match(match_index, actions);
    }

    /// Tells the leader this node holds its log up to `match_index`
    /// durably (and has checked it up to `verified_index`).
    fn send_match(&mut self, match_index: LogIndex, actions: &mut Vec<Action>) {
        let response = AppendResponse {
            success: true,
            match_index,
            last_index: self.verified_index,
            ..AppendResponse::default()
        };
        self.send(self.leader, OutgoingBody::AppendResponse(response), actions);
    }

    fn follower_append(
        &mut self,
        term: Term,
        append: &AppendEntries<'_>,
        actions: &mut Vec<Action>,
    ) {
        if !append_is_well_formed(term, append) {
            return; // outside bytes never panic the core: drop it
        }
        let prev_matches = append.prev_index < self.log.first_index().prev()
            || self.log.term_at(append.prev_index) == Some(append.prev_term);
        if !prev_matches {
            let (hint_index, hint_term) = if append.prev_index > self.log.last_index() {
                (self.log.last_index(), self.log.last_term())
            } else {
                self.log
                    .find_conflict_by_term(append.prev_index, append.prev_term)
            };
            let response = AppendResponse {
                success: false,
                rejected_index: append.prev_index,
                hint_index,
                hint_term,
                last_index: self.log.last_index(),
                ..AppendResponse::default()
            };
            self.send(self.leader, OutgoingBody::AppendResponse(response), actions);
            return;
        }
        if !self.follower_store(append, actions) {
            return; // a leader's batches that do not fit our log: dropped
        }
        let last = append.last_index();
        self.verified_index = self.verified_index.max(last).min(self.log.last_index());
        let commit = append.leader_commit.min(last);
        if commit > self.commit {
            self.advance_commit(commit);
            self.check_repaired(actions);
        }
        let match_index = self.acknowledgeable();
        self.acknowledged_index = self.acknowledged_index.max(match_index);
        self.send_match(match_index, actions);
    }

    /// Stores the batches of an accepted AppendEntries that are not already
    /// present, truncating a conflicting suffix first. Whole batches only.
    /// Returns false, changing nothing, when the batches cannot come from
    /// an honest leader: a conflict at or below the commit index or inside
    /// one of our batches, or a batch across our last entry or snapshot
    /// (outside bytes never panic the core).
    fn follower_store(&mut self, append: &AppendEntries<'_>, actions: &mut Vec<Action>) -> bool {
        let mut skip = 0usize;
        let mut conflict = None;
        for batch in append.batches {
            if batch.last_index() <= self.log.snapshot_index() {
                skip += 1;
                continue;
            }
            match self.log.term_at(batch.first_index) {
                Some(term) if term == batch.term => {
                    // Equal (index, term) means the same batch (inside a
                    // run its bounds are not known here).
                    let same = self.log.batch_at(batch.first_index).is_some_and(|stored| {
                        stored.is_run()
                            || (stored.first_index == batch.first_index
                                && stored.count == batch.count)
                    });
                    if !same {
                        return false;
                    }
                    skip += 1;
                }
                Some(_) => {
                    conflict = Some(batch.first_index);
                    break;
                }
                None => break,
            }
        }
        let honest = match conflict {
            Some(from) => {
                from > self.commit
                    && from > self.log.snapshot_index()
                    && self.log.is_batch_start(from)
            }
            None => append
                .batches
                .get(skip)
                .is_none_or(|first| first.first_index == self.log.last_index().next()),
        };
        if !honest {
            return false;
        }
        if let Some(from) = conflict {
            self.log.truncate_from(from);
            self.memberships_uncommitted
                .retain(|(index, _)| *index < from);
            self.restore_membership();
            actions.push(Action::Truncate { from });
        }
        let Some(first) = append.batches.get(skip) else {
            return true;
        };
        let mut configs = append.configs.iter();
        for (position, batch) in append.batches.iter().enumerate() {
            let config = (batch.kind == BatchKind::Config).then(|| configs.next());
            if position < skip {
                continue;
            }
            self.log.append(Boundary::from(batch));
            if let Some(Some(membership)) = config {
                self.memberships_uncommitted
                    .push((batch.first_index, *membership));
                self.set_membership(*membership);
            }
        }
        actions.push(Action::AppendReceived {
            skip: skip as u32,
            first_index: first.first_index,
            last_index: append.last_index(),
        });
        true
    }

    fn follower_heartbeat(&mut self, heartbeat: Heartbeat, actions: &mut Vec<Action>) {
        // The leader caps the commit at what this node matches.
        let commit = heartbeat.leader_commit.min(self.log.last_index());
        if commit > self.commit {
            self.advance_commit(commit);
            self.check_repaired(actions);
        }
        let response = HeartbeatResponse {
            read_round: heartbeat.read_round,
            match_index: self.acknowledgeable(),
        };
        self.send(
            self.leader,
            OutgoingBody::HeartbeatResponse(response),
            actions,
        );
    }
}

/// Whether an AppendEntries' summaries are consistent: contiguous from
/// `prev + 1`, non-empty batches, terms between `prev_term` and the
/// message's term and never decreasing, one membership per config batch.
fn append_is_well_formed(term: Term, append: &AppendEntries<'_>) -> bool {
    if append.batches.len() > APPEND_MESSAGE_BATCHES_MAX || append.prev_term > term {
        return false;
    }
    let mut expected = append.prev_index.next();
    let mut previous_term = append.prev_term;
    let mut configs = 0;
    for batch in append.batches {
        if batch.first_index != expected
            || batch.count == 0
            || batch.count > BATCH_ENTRIES_MAX
            || batch.term < previous_term
            || batch.term > term
        {
            return false;
        }
        if batch.kind == BatchKind::Config {
            configs += 1;
        }
        expected = batch.last_index().next();
        previous_term = batch.term;
    }
    configs == append.configs.len()
}
