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

use std::hint::black_box;
use std::time::{Duration, Instant};

use rast::wire::BatchKind;

/// Proposals the leader keeps in flight.
const WINDOW: u64 = 64;
/// Bytes of one entry's payload.
const ENTRY_BYTES: u32 = 128;
/// Framing bytes per batch (segment table, root, pointers), approximately.
const BATCH_OVERHEAD_BYTES: u32 = 64;

#[path = "../tests/common/cores.rs"]
mod cores;

use cores::InstantCluster as Cluster;

impl Cluster {
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
            let mut cluster = Cluster::new(3, |_| {});
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
