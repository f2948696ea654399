//! Throughput of the Raft core alone: a 3-node cluster of cores in one
//! thread, an in-memory network and an instant disk, so every nanosecond
//! measured is consensus work (the three cores' steps, ticks aside). Reports
//! entries committed per second — which is also per core, the whole cluster
//! running on one — for batches of 1, 16 and 256 entries of 128 B.
//!
//! The leader keeps `WINDOW` proposals in flight (pipelining); disk writes
//! complete right after they are issued, in order; messages are delivered in
//! order. The goal: at least 2 million entries per second per core at batch
//! 16, so the core is never the bottleneck of the server.
//!
//! Each size runs twice: the leader calls `replicate` after every proposal
//! (one AppendEntries per proposal and peer), or once per `WINDOW`
//! proposals, as the server does once per loop turn (one AppendEntries per
//! peer for the whole window, within the message limits).
//!
//! Run: `cargo bench --bench raft` (`RAST_BENCH_MS` sets the time per case).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rast::raft::{
    Action, BatchSummary, Config, Core, Membership, Message, Outgoing, OutgoingBody, Restart, Role,
};
use rast::types::{LogIndex, NodeId, Term};
use rast::wire::BatchKind;

/// Proposals the leader keeps in flight.
const WINDOW: u64 = 64;
/// Bytes of one entry's payload.
const ENTRY_BYTES: u32 = 128;
/// Framing bytes per batch (segment table, root, pointers), approximately.
const BATCH_OVERHEAD_BYTES: u32 = 64;

/// What is waiting to happen, in order.
enum Event {
    Deliver(Outgoing),
    Persisted {
        node: usize,
        up_to: LogIndex,
        term: Term,
    },
    HardState {
        node: usize,
    },
}

struct Cluster {
    cores: Vec<Core>,
    events: VecDeque<Event>,
    actions: Vec<Action>,
    summaries: Vec<BatchSummary>,
    committed: LogIndex,
}

impl Cluster {
    fn new() -> Self {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let membership = Membership::with_voters(&ids).expect("voters");
        let cores = ids
            .iter()
            .map(|id| {
                let mut config = Config::new(*id, 7);
                config.check_quorum = false;
                let restart = Restart {
                    hard_state: rast::raft::HardState::default(),
                    snapshot_index: LogIndex::ZERO,
                    snapshot_term: Term::ZERO,
                    membership,
                    batches: &[],
                    now_ms: 0,
                };
                Core::new(config, &restart)
            })
            .collect();
        Self {
            cores,
            events: VecDeque::with_capacity(4096),
            actions: Vec::with_capacity(rast::constants::ACTIONS_PER_STEP_MAX),
            summaries: Vec::with_capacity(rast::constants::APPEND_MESSAGE_BATCHES_MAX),
            committed: LogIndex::ZERO,
        }
    }

    /// Queues what the node's last call asked for: instant disk, in-order
    /// network.
    fn route(&mut self, node: usize) {
        for action in self.actions.drain(..) {
            match action {
                Action::PersistHardState(_) => self.events.push_back(Event::HardState { node }),
                Action::AppendProposal {
                    term,
                    first_index,
                    count,
                } => self.events.push_back(Event::Persisted {
                    node,
                    up_to: LogIndex(first_index.get() + u64::from(count) - 1),
                    term,
                }),
                Action::AppendNoop { term, index } => self.events.push_back(Event::Persisted {
                    node,
                    up_to: index,
                    term,
                }),
                Action::AppendReceived { last_index, .. } => {
                    let term = self.cores[node]
                        .log()
                        .term_at(last_index)
                        .expect("just appended");
                    self.events.push_back(Event::Persisted {
                        node,
                        up_to: last_index,
                        term,
                    });
                }
                Action::Send(message) => self.events.push_back(Event::Deliver(message)),
                Action::Apply { up_to } if node == 0 => self.committed = up_to,
                _ => {}
            }
        }
    }

    fn deliver(&mut self, message: Outgoing) {
        let from = (message.from.get() - 1) as usize;
        let to = (message.to.get() - 1) as usize;
        if let OutgoingBody::AppendEntries(range) = message.body {
            self.summaries.clear();
            self.summaries.extend(
                self.cores[from]
                    .log()
                    .batches_in(range.first_index, range.last_index)
                    .map(rast::raft::log::Boundary::summary),
            );
        }
        let body = message.body.incoming(&self.summaries, &[]);
        let incoming = Message {
            from: message.from,
            to: message.to,
            term: message.term,
            body,
        };
        self.cores[to].step(&incoming, &mut self.actions);
        self.route(to);
    }

    /// Processes events until none is left.
    fn drain(&mut self) {
        while let Some(event) = self.events.pop_front() {
            match event {
                Event::Deliver(message) => self.deliver(message),
                Event::Persisted { node, up_to, term } => {
                    self.cores[node].persisted(up_to, term, &mut self.actions);
                    self.route(node);
                }
                Event::HardState { node } => {
                    let hard_state = self.cores[node].hard_state();
                    self.cores[node].hard_state_persisted(hard_state, &mut self.actions);
                    self.route(node);
                }
            }
        }
    }

    fn elect(&mut self) {
        self.cores[0].campaign_now(&mut self.actions);
        self.route(0);
        self.drain();
        assert_eq!(self.cores[0].role(), Role::Leader, "node 1 leads");
    }

    /// Proposes `count`-entry batches for `duration`, `WINDOW` at a time,
    /// calling `replicate` after each proposal or once per window (`turn`);
    /// returns the entries committed and the time taken.
    fn run(&mut self, count: u32, turn: bool, duration: Duration) -> (u64, Duration) {
        let start_commit = self.committed;
        let started = Instant::now();
        let bytes = count * ENTRY_BYTES + BATCH_OVERHEAD_BYTES;
        while started.elapsed() < duration {
            for _ in 0..WINDOW {
                let proposed =
                    self.cores[0].propose(BatchKind::Data, count, bytes, &mut self.actions);
                black_box(proposed.expect("the leader accepts"));
                self.route(0);
                if !turn {
                    self.cores[0].replicate(&mut self.actions);
                    self.route(0);
                }
            }
            if turn {
                self.cores[0].replicate(&mut self.actions);
                self.route(0);
            }
            self.drain();
        }
        let elapsed = started.elapsed();
        let last = self.cores[0].log().last_index();
        assert_eq!(self.committed, last, "every proposal committed");
        (self.committed.get() - start_commit.get(), elapsed)
    }
}

fn main() {
    let milliseconds = std::env::var("RAST_BENCH_MS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000);
    println!(
        "{:<44} {:>16} {:>14} {:>12}",
        "case", "entries/s/core", "batches/s", "ns/batch"
    );
    for count in [1u32, 16, 256] {
        for turn in [false, true] {
            let mut cluster = Cluster::new();
            cluster.elect();
            // Warm up, then measure.
            cluster.run(count, turn, Duration::from_millis(100));
            let (entries, elapsed) = cluster.run(count, turn, Duration::from_millis(milliseconds));
            let seconds = elapsed.as_secs_f64();
            let batches = entries as f64 / f64::from(count);
            let replicate = if turn { "per window" } else { "per proposal" };
            println!(
                "{:<44} {:>16.0} {:>14.0} {:>12.0}",
                format!("3 nodes, {count} x 128 B, replicate {replicate}"),
                entries as f64 / seconds,
                batches / seconds,
                seconds * 1e9 / batches
            );
        }
    }
}
