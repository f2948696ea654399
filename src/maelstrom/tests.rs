//! In-process tests of the Maelstrom node: several [`Node`]s on a simulated
//! clock and a lossless network, driven message by message.

use serde_json::{Value, json};

use super::node::{Node, Now};
use super::protocol::{Envelope, code};
use crate::constants::MAELSTROM_TICK_MS;
use crate::raft::Role;

/// Nodes, a message queue and a simulated clock.
struct Cluster {
    nodes: Vec<Node>,
    /// (deliver at ms, line).
    queue: Vec<(u64, String)>,
    /// Messages that reached a client.
    client_inbox: Vec<Envelope>,
    now_ms: u64,
    next_msg_id: u64,
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
        for node in &mut self.nodes {
            for line in node.take_output() {
                self.queue.push((self.now_ms + 1, line));
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
    let mut cluster = Cluster::new(3, |node| node.panic_on_key(b"\"boom\"".to_vec()));
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
        status["failed"].as_str().unwrap().contains("planted panic"),
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
