//! Proves the core's replication hot path is allocation-free in steady
//! state: a 3-node cluster of cores (as in `benches/raft.rs`) commits
//! thousands of proposals, and the only allocations allowed are the
//! amortized growth of each core's log of batch boundaries.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rast::wire::BatchKind;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(pointer, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Proposals the leader keeps in flight.
const WINDOW: u64 = 64;
/// Bytes of one entry's payload.
const ENTRY_BYTES: u32 = 128;
/// Framing bytes per batch (segment table, root, pointers), approximately.
const BATCH_OVERHEAD_BYTES: u32 = 64;

#[path = "common/cores.rs"]
mod cores;

use cores::InstantCluster as Cluster;

impl Cluster {
    /// Proposes `WINDOW` batches of `count` entries in one turn (one
    /// `replicate` sends them all) and lets them commit.
    fn round(&mut self, count: u32) {
        let bytes = count * ENTRY_BYTES + BATCH_OVERHEAD_BYTES;
        for _ in 0..WINDOW {
            let proposed = self.cores[0].propose(BatchKind::Data, count, bytes, &mut self.actions);
            black_box(proposed.expect("the leader accepts"));
            self.route(0);
        }
        self.cores[0].replicate(&mut self.actions);
        self.route(0);
        self.drain();
    }

    /// Proposes `count`-entry batches for `duration`, `WINDOW` at a time;
    /// returns the entries committed and the time taken.
    fn run(&mut self, count: u32, duration: Duration) -> (u64, Duration) {
        let start_commit = self.committed;
        let started = Instant::now();
        while started.elapsed() < duration {
            self.round(count);
        }
        let elapsed = started.elapsed();
        let last = self.cores[0].log().last_index();
        assert_eq!(self.committed, last, "every proposal committed");
        (self.committed.get() - start_commit.get(), elapsed)
    }
}

/// After warm-up, committing 12,800 batches of 16 entries on three cores
/// allocates only when a core's boundary log doubles (a handful of times),
/// never per proposal or per message; and the counter is shown to count.
#[test]
fn replication_hot_path_allocates_nothing_per_proposal() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect();
    cluster.run(16, Duration::from_millis(20));
    let before = allocations();
    let committed_before = cluster.committed;
    for _ in 0..200 {
        cluster.round(16);
    }
    let allocated = allocations() - before;
    let batches = (cluster.committed.get() - committed_before.get()) / 16;
    assert_eq!(batches, 200 * WINDOW, "every proposal committed");
    assert!(
        allocated <= 3 * 8,
        "{allocated} allocations for {batches} batches: only log growth may allocate"
    );
    let before = allocations();
    black_box(vec![1u8; 8]);
    assert_eq!(allocations() - before, 1, "the counter counts");
}

/// Memory that does not grow with the log: after 225,000 one-entry batches
/// commit, every core holds a few hundred records (runs of up to 512
/// batches), not one per batch, and the last 25,000 allocated nothing.
#[test]
fn the_cores_log_stays_small_as_the_log_grows() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect();
    let rounds = 200_000 / WINDOW;
    for _ in 0..rounds {
        cluster.round(1);
    }
    assert_eq!(
        cluster.committed.get(),
        1 + rounds * WINDOW,
        "the no-op, then all"
    );
    let before = allocations();
    for _ in 0..rounds / 8 {
        cluster.round(1);
    }
    assert_eq!(
        allocations() - before,
        0,
        "coalescing reuses the log's memory"
    );
    for core in &cluster.cores {
        let records = core.log().batch_count();
        assert!(
            records <= 225_000 / 512 + 2 * rast::constants::COALESCE_READY_MIN,
            "{records} records for 225,000 batches"
        );
    }
}
