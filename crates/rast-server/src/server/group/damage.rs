//! How a group stops on damage in its files, and comes back: stopped to
//! be reopened (recovery cuts the damage and marks the node, the leader
//! repairs it), or, where no peer can repair it, refused for good with
//! what was lost.
//!
//! ```text
//!  damage found        by the scrubber, by a read that does not verify
//!                      or does not read (`StorageError::is_damage`)
//!    ─► fail_damaged ─► reopenable ─► shard reopens ─► recovery cuts, marks
//!  marked, and this node is the only voter (nobody to repair it from)
//!    ─► refuse_if_unrepairable: stopped for good, naming the indexes
//!  marked, and no voter holds what it acknowledged nor can be elected
//!  (`Action::MajorityLost`: a majority lost those entries)
//!    ─► majority_lost: stopped for good, naming the indexes and files
//! ```

use super::{Group, Outbound};
use crate::storage::StorageError;
use crate::types::{LogIndex, Term};

impl Group {
    /// Stops the group after a storage error; a full disk leaves the store
    /// intact, so the group may be reopened from it later
    /// ([`Group::reopenable`]).
    pub(super) fn fail_storage(&mut self, error: &StorageError, out: &mut Outbound) {
        if error.is_damage() {
            self.fail_damaged(&error.to_string(), out);
            return;
        }
        self.failed_for_space = (self.failed.is_none() || self.failed_for_space)
            && matches!(error, StorageError::NoSpace);
        self.fail(&error.to_string(), out);
    }

    /// Whether the group stopped only because its disk was full (its store
    /// is intact) or because the scrubber found damage in its files:
    /// reopening it (as a restart would) resumes service.
    pub fn reopenable(&self) -> bool {
        self.failed.is_some() && (self.failed_for_space || self.failed_for_damage)
    }

    /// Whether reopening waits for free space (it stopped on a full disk).
    pub fn reopen_needs_room(&self) -> bool {
        self.failed_for_space
    }

    /// Stops the group because damage was found in its files (`what`: by
    /// the scrubber, or by a read that did not verify or did not read), to
    /// be reopened: recovery cuts the log at the damage and marks the node
    /// damaged, and the leader repairs it. A group already stopped is left
    /// as it is.
    pub fn fail_damaged(&mut self, what: &str, out: &mut Outbound) {
        if self.failed.is_some() {
            return;
        }
        self.failed_for_damage = true;
        self.fail(&format!("damage found: {what}"), out);
    }

    /// Damage recovery found while opening (records cut, snapshot files
    /// dropped) since the last call.
    pub fn take_damage_found(&mut self) -> u64 {
        std::mem::take(&mut self.damage_found)
    }

    /// Stops the group for good when its node is marked damaged (it may
    /// have lost entries it acknowledged) and is the log's only voter: no
    /// peer holds a copy to repair it from, and waiting would wait
    /// forever. The reason names what may be lost, and the files and
    /// offsets recovery found damaged (see `damage_where`).
    pub(super) fn refuse_if_unrepairable(&mut self, out: &mut Outbound) {
        if self.failed.is_some() || self.core.trusted() {
            return;
        }
        let membership = self.core.membership();
        let me = self.core.id();
        let voters = membership.members();
        let only_voter = membership.is_voter(me)
            && voters
                .as_slice()
                .iter()
                .all(|node| *node == me || !membership.is_voter(*node));
        if !only_voter {
            return;
        }
        let reason = format!(
            "this node is the log's only voter and recovery found damage in its files: \
             entries after index {} (of terms up to the damage mark) may be lost, \
             and no peer holds a copy to repair them from; the log refuses service \
             (restore its directory from a backup; {})",
            self.storage.last_index(),
            self.damage_where()
        );
        self.fail(&reason, out);
    }

    /// Stops the group for good: the entries this damaged node may have
    /// acknowledged, up to `acked_end`, are on no voter (the most up to
    /// date log ends at `best`), and no voter can be elected (`raft::Core`,
    /// "A majority lost entries"). The reason names the indexes lost and
    /// the files recovery cut them from.
    pub(super) fn majority_lost(
        &mut self,
        acked_end: (Term, LogIndex),
        best: (Term, LogIndex),
        out: &mut Outbound,
    ) {
        let last = self.storage.last_index();
        let (end_term, end) = acked_end;
        let (best_term, best_index) = best;
        let reason = format!(
            "a majority lost committed entries: this node may have acknowledged entries up to \
             index {end} (term {end_term}); recovery cut indexes {}..={end} from its log ({}); \
             no voter holds them (the most up to date log ends at index {best_index}, term \
             {best_term}), so indexes {}..={end} at least are lost, and no voter can be \
             elected; the log refuses service: restore a node's directory from a backup",
            last.next(),
            self.damage_where(),
            best_index.next(),
        );
        tracing::error!(log = %self.name, %reason, "entries lost on a majority");
        self.fail(&reason, out);
    }

    /// Where recovery found the damage: the files it named when this store
    /// was opened, or a pointer to its error lines of an earlier start.
    fn damage_where(&self) -> String {
        let report = self.storage.damage_report();
        if report.is_empty() {
            "recovery's error lines of the start that found the damage name the files and \
             byte offsets"
                .to_owned()
        } else {
            format!("damage found: {}", report.join("; "))
        }
    }
}
