//! Membership administration of a group: admin requests served by the
//! leader, configuration entries with node addresses, and the peer set the
//! shard keeps links to.
//!
//! ```text
//!  add-learner / promote / remove ─► core.plan_change (the rules) ─► config
//!      batch: one `Membership` entry with every member's address ─► propose
//!      ─► pending until the entry commits and the configuration in force is
//!      no longer joint (the leader proposes leaving it by itself) ─► members
//!  transfer-leader ─► core.transfer_leadership ─► pending until this node
//!      sees the target lead (or a deadline passes)
//!  members ─► the configuration in force, from the leader
//! ```
//!
//! Why per log: each log is its own Raft group with its own leader, so a
//! change is decided by that log's leader and recorded in that log. The
//! CLI applies one change to each log it is given (`--log a,b`). A log
//! created after a change starts from `--peers` (its own first
//! configuration), so changes are best made before new logs appear, or
//! repeated for them.
//!
//! Addresses travel inside the configuration entries, so every member (and
//! a restarted node, which reads them back from its log) knows where to
//! reach the others; the shard connects to added nodes and drops links to
//! nodes that no group on it counts as members any more.

use super::{Group, Outbound, ReplyTo};
use crate::constants::TRANSFER_WAIT_MS;
use crate::raft::{Change, ChangeError, Membership, NodeSet, ProposeError, Role};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::client::{AdminRequest, ErrorKind, Members, ResponseBody, encode_members};
use crate::wire::{BatchKind, BatchMut, encode_batch};

/// An admin request waiting for its outcome.
#[derive(Clone, Copy, Debug)]
pub(super) enum AdminWait {
    /// A configuration entry: answered when it commits and the
    /// configuration is simple again.
    Config {
        /// Where the entry is.
        index: LogIndex,
        /// Its term (another term there: it was overwritten).
        term: Term,
        /// Who asked.
        reply: ReplyTo,
    },
    /// A leadership transfer: answered when `to` leads.
    Transfer {
        /// The target.
        to: NodeId,
        /// When to give up.
        deadline_ms: u64,
        /// Who asked.
        reply: ReplyTo,
    },
}

impl Group {
    /// Serves an admin request (the leader decides; others redirect).
    pub fn admin(&mut self, request: &AdminRequest, reply: ReplyTo, out: &mut Outbound) {
        if self.refused_when_failed(reply, out) {
            return;
        }
        if self.core.role() != Role::Leader && *request != AdminRequest::Snapshot {
            self.not_leader(reply, out);
            return;
        }
        match request {
            AdminRequest::Members => {
                let members = self.members_of(self.core.membership());
                out.reply(reply, ResponseBody::Members(members));
            }
            AdminRequest::AddLearner { id, address } => {
                if address.parse::<std::net::SocketAddr>().is_err() {
                    out.error(
                        reply,
                        ErrorKind::Invalid,
                        format!("address {address:?} is not IP:PORT"),
                    );
                    return;
                }
                self.change(Change::AddLearner(NodeId(*id)), Some(address), reply, out);
            }
            AdminRequest::Promote(id) => {
                self.change(Change::Promote(NodeId(*id)), None, reply, out);
            }
            AdminRequest::Remove(id) => self.change(Change::Remove(NodeId(*id)), None, reply, out),
            AdminRequest::TransferLeader(id) => self.transfer(NodeId(*id), reply, out),
            AdminRequest::Snapshot => self.admin_snapshot(reply, out),
        }
    }

    fn change(
        &mut self,
        change: Change,
        address: Option<&String>,
        reply: ReplyTo,
        out: &mut Outbound,
    ) {
        let next = match self.core.plan_change(change) {
            Ok(next) => next,
            Err(error) => {
                self.refused(error, reply, out);
                return;
            }
        };
        if let (Change::AddLearner(id), Some(address)) = (change, address) {
            self.addresses.retain(|(known, _)| *known != id);
            self.addresses.push((id, address.clone()));
        }
        match self.propose_config(next, out) {
            Ok((term, index)) => {
                tracing::info!(log = %self.name, ?change, ?next, %index, "membership change proposed");
                self.admin_waits
                    .push(AdminWait::Config { index, term, reply });
            }
            Err(error) => self.refused(error, reply, out),
        }
    }

    fn transfer(&mut self, to: NodeId, reply: ReplyTo, out: &mut Outbound) {
        if to == self.core.id() {
            let members = self.members_of(self.core.membership());
            out.reply(reply, ResponseBody::Members(members));
            return;
        }
        let mut actions = std::mem::take(&mut self.actions);
        let result = self.core.transfer_leadership(to, &mut actions);
        self.execute(&mut actions, None, None, out);
        self.actions = actions;
        match result {
            Ok(()) => self.admin_waits.push(AdminWait::Transfer {
                to,
                deadline_ms: self.now_ms + TRANSFER_WAIT_MS,
                reply,
            }),
            Err(error) => out.error(
                reply,
                ErrorKind::Invalid,
                format!("cannot transfer leadership to node {to}: {error}"),
            ),
        }
    }

    /// Encodes and proposes configuration `membership` with the addresses
    /// of its members.
    fn propose_config(
        &mut self,
        membership: Membership,
        out: &mut Outbound,
    ) -> Result<(Term, LogIndex), ChangeError> {
        let payload = encode_members(&self.members_of(&membership));
        let mut frame = encode_batch(BatchKind::Config, Term(0), LogIndex(0), &[payload]);
        if self.storage.writable_bytes() < frame.len() as u64 {
            // A full write queue: storage would refuse the append and stop
            // the group. Refused now, retried by the caller.
            return Err(ChangeError::Propose(ProposeError::TooMany));
        }
        let mut actions = std::mem::take(&mut self.actions);
        let result = self
            .core
            .propose_membership(membership, frame.len() as u32, &mut actions);
        match result {
            Ok((term, first_index)) => {
                if let Ok(mut batch) = BatchMut::parse(&mut frame) {
                    batch.stamp(term, first_index);
                }
                self.execute(&mut actions, Some(&bytes::Bytes::from(frame)), None, out);
            }
            Err(_) => self.execute(&mut actions, None, None, out),
        }
        self.actions = actions;
        result
    }

    /// After every input: propose leaving a committed joint configuration,
    /// report membership changes to the shard, answer admin requests whose
    /// outcome is known.
    pub(super) fn after_input(&mut self, out: &mut Outbound) {
        if self.failed.is_some() {
            return;
        }
        if let Some(next) = self.core.leave_joint_due() {
            match self.propose_config(next, out) {
                Ok((_, index)) => {
                    tracing::info!(log = %self.name, ?next, %index, "leaving the joint configuration");
                }
                Err(error) => {
                    tracing::debug!(log = %self.name, %error, "leaving the joint configuration later");
                }
            }
        }
        self.report_membership(out);
        if !self.admin_waits.is_empty() {
            self.answer_admin(out);
        }
        if !self.pending.is_empty()
            && self.core.role() != Role::Leader
            && !self
                .core
                .membership_committed()
                .members()
                .contains(self.core.id())
        {
            self.answer_pending_removed(out);
        }
    }

    /// This node led, then a committed configuration removed it: it will
    /// not learn what becomes of the appends it proposed (the new leader
    /// commits or drops them without it), so they are answered now rather
    /// than left to the client's timeout.
    fn answer_pending_removed(&mut self, out: &mut Outbound) {
        for pending in self.pending.drain(..) {
            if pending.write {
                // Sessions make a retried write apply once: retry is safe.
                out.error(
                    pending.reply,
                    ErrorKind::Unavailable,
                    "this node left the configuration; retry at the leader",
                );
            } else {
                out.error(
                    pending.reply,
                    ErrorKind::Failed,
                    "this node left the configuration after this append was proposed: it may \
                     or may not be committed",
                );
            }
        }
    }

    /// The nodes this group needs links to: the members of the
    /// configuration in force and of the committed one. A node removed by
    /// an entry not yet committed stays linked: it may be the leader that
    /// still needs this node's acknowledgements to commit its removal.
    pub fn linked_members(&self) -> NodeSet {
        let mut linked = self.core.membership().members();
        for id in self.core.membership_committed().members().as_slice() {
            linked.insert(*id);
        }
        linked
    }

    /// Tells the shard which nodes to link to when the linked set changed:
    /// every member's address, and who left.
    fn report_membership(&mut self, out: &mut Outbound) {
        let linked = self.linked_members();
        if linked == self.linked_reported {
            return;
        }
        for id in self.linked_reported.as_slice() {
            if !linked.contains(*id) {
                out.removed.push(*id);
            }
        }
        for id in linked.as_slice() {
            let address = self.address_of(*id);
            if !address.is_empty() {
                out.members.push((*id, address));
            }
        }
        let membership = self.core.membership();
        tracing::info!(log = %self.name, ?membership, "configuration in force");
        self.linked_reported = linked;
    }

    fn answer_admin(&mut self, out: &mut Outbound) {
        let commit = self.core.commit_index();
        let leading = self.core.role() == Role::Leader;
        let waits = std::mem::take(&mut self.admin_waits);
        for wait in waits {
            match wait {
                AdminWait::Config { index, term, reply } => {
                    if index <= commit {
                        if self.storage.term_at(index) != Some(term) {
                            out.error(
                                reply,
                                ErrorKind::Failed,
                                "the change was replaced by a new leader; it was not applied",
                            );
                        } else if !self.core.membership_committed().is_joint() {
                            let members = self.members_of(self.core.membership_committed());
                            out.reply(reply, ResponseBody::Members(members));
                        } else if leading {
                            self.admin_waits.push(wait);
                        } else {
                            out.error(
                                reply,
                                ErrorKind::Failed,
                                "leadership lost in the joint configuration; the next leader \
                                 completes the change: check with `rast admin members`",
                            );
                        }
                    } else if leading {
                        self.admin_waits.push(wait);
                    } else {
                        out.error(
                            reply,
                            ErrorKind::Failed,
                            "leadership lost before the change committed; it may or may not \
                             be applied: check with `rast admin members`",
                        );
                    }
                }
                AdminWait::Transfer {
                    to,
                    deadline_ms,
                    reply,
                } => {
                    if self.core.leader() == to {
                        let members = self.members_of(self.core.membership());
                        out.reply(reply, ResponseBody::Members(members));
                    } else if self.now_ms >= deadline_ms {
                        out.error(
                            reply,
                            ErrorKind::Unavailable,
                            format!("node {to} did not take leadership in {TRANSFER_WAIT_MS} ms"),
                        );
                    } else {
                        self.admin_waits.push(wait);
                    }
                }
            }
        }
    }

    fn refused(&self, error: ChangeError, reply: ReplyTo, out: &mut Outbound) {
        match error {
            ChangeError::NotLeader { .. } => self.not_leader(reply, out),
            // Nothing was proposed and the obstacle passes by itself (the
            // change before commits, the transfer ends): clients retry
            // with backoff until their deadline.
            ChangeError::InProgress
            | ChangeError::Transferring
            | ChangeError::Propose(ProposeError::TooMany | ProposeError::Transferring) => out
                .error(
                    reply,
                    ErrorKind::Unavailable,
                    format!("membership change not yet possible: {error}"),
                ),
            other => out.error(
                reply,
                ErrorKind::Invalid,
                format!("membership change refused: {other}"),
            ),
        }
    }

    fn not_leader(&self, reply: ReplyTo, out: &mut Outbound) {
        let leader = self.core.leader();
        out.error(
            reply,
            ErrorKind::NotLeader {
                leader: leader.get(),
                address: self.address_of(leader),
            },
            format!(
                "node {} is not the leader of log {}",
                self.core.id(),
                self.name
            ),
        );
    }

    /// The wire form of `membership`, with the address of each member.
    pub(super) fn members_of(&self, membership: &Membership) -> Members {
        let ids = |set: &NodeSet| set.as_slice().iter().map(|id| id.get()).collect();
        Members {
            voters: ids(&membership.voters),
            voters_outgoing: ids(&membership.voters_outgoing),
            learners: ids(&membership.learners),
            addresses: membership
                .members()
                .as_slice()
                .iter()
                .map(|id| (id.get(), self.address_of(*id)))
                .filter(|(_, address)| !address.is_empty())
                .collect(),
        }
    }

    /// Learns the addresses a configuration entry carries.
    pub(super) fn learn_addresses(&mut self, members: &Members) {
        for (id, address) in &members.addresses {
            let id = NodeId(*id);
            if id == NodeId::ZERO || address.is_empty() {
                continue;
            }
            match self.addresses.iter_mut().find(|(known, _)| *known == id) {
                Some((_, known)) => known.clone_from(address),
                None => self.addresses.push((id, address.clone())),
            }
        }
    }
}
