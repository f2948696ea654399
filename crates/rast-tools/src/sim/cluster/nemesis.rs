//! The faulty phase and its end: the nemesis (lost, duplicated and delayed
//! messages, partitions, crashes, slow and stalled disks, clock jumps,
//! leadership transfers) and the faults aimed at elections; then the heal,
//! the liveness probe that must commit after it, and the end-of-run checks.
//!
//! Why apart: every fault the run injects is drawn here, so what a seed can
//! do to the cluster is read in one place.

use super::{Damage, Event, Faults, PROBE_APPENDS, Simulation};
use crate::constants::NODES_MAX;
use crate::raft::Role;
use crate::sim::checker::{Operation, Outcome, Violation};
use crate::types::NodeId;

impl Simulation {
    pub(super) fn nemesis(&mut self) -> Result<(), Violation> {
        let nodes = self.nodes.len();
        let node = self.random.below(nodes as u64) as usize;
        let fault = self.random.below(13);
        self.trace(|| format!("nemesis: fault {fault} at node {}", node + 1));
        match fault {
            0 => self.faults.drop_percent = self.random.below(30),
            1 => self.faults.duplicate_percent = self.random.below(15),
            2 => {
                let high = self.random.between(2, 80);
                self.faults.delay_ms = (1, high);
            }
            3 => self.partition_symmetric(),
            4 => {
                let other = self.random.below(nodes as u64) as usize;
                self.faults.blocked[node][other] = node != other;
            }
            5 => self.faults.blocked = [[false; NODES_MAX]; NODES_MAX],
            6 | 7 => {
                let target = if self.random.chance(1, 2) {
                    self.leader_position().unwrap_or(node)
                } else {
                    node
                };
                self.crash_for_a_while(target)?;
            }
            8 => {
                let slow = self.random.between(10, 150);
                self.nodes[node].disk_latency_ms = (slow / 2, slow);
            }
            9 => self.nodes[node].disk_stalled_until = self.now + self.random.between(50, 800),
            10 => self.nodes[node].clock_offset_ms += self.random.between(20, 400),
            11 => {
                if let Some(leader) = self.leader_position() {
                    let to = NodeId(self.random.between(1, nodes as u64));
                    self.with_core(leader, |core, actions| {
                        let _ = core.transfer_leadership(to, actions);
                    })?;
                }
            }
            _ => {
                for state in &mut self.nodes {
                    state.disk_latency_ms = (1, 3);
                }
                self.faults.drop_percent = 0;
                self.faults.duplicate_percent = 0;
            }
        }
        Ok(())
    }

    /// Crashes `node` and schedules its restart: half the time at once (a
    /// process restart, which races with elections), else after a while.
    pub(super) fn crash_for_a_while(&mut self, node: usize) -> Result<(), Violation> {
        self.crash(node)?;
        self.maybe_damage(node);
        let downtime = if self.random.chance(1, 2) {
            self.random.between(1, 40)
        } else {
            self.random.between(40, 800)
        };
        self.schedule(downtime, Event::Restart(node));
        Ok(())
    }

    /// Now and then (with `Options::damage`) the crashed `node` will
    /// restart damaged, if no node is damaged now (the fault model is one
    /// damaged disk at a time; with one damaged already, half the time it
    /// loses its last batches too, if it can be survived: see
    /// `Damage::AlsoBatches`): having lost its last one to three durable
    /// batches (a bit flip in its final record, which recovery cuts), or
    /// a longer suffix from anywhere in its log (damage mid-log), or its
    /// snapshot (and with it the log after it), or its whole hard state.
    fn maybe_damage(&mut self, node: usize) {
        // With the lost-hard-state bug planted, every damage it can be
        // (so the checkers meet the bug often enough to show they catch it).
        #[cfg(feature = "planted-bugs")]
        let lost_bug =
            self.options.planted_bug == Some(crate::raft::PlantedBug::ActOnLostHardState);
        #[cfg(not(feature = "planted-bugs"))]
        let lost_bug = false;
        if !self.options.damage || !(lost_bug || self.damage_random.chance(1, 3)) {
            return;
        }
        // Damaged until repaired in the core and the cleared mark durable.
        let damaged = self
            .nodes
            .iter()
            .filter(|state| {
                state.damage_on_restart != Damage::None
                    || state.disk.durable().damaged()
                    || state.core.as_ref().is_some_and(|core| !core.trusted())
            })
            .count();
        match damaged {
            0 => {}
            // A second damaged node (or the same one again): its last
            // batches, if it will be recoverable when it restarts.
            1 if !self.options.churn && self.damage_random.chance(1, 2) => {
                self.nodes[node].damage_on_restart =
                    Damage::AlsoBatches(self.damage_random.between(1, 3) as usize);
                return;
            }
            _ => return,
        }
        // A quarter of the damage is to the hard state (both copies).
        if lost_bug || self.damage_random.chance(1, 4) {
            self.nodes[node].damage_on_restart = Damage::HardState;
        } else if self.nodes[node].disk.snapshot().is_some() && self.damage_random.chance(1, 4) {
            // Its snapshot file damaged: the log after it goes too.
            self.nodes[node].damage_on_restart = Damage::Snapshot;
        } else if self.damage_random.chance(1, 3) {
            // Damage mid-log (a flipped bit at rest, an unreadable block,
            // a misdirected write, a segment gone): recovery cuts there,
            // anywhere in the log, up to all of it.
            self.nodes[node].damage_on_restart =
                Damage::Batches(self.damage_random.between(4, 200) as usize);
        } else {
            self.nodes[node].damage_on_restart =
                Damage::Batches(self.damage_random.between(1, 3) as usize);
        }
    }

    /// Faults aimed at elections, the most delicate moments: a new leader
    /// is sometimes crashed before it replicates its first entries (which
    /// makes the figure 8 histories of Raft §5.4.2 common), and a node is
    /// sometimes restarted while a candidate collects votes.
    pub(super) fn nemesis_on_role_change(&mut self, node: usize, role: Role) {
        if self.healed {
            return;
        }
        let life = self.nodes[node].life;
        match role {
            Role::Leader if self.random.chance(1, 3) => {
                let delay = self.random.between(1, 30);
                self.schedule(delay, Event::Crash { node, life });
            }
            Role::Candidate if self.random.chance(1, 4) => {
                let victim = self.random.below(self.nodes.len() as u64) as usize;
                let victim_life = self.nodes[victim].life;
                let delay = self.random.between(0, 5);
                self.schedule(
                    delay,
                    Event::Crash {
                        node: victim,
                        life: victim_life,
                    },
                );
            }
            _ => {}
        }
    }

    fn partition_symmetric(&mut self) {
        let nodes = self.nodes.len();
        let mut side = [false; NODES_MAX];
        for slot in side.iter_mut().take(nodes) {
            *slot = self.random.chance(1, 2);
        }
        for from in 0..nodes {
            for to in 0..nodes {
                self.faults.blocked[from][to] = side[from] != side[to];
            }
        }
    }

    pub(super) fn heal(&mut self) {
        self.trace(|| "heal".to_string());
        self.trace_nodes();
        self.healed = true;
        self.committed_before_heal = self.checker.committed_length().get();
        self.faults = Faults::calm();
        for node in 0..self.nodes.len() {
            self.nodes[node].disk_latency_ms = (1, 3);
            self.nodes[node].disk_stalled_until = 0;
            if self.nodes[node].core.is_none() {
                self.restart(node);
            }
        }
    }

    /// After the heal: note when a working leader exists, keep the probe
    /// appends submitted to it, note when they all committed.
    pub(super) fn liveness_step(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader_position() else {
            return Ok(());
        };
        let core = self.nodes[leader].core.as_ref().expect("leader is up");
        if core.log().term_at(core.commit_index()) != Some(core.term()) {
            return Ok(());
        }
        if self.leader_ms.is_none() {
            self.leader_ms = Some(self.now - self.heal_ms);
        }
        for probe in 0..PROBE_APPENDS {
            if self.probes[probe].is_none() {
                let first_value = self.next_value;
                self.next_value += 1;
                let operation = self.invoke(
                    u32::MAX,
                    Operation::Append {
                        first_value,
                        count: 1,
                    },
                );
                self.probes[probe] = Some(operation);
                self.submit(leader, operation)?;
            }
        }
        let done = self.probes.iter().all(|probe| {
            probe.is_some_and(|operation| {
                matches!(
                    self.checker.history[operation].outcome,
                    Outcome::Appended { .. }
                ) && self.checker.history[operation].completed_ms != u64::MAX
            })
        });
        if done {
            self.probes_done_ms = Some(self.now - self.heal_ms);
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<(), Violation> {
        // Past the fault model (module `lost`): no leader can be, and a
        // node must have said so instead.
        let lost_for_good = self.lose_majority && self.no_voter_electable();
        if lost_for_good && self.majority_losses == 0 {
            return Err(Violation {
                property: "a majority that lost entries says so",
                detail: format!(
                    "{} ms after the heal no voter can be elected, and no node said entries were lost",
                    self.options.liveness_bound_ms
                ),
            });
        }
        if !lost_for_good && (self.leader_ms.is_none() || self.probes_done_ms.is_none()) {
            return Err(Violation {
                property: "liveness",
                detail: format!(
                    "{} ms after the heal: leader after {:?} ms, probes committed: {:?}",
                    self.options.liveness_bound_ms,
                    self.leader_ms,
                    self.probes
                        .iter()
                        .map(|probe| probe.map(|operation| self.checker.history[operation].outcome))
                        .collect::<Vec<_>>()
                ),
            });
        }
        self.check_committed_durable()?;
        self.checker.check_history()?;
        self.kv_verdict = crate::sim::kv::check(&self.kv_history)?;
        let exact = self
            .seed
            .is_multiple_of(self.options.exact_search_every.max(1));
        self.verdict = crate::sim::history::check_history(&self.checker, exact)?;
        Ok(())
    }
}
