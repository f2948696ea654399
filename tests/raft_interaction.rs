//! Data-driven interaction tests of the Raft core (etcd style).
//!
//! Each file in `testdata/raft/` is a script: a command, a `----` line, and
//! the output the core must produce, then a blank line. The harness runs the
//! real core with an explicit network (messages wait in inboxes until
//! `deliver-msgs`) and explicit storage (writes wait until `persist`), so a
//! script can put the core in any interleaving: slow disks, lost messages,
//! partitions, crashes. `RAST_REWRITE=1 cargo test --test raft_interaction`
//! rewrites the expected outputs; review the diff like code.
//!
//! Commands:
//! ```text
//! add-nodes N [pre-vote=false] [check-quorum=false] [batches=K] [bytes=K]
//!           [inflight=K] [learners=ID,..]
//! campaign ID | tick-election ID | tick-heartbeat ID
//! propose ID [count=N] [replicate=false] | replicate ID
//! read-index ID | transfer-leadership from=ID to=ID
//! deliver-msgs [ID..] [drop=true] | persist ID.. | stabilize
//! isolate ID | heal | crash ID | restart ID | status ID | log ID
//! propose-membership ID voters=ID,.. [outgoing=ID,..] [learners=ID,..]
//! leave-joint ID
//! compact ID index=N | install-snapshot ID index=N term=T
//! snapshot-sent ID to=ID [success=false]
//! ```
//!
//! `propose` (and `propose-membership`, `leave-joint`) call the core's
//! `replicate` right after the proposal, as a runtime does for a turn with
//! one proposal; with `replicate=false` the proposal waits for an explicit
//! `replicate ID` (or the leader's tick), so a script can show several
//! proposals leaving as one AppendEntries per peer.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;

use rast::raft::{
    Action, BatchSummary, Boundary, Config, Core, HardState, Membership, Message, NodeSet,
    Outgoing, OutgoingBody, Restart,
};
use rast::types::{LogIndex, NodeId, Term};
use rast::wire::BatchKind;

const ELECTION_MS: u64 = 100;
const HEARTBEAT_MS: u64 = 10;

/// A message in an inbox, with the summaries an AppendEntries carries.
#[derive(Clone, Debug)]
struct Envelope {
    outgoing: Outgoing,
    batches: Vec<BatchSummary>,
}

enum StorageOperation {
    HardState(HardState),
    Truncate(LogIndex),
    Append(Vec<BatchSummary>),
}

#[derive(Default)]
struct Durable {
    hard_state: HardState,
    batches: Vec<BatchSummary>,
}

struct Node {
    id: NodeId,
    core: Option<Core>,
    config: Config,
    inbox: VecDeque<Envelope>,
    pending: Vec<StorageOperation>,
    durable: Durable,
    now_ms: u64,
}

struct Harness {
    nodes: Vec<Node>,
    membership: Membership,
    isolated: Vec<NodeId>,
    actions: Vec<Action>,
    /// The content of every config batch proposed: (first index, term).
    configs: Vec<((LogIndex, Term), Membership)>,
}

impl Harness {
    fn new() -> Self {
        Self {
            nodes: Vec::new(),
            membership: Membership::default(),
            isolated: Vec::new(),
            actions: Vec::new(),
            configs: Vec::new(),
        }
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|node| node.id == NodeId(id))
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn add_nodes(&mut self, count: u64, arguments: &Arguments) {
        let voters: Vec<NodeId> = (1..=count).map(NodeId).collect();
        let learners: Vec<NodeId> = arguments.list("learners").into_iter().map(NodeId).collect();
        self.membership = Membership {
            voters: NodeSet::from_ids(&voters).expect("voters"),
            learners: NodeSet::from_ids(&learners).expect("learners"),
            ..Membership::default()
        };
        for id in voters.iter().chain(&learners) {
            let mut config = Config::new(*id, id.get());
            config.timeout_ms_election = ELECTION_MS;
            config.interval_ms_heartbeat = HEARTBEAT_MS;
            config.pre_vote = arguments.flag("pre-vote", true);
            config.check_quorum = arguments.flag("check-quorum", true);
            config.append_message_batches_max = arguments.number("batches", 64) as usize;
            config.append_message_bytes_max =
                arguments.number("bytes", config.append_message_bytes_max);
            config.inflight_messages_max =
                arguments.number("inflight", config.inflight_messages_max as u64) as usize;
            let mut node = Node {
                id: *id,
                core: None,
                config,
                inbox: VecDeque::new(),
                pending: Vec::new(),
                durable: Durable::default(),
                now_ms: 0,
            };
            start(&mut node, self.membership);
            self.nodes.push(node);
        }
    }

    /// Runs `input` on node `id`'s core and routes its actions; returns
    /// their rendering.
    fn call(&mut self, id: u64, input: impl FnOnce(&mut Core, &mut Vec<Action>)) -> String {
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let node = self.node(id);
        let Some(core) = node.core.as_mut() else {
            return format!("{id} is down\n");
        };
        input(core, &mut actions);
        let output = self.route(id, &actions, &[]);
        self.actions = actions;
        output
    }

    fn route(&mut self, id: u64, actions: &[Action], received: &[BatchSummary]) -> String {
        let mut output = String::new();
        let mut outgoing = Vec::new();
        {
            let node = self.node(id);
            let core = node.core.as_ref().expect("up");
            for action in actions {
                writeln!(output, "{id}: {}", render_action(action)).expect("string");
                match *action {
                    Action::PersistHardState(hard_state) => {
                        node.pending.push(StorageOperation::HardState(hard_state));
                    }
                    Action::Truncate { from } => {
                        node.pending.push(StorageOperation::Truncate(from));
                    }
                    Action::AppendProposal { first_index, .. } => {
                        let batch = core.log().batch_at(first_index).expect("appended");
                        node.pending
                            .push(StorageOperation::Append(vec![batch.summary()]));
                    }
                    Action::AppendNoop { index, .. } => {
                        let batch = core.log().batch_at(index).expect("appended");
                        node.pending
                            .push(StorageOperation::Append(vec![batch.summary()]));
                    }
                    Action::AppendReceived { skip, .. } => node
                        .pending
                        .push(StorageOperation::Append(received[skip as usize..].to_vec())),
                    Action::Send(message) => {
                        let batches = match message.body {
                            OutgoingBody::AppendEntries(range) => core
                                .log()
                                .batches_in(range.first_index, range.last_index)
                                .map(rast::raft::log::Boundary::summary)
                                .collect(),
                            _ => Vec::new(),
                        };
                        outgoing.push(Envelope {
                            outgoing: message,
                            batches,
                        });
                    }
                    _ => {}
                }
            }
        }
        for envelope in outgoing {
            let to = envelope.outgoing.to.get();
            if let Some(node) = self.nodes.iter_mut().find(|node| node.id.get() == to) {
                node.inbox.push_back(envelope);
            }
        }
        output
    }

    fn deliver(&mut self, ids: &[u64], drop: bool) -> String {
        let mut output = String::new();
        for id in ids {
            let inbox = std::mem::take(&mut self.node(*id).inbox);
            for envelope in inbox {
                let from = envelope.outgoing.from;
                let cut = self.isolated.contains(&from) || self.isolated.contains(&NodeId(*id));
                if drop || cut {
                    writeln!(output, "dropped: {}", render_message(&envelope.outgoing))
                        .expect("string");
                    continue;
                }
                if self.node(*id).core.is_none() {
                    continue;
                }
                writeln!(output, "> {}", render_message(&envelope.outgoing)).expect("string");
                let configs: Vec<Membership> = envelope
                    .batches
                    .iter()
                    .filter(|batch| batch.kind == BatchKind::Config)
                    .map(|batch| {
                        self.configs
                            .iter()
                            .find(|(key, _)| *key == (batch.first_index, batch.term))
                            .map(|(_, membership)| *membership)
                            .expect("config content recorded at proposal")
                    })
                    .collect();
                let body = envelope.outgoing.body.incoming(&envelope.batches, &configs);
                let message = Message {
                    from,
                    to: NodeId(*id),
                    term: envelope.outgoing.term,
                    body,
                };
                let mut actions = std::mem::take(&mut self.actions);
                actions.clear();
                self.node(*id)
                    .core
                    .as_mut()
                    .expect("up")
                    .step(&message, &mut actions);
                output += &self.route(*id, &actions, &envelope.batches);
                self.actions = actions;
            }
        }
        output
    }

    fn persist(&mut self, id: u64) -> String {
        let node = self.node(id);
        if node.core.is_none() {
            return String::new();
        }
        let mut hard_state = None;
        let mut log_touched = false;
        for operation in std::mem::take(&mut node.pending) {
            match operation {
                StorageOperation::HardState(state) => {
                    node.durable.hard_state = state;
                    hard_state = Some(state);
                }
                StorageOperation::Truncate(from) => {
                    node.durable
                        .batches
                        .retain(|batch| batch.first_index < from);
                    log_touched = true;
                }
                StorageOperation::Append(batches) => {
                    node.durable.batches.extend(batches);
                    log_touched = true;
                }
            }
        }
        let last = node
            .durable
            .batches
            .last()
            .map_or((LogIndex::ZERO, Term::ZERO), |batch| {
                (batch.last_index(), batch.term)
            });
        let mut output = String::new();
        if hard_state.is_some() || log_touched {
            let mut done = Vec::new();
            if let Some(state) = hard_state {
                done.push(format!(
                    "hard state term={} vote={}",
                    state.term, state.vote
                ));
            }
            if log_touched {
                done.push(format!("log to {}@{}", last.0, last.1));
            }
            writeln!(output, "~ {id} persisted {}", done.join(", ")).expect("string");
        }
        if let Some(state) = hard_state {
            output += &self.call(id, |core, actions| {
                core.hard_state_persisted(state, actions);
            });
        }
        if log_touched {
            output += &self.call(id, |core, actions| core.persisted(last.0, last.1, actions));
        }
        output
    }

    fn stabilize(&mut self) -> String {
        let ids: Vec<u64> = self.nodes.iter().map(|node| node.id.get()).collect();
        let mut output = String::new();
        for _ in 0..100 {
            let mut round = String::new();
            for id in &ids {
                round += &self.persist(*id);
            }
            round += &self.deliver(&ids, false);
            if round.is_empty() {
                break;
            }
            output += &round;
        }
        output
    }

    fn advance(&mut self, id: u64, elapsed_ms: u64) -> String {
        let node = self.node(id);
        node.now_ms += elapsed_ms;
        let now = node.now_ms;
        self.call(id, |core, actions| core.tick(now, actions))
    }

    /// The membership and snapshot hooks.
    fn run_hooks(&mut self, command: &str, first: u64, arguments: &Arguments) -> String {
        match command {
            "propose-membership" => self.propose_membership(first, arguments),
            "leave-joint" => self.leave_joint(first, arguments),
            "compact" => {
                let index = LogIndex(arguments.number("index", 0));
                match self.node(first).core.as_mut() {
                    Some(core) => core.compact(index),
                    None => return format!("{first} is down\n"),
                }
                self.log(first)
            }
            "install-snapshot" => {
                let index = LogIndex(arguments.number("index", 0));
                let term = Term(arguments.number("term", 0));
                let membership = self.membership;
                let node = self.node(first);
                node.durable.batches.clear();
                node.pending.clear();
                self.call(first, |core, actions| {
                    core.snapshot_installed(index, term, membership, actions);
                })
            }
            "snapshot-sent" => {
                let to = NodeId(arguments.number("to", 0));
                let success = arguments.flag("success", true);
                self.call(first, |core, actions| {
                    core.snapshot_sent(to, success, actions);
                })
            }
            other => panic!("unknown command {other:?}"),
        }
    }

    /// Runs `propose` on node `id`, then `replicate` unless the script
    /// says `replicate=false`.
    fn propose_then_replicate(
        &mut self,
        id: u64,
        arguments: &Arguments,
        propose: impl FnOnce(&mut Core, &mut Vec<Action>),
    ) -> String {
        let mut output = self.call(id, propose);
        if arguments.flag("replicate", true) {
            output += &self.call(id, Core::replicate);
        }
        output
    }

    fn propose_membership(&mut self, id: u64, arguments: &Arguments) -> String {
        let ids =
            |key: &str| -> Vec<NodeId> { arguments.list(key).into_iter().map(NodeId).collect() };
        let membership = Membership {
            voters: NodeSet::from_ids(&ids("voters")).expect("voters"),
            voters_outgoing: NodeSet::from_ids(&ids("outgoing")).expect("outgoing"),
            learners: NodeSet::from_ids(&ids("learners")).expect("learners"),
        };
        self.propose_config(id, membership, arguments)
    }

    /// Proposes what the leader's `leave_joint_due` asks for, if anything.
    fn leave_joint(&mut self, id: u64, arguments: &Arguments) -> String {
        let due = self
            .node(id)
            .core
            .as_ref()
            .and_then(rast::raft::Core::leave_joint_due);
        match due {
            Some(membership) => self.propose_config(id, membership, arguments),
            None => "nothing due\n".to_string(),
        }
    }

    fn propose_config(&mut self, id: u64, membership: Membership, arguments: &Arguments) -> String {
        let mut result = None;
        let mut output = self.propose_then_replicate(id, arguments, |core, actions| {
            result = Some(core.propose_membership(membership, 256, actions));
        });
        match result {
            Some(Ok((term, index))) => self.configs.push(((index, term), membership)),
            Some(Err(error)) => writeln!(output, "error: {error}").expect("string"),
            None => {}
        }
        output
    }

    fn status(&mut self, id: u64) -> String {
        let node = self.node(id);
        let Some(core) = node.core.as_ref() else {
            return format!("{id} is down\n");
        };
        let membership = core.membership();
        let mut output = format!(
            "{id}: {:?} term={} vote={} leader={} commit={} first={} last={}@{} durable={} \
             voters={:?}{} learners={:?}\n",
            core.role(),
            core.term(),
            core.vote(),
            core.leader(),
            core.commit_index(),
            core.log().first_index(),
            core.log().last_index(),
            core.log().last_term(),
            core.log().durable_index(),
            membership.voters,
            if membership.is_joint() {
                format!(" outgoing={:?}", membership.voters_outgoing)
            } else {
                String::new()
            },
            membership.learners
        );
        if core.role() == rast::raft::Role::Leader {
            for peer in core.membership().members().as_slice() {
                if let Some(progress) = core.progress(*peer) {
                    writeln!(
                        output,
                        "  {peer}: {:?} match={} next={} inflight={}",
                        progress.state,
                        progress.match_index,
                        progress.next_index,
                        progress.inflights.count()
                    )
                    .expect("string");
                }
            }
        }
        output
    }

    fn log(&mut self, id: u64) -> String {
        let node = self.node(id);
        let Some(core) = node.core.as_ref() else {
            return format!("{id} is down\n");
        };
        let last = core.log().last_index();
        let batches: Vec<String> = core
            .log()
            .batches_in(core.log().first_index(), last)
            .map(|batch| {
                format!(
                    "{}..={}@{}{}",
                    batch.first_index,
                    batch.last_index(),
                    batch.term,
                    if batch.kind == BatchKind::Noop {
                        " noop"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        format!("{id}: [{}]\n", batches.join(" "))
    }

    fn run(&mut self, command: &str, arguments: &Arguments) -> String {
        let first = arguments.positional(0);
        let output = match command {
            "add-nodes" => {
                self.add_nodes(first, arguments);
                String::new()
            }
            "campaign" => self.call(first, Core::campaign_now),
            "tick-election" => self.advance(first, 2 * ELECTION_MS),
            "tick-heartbeat" => self.advance(first, HEARTBEAT_MS),
            "propose" => {
                let count = arguments.number("count", 1) as u32;
                let mut result = None;
                let mut output = self.propose_then_replicate(first, arguments, |core, actions| {
                    result = Some(core.propose(BatchKind::Data, count, 128 * count, actions));
                });
                if let Some(Err(error)) = result {
                    writeln!(output, "error: {error}").expect("string");
                }
                output
            }
            "replicate" => self.call(first, Core::replicate),
            "read-index" => {
                let mut result = None;
                let mut output = self.call(first, |core, actions| {
                    result = Some(core.read_index(actions));
                });
                match result {
                    Some(Ok(round)) => writeln!(output, "read joined round {round}"),
                    Some(Err(error)) => writeln!(output, "error: {error}"),
                    None => Ok(()),
                }
                .expect("string");
                output
            }
            "transfer-leadership" => {
                let (from, to) = (arguments.number("from", 0), arguments.number("to", 0));
                let mut result = None;
                let mut output = self.call(from, |core, actions| {
                    result = Some(core.transfer_leadership(NodeId(to), actions));
                });
                if let Some(Err(error)) = result {
                    writeln!(output, "error: {error}").expect("string");
                }
                output
            }
            "deliver-msgs" => {
                let ids = if arguments.positionals.is_empty() {
                    self.nodes.iter().map(|node| node.id.get()).collect()
                } else {
                    arguments.positionals.clone()
                };
                self.deliver(&ids, arguments.flag("drop", false))
            }
            "persist" => arguments
                .positionals
                .clone()
                .into_iter()
                .map(|id| self.persist(id))
                .collect(),
            "stabilize" => self.stabilize(),
            "isolate" => {
                self.isolated.push(NodeId(first));
                String::new()
            }
            "heal" => {
                self.isolated.clear();
                String::new()
            }
            "crash" => {
                let node = self.node(first);
                node.core = None;
                node.pending.clear();
                node.inbox.clear();
                String::new()
            }
            "restart" => {
                let membership = self.membership;
                start(self.node(first), membership);
                String::new()
            }
            "status" => self.status(first),
            "log" => self.log(first),
            other => self.run_hooks(other, first, arguments),
        };
        if output.is_empty() {
            "ok\n".to_string()
        } else {
            output
        }
    }
}

fn start(node: &mut Node, membership: Membership) {
    let batches: Vec<Boundary> = node.durable.batches.iter().map(Boundary::from).collect();
    let restart = Restart {
        hard_state: node.durable.hard_state,
        snapshot_index: LogIndex::ZERO,
        snapshot_term: Term::ZERO,
        membership,
        batches: &batches,
        now_ms: node.now_ms,
    };
    node.core = Some(Core::new(node.config.clone(), &restart));
}

fn render_action(action: &Action) -> String {
    match action {
        Action::PersistHardState(state) => {
            format!("PersistHardState term={} vote={}", state.term, state.vote)
        }
        Action::Truncate { from } => format!("Truncate from={from}"),
        Action::AppendProposal {
            term,
            first_index,
            count,
        } => format!("AppendProposal {first_index}..+{count}@{term}"),
        Action::AppendNoop { term, index } => format!("AppendNoop {index}@{term}"),
        Action::AppendReceived {
            skip,
            first_index,
            last_index,
        } => format!("AppendReceived skip={skip} {first_index}..={last_index}"),
        Action::Send(message) => format!("Send {}", render_message(message)),
        Action::Apply { up_to } => format!("Apply up_to={up_to}"),
        Action::ReadReady {
            through_round,
            index,
        } => format!("ReadReady through_round={through_round} index={index}"),
        Action::ReadsAborted { through_round } => {
            format!("ReadsAborted through_round={through_round}")
        }
        Action::SendSnapshot { to } => format!("SendSnapshot to={to}"),
        Action::RoleChanged { role, term, leader } => {
            format!("RoleChanged {role:?} term={term} leader={leader}")
        }
        Action::MajorityLost { acked_end, best } => format!(
            "MajorityLost acked_end={}@{} best={}@{}",
            acked_end.1, acked_end.0, best.1, best.0
        ),
    }
}

fn render_message(message: &Outgoing) -> String {
    let head = format!("{}->{} term={}", message.from, message.to, message.term);
    let body = match message.body {
        OutgoingBody::AppendEntries(range) => format!(
            "AppendEntries prev={}@{} commit={} entries={}..={} batches={}",
            range.prev_index,
            range.prev_term,
            range.leader_commit,
            range.first_index,
            range.last_index,
            range.batches
        ),
        OutgoingBody::AppendResponse(response) if response.success => format!(
            "AppendResponse match={} last={}",
            response.match_index, response.last_index
        ),
        OutgoingBody::AppendResponse(response) => format!(
            "AppendResponse reject={} hint={}@{} last={}",
            response.rejected_index, response.hint_index, response.hint_term, response.last_index
        ),
        OutgoingBody::RequestVote(request) => format!(
            "RequestVote last={}@{}{}{}",
            request.last_index,
            request.last_term,
            if request.pre_vote { " pre-vote" } else { "" },
            if request.leadership_transfer {
                " transfer"
            } else {
                ""
            }
        ),
        OutgoingBody::VoteResponse(response) => format!(
            "VoteResponse {}{}",
            if response.granted {
                "granted"
            } else {
                "rejected"
            },
            if response.pre_vote { " pre-vote" } else { "" }
        ),
        OutgoingBody::Heartbeat(heartbeat) => format!(
            "Heartbeat commit={} round={}",
            heartbeat.leader_commit, heartbeat.read_round
        ),
        OutgoingBody::HeartbeatResponse(response) => format!(
            "HeartbeatResponse round={} match={}",
            response.read_round, response.match_index
        ),
        OutgoingBody::TimeoutNow => "TimeoutNow".to_string(),
        OutgoingBody::RepairWait(wait) => format!(
            "RepairWait last={}@{} acked_end={}",
            wait.last_index,
            wait.last_term,
            wait.acked_end.map_or_else(
                || "unknown".to_owned(),
                |(term, index)| format!("{index}@{term}")
            )
        ),
    };
    format!("{head} {body}")
}

/// A command's arguments: numbers, and `key=value` pairs.
struct Arguments {
    positionals: Vec<u64>,
    named: Vec<(String, String)>,
}

impl Arguments {
    fn parse(words: &[&str]) -> Self {
        let mut positionals = Vec::new();
        let mut named = Vec::new();
        for word in words {
            if let Some((key, value)) = word.split_once('=') {
                named.push((key.to_string(), value.to_string()));
            } else {
                positionals.push(word.parse().expect("positional arguments are numbers"));
            }
        }
        Self { positionals, named }
    }

    fn positional(&self, position: usize) -> u64 {
        self.positionals.get(position).copied().unwrap_or(0)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.named
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        self.value(key).map_or(default, |value| value == "true")
    }

    fn number(&self, key: &str, default: u64) -> u64 {
        self.value(key)
            .map_or(default, |value| value.parse().expect("a number"))
    }

    fn list(&self, key: &str) -> Vec<u64> {
        self.value(key).map_or_else(Vec::new, |value| {
            value
                .split(',')
                .map(|item| item.parse().expect("a number"))
                .collect()
        })
    }
}

/// Runs one script; returns the rewritten text and the mismatches.
fn run_script(text: &str) -> (String, Vec<String>) {
    let mut harness = Harness::new();
    let mut rewritten = String::new();
    let mut mismatches = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten += line;
            rewritten += "\n";
            continue;
        }
        let command_line = line;
        assert_eq!(
            lines.next(),
            Some("----"),
            "expected ---- after {command_line:?}"
        );
        let mut expected = String::new();
        while let Some(output) = lines.peek() {
            if output.is_empty() {
                break;
            }
            expected += output;
            expected += "\n";
            lines.next();
        }
        let words: Vec<&str> = command_line.split_whitespace().collect();
        let actual = harness.run(words[0], &Arguments::parse(&words[1..]));
        if actual != expected {
            mismatches.push(format!(
                "command: {command_line}\nexpected:\n{expected}actual:\n{actual}"
            ));
        }
        write!(rewritten, "{command_line}\n----\n{actual}").expect("string");
    }
    (rewritten, mismatches)
}

/// Every script in `testdata/raft/` produces exactly its recorded output.
#[test]
fn interaction_scripts() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/raft");
    let rewrite = std::env::var("RAST_REWRITE").is_ok_and(|value| value == "1");
    let mut paths: Vec<_> = std::fs::read_dir(&directory)
        .expect("testdata/raft exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "the scripts are there");
    let mut failures = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable");
        let (rewritten, mismatches) = run_script(&text);
        if rewrite {
            std::fs::write(&path, rewritten).expect("writable");
        } else {
            for mismatch in mismatches {
                failures.push(format!("{}:\n{mismatch}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(RAST_REWRITE=1 rewrites the expected outputs)",
        failures.join("\n")
    );
}
