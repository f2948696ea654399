//! Bare Raft cores wired together in one thread: an instant disk (a write
//! is durable right after it is issued, in order) and an in-order network.
//! Every nanosecond spent is consensus work, which is what the core's
//! benchmark measures and what its allocation and batching tests count.
//!
//! Shared by `tests/raft_no_alloc.rs`, `tests/raft_replication.rs` and
//! `benches/raft.rs` (each includes this file as a module).

use std::collections::VecDeque;

use rast::raft::{
    Action, BatchSummary, Config, Core, HardState, Membership, Message, Outgoing, OutgoingBody,
    Restart, Role,
};
use rast::types::{LogIndex, NodeId, Term};

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

/// Cores 1..=n (at positions 0..n) on an instant disk and an in-order
/// network; see the module docs.
pub struct InstantCluster {
    /// The cores, node `i + 1` at position `i`.
    pub cores: Vec<Core>,
    events: VecDeque<Event>,
    /// The actions of the call being routed (reused).
    pub actions: Vec<Action>,
    summaries: Vec<BatchSummary>,
    /// The last commit node 1 reported (`Apply`).
    pub committed: LogIndex,
}

impl InstantCluster {
    /// `nodes` voters without check-quorum, each `Config` shaped by
    /// `configure`; nobody leads yet.
    pub fn new(nodes: u64, configure: impl Fn(&mut Config)) -> Self {
        let ids: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
        let membership = Membership::with_voters(&ids).expect("voters");
        let cores = ids
            .iter()
            .map(|id| {
                let mut config = Config::new(*id, 7);
                config.check_quorum = false;
                configure(&mut config);
                let restart = Restart {
                    hard_state: HardState::default(),
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

    /// Node 1 campaigns and wins.
    pub fn elect(&mut self) {
        self.cores[0].campaign_now(&mut self.actions);
        self.route(0);
        self.drain();
        assert_eq!(self.cores[0].role(), Role::Leader, "node 1 leads");
    }

    /// Queues what the last call of the node at `node` asked for.
    pub fn route(&mut self, node: usize) {
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

    /// Processes events until none is left (it never calls `replicate`).
    pub fn drain(&mut self) {
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
}
