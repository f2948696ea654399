//! Micro-benchmark of the batch hot path: parse the header lazily, stamp
//! term and index in place, verify the CRC32C checksum — for 128 B and
//! 64 KiB batches. Reports ns per batch and GB/s (bytes of frame per second).
//!
//! Run: `cargo bench --bench wire`

use std::hint::black_box;
use std::time::{Duration, Instant};

use rast::types::{LogIndex, Term};
use rast::wire::{BatchKind, BatchMut, BatchView, encode_batch};

fn main() {
    println!(
        "{:<28} {:>12} {:>10} {:>12}",
        "case", "ns/batch", "GB/s", "batches"
    );
    for (name, entries, entry_bytes) in [
        ("1 x 128 B", 1usize, 128usize),
        ("16 x 128 B", 16, 128),
        ("1 x 64 KiB", 1, 64 * 1024),
        ("16 x 4 KiB (64 KiB)", 16, 4096),
    ] {
        let payloads: Vec<Vec<u8>> = (0..entries).map(|n| vec![n as u8; entry_bytes]).collect();
        let frame = encode_batch(BatchKind::Data, Term(0), LogIndex(0), &payloads);
        run(name, frame);
    }
    let crc_buffer = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        black_box(crc32c::crc32c(black_box(&crc_buffer)));
        rounds += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "crc32c raw over 1 MiB: {:.2} GB/s (hardware: {})",
        (rounds as f64 * crc_buffer.len() as f64) / seconds / 1e9,
        if std::arch::is_x86_feature_detected!("sse4.2") {
            "sse4.2"
        } else {
            "software"
        }
    );
}

fn run(name: &str, mut frame: Vec<u8>) {
    let bytes = frame.len();
    let mut index = 1u64;
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        for _ in 0..64 {
            let mut batch = BatchMut::parse(black_box(&mut frame)).expect("valid");
            batch.stamp(Term(3), LogIndex(index));
            let view = BatchView::parse(black_box(&frame)).expect("valid");
            view.verify_checksum().expect("checksum");
            black_box(view.count());
            index += 1;
        }
        batches += 64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ns = seconds * 1e9 / batches as f64;
    let gbps = batches as f64 * bytes as f64 / seconds / 1e9;
    println!("{name:<28} {ns:>12.1} {gbps:>10.2} {batches:>12} ({bytes} B frames)");
}
