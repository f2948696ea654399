//! The fault schedule: which fault starts when, for how long, against whom;
//! drawn up front from a seed.
//!
//! A schedule is a pure function of (seed, scenario, nodes, duration,
//! privileged), so `--seed S` replays it. Targets that only exist at run
//! time ("the leader") are resolved when the fault starts; the timeline file
//! of a run records what they resolved to. Replaying a seed replays the
//! schedule, not the interleaving: the processes' timing is not ours to fix.
//!
//! ```text
//!  0 s ── warm-up ──┬─ fault ──┐ gap ┌─ fault ─┐ ... ─┤ end: heal all, recover, quiet, check
//!                   start     heal   start    heal
//! ```

use std::fmt;

use crate::nemesis::lazyfs::Tear;
use crate::random::Random;

/// What a run stresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// SIGKILL a node or the leader, restart it later.
    Kill,
    /// SIGSTOP a node or the leader, SIGCONT it later.
    Pause,
    /// Network partitions (needs root): the leader alone, a minority, a
    /// bridge node, one-way.
    Partition,
    /// A node's disk fills up (needs root: its data is on a small tmpfs).
    Disk,
    /// Clean restarts (SIGTERM, start again at once).
    Restart,
    /// All of the above, sometimes two at once.
    Mixed,
    /// Power cuts (needs root and /dev/fuse: each node's data is on its own
    /// lazy filesystem, `rast-lazyfs`): a node, two, or all of them lose
    /// power (SIGKILL and everything not synced), and start again later.
    Power,
    /// Storage damage, one node at a time: bytes of its segment, snapshot
    /// and hard-state files flipped, zeroed or cut off while it is stopped
    /// or while it runs (`nemesis::corrupt`); it repairs from its peers.
    Corrupt,
}

impl Scenario {
    /// The name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
            Self::Disk => "disk",
            Self::Restart => "restart",
            Self::Mixed => "mixed",
            Self::Power => "power",
            Self::Corrupt => "corrupt",
        }
    }
}

/// Whom a process fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The leader of the first log when the fault starts (`fallback` when
    /// none is known).
    Leader {
        /// Node index used when no leader is known.
        fallback: usize,
    },
    /// A node (0-based index).
    Node(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Leader { .. } => formatter.write_str("leader"),
            Self::Node(node) => write!(formatter, "n{}", node + 1),
        }
    }
}

/// A cut of the network between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// The leader alone on one side.
    IsolateLeader {
        /// Node isolated when no leader is known.
        fallback: usize,
    },
    /// `minority` on one side, everyone else on the other.
    Halves {
        /// The smaller side (fewer than half the nodes).
        minority: Vec<usize>,
    },
    /// `left` and the others (but `bridge`) cannot talk; `bridge` talks to
    /// both sides.
    Bridge {
        /// The node in the middle.
        bridge: usize,
        /// One side.
        left: Vec<usize>,
    },
    /// Packets from `from` to every other node are dropped; the other
    /// direction still flows.
    OneWay {
        /// The node whose sends are dropped.
        from: Target,
    },
}

impl fmt::Display for Partition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IsolateLeader { .. } => formatter.write_str("isolate leader"),
            Self::Halves { minority } => write!(formatter, "halves, minority {}", names(minority)),
            Self::Bridge { bridge, left } => {
                write!(formatter, "bridge n{}, left {}", bridge + 1, names(left))
            }
            Self::OneWay { from } => write!(formatter, "one-way from {from}"),
        }
    }
}

/// `n1 n3` for `[0, 2]`.
pub fn names(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|node| format!("n{}", node + 1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL; the node starts again when the fault heals.
    Kill(Target),
    /// SIGSTOP; SIGCONT when the fault heals.
    Pause(Target),
    /// SIGTERM, wait for the exit, start again at once.
    Restart(Target),
    /// Cut links (iptables inside the harness's namespace).
    Partition(Partition),
    /// Fill the node's data filesystem; when the fault heals, free it and
    /// restart the node if its logs stopped (storage errors are fail-stop).
    DiskFull(Target),
    /// Cut the power of `targets`: SIGKILL, and their lazy filesystems
    /// drop everything not synced (tearing the last pending write, if
    /// `tear`); they start again when the fault heals.
    Power {
        /// Whom (one, two, or every node).
        targets: Vec<Target>,
        /// How the last pending write of each is torn.
        tear: Option<Tear>,
    },
    /// Damage one of the node's files (`nemesis::corrupt`); while it is
    /// stopped (SIGKILL first, started again when the fault heals) or
    /// while it runs (restarted when the fault heals, so recovery reads
    /// what the scrubber does not). Skipped while another node's copy is
    /// damaged: the fault model is one damaged disk at a time.
    Corrupt {
        /// Whom.
        target: Target,
        /// Damage it while it runs.
        running: bool,
        /// Picks the file, the kind of damage and the bytes.
        seed: u64,
    },
}

/// Kinds of faults, for counting.
pub const FAULT_KINDS: [&str; 7] = [
    "kill",
    "pause",
    "restart",
    "partition",
    "disk-full",
    "power",
    "corrupt",
];

impl Fault {
    /// The kind, one of [`FAULT_KINDS`].
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Kill(_) => "kill",
            Self::Pause(_) => "pause",
            Self::Restart(_) => "restart",
            Self::Partition(_) => "partition",
            Self::DiskFull(_) => "disk-full",
            Self::Power { .. } => "power",
            Self::Corrupt { .. } => "corrupt",
        }
    }

    /// Whether the fault needs root (a network namespace, a tmpfs, a FUSE
    /// mount).
    pub const fn needs_root(&self) -> bool {
        matches!(
            self,
            Self::Partition(_) | Self::DiskFull(_) | Self::Power { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kill(target) => write!(formatter, "kill {target}"),
            Self::Pause(target) => write!(formatter, "pause {target}"),
            Self::Restart(target) => write!(formatter, "restart {target}"),
            Self::Partition(partition) => write!(formatter, "partition: {partition}"),
            Self::DiskFull(target) => write!(formatter, "disk full {target}"),
            Self::Power { targets, tear } => {
                formatter.write_str("power cut")?;
                for target in targets {
                    write!(formatter, " {target}")?;
                }
                match tear {
                    Some(tear) => write!(formatter, ", last write torn at {} B", tear.sector),
                    None => Ok(()),
                }
            }
            Self::Corrupt {
                target,
                running,
                seed,
            } => write!(
                formatter,
                "corrupt {target} {} (seed {seed})",
                if *running { "running" } else { "stopped" }
            ),
        }
    }
}

/// A fault and when it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Milliseconds after the workload starts.
    pub start_ms: u64,
    /// How long until it heals (0: instantaneous, e.g. a restart).
    pub duration_ms: u64,
    /// What.
    pub fault: Fault,
}

impl fmt::Display for Step {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:>8.1}s  {:>5.1}s  {}",
            self.start_ms as f64 / 1000.0,
            self.duration_ms as f64 / 1000.0,
            self.fault
        )
    }
}

/// What a schedule is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// What to stress.
    pub scenario: Scenario,
    /// Cluster size.
    pub nodes: usize,
    /// Milliseconds of faults (the workload runs from 0 to here).
    pub duration_ms: u64,
    /// Whether partitions and full disks are possible (root).
    pub privileged: bool,
}

/// Milliseconds of calm before the first fault: the cluster settles.
pub const WARM_UP_MS: u64 = 2_000;
/// Shortest and longest fault.
pub const FAULT_MS_MIN: u64 = 1_000;
/// See [`FAULT_MS_MIN`].
pub const FAULT_MS_MAX: u64 = 6_000;
/// Shortest and longest calm between faults.
pub const GAP_MS_MIN: u64 = 500;
/// See [`GAP_MS_MIN`].
pub const GAP_MS_MAX: u64 = 3_000;
/// Most steps one schedule holds (a 24-hour run at the shortest spacing
/// stays below it).
pub const STEPS_MAX: usize = 200_000;

/// A drawn schedule, steps in start order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// What it was drawn from.
    pub plan: Plan,
    /// The faults.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Draws the schedule of `plan`. Every fault heals by the end of the
    /// plan's duration.
    pub fn draw(plan: Plan) -> Self {
        assert!(plan.nodes >= 3, "a schedule needs at least 3 nodes");
        let mut random = Random::new(plan.seed ^ 0x6e65_6d65_7369_7321);
        let mut steps = Vec::new();
        let mut at = WARM_UP_MS;
        while at + FAULT_MS_MIN <= plan.duration_ms && steps.len() < STEPS_MAX {
            let room = plan.duration_ms - at;
            let combined = match plan.scenario {
                Scenario::Mixed => random.chance(1, 4),
                // A full disk bites only when the node must allocate: a
                // new segment, or a new term and vote to persist. Force the
                // latter with a leader change while the disk is full.
                Scenario::Disk => true,
                _ => false,
            };
            let mut longest = 0;
            for second in [false, true].into_iter().take(if combined { 2 } else { 1 }) {
                let fault = if second && plan.scenario == Scenario::Disk {
                    draw_leader_change(&mut random, plan.nodes)
                } else {
                    draw_fault(&mut random, &plan)
                };
                let duration_ms = match fault {
                    Fault::Restart(_) => 0,
                    _ => random.between(FAULT_MS_MIN, FAULT_MS_MAX).min(room),
                };
                // The second fault of a combination starts a little later.
                let start_ms = if longest == 0 {
                    at
                } else {
                    at + random.below(duration_ms.max(1) / 2 + 1)
                };
                let duration_ms = duration_ms.min(plan.duration_ms - start_ms);
                longest = longest.max(start_ms - at + duration_ms).max(1);
                steps.push(Step {
                    start_ms,
                    duration_ms,
                    fault,
                });
            }
            at += longest + random.between(GAP_MS_MIN, GAP_MS_MAX);
        }
        steps.sort_by_key(|step| step.start_ms);
        Self { plan, steps }
    }

    /// The schedule as text, one step per line.
    pub fn to_text(&self) -> String {
        let plan = &self.plan;
        let mut text = format!(
            "# seed {} scenario {} nodes {} duration {} s privileged {}\n#    start  length  fault\n",
            plan.seed,
            plan.scenario.name(),
            plan.nodes,
            plan.duration_ms / 1000,
            plan.privileged
        );
        for step in &self.steps {
            text.push_str(&step.to_string());
            text.push('\n');
        }
        text
    }
}

fn draw_fault(random: &mut Random, plan: &Plan) -> Fault {
    let kinds: &[Scenario] = match plan.scenario {
        Scenario::Mixed if plan.privileged => &[
            Scenario::Kill,
            Scenario::Pause,
            Scenario::Partition,
            Scenario::Partition,
            Scenario::Disk,
            Scenario::Restart,
        ],
        Scenario::Mixed => &[Scenario::Kill, Scenario::Pause, Scenario::Restart],
        _ => std::slice::from_ref(&plan.scenario),
    };
    let kind = kinds[random.below(kinds.len() as u64) as usize];
    let nodes = plan.nodes;
    match kind {
        Scenario::Kill => Fault::Kill(draw_target(random, nodes)),
        Scenario::Pause => Fault::Pause(draw_target(random, nodes)),
        Scenario::Restart => Fault::Restart(draw_target(random, nodes)),
        Scenario::Disk => Fault::DiskFull(draw_target(random, nodes)),
        Scenario::Power => draw_power_cut(random, nodes),
        Scenario::Corrupt => Fault::Corrupt {
            target: draw_target(random, nodes),
            running: random.chance(1, 2),
            seed: random.next_u64(),
        },
        Scenario::Partition | Scenario::Mixed => Fault::Partition(draw_partition(random, nodes)),
    }
}

/// A power cut: one node (the leader half the time) most often, sometimes
/// two, sometimes every node at once; the last write torn at a 512-byte or
/// 4 KiB boundary two times in three.
fn draw_power_cut(random: &mut Random, nodes: usize) -> Fault {
    let targets = match random.below(10) {
        0..6 => vec![draw_target(random, nodes)],
        6..8 => {
            let first = random.below(nodes as u64) as usize;
            let second = (first + 1 + random.below(nodes as u64 - 1) as usize) % nodes;
            vec![Target::Node(first), Target::Node(second)]
        }
        _ => (0..nodes).map(Target::Node).collect(),
    };
    Fault::Power {
        targets,
        tear: Tear::draw(random),
    }
}

/// A fault that makes the cluster elect a new leader.
fn draw_leader_change(random: &mut Random, nodes: usize) -> Fault {
    let fallback = random.below(nodes as u64) as usize;
    if random.chance(1, 2) {
        Fault::Kill(Target::Leader { fallback })
    } else {
        Fault::Partition(Partition::IsolateLeader { fallback })
    }
}

/// The leader half the time, else a random node.
fn draw_target(random: &mut Random, nodes: usize) -> Target {
    let node = random.below(nodes as u64) as usize;
    if random.chance(1, 2) {
        Target::Leader { fallback: node }
    } else {
        Target::Node(node)
    }
}

fn draw_partition(random: &mut Random, nodes: usize) -> Partition {
    let mut order: Vec<usize> = (0..nodes).collect();
    for index in (1..nodes).rev() {
        let other = random.below(index as u64 + 1) as usize;
        order.swap(index, other);
    }
    match random.below(4) {
        0 => Partition::IsolateLeader { fallback: order[0] },
        1 => {
            let mut minority = order[..(nodes - 1) / 2].to_vec();
            minority.sort_unstable();
            Partition::Halves { minority }
        }
        2 => {
            let mut left = order[1..=(nodes - 1) / 2].to_vec();
            left.sort_unstable();
            Partition::Bridge {
                bridge: order[0],
                left,
            }
        }
        _ => Partition::OneWay {
            from: draw_target(random, nodes),
        },
    }
}

/// The directed links `(from, to)` a partition cuts, given the leader (if
/// known) when it starts.
pub fn cut_links(
    partition: &Partition,
    nodes: usize,
    leader: Option<usize>,
) -> Vec<(usize, usize)> {
    let both_ways = |side: &[usize], other: &[usize]| -> Vec<(usize, usize)> {
        let mut links = Vec::new();
        for &a in side {
            for &b in other {
                links.push((a, b));
                links.push((b, a));
            }
        }
        links
    };
    let everyone_but = |excluded: &[usize]| -> Vec<usize> {
        (0..nodes).filter(|node| !excluded.contains(node)).collect()
    };
    match partition {
        Partition::IsolateLeader { fallback } => {
            let alone = leader.unwrap_or(*fallback);
            both_ways(&[alone], &everyone_but(&[alone]))
        }
        Partition::Halves { minority } => both_ways(minority, &everyone_but(minority)),
        Partition::Bridge { bridge, left } => {
            let mut excluded = left.clone();
            excluded.push(*bridge);
            both_ways(left, &everyone_but(&excluded))
        }
        Partition::OneWay { from } => {
            let from = resolve(*from, leader);
            everyone_but(&[from])
                .into_iter()
                .map(|to| (from, to))
                .collect()
        }
    }
}

/// The node a target names, given the leader (if known).
pub fn resolve(target: Target, leader: Option<usize>) -> usize {
    match target {
        Target::Leader { fallback } => leader.unwrap_or(fallback),
        Target::Node(node) => node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, scenario: Scenario, privileged: bool) -> Plan {
        Plan {
            seed,
            scenario,
            nodes: 5,
            duration_ms: 120_000,
            privileged,
        }
    }

    /// A seed gives one schedule; steps start after the warm-up, are in
    /// order, and heal by the end.
    #[test]
    fn schedule_is_a_function_of_the_seed() {
        for scenario in [Scenario::Mixed, Scenario::Partition, Scenario::Restart] {
            let first = Schedule::draw(plan(7, scenario, true));
            assert_eq!(first, Schedule::draw(plan(7, scenario, true)));
            assert_ne!(first, Schedule::draw(plan(8, scenario, true)));
            assert!(first.steps.len() > 10, "{}", first.to_text());
            for pair in first.steps.windows(2) {
                assert!(pair[0].start_ms <= pair[1].start_ms);
            }
            for step in &first.steps {
                assert!(step.start_ms >= WARM_UP_MS);
                assert!(step.start_ms + step.duration_ms <= 120_000);
            }
        }
    }

    /// Without root, no fault needs root, even in the mixed scenario.
    #[test]
    fn unprivileged_schedules_need_no_root() {
        let schedule = Schedule::draw(plan(3, Scenario::Mixed, false));
        assert!(schedule.steps.iter().all(|step| !step.fault.needs_root()));
        let privileged = Schedule::draw(plan(3, Scenario::Mixed, true));
        assert!(privileged.steps.iter().any(|step| step.fault.needs_root()));
    }

    /// Power schedules cut one node, two, and every node, each needing
    /// root.
    #[test]
    fn power_cuts_hit_one_two_and_all_nodes() {
        let schedule = Schedule::draw(plan(11, Scenario::Power, true));
        let sizes: Vec<usize> = schedule
            .steps
            .iter()
            .map(|step| match &step.fault {
                Fault::Power { targets, .. } => targets.len(),
                other => panic!("{other} in a power schedule"),
            })
            .collect();
        for size in [1, 2, 5] {
            assert!(sizes.contains(&size), "no cut of {size} nodes: {sizes:?}");
        }
        assert!(schedule.steps.iter().all(|step| step.fault.needs_root()));
    }

    /// Each partition shape cuts what it says: a minority loses both
    /// directions to the rest, a bridge keeps its links, one-way cuts one
    /// direction.
    #[test]
    fn partitions_cut_the_right_links() {
        let halves = cut_links(&Partition::Halves { minority: vec![1] }, 3, None);
        assert_eq!(halves, vec![(1, 0), (0, 1), (1, 2), (2, 1)]);
        let bridge = cut_links(
            &Partition::Bridge {
                bridge: 2,
                left: vec![0, 1],
            },
            5,
            None,
        );
        assert!(bridge.contains(&(0, 3)) && bridge.contains(&(4, 1)));
        assert!(!bridge.iter().any(|&(a, b)| a == 2 || b == 2));
        assert_eq!(bridge.len(), 8);
        let one_way = cut_links(
            &Partition::OneWay {
                from: Target::Leader { fallback: 0 },
            },
            3,
            Some(2),
        );
        assert_eq!(one_way, vec![(2, 0), (2, 1)]);
        let isolated = cut_links(&Partition::IsolateLeader { fallback: 0 }, 3, Some(1));
        assert_eq!(isolated.len(), 4);
        assert!(isolated.iter().all(|&(a, b)| a == 1 || b == 1));
    }
}
