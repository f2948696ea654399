//! Log append benchmark: durable bytes/s and syncs/s of the segment store,
//! and the process's memory after appending 4 GiB.
//!
//! A program that reports (docs/benchmarks.md), run by `scripts/bench-limits`
//! beside `fio` on the same filesystem, which prints the ratios. Each
//! workload prints one `RESULT key=value ...` line.
//!
//! * `small`: 128 B entries, 256 per batch, one batch per turn.
//! * `large`: 1 MiB entries, one per batch, one batch per turn.
//! * `sync4k`: one ~4 KiB batch (28 entries of 128 B) per turn.
//! * `memory`: 4 GiB of 128 B entries in batches of 256, several turns in
//!   flight; reports RSS (anonymous and file-backed) from /proc.
//!
//! The first three run one turn at a time — append, flush (write +
//! fdatasync), wait for durability — which is what `fio --fdatasync=1`
//! does with one write per sync.
//!
//! * `paired-small`, `paired-large`, `paired-sync4k`: the same turns,
//!   alternating one by one with what `fio --ioengine=sync --fdatasync=1`
//!   does (`pwrite` of the same bytes, then `fdatasync`, on a preallocated
//!   file of its own), so both see the same background load; reports the
//!   ratio of their mean times. On a shared machine, runs of fio and of the
//!   store seconds apart differ by more than the store's own overhead.
//!
//! Environment: `RAST_BENCH_DIR` (default: the temp dir),
//! `RAST_BENCH_SECONDS` (default 8), `RAST_BENCH_WORKLOADS` (default all,
//! comma separated).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rast::storage::conformance::make_batch;
use rast::storage::segment::{SegmentLog, SegmentOptions};
use rast::storage::{LogStorage, StorageError};
use rast::types::{LogIndex, Term};
use rast::wire::BatchMut;

fn main() {
    let base = std::env::var_os("RAST_BENCH_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("rast-bench-storage-{}", std::process::id()));
    let seconds: u64 = std::env::var("RAST_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(8);
    let workloads = std::env::var("RAST_BENCH_WORKLOADS")
        .unwrap_or_else(|_| "small,large,sync4k,memory".into());
    for workload in workloads.split(',') {
        let _ = std::fs::remove_dir_all(&base);
        match workload {
            "small" => serial(&base, "small", 128, 256, seconds),
            "large" => serial(&base, "large", 1024 * 1024, 1, seconds),
            "sync4k" => serial(&base, "sync4k", 128, 28, seconds),
            "memory" => memory(&base, 4 << 30),
            "paired-small" => paired(&base, "small", 128, 256, seconds),
            "paired-large" => paired(&base, "large", 1024 * 1024, 1, seconds),
            "paired-sync4k" => paired(&base, "sync4k", 128, 28, seconds),
            other => eprintln!("unknown workload {other}"),
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}

/// A batch template of `count` entries of `entry_bytes`, restamped for
/// every append (stamping keeps the checksum valid).
fn template(entry_bytes: usize, count: u32) -> Vec<u8> {
    make_batch(1, 1, count, entry_bytes)
}

fn stamped(frame: &mut [u8], first: LogIndex) -> &[u8] {
    BatchMut::parse(frame)
        .expect("template parses")
        .stamp(Term(1), first);
    frame
}

/// One turn at a time: append a batch, flush, wait until durable.
fn serial(dir: &Path, name: &str, entry_bytes: usize, count: u32, seconds: u64) {
    let mut log = SegmentLog::open_standalone(dir, SegmentOptions::default()).expect("open");
    let mut frame = template(entry_bytes, count);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let (mut bytes, mut syncs) = (0u64, 0u64);
    while Instant::now() < deadline {
        let next = log.last_index().next();
        let last = log.append(stamped(&mut frame, next)).expect("append");
        log.flush().expect("flush");
        wait_durable(&mut log, last);
        bytes += frame.len() as u64;
        syncs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "RESULT workload={name} entry_bytes={entry_bytes} entries_per_batch={count} \
         bytes_per_sync={} durable_bytes_per_s={:.0} syncs_per_s={:.1} entries_per_s={:.0}",
        frame.len(),
        bytes as f64 / elapsed,
        syncs as f64 / elapsed,
        (syncs * u64::from(count)) as f64 / elapsed,
    );
}

/// Store turns alternating with fio-like `pwrite` + `fdatasync` pairs of
/// the same bytes; reports both means and their ratio.
fn paired(dir: &Path, name: &str, entry_bytes: usize, count: u32, seconds: u64) {
    use std::os::unix::fs::FileExt;
    let mut log = SegmentLog::open_standalone(dir, SegmentOptions::default()).expect("open");
    let fio_path = dir.join("fio-like");
    let fio = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&fio_path)
        .expect("create");
    // Like fio's default layout: the whole file reserved up front.
    nix::fcntl::fallocate(&fio, nix::fcntl::FallocateFlags::empty(), 0, 8 << 30)
        .expect("fallocate");
    let mut frame = template(entry_bytes, count);
    let (mut store_time, mut fio_time) = (Duration::ZERO, Duration::ZERO);
    let (mut turns, mut fio_offset) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let started = Instant::now();
        let next = log.last_index().next();
        let last = log.append(stamped(&mut frame, next)).expect("append");
        log.flush().expect("flush");
        wait_durable(&mut log, last);
        store_time += started.elapsed();
        let started = Instant::now();
        fio.write_all_at(&frame, fio_offset).expect("pwrite");
        fio.sync_data().expect("fdatasync");
        fio_time += started.elapsed();
        fio_offset += frame.len() as u64;
        turns += 1;
    }
    let _ = std::fs::remove_file(&fio_path);
    let mean_us = |time: Duration| time.as_secs_f64() * 1e6 / turns as f64;
    println!(
        "RESULT workload=paired-{name} bytes_per_sync={} turns={turns} store_mean_us={:.0} \
         fio_like_mean_us={:.0} ratio={:.3}",
        frame.len(),
        mean_us(store_time),
        mean_us(fio_time),
        fio_time.as_secs_f64() / store_time.as_secs_f64(),
    );
}

fn wait_durable(log: &mut SegmentLog, last: LogIndex) {
    while log.poll().expect("poll").index < last {
        let ring = std::rc::Rc::clone(log.ring());
        ring.borrow_mut().submit_and_wait(1).expect("wait");
    }
}

/// Appends `total` bytes of 128 B entries with turns pipelined, then
/// reports memory.
fn memory(dir: &Path, total: u64) {
    let mut log = SegmentLog::open_standalone(dir, SegmentOptions::default()).expect("open");
    let mut frame = template(128, 256);
    let batches_per_turn = (4 << 20) / frame.len();
    let started = Instant::now();
    let mut bytes = 0u64;
    while bytes < total {
        for _ in 0..batches_per_turn {
            let next = log.last_index().next();
            match log.append(stamped(&mut frame, next)) {
                Ok(_) => bytes += frame.len() as u64,
                Err(StorageError::Backpressure { .. }) => break,
                Err(error) => panic!("append: {error}"),
            }
        }
        log.flush().expect("flush");
        let ring = std::rc::Rc::clone(log.ring());
        if ring.borrow().in_flight() > 0 {
            ring.borrow_mut().submit_and_wait(1).expect("wait");
        }
        log.poll().expect("poll");
    }
    let last = log.last_index();
    wait_durable(&mut log, last);
    let elapsed = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map_or(0, |value| {
                value
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
    };
    println!(
        "RESULT workload=memory appended_bytes={bytes} segments={} durable_bytes_per_s={:.0} \
         rss_kib={} rss_anon_kib={} rss_file_kib={} rss_peak_kib={}",
        log.segment_paths().len(),
        bytes as f64 / elapsed,
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:"),
    );
}
