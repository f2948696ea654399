//! Proves the hot-path batch reader allocates nothing: parse, read the fixed
//! fields, verify the checksum, walk the payloads, and stamp, all under a
//! global allocator that counts this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rast::types::{LogIndex, Term};
use rast::wire::{BatchKind, BatchMut, BatchView, encode_batch};

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

/// Reading and stamping a batch of 16 entries allocates zero times, and the
/// counter itself is shown to work by an allocation it must see.
#[test]
fn batch_hot_path_allocates_nothing() {
    let payloads: Vec<Vec<u8>> = (0..16u8).map(|byte| vec![byte; 128]).collect();
    let mut frame = encode_batch(BatchKind::Data, Term(0), LogIndex(0), &payloads);

    let before = allocations();
    let mut sum = 0u64;
    {
        let mut batch = BatchMut::parse(&mut frame).expect("valid frame");
        batch.stamp(Term(7), LogIndex(1000));
    }
    let view = BatchView::parse(&frame).expect("valid frame");
    sum += view.term().get() + view.first_index().get() + u64::from(view.count());
    view.verify_checksum().expect("stamping keeps the checksum");
    view.validate().expect("valid payloads");
    view.for_each_entry(|entry| {
        sum += entry.len() as u64;
        Ok(())
    })
    .expect("walk");
    let after = allocations();

    assert_eq!(sum, 7 + 1000 + 16 + 16 * 128);
    assert_eq!(after - before, 0, "the batch hot path allocated");

    // The counter is live: a boxed value must register.
    let boxed = std::hint::black_box(Box::new(42u64));
    assert!(allocations() > after, "counting allocator saw nothing");
    drop(boxed);
}
