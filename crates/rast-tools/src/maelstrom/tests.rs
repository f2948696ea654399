//! In-process tests of the Maelstrom node: several [`Node`]s on a simulated
//! clock and a lossless network, driven message by message.

use serde_json::{Value, json};

use super::harness::outcome;
use super::node::{Node, Now};
use super::protocol::{Envelope, code};
use crate::check::history::{Event, EventKind, History, ProcessId};
use crate::check::linearizable::{FailedCas, KvOp, check_kv};
use crate::check::wgl::Budget;
use crate::constants::MAELSTROM_TICK_MS;
use crate::kv::StateMachine;
use crate::raft::Role;
use crate::random::Random;

/// Nodes, a message queue and a simulated clock.
struct Cluster {
    nodes: Vec<Node>,
    /// (deliver at ms, line).
    queue: Vec<(u64, String)>,
    /// Messages that reached a client.
    client_inbox: Vec<Envelope>,
    now_ms: u64,
    next_msg_id: u64,
    /// Faults between nodes: loss per mille, largest delay in ms, cut links.
    loss_per_mille: u64,
    delay_ms_max: u64,
    blocked: Vec<Vec<bool>>,
    random: Random,
}

impl Cluster {
    fn new(size: usize, configure: impl Fn(&mut Node)) -> Self {
        let ids: Vec<String> = (1..=size).map(|n| format!("n{n}")).collect();
        let mut cluster = Self {
            nodes: (0..size)
                .map(|n| {
                    let mut node = Node::new(n as u64 + 7);
                    configure(&mut node);
                    node
                })
                .collect(),
            queue: Vec::new(),
            client_inbox: Vec::new(),
            now_ms: 0,
            next_msg_id: 1,
            loss_per_mille: 0,
            delay_ms_max: 0,
            blocked: vec![vec![false; size]; size],
            random: Random::new(1),
        };
        for id in &ids {
            let init = json!({"type": "init", "msg_id": 1, "node_id": id, "node_ids": ids});
            cluster.client_send(id, init);
        }
        cluster
    }

    fn now(&self) -> Now {
        Now {
            monotonic_ms: self.now_ms,
            wall_ms: 1_700_000_000_000 + self.now_ms,
        }
    }

    /// Sends `body` from client c1 to node `to`; returns its msg id.
    fn client_send(&mut self, to: &str, mut body: Value) -> u64 {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        body["msg_id"] = msg_id.into();
        let envelope = Envelope {
            src: "c1".into(),
            dest: to.into(),
            body,
        };
        self.queue.push((self.now_ms + 1, envelope.to_line()));
        msg_id
    }

    /// Advances the clock one millisecond: delivers what is due, ticks.
    fn step(&mut self) {
        self.now_ms += 1;
        let now = self.now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|(at, _)| *at <= self.now_ms);
        self.queue = later;
        for (_, line) in due {
            let envelope = Envelope::parse(&line).unwrap();
            if let Some(index) = node_index(&envelope.dest) {
                self.nodes[index].handle_line(&line, now);
            } else {
                self.client_inbox.push(envelope);
            }
        }
        if self.now_ms.is_multiple_of(MAELSTROM_TICK_MS) {
            for node in &mut self.nodes {
                node.tick(now);
            }
        }
        for from in 0..self.nodes.len() {
            for line in self.nodes[from].take_output() {
                self.route(from, line);
            }
        }
    }

    /// Node-to-node messages cross the faulty network; answers to clients
    /// arrive in a millisecond.
    fn route(&mut self, from: usize, line: String) {
        let dest = Envelope::parse(&line).unwrap().dest;
        let Some(to) = node_index(&dest) else {
            self.queue.push((self.now_ms + 1, line));
            return;
        };
        if self.blocked[from][to] || self.random.chance(self.loss_per_mille, 1000) {
            return;
        }
        let delay = 1 + self.random.below(self.delay_ms_max + 1);
        self.queue.push((self.now_ms + delay, line));
    }

    /// Cuts `minority` off from the rest (empty: heal).
    fn partition(&mut self, minority: &[usize]) {
        let size = self.nodes.len();
        for from in 0..size {
            for to in 0..size {
                self.blocked[from][to] = minority.contains(&from) != minority.contains(&to);
            }
        }
    }

    /// Runs until the client got the answer to `msg_id` (or panics).
    fn answer(&mut self, msg_id: u64) -> Value {
        for _ in 0..20_000 {
            if let Some(position) = self
                .client_inbox
                .iter()
                .position(|envelope| envelope.in_reply_to() == Some(msg_id))
            {
                return self.client_inbox.remove(position).body;
            }
            self.step();
        }
        panic!("no answer to {msg_id} within 20 s");
    }

    fn call(&mut self, to: &str, body: Value) -> Value {
        let msg_id = self.client_send(to, body);
        self.answer(msg_id)
    }

    fn run_until_leader(&mut self) -> usize {
        for _ in 0..20_000 {
            if let Some(index) = self
                .nodes
                .iter()
                .position(|node| node.role() == Some(Role::Leader))
            {
                return index;
            }
            self.step();
        }
        panic!("no leader within 20 s");
    }
}

fn node_index(id: &str) -> Option<usize> {
    id.strip_prefix('n')?.parse::<usize>().ok().map(|n| n - 1)
}

fn error_code(answer: &Value) -> Option<u64> {
    (answer["type"] == "error").then(|| answer["code"].as_u64().unwrap())
}

/// The lin-kv operations through any node (followers forward to the
/// leader): init_ok, write_ok, read_ok, cas_ok, error 20 for a missing key
/// (read and cas), 22 for a cas mismatch, and a stale read that says so.
#[test]
fn lin_kv_operations_through_any_node() {
    let mut cluster = Cluster::new(3, |_| {});
    let leader = cluster.run_until_leader();
    let inits = cluster
        .client_inbox
        .iter()
        .filter(|envelope| envelope.body["type"] == "init_ok")
        .count();
    assert_eq!(inits, 3);
    let follower = format!("n{}", (leader + 1) % 3 + 1);

    let answer = cluster.call(&follower, json!({"type": "read", "key": 1}));
    assert_eq!(
        error_code(&answer),
        Some(code::KEY_DOES_NOT_EXIST),
        "{answer}"
    );
    let answer = cluster.call(
        &follower,
        json!({"type": "cas", "key": 1, "from": 1, "to": 2}),
    );
    assert_eq!(
        error_code(&answer),
        Some(code::KEY_DOES_NOT_EXIST),
        "{answer}"
    );

    let answer = cluster.call(&follower, json!({"type": "write", "key": 1, "value": 5}));
    assert_eq!(answer["type"], "write_ok", "{answer}");
    let answer = cluster.call(
        &format!("n{}", leader + 1),
        json!({"type": "read", "key": 1}),
    );
    assert_eq!(answer["type"], "read_ok", "{answer}");
    assert_eq!(answer["value"], 5);

    let answer = cluster.call(
        &follower,
        json!({"type": "cas", "key": 1, "from": 4, "to": 6}),
    );
    assert_eq!(
        error_code(&answer),
        Some(code::PRECONDITION_FAILED),
        "{answer}"
    );
    let answer = cluster.call(
        &follower,
        json!({"type": "cas", "key": 1, "from": 5, "to": 6}),
    );
    assert_eq!(answer["type"], "cas_ok", "{answer}");
    let answer = cluster.call(&follower, json!({"type": "read", "key": 1}));
    assert_eq!(answer["value"], 6, "{answer}");

    // A stale read answers from the local copy and says so (after a moment
    // the follower has applied the cas too).
    for _ in 0..200 {
        cluster.step();
    }
    let answer = cluster.call(&follower, json!({"type": "read", "key": 1, "stale": true}));
    assert_eq!(answer["type"], "read_ok", "{answer}");
    assert_eq!(answer["stale"], true);
    assert_eq!(answer["value"], 6);

    let answer = cluster.call(&follower, json!({"type": "echo", "echo": 1}));
    assert_eq!(error_code(&answer), Some(code::NOT_SUPPORTED), "{answer}");
    let answer = cluster.call(&follower, json!({"type": "write", "key": 1}));
    assert_eq!(
        error_code(&answer),
        Some(code::MALFORMED_REQUEST),
        "{answer}"
    );
}

/// A session-numbered cas sent twice (a client retry) is applied once: the
/// retry is answered cas_ok from the session, not error 22, although the
/// value no longer matches. Without a session the retry fails.
#[test]
fn session_retry_is_applied_once() {
    let mut cluster = Cluster::new(3, |_| {});
    let leader = format!("n{}", cluster.run_until_leader() + 1);
    cluster.call(&leader, json!({"type": "write", "key": 9, "value": 0}));
    let cas = json!({"type": "cas", "key": 9, "from": 0, "to": 1, "client_id": 77, "seq": 1});
    assert_eq!(cluster.call(&leader, cas.clone())["type"], "cas_ok");
    assert_eq!(cluster.call(&leader, cas)["type"], "cas_ok");
    let plain = json!({"type": "cas", "key": 9, "from": 1, "to": 2});
    assert_eq!(cluster.call(&leader, plain.clone())["type"], "cas_ok");
    assert_eq!(
        error_code(&cluster.call(&leader, plain)),
        Some(code::PRECONDITION_FAILED)
    );
    let answer = cluster.call(&leader, json!({"type": "read", "key": 9}));
    assert_eq!(answer["value"], 2);
}

/// A state machine that panics on a chosen key: the write gets error 13
/// (crash, indefinite), the node keeps running and answering (status shows
/// the failure, later requests get error 11), nothing unwinds into the
/// runtime.
#[test]
fn state_machine_panic_stops_applying_but_not_the_node() {
    let mut cluster = Cluster::new(3, |node| {
        node.prepare_machine(|machine| machine.panic_on_key(Some(b"\"boom\"".to_vec())));
    });
    let leader = format!("n{}", cluster.run_until_leader() + 1);
    assert_eq!(
        cluster.call(&leader, json!({"type": "write", "key": "ok", "value": 1}))["type"],
        "write_ok"
    );
    let answer = cluster.call(&leader, json!({"type": "write", "key": "boom", "value": 1}));
    assert_eq!(error_code(&answer), Some(code::CRASH), "{answer}");
    let answer = cluster.call(&leader, json!({"type": "write", "key": "ok", "value": 2}));
    assert_eq!(
        error_code(&answer),
        Some(code::TEMPORARILY_UNAVAILABLE),
        "{answer}"
    );
    let status = cluster.call(&leader, json!({"type": "rast_status"}));
    assert!(
        status["failed"]
            .as_str()
            .unwrap()
            .contains("injected panic"),
        "{status}"
    );
    for _ in 0..300 {
        cluster.step();
    }
    for node in &cluster.nodes {
        let machine = node.machine().unwrap();
        assert!(
            machine.failure().is_some(),
            "every replica stops at the entry"
        );
        assert_eq!(machine.get(b"\"ok\""), Some(b"1".as_slice()));
    }
}

/// A random lin-kv operation on one of three keys, values below 4.
fn random_operation(random: &mut Random) -> (KvOp, Value) {
    let key = random.below(3);
    match random.below(3) {
        0 => (
            KvOp::Get { key, value: None },
            json!({"type": "read", "key": key}),
        ),
        1 => {
            let value = random.below(4);
            (
                KvOp::Put { key, value },
                json!({"type": "write", "key": key, "value": value}),
            )
        }
        _ => {
            let (from, to) = (random.below(4), random.below(4));
            (
                KvOp::Cas {
                    key,
                    from: Some(from),
                    to: Some(to),
                },
                json!({"type": "cas", "key": key, "from": from, "to": to}),
            )
        }
    }
}

/// An operation in flight in the simulation.
#[derive(Clone, Debug)]
struct InFlight {
    msg_id: u64,
    op: KvOp,
    body: Value,
    deadline_ms: u64,
    attempts: u32,
    /// An earlier attempt may have taken effect.
    uncertain: bool,
}

/// A lin-kv client of the simulation.
#[derive(Debug, Default)]
struct SimulatedClient {
    pending: Option<InFlight>,
    next_at_ms: u64,
    /// The session's last sequence (session runs only).
    sequence: u64,
    /// Sessions this client opened before the current one.
    session: u64,
}

impl SimulatedClient {
    /// The current session's id: unique per client and session.
    fn client_id(&self, position: usize) -> u64 {
        (self.session << 8) | (position as u64 + 1)
    }
}

/// Attempts a session client makes at one write before it records the
/// outcome as unknown.
const SESSION_ATTEMPTS_MAX: u32 = 4;

/// One seeded in-process run.
struct Simulation {
    cluster: Cluster,
    random: Random,
    nodes: usize,
    clients: Vec<SimulatedClient>,
    history: History<KvOp>,
    /// Writes carry a session and are retried (same sequence) after an
    /// unknown outcome, at another node.
    sessions: bool,
    heal_ms: u64,
    ok_after_heal: u64,
}

impl Simulation {
    /// `nodes` in-process nodes, 5% loss and up to 20 ms delay between
    /// nodes, `prepare` run on each state machine; every choice is the
    /// seed's, so a failing seed replays exactly.
    fn new(
        seed: u64,
        nodes: usize,
        sessions: bool,
        prepare: Option<fn(&mut StateMachine)>,
    ) -> Self {
        let (loss_per_mille, delay_ms_max) = (50, 20);
        let mut cluster = Cluster::new(nodes, |node| {
            if let Some(prepare) = prepare {
                node.prepare_machine(prepare);
            }
        });
        cluster.random = Random::new(seed);
        cluster.loss_per_mille = loss_per_mille;
        cluster.delay_ms_max = delay_ms_max;
        cluster.run_until_leader();
        Self {
            cluster,
            random: Random::new(seed ^ 0xc11e),
            nodes,
            clients: (0..6).map(|_| SimulatedClient::default()).collect(),
            history: History::new(),
            sessions,
            heal_ms: 0,
            ok_after_heal: 0,
        }
    }

    /// A partition or heal every 300-900 ms for 6 simulated seconds, then 2
    /// healthy ones; returns the history.
    fn run(mut self) -> (History<KvOp>, u64) {
        let start = self.cluster.now_ms;
        self.heal_ms = start + 6_000;
        let stop_ms = start + 8_000;
        let mut next_nemesis_ms = start + 300;
        while self.cluster.now_ms < stop_ms || self.clients.iter().any(|c| c.pending.is_some()) {
            let now = self.cluster.now_ms;
            if now >= next_nemesis_ms && now < self.heal_ms {
                let minority = match self.random.below(3) {
                    0 => Vec::new(),
                    _ => vec![self.random.below(self.nodes as u64) as usize],
                };
                self.cluster.partition(&minority);
                next_nemesis_ms = now + self.random.between(300, 900);
            } else if now == self.heal_ms {
                self.cluster.partition(&[]);
            }
            if now < stop_ms {
                self.invoke();
            }
            self.cluster.step();
            for envelope in std::mem::take(&mut self.cluster.client_inbox) {
                self.complete(&envelope);
            }
            self.time_out();
        }
        (self.history, self.ok_after_heal)
    }

    fn record(&mut self, client: usize, kind: EventKind, op: KvOp) {
        let event = Event {
            time_ns: self.cluster.now_ms * 1_000_000,
            process: ProcessId(client as u64),
            kind,
            op,
        };
        self.history.push(event).unwrap();
    }

    fn invoke(&mut self) {
        let now = self.cluster.now_ms;
        for position in 0..self.clients.len() {
            let client = &self.clients[position];
            if client.pending.is_some() || now < client.next_at_ms {
                continue;
            }
            let (op, mut body) = random_operation(&mut self.random);
            if self.sessions && !matches!(op, KvOp::Get { .. }) {
                let client = &mut self.clients[position];
                client.sequence += 1;
                body["client_id"] = client.client_id(position).into();
                body["seq"] = client.sequence.into();
            }
            self.record(position, EventKind::Invoke, op);
            self.send(position, op, body, 0, false);
        }
    }

    fn send(&mut self, position: usize, op: KvOp, body: Value, attempts: u32, uncertain: bool) {
        let node = format!("n{}", self.random.below(self.nodes as u64) + 1);
        let msg_id = self.cluster.client_send(&node, body.clone());
        self.clients[position].pending = Some(InFlight {
            msg_id,
            op,
            body,
            deadline_ms: self.cluster.now_ms + 3_000,
            attempts: attempts + 1,
            uncertain,
        });
    }

    fn complete(&mut self, envelope: &Envelope) {
        let Some(position) = self.clients.iter().position(|client| {
            client
                .pending
                .as_ref()
                .is_some_and(|pending| envelope.in_reply_to() == Some(pending.msg_id))
        }) else {
            return;
        };
        let mut pending = self.clients[position].pending.take().expect("found");
        if envelope.body["code"] == code::SESSION_EXPIRED {
            // The session is gone (its first request never applied, or it
            // expired): open a new one. This attempt was not applied; if
            // no earlier one was either, send the write again in the new
            // session, else its outcome is unknown.
            let client = &mut self.clients[position];
            client.session += 1;
            client.sequence = 1;
            if pending.uncertain {
                client.sequence = 0;
                self.finish(position, EventKind::Info, pending.op);
            } else {
                pending.body["client_id"] = client.client_id(position).into();
                pending.body["seq"] = 1.into();
                self.send(position, pending.op, pending.body, 0, false);
            }
            return;
        }
        let (kind, op) = outcome(&pending.op, &envelope.body);
        match kind {
            Some(EventKind::Ok | EventKind::Fail) => self.finish(position, kind.unwrap(), op),
            // Indefinite, or definite for this attempt only.
            _ => self.unknown(position, pending, kind.is_some()),
        }
    }

    /// No answer for this attempt (or a definite "not done" one): a session
    /// client retries; otherwise the outcome is unknown.
    fn unknown(&mut self, position: usize, pending: InFlight, maybe_applied: bool) {
        let uncertain = pending.uncertain || maybe_applied;
        let retry = self.sessions && pending.body.get("seq").is_some();
        if retry && pending.attempts < SESSION_ATTEMPTS_MAX {
            self.send(
                position,
                pending.op,
                pending.body,
                pending.attempts,
                uncertain,
            );
        } else {
            // A definite error other than a cas mismatch had no effect;
            // recorded as info, which is weaker and still sound.
            self.finish(position, EventKind::Info, pending.op);
        }
    }

    fn finish(&mut self, position: usize, kind: EventKind, op: KvOp) {
        let now = self.cluster.now_ms;
        if kind == EventKind::Ok && now > self.heal_ms {
            self.ok_after_heal += 1;
        }
        self.record(position, kind, op);
        self.clients[position].next_at_ms = now + 10;
    }

    fn time_out(&mut self) {
        let now = self.cluster.now_ms;
        for position in 0..self.clients.len() {
            let expired = self.clients[position]
                .pending
                .as_ref()
                .is_some_and(|pending| pending.deadline_ms <= now);
            if expired {
                let pending = self.clients[position].pending.take().expect("checked");
                self.unknown(position, pending, true);
            }
        }
    }
}

/// Runs seeds (`RAST_MAELSTROM_SIM_SEED=<seed>` for one, or
/// `RAST_MAELSTROM_SIM_SEEDS=<count>`, default 8) and checks each history.
fn check_seeds(sessions: bool) {
    let seeds: Vec<u64> = if let Ok(seed) = std::env::var("RAST_MAELSTROM_SIM_SEED") {
        vec![seed.parse().expect("a number")]
    } else {
        let count = std::env::var("RAST_MAELSTROM_SIM_SEEDS")
            .ok()
            .and_then(|count| count.parse().ok())
            .unwrap_or(8);
        (0..count).collect()
    };
    for seed in seeds {
        let nodes = if seed.is_multiple_of(2) { 3 } else { 5 };
        let (history, ok_after_heal) = Simulation::new(seed, nodes, sessions, None).run();
        let search = check_kv(
            &history.operations(),
            FailedCas::CompareMismatch,
            &Budget::DEFAULT,
        );
        assert!(
            search.verdict.is_linearizable(),
            "seed {seed} ({nodes} nodes, sessions {sessions}): key {:?}: {}\n{}",
            search.key,
            search.verdict,
            history.to_text().unwrap()
        );
        let operations = history.operations();
        let count = |wanted: fn(&crate::check::history::Outcome<KvOp>) -> bool| {
            operations
                .iter()
                .filter(|operation| wanted(&operation.outcome))
                .count()
        };
        let ok = count(|outcome| matches!(outcome, crate::check::history::Outcome::Ok(_)));
        let unknown = count(|outcome| matches!(outcome, crate::check::history::Outcome::Unknown));
        eprintln!(
            "seed {seed} ({nodes} nodes, sessions {sessions}): {} operations, {ok} ok \
             ({ok_after_heal} after the heal), {unknown} unknown, {} steps",
            operations.len(),
            search.steps
        );
        assert!(ok > 30, "seed {seed}: only {ok} operations ok");
        assert!(ok_after_heal > 0, "seed {seed}: no progress after the heal");
    }
}

/// Seeded in-process runs of 3 and 5 nodes through loss, delay and
/// partitions: every history is linearizable and the cluster makes
/// progress after the heal. Deterministic: a failing seed is printed and
/// replays exactly (`RAST_MAELSTROM_SIM_SEED=<seed>`; more seeds with
/// `RAST_MAELSTROM_SIM_SEEDS=<count>`).
#[test]
fn simulated_faulty_runs_are_linearizable() {
    check_seeds(false);
}

/// The same runs with exactly-once sessions: clients retry a write whose
/// outcome is unknown, with the same session and sequence, at another node,
/// up to four times. A retry applied twice would show in the history (a
/// write resurrected after a later one, a cas answered twice); the retries
/// also turn most unknown outcomes into known ones, which the checker then
/// holds the cluster to.
#[test]
fn simulated_session_retries_are_exactly_once() {
    check_seeds(true);
}

/// The session runs can fail: with a state machine that applies retried
/// requests again (a planted bug), some default seed's history is not
/// linearizable.
#[test]
fn simulated_session_runs_catch_duplicate_applies() {
    let caught = (0..8).find(|seed| {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let prepare: fn(&mut StateMachine) = StateMachine::plant_duplicate_applies;
        let (history, _) = Simulation::new(*seed, nodes, true, Some(prepare)).run();
        let search = check_kv(
            &history.operations(),
            FailedCas::CompareMismatch,
            &Budget::DEFAULT,
        );
        search.verdict.is_violation()
    });
    assert!(caught.is_some(), "no seed caught duplicate applies");
}
