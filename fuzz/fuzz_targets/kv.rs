//! Fuzzes the key-value state machine's readers of outside bytes: a
//! snapshot restore (a peer will stream one), an entry payload applied from
//! the log, and a Maelstrom node's input line. Any panic is a bug; errors
//! are expected.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rast::kv::StateMachine;
use rast::maelstrom::{Node, Now};
use rast::types::LogIndex;

fuzz_target!(|data: &[u8]| {
    let mut machine = StateMachine::new();
    let _ = machine.restore_from(data);
    let _ = machine.apply_payload(LogIndex(machine.applied_index().get() + 1), data);
    if let Ok(line) = std::str::from_utf8(data) {
        let mut node = Node::new(1);
        let init = r#"{"src":"c0","dest":"n1","body":{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n1","n2","n3"]}}"#;
        node.handle_line(init, Now::default());
        node.handle_line(line, Now::default());
        node.tick(Now { monotonic_ms: 10_000, wall_ms: 0 });
    }
});
