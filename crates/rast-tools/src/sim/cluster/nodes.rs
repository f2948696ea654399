//! The runtime around each node's core: starting it from what its disk
//! recovered, crashing it, handing it messages and disk completions, and
//! executing the actions it emits (storage, network, apply, reads, role
//! changes), with the per-node checks after every event.
//!
//! Why apart from the event loop: this is the simulator's stand-in for the
//! server — the one place that obeys `Action`'s ordering contract and that
//! turns a node's disk and the simulated wire into the core's inputs.

use std::rc::Rc;

use super::{Damage, ELECTION_MS, Envelope, EnvelopeBody, Event, HEARTBEAT_MS, KV_TAG, Simulation};
use crate::check::linearizable::KvOp;
use crate::kv::StateMachine;
use crate::raft::{
    Action, AppendEntries, Body, Config, Core, InstallSnapshot, Membership, Message, OutgoingBody,
    Restart, Role,
};
use crate::random::Random;
use crate::sim::checker::{Outcome, Violation};
use crate::sim::disk::{BatchRef, DiskOperation, DurableView, SimBatch};
use crate::sim::kv::KvOutcome;
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::BatchKind;

/// The end of a log: its last entry's (term, index).
type LogEnd = (Term, LogIndex);

impl Simulation {
    fn config(&self, id: NodeId) -> Config {
        let mut config = Config::new(id, self.seed.wrapping_mul(31).wrapping_add(id.get()));
        config.timeout_ms_election = ELECTION_MS;
        config.interval_ms_heartbeat = HEARTBEAT_MS;
        // Per-seed shape, drawn from its own stream so it is independent of
        // the cluster size: one-batch messages (which split a new leader's
        // catch-up from its no-op) in a third of the seeds; pre-vote and
        // check-quorum each on in three seeds of four.
        let mut shape = Random::new(self.seed ^ 0x5eed_5a9e);
        config.append_message_batches_max = match shape.below(3) {
            0 => 1,
            1 => 2 + shape.below(6) as usize,
            _ => 64,
        };
        config.inflight_messages_max = 1 + shape.below(8) as usize;
        // Promotion needs a learner close behind; the simulated logs are
        // short, so the production bound would admit any learner.
        config.promote_lag_entries_max = 8;
        config.pre_vote = !shape.chance(1, 4);
        config.check_quorum = !shape.chance(1, 4);
        // Simulated logs are short: coalesce them early and often.
        config.coalesce_ready_min = 1 + shape.below(8) as usize;
        #[cfg(feature = "planted-bugs")]
        {
            config.planted_bug = self.options.planted_bug;
        }
        config
    }

    /// Whether `node` may restart damaged while another node is damaged
    /// too, and the cluster still be sure to elect a leader once healed:
    /// the configuration is settled and holds it, every damaged voter
    /// knows the end of what it acknowledged, and an undamaged voter's
    /// durable log is at least as up to date as every such end (this
    /// node's being where its log ends now). That voter then gets every
    /// damaged voter's vote (`raft::Core`, "Damaged nodes").
    fn second_damage_recoverable(&self, node: usize) -> bool {
        self.second_damage_need(node)
            .is_some_and(|(need, best_healthy)| best_healthy.is_some_and(|last| last >= need))
    }

    /// For a second damage of `node`: (the most up to date end a damaged
    /// voter waits for, this node's log end included; the most up to date
    /// undamaged voter's durable log), if the configuration is settled and
    /// holds it, every damaged voter knows its end, and every other voter
    /// is either damaged that way or healthy.
    fn second_damage_need(&self, node: usize) -> Option<(LogEnd, Option<LogEnd>)> {
        let membership = self.config_committed.1;
        if membership.is_joint() || !membership.is_voter(self.nodes[node].id) {
            return None;
        }
        let mut need = self.nodes[node].disk.durable().last();
        let mut best_healthy = None;
        for (position, state) in self.nodes.iter().enumerate() {
            if !membership.is_voter(state.id) {
                continue;
            }
            let durable = state.disk.durable();
            if durable.damaged() {
                need = need.max(durable.acked_end()?);
            } else if position != node {
                // Damaged in the core, its cleared mark not durable yet,
                // or about to restart damaged: neither healthy nor known.
                if state.damage_on_restart != Damage::None
                    || state.core.as_ref().is_some_and(|core| !core.trusted())
                {
                    return None;
                }
                best_healthy = best_healthy.max(Some(durable.last()));
            }
        }
        Some((need, best_healthy))
    }

    /// `Damage::AlsoBatches`: `node` loses its last `lose` durable batches
    /// beside another damaged node, if that can be survived (in
    /// majority-loss seeds, also if it cannot: module `lost`).
    fn damage_second(&mut self, node: usize, lose: usize, mark: bool) {
        let allowed = if self.lose_majority {
            self.second_damage_need(node).is_some()
        } else {
            self.second_damage_recoverable(node)
        };
        if allowed && self.nodes[node].disk.damage(lose, mark) {
            self.damaged_restarts += 1;
            self.second_damages += 1;
            self.trace(|| {
                format!(
                    "node {} lost {lose} durable batches, another node damaged too",
                    node + 1
                )
            });
        }
    }

    pub(super) fn restart(&mut self, node: usize) {
        self.trace(|| format!("restart node {}", node + 1));
        let id = self.nodes[node].id;
        let config = self.config(id);
        #[cfg(feature = "planted-bugs")]
        let mark = self.options.planted_bug != Some(crate::raft::PlantedBug::CutWithoutMark);
        #[cfg(not(feature = "planted-bugs"))]
        let mark = true;
        match std::mem::take(&mut self.nodes[node].damage_on_restart) {
            Damage::None => {}
            Damage::Batches(lose) => {
                if self.nodes[node].disk.damage(lose, mark) {
                    self.damaged_restarts += 1;
                    self.trace(|| {
                        format!("node {} lost {lose} durable batches: damaged", node + 1)
                    });
                }
            }
            Damage::AlsoBatches(lose) => self.damage_second(node, lose, mark),
            Damage::Snapshot => {
                if self.nodes[node].disk.lose_snapshot() {
                    self.lost_snapshots += 1;
                    self.trace(|| {
                        format!("node {} lost its snapshot and its log: damaged", node + 1)
                    });
                }
            }
            Damage::HardState => {
                self.nodes[node].disk.lose_hard_state();
                self.lost_hard_states += 1;
                self.trace(|| format!("node {} lost its hard state", node + 1));
            }
        }
        // After a crash the written state is what recovery found.
        // Start from the snapshot and the log after it.
        let recovered = self.nodes[node].disk.written();
        let snapshot = recovered.snapshot.clone();
        let (snapshot_index, snapshot_term) = snapshot
            .as_ref()
            .map_or((LogIndex::ZERO, Term::ZERO), |snapshot| {
                (snapshot.index, snapshot.term)
            });
        // Coalesced as the daemon's recovery does (`RunLimits::push`).
        let mut summaries = Vec::new();
        for batch in &recovered.batches {
            if batch.summary.first_index > snapshot_index {
                let boundary = crate::raft::Boundary::from(&batch.summary);
                config.run_limits().push(&mut summaries, boundary);
            }
        }
        let configs: Vec<(LogIndex, Membership)> = recovered
            .batches
            .iter()
            .filter(|batch| batch.summary.first_index > snapshot_index)
            .filter_map(|batch| {
                batch
                    .membership
                    .map(|membership| (batch.summary.first_index, membership))
            })
            .collect();
        assert!(
            summaries
                .first()
                .is_none_or(|first| first.first_index == snapshot_index.next()),
            "the log continues the snapshot"
        );
        // The configuration as of the snapshot is the one it records;
        // without a snapshot, the initial one, or none for a node that
        // starts outside. `configs` (above the snapshot) carry the rest.
        let membership = match &snapshot {
            Some(snapshot) => snapshot.membership,
            None if self.nodes[node].outside => Membership::default(),
            None => self.membership,
        };
        let restart = Restart {
            hard_state: recovered.hard_state,
            snapshot_index,
            snapshot_term,
            membership,
            batches: &summaries,
            now_ms: self.now + self.nodes[node].clock_offset_ms,
        };
        let mut kv = StateMachine::new();
        if let Some(snapshot) = &snapshot {
            kv.restore_from(&snapshot.kv[..])
                .expect("a stored snapshot restores");
            self.restarts_from_snapshot += 1;
        }
        let mut core = Core::new(config, &restart);
        core.restore_configs(&configs);
        let state = &mut self.nodes[node];
        state.core = Some(core);
        state.applied = snapshot_index;
        state.kv = kv;
    }

    pub(super) fn crash(&mut self, node: usize) -> Result<(), Violation> {
        if self.nodes[node].core.is_none() {
            return Ok(());
        }
        self.trace(|| format!("crash node {}", node + 1));
        self.trace_nodes();
        let state = &mut self.nodes[node];
        state.core = None;
        state.life += 1;
        state.disk.crash(&mut self.random);
        state.sending.clear();
        state.receiving = None;
        state.proposals_unsent = 0;
        let proposals = std::mem::take(&mut state.proposals);
        let kv_proposals = std::mem::take(&mut state.kv_proposals);
        let reads: Vec<usize> = state
            .reads_waiting
            .drain(..)
            .map(|(_, operation)| operation)
            .chain(state.reads_ready.drain(..).map(|(_, operation)| operation))
            .collect();
        for (operation, _, _) in proposals {
            self.complete(operation, Outcome::Info);
        }
        for (operation, _, _) in kv_proposals {
            self.kv_history[operation].lost_to_crash = true;
            self.kv_retry(operation);
        }
        for operation in reads {
            self.complete(operation, Outcome::Fail);
        }
        self.crashes += 1;
        self.check_committed_durable()
    }

    /// Committed entries survive crashes, judged against the latest
    /// committed configuration C (at index k; nodes outside it no longer
    /// count): every committed entry is durable on a majority of C's
    /// voters, and the entries up to k on a majority of its outgoing half
    /// too. After k, entries commit under C or under the one allowed step
    /// after it (in force once appended), whose quorums always include a
    /// majority of C's voters but not of C's outgoing half.
    pub(super) fn check_committed_durable(&self) -> Result<(), Violation> {
        let (index, membership) = self.config_committed;
        let durable_of = |half: crate::raft::NodeSet| -> Vec<DurableView<'_>> {
            half.as_slice()
                .iter()
                .map(|id| self.nodes[(id.get() - 1) as usize].disk.durable())
                .collect()
        };
        self.checker
            .committed_durable(&durable_of(membership.voters))?;
        if membership.is_joint() {
            self.checker
                .committed_durable_through(&durable_of(membership.voters_outgoing), index)?;
        }
        Ok(())
    }

    /// Runs `input` on the node's core (if up) and executes its actions.
    pub(super) fn with_core(
        &mut self,
        node: usize,
        input: impl FnOnce(&mut Core, &mut Vec<Action>),
    ) -> Result<(), Violation> {
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        if let Some(core) = self.nodes[node].core.as_mut() {
            input(core, &mut actions);
        }
        let result = self.execute(node, &actions, None, None);
        self.actions = actions;
        result
    }

    pub(super) fn deliver(&mut self, envelope: &Envelope) -> Result<(), Violation> {
        let node = (envelope.to.get() - 1) as usize;
        if self.nodes[node].core.is_none() {
            return Ok(());
        }
        let mut summaries = Vec::new();
        let mut configs = Vec::new();
        let body = match &envelope.body {
            EnvelopeBody::Append {
                prev_index,
                prev_term,
                leader_commit,
                batches,
            } => {
                summaries.extend(batches.iter().map(|batch| batch.summary));
                configs.extend(batches.iter().filter_map(|batch| batch.membership));
                Body::AppendEntries(AppendEntries {
                    prev_index: *prev_index,
                    prev_term: *prev_term,
                    leader_commit: *leader_commit,
                    batches: &summaries,
                    configs: &configs,
                })
            }
            EnvelopeBody::Other(other) => incoming_body(*other),
            EnvelopeBody::InstallSnapshot(chunk) => Body::InstallSnapshot(InstallSnapshot {
                last_index: chunk.index,
                last_term: chunk.term,
            }),
            EnvelopeBody::SnapshotResponse(response) => Body::SnapshotResponse(*response),
        };
        let message = Message {
            from: envelope.from,
            to: envelope.to,
            term: envelope.term,
            body,
        };
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        self.nodes[node]
            .core
            .as_mut()
            .expect("checked up")
            .step(&message, &mut actions);
        let batches = match &envelope.body {
            EnvelopeBody::Append { batches, .. } => Some(batches.as_slice()),
            _ => None,
        };
        let result = self.execute(node, &actions, batches, None);
        self.actions = actions;
        result?;
        match &envelope.body {
            EnvelopeBody::InstallSnapshot(chunk) => {
                self.snapshot_chunk_received(node, envelope.from, envelope.term, chunk)
            }
            EnvelopeBody::SnapshotResponse(response) => {
                self.snapshot_response_received(node, envelope.from, envelope.term, *response)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn sync_done(&mut self, node: usize, life: u64) -> Result<(), Violation> {
        if self.nodes[node].life != life || self.nodes[node].core.is_none() {
            return Ok(());
        }
        let report = self.nodes[node].disk.complete_sync();
        if let Some(hard_state) = report.hard_state {
            self.with_core(node, |core, actions| {
                core.hard_state_persisted(hard_state, actions);
            })?;
        }
        if let Some((index, term)) = report.log {
            self.with_core(node, |core, actions| core.persisted(index, term, actions))?;
        }
        self.start_sync(node);
        Ok(())
    }

    fn start_sync(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        if !state.disk.start_sync() {
            return;
        }
        let (low, high) = state.disk_latency_ms;
        let life = state.life;
        let stalled = state.disk_stalled_until.saturating_sub(self.now);
        let latency = stalled + self.random.between(low, high);
        self.schedule(latency, Event::SyncDone { node, life });
    }

    /// Executes a call's actions in order (see `Action`'s contract).
    pub(super) fn execute(
        &mut self,
        node: usize,
        actions: &[Action],
        received: Option<&[BatchRef]>,
        proposal: Option<&BatchRef>,
    ) -> Result<(), Violation> {
        for action in actions {
            match *action {
                Action::PersistHardState(hard_state) => {
                    self.nodes[node]
                        .disk
                        .issue(DiskOperation::HardState(hard_state));
                }
                Action::Truncate { from } => {
                    self.nodes[node].disk.issue(DiskOperation::Truncate(from));
                }
                Action::AppendProposal { first_index, .. } => {
                    let batch = proposal.expect("a proposal action follows propose");
                    assert_eq!(batch.summary.first_index, first_index);
                    self.store(node, std::slice::from_ref(batch))?;
                }
                Action::AppendNoop { term, index } => {
                    let batch = Rc::new(SimBatch::new(BatchKind::Noop, term, index, &[0]));
                    self.store(node, &[batch])?;
                }
                Action::AppendReceived { skip, .. } => {
                    let batches = received.expect("received batches come with a message");
                    self.store(node, &batches[skip as usize..])?;
                }
                Action::Send(outgoing) => self.send(node, outgoing),
                Action::Apply { up_to } => self.apply(node, up_to)?,
                Action::ReadReady {
                    through_round,
                    index,
                } => self.reads_ready(node, through_round, index),
                Action::ReadsAborted { through_round } => {
                    while let Some(&(round, operation)) = self.nodes[node].reads_waiting.front() {
                        if round > through_round {
                            break;
                        }
                        self.nodes[node].reads_waiting.pop_front();
                        self.complete(operation, Outcome::Fail);
                    }
                }
                Action::SendSnapshot { to } => self.snapshot_stream_start(node, to),
                Action::RoleChanged { role, term, leader } => {
                    self.role_changed(node, role, term, leader)?;
                }
                Action::MajorityLost { acked_end, best } => {
                    self.majority_lost(node, acked_end, best)?;
                }
            }
        }
        self.start_sync(node);
        self.check_node(node)?;
        self.leave_joint_if_due(node)
    }

    fn store(&mut self, node: usize, batches: &[BatchRef]) -> Result<(), Violation> {
        let id = self.nodes[node].id;
        let mut previous = self.nodes[node]
            .disk
            .written()
            .entry(
                batches
                    .first()
                    .map_or(LogIndex::ZERO, |b| b.summary.first_index.prev()),
            )
            .map_or(Term::ZERO, |(term, _)| term);
        for batch in batches {
            self.checker.batch_stored(id, batch, previous)?;
            previous = batch.summary.term;
        }
        self.nodes[node]
            .disk
            .issue(DiskOperation::Append(batches.to_vec()));
        Ok(())
    }

    fn send(&mut self, node: usize, outgoing: crate::raft::Outgoing) {
        let body = match outgoing.body {
            OutgoingBody::AppendEntries(range) => {
                let batches = if range.batches > 0 {
                    self.nodes[node]
                        .disk
                        .read(range.first_index, range.last_index)
                } else {
                    Vec::new()
                };
                // `range.batches` counts exactly, or bounds from above when
                // the range starts inside a coalesced run.
                assert!(
                    (1..=range.batches as usize).contains(&batches.len()) || range.batches == 0,
                    "range {range:?}: {} batches",
                    batches.len()
                );
                EnvelopeBody::Append {
                    prev_index: range.prev_index,
                    prev_term: range.prev_term,
                    leader_commit: range.leader_commit,
                    batches,
                }
            }
            other => EnvelopeBody::Other(other),
        };
        let envelope = Envelope {
            from: outgoing.from,
            to: outgoing.to,
            term: outgoing.term,
            body,
        };
        self.transmit(node, envelope);
    }

    /// Puts a message on the simulated wire, through the network faults.
    pub(super) fn transmit(&mut self, from: usize, envelope: Envelope) {
        let to = (envelope.to.get() - 1) as usize;
        if self.faults.blocked[from][to] || self.random.chance(self.faults.drop_percent, 100) {
            return;
        }
        let copies = if self.random.chance(self.faults.duplicate_percent, 100) {
            2
        } else {
            1
        };
        let mut envelope = Some(Box::new(envelope));
        for copy in 0..copies {
            let (low, high) = self.faults.delay_ms;
            let delay = self.random.between(low, high);
            let message = if copy + 1 == copies {
                envelope.take().expect("one left")
            } else {
                envelope.clone().expect("one left")
            };
            self.schedule(delay, Event::Deliver(message));
        }
    }

    fn apply(&mut self, node: usize, up_to: LogIndex) -> Result<(), Violation> {
        let id = self.nodes[node].id;
        let from = self.nodes[node].applied;
        if up_to <= from {
            return Err(Violation {
                property: "commit never regresses",
                detail: format!("node {id} applied up to {from}, then told to apply up to {up_to}"),
            });
        }
        if let Some(core) = &self.nodes[node].core
            && core.role() == Role::Leader
        {
            let term = self.nodes[node]
                .disk
                .written()
                .entry(up_to)
                .map(|(term, _)| term);
            if term != Some(core.term()) {
                return Err(Violation {
                    property: "a leader commits only entries of its term",
                    detail: format!(
                        "leader {id} of term {} committed up to {up_to}, of term {term:?}",
                        core.term()
                    ),
                });
            }
        }
        for index in from.get() + 1..=up_to.get() {
            let entry = self.nodes[node]
                .disk
                .written()
                .entry(LogIndex(index))
                .expect("committed entries are stored");
            self.checker.applied(id, LogIndex(index), entry)?;
        }
        self.note_committed_configs(node, from, up_to);
        let answers = self.apply_kv(node, from, up_to)?;
        self.nodes[node].applied = up_to;
        let kv_proposals = std::mem::take(&mut self.nodes[node].kv_proposals);
        let mut kv_still = Vec::with_capacity(kv_proposals.len());
        for (operation, term, index) in kv_proposals {
            if index > up_to {
                kv_still.push((operation, term, index));
                continue;
            }
            let entry = self.nodes[node].disk.written().entry(index);
            let answer = answers.iter().find(|(at, _)| *at == index);
            match answer {
                Some((_, response)) if entry.map(|(entry_term, _)| entry_term) == Some(term) => {
                    let outcome = self.kv_outcome(operation, response);
                    self.kv_complete(operation, outcome);
                }
                _ => self.kv_retry(operation),
            }
        }
        self.nodes[node].kv_proposals = kv_still;
        let proposals = std::mem::take(&mut self.nodes[node].proposals);
        let mut still = Vec::with_capacity(proposals.len());
        for (operation, term, first_index) in proposals {
            if first_index > up_to {
                still.push((operation, term, first_index));
                continue;
            }
            let entry = self.nodes[node].disk.written().entry(first_index);
            let outcome = if entry.map(|(entry_term, _)| entry_term) == Some(term) {
                Outcome::Appended { index: first_index }
            } else {
                Outcome::Fail
            };
            self.complete(operation, outcome);
        }
        self.nodes[node].proposals = still;
        self.serve_reads(node);
        self.maybe_snapshot(node)
    }

    fn reads_ready(&mut self, node: usize, through_round: u64, index: LogIndex) {
        let state = &mut self.nodes[node];
        while let Some(&(round, operation)) = state.reads_waiting.front() {
            if round > through_round {
                break;
            }
            state.reads_waiting.pop_front();
            state.reads_ready.push((index, operation));
        }
        self.serve_reads(node);
    }

    fn serve_reads(&mut self, node: usize) {
        let applied = self.nodes[node].applied;
        let ready = std::mem::take(&mut self.nodes[node].reads_ready);
        let mut still = Vec::new();
        for (index, operation) in ready {
            if index > applied {
                still.push((index, operation));
                continue;
            }
            if operation >= KV_TAG {
                let operation = operation - KV_TAG;
                if let KvOp::Get { key, .. } = self.kv_history[operation].op {
                    let value = self.nodes[node]
                        .kv
                        .get(&key.to_le_bytes())
                        .map(crate::sim::kv::decode_value);
                    self.kv_complete(operation, KvOutcome::Ok(KvOp::Get { key, value }));
                }
                continue;
            }
            let last_value = self.nodes[node]
                .disk
                .written()
                .entry(index)
                .map_or(0, |(_, value)| value);
            self.complete(
                operation,
                Outcome::Read {
                    length: index,
                    last_value,
                },
            );
        }
        self.nodes[node].reads_ready = still;
    }

    fn role_changed(
        &mut self,
        node: usize,
        role: Role,
        term: Term,
        leader: NodeId,
    ) -> Result<(), Violation> {
        let id = self.nodes[node].id;
        self.trace(|| format!("node {id}: {role:?} term {term} leader {leader}"));
        self.nemesis_on_role_change(node, role);
        if role == Role::Leader {
            self.elections += 1;
            self.checker.leader_elected(term, id)?;
            self.checker
                .leader_log(id, term, self.nodes[node].disk.written())?;
        } else {
            // Streams of a former leader stop; the core forgot them.
            self.nodes[node].sending.clear();
            for (operation, _, _) in std::mem::take(&mut self.nodes[node].proposals) {
                self.complete(operation, Outcome::Info);
            }
            for (operation, _, _) in std::mem::take(&mut self.nodes[node].kv_proposals) {
                self.kv_retry(operation);
            }
        }
        if leader != NodeId::ZERO {
            for client in &mut self.clients {
                if client.leader_guess == node {
                    client.leader_guess = (leader.get() - 1) as usize;
                }
            }
            for client in &mut self.kv_clients {
                if client.leader_guess == node {
                    client.leader_guess = (leader.get() - 1) as usize;
                }
            }
        }
        Ok(())
    }

    /// Per-event checks of one node: the core and its storage agree.
    fn check_node(&mut self, node: usize) -> Result<(), Violation> {
        let state = &self.nodes[node];
        let Some(core) = &state.core else {
            return Ok(());
        };
        let written = state.disk.written();
        if core.log().last_index() != written.last_index()
            || core.log().last_term() != written.last_term()
        {
            return Err(Violation {
                property: "core and storage agree",
                detail: format!(
                    "node {}: core last {}@{}, storage last {}@{}",
                    state.id,
                    core.log().last_index(),
                    core.log().last_term(),
                    written.last_index(),
                    written.last_term()
                ),
            });
        }
        // Every record of the core's log (a batch, or a run of coalesced
        // ones) has real batch boundaries at both ends and one term, and
        // counts at least the batches it covers.
        let log = core.log();
        log.check();
        let (mut runs, mut cut) = (0u64, 0u64);
        for record in log.batches_in(log.first_index(), log.last_index()) {
            let first = written.position(record.first_index);
            let last = written.position(record.last_index());
            let starts = first.map(|position| {
                let stored = &written.batches[position].summary;
                (stored.first_index, stored.term)
            });
            let ends = last.map(|position| {
                let stored = &written.batches[position].summary;
                (stored.last_index(), stored.term)
            });
            let compacted = written.snapshot_index();
            let covered = first.zip(last).map(|(first, last)| last - first + 1);
            let agrees = (record.first_index <= compacted
                || starts == Some((record.first_index, record.term)))
                && (record.last_index() <= compacted
                    || ends == Some((record.last_index(), record.term)))
                && covered.is_none_or(|covered| covered <= record.batches as usize);
            if !agrees {
                return Err(Violation {
                    property: "the core's log records storage's batches",
                    detail: format!(
                        "node {}: {record:?}, storage {starts:?} {ends:?}, {covered:?} batches",
                        state.id
                    ),
                });
            }
            runs += u64::from(record.is_run());
            cut += u64::from(covered.is_some_and(|covered| covered < record.batches as usize));
        }
        self.run_records_max = self.run_records_max.max(runs);
        self.runs_cut_seen += cut;
        if core.hard_state().term < state.disk.written().hard_state.term {
            return Err(Violation {
                property: "term never regresses",
                detail: format!("node {} term below its stored term", state.id),
            });
        }
        Ok(())
    }
}

/// An outgoing body (not an AppendEntries: those travel with their
/// batches) as the receiver steps it.
fn incoming_body(body: OutgoingBody) -> Body<'static> {
    assert!(
        !matches!(body, OutgoingBody::AppendEntries(_)),
        "appends travel with their batches"
    );
    body.incoming(&[], &[])
}
