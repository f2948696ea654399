//! The `corrupt` scenario's damage: bytes of one node's files flipped,
//! zeroed or cut off, while it is stopped or while it runs.
//!
//! ```text
//!  stopped (SIGKILL first)          running
//!  ───────────────────────          ───────
//!  flip 1-8 bytes  any segment,     flip 1-8 bytes  a sealed segment,
//!                  snapshot, hard                   a snapshot
//!                  state or durable zero 512 B-8 KiB  the same
//!                  mark             zero the whole  hard state (found at
//!  zero 512 B-8 KiB  the same                       the restart of the heal)
//!  truncate        the same
//!  misdirect 4 KiB a segment: a block of a segment written over
//!                  another place of one (a misdirected write)
//! ```
//!
//! The last segment is damaged only while the node is stopped (while it
//! runs, the node writes there). Zeroing or cutting it leaves the shape a
//! power cut leaves; the durable mark (`storage::durable_mark`) tells
//! recovery whether the lost records had been reported durable.
//!
//! The node repairs itself: recovery (at the restart that heals the fault)
//! or the scrubber (while it runs) finds the damage, cuts the log and
//! marks the node, and the leader sends the rest again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use super::workload::LOGS;
use super::{Harness, Undo};
use crate::random::Random;
use crate::server::scrub::log_dirs;
use crate::storage::segment::segment_files;
use crate::storage::snapshot_file;
use crate::storage::{durable_mark, hard_state};

/// Adds the `rast serve` arguments the scenario runs with unless the
/// caller chose otherwise: small segments and snapshots (sealed segments
/// and snapshot files to damage) and a scrubber that finds damage at rest
/// in seconds.
pub fn default_serve_args(serve_args: &mut Vec<String>) {
    for (flag, value) in [
        ("--segment-bytes", "262144"),
        ("--snapshot-log-bytes", "1048576"),
        ("--scrub-bytes-per-sec", "67108864"),
    ] {
        if !serve_args.iter().any(|arg| arg.starts_with(flag)) {
            serve_args.push(format!("{flag}={value}"));
        }
    }
}

/// Damages one of the files of the node whose data directory is `data`;
/// says what it did. `running`: the node is up (see the module docs).
pub fn damage(data: &Path, seed: u64, running: bool) -> io::Result<String> {
    let mut random = Random::new(seed);
    let mut candidates = Vec::new();
    for (_, log) in log_dirs(data) {
        let mut segments = segment_files(&log);
        let last = segments.pop();
        for (_, segment) in segments {
            candidates.push((segment, Kind::Sealed));
        }
        if let Some((_, last)) = last
            && !running
        {
            candidates.push((last, Kind::Active));
        }
        let mark = log.join(durable_mark::FILE_NAME);
        if !running && mark.exists() {
            candidates.push((mark, Kind::Mark));
        }
        for (_, snapshot) in snapshot_file::files(&log.join("snapshots")) {
            candidates.push((snapshot, Kind::Snapshot));
        }
        let hard_state = log.join(hard_state::FILE_NAME);
        if hard_state.exists() {
            candidates.push((hard_state, Kind::HardState));
        }
    }
    if candidates.is_empty() {
        return Err(io::Error::other("no file to damage"));
    }
    // A kind first, then a file of it: sealed segments outnumber the rest
    // as a run goes on, and would crowd the snapshots and hard states out.
    let mut kinds: Vec<Kind> = candidates.iter().map(|(_, kind)| *kind).collect();
    kinds.sort();
    kinds.dedup();
    let kind = kinds[random.below(kinds.len() as u64) as usize];
    let of_kind: Vec<&(PathBuf, Kind)> = candidates
        .iter()
        .filter(|(_, candidate)| *candidate == kind)
        .collect();
    let (path, kind) = of_kind[random.below(of_kind.len() as u64) as usize];
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let written = written_end(&file)?;
    if written == 0 {
        return Ok(format!("{}: nothing written to damage", path.display()));
    }
    let what = match (kind, running, random.below(4)) {
        (Kind::HardState, true, _) => zero(&file, 0, file.metadata()?.len())?,
        (Kind::Sealed | Kind::Active, false, 3) => {
            let segments: Vec<&PathBuf> = candidates
                .iter()
                .filter(|(_, kind)| matches!(kind, Kind::Sealed | Kind::Active))
                .map(|(path, _)| path)
                .collect();
            let source = segments[random.below(segments.len() as u64) as usize];
            misdirect(&file, written, source, &mut random)?
        }
        (_, _, 0 | 3) => flip(&file, written, &mut random)?,
        (_, true, _) | (_, false, 1) => {
            let len = random.between(512, 8192).min(written);
            let at = random.below(written - len + 1);
            zero(&file, at, len)?
        }
        _ => {
            let keep = random.below(written);
            file.set_len(keep)?;
            format!("truncated to {keep} bytes")
        }
    };
    file.sync_all()?;
    Ok(format!("{} ({}): {what}", path.display(), kind.name()))
}

/// What a file is to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Sealed,
    Active,
    Snapshot,
    HardState,
    Mark,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Sealed => "sealed segment",
            Self::Active => "last segment",
            Self::Snapshot => "snapshot",
            Self::HardState => "hard state",
            Self::Mark => "durable mark",
        }
    }
}

/// Flips one bit in each of 1–8 random bytes before `written`.
fn flip(file: &File, written: u64, random: &mut Random) -> io::Result<String> {
    let count = random.between(1, 8);
    let mut offsets = Vec::new();
    for _ in 0..count {
        let at = random.below(written);
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at)?;
        byte[0] ^= 1 << random.below(8);
        file.write_all_at(&byte, at)?;
        offsets.push(at.to_string());
    }
    Ok(format!("flipped a bit at byte {}", offsets.join(", ")))
}

/// Bytes of a misdirected write: one block, as a disk writes them.
const MISDIRECTED_BYTES: u64 = 4096;

/// A block read from a random block of `source` written over a random
/// block of `file` before `written` (a write the disk put in the wrong
/// place: what was there is lost, and the block holds bytes of elsewhere).
fn misdirect(file: &File, written: u64, source: &Path, random: &mut Random) -> io::Result<String> {
    let source_file = File::open(source)?;
    let source_written = written_end(&source_file)?;
    if source_written < MISDIRECTED_BYTES {
        return Ok(format!(
            "nothing misdirected: {} holds less than a block",
            source.display()
        ));
    }
    let from = random.below(source_written / MISDIRECTED_BYTES) * MISDIRECTED_BYTES;
    let to = random.below(written.div_ceil(MISDIRECTED_BYTES)) * MISDIRECTED_BYTES;
    let mut block = vec![0u8; MISDIRECTED_BYTES as usize];
    source_file.read_exact_at(&mut block, from)?;
    let mut there = vec![0u8; MISDIRECTED_BYTES as usize];
    let had = file.read_at(&mut there, to)?;
    file.write_all_at(&block, to)?;
    let same = had == block.len() && there == block;
    Ok(format!(
        "misdirected write: the block at {from} of {} written at {to}{}",
        source.display(),
        if same {
            " (the same bytes: no change)"
        } else {
            ""
        }
    ))
}

fn zero(file: &File, at: u64, len: u64) -> io::Result<String> {
    file.write_all_at(&vec![0u8; len as usize], at)?;
    Ok(format!("zeroed {len} bytes at {at}"))
}

/// Just past the last non-zero byte (segments are preallocated: zeros
/// after the records).
fn written_end(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buffer.len() as u64);
        let chunk = &mut buffer[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(at) = chunk.iter().rposition(|byte| *byte != 0) {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl Harness<'_> {
    /// Starts a `corrupt` fault (see [`Fault::Corrupt`]).
    pub(super) fn corrupt(
        &mut self,
        node: usize,
        running: bool,
        seed: u64,
    ) -> Result<(Undo, String), String> {
        // One damaged copy at a time: every node up and none damaged.
        let damaged = self.damaged_copies();
        if !damaged.is_empty() {
            return Err(format!(
                "{} (one damaged copy at a time)",
                damaged.join(", ")
            ));
        }
        let undo = if running {
            Undo::Restart(node)
        } else {
            self.nodes.kill(node);
            Undo::Start(node)
        };
        match damage(&self.nodes.data_dir(node), seed, running) {
            Ok(what) => Ok((undo, format!("n{}: {what}", node + 1))),
            Err(error) => {
                // Started again at the heal either way.
                Ok((undo, format!("n{}: nothing damaged: {error}", node + 1)))
            }
        }
    }

    /// Every copy (node, log) that says it is damaged or does not answer,
    /// described; the damaged ones are noted as repairs to see through.
    pub(super) fn damaged_copies(&mut self) -> Vec<String> {
        let mut copies = Vec::new();
        for node in 0..self.nodes.len() {
            for log in LOGS.iter().chain(&[crate::server::group::KV_LOG]) {
                match self.status_named(node, log) {
                    Some(status) if status.damaged_in == 0 => {}
                    Some(status) => {
                        self.damaged_seen
                            .insert((node, (*log).to_owned(), status.damaged_in));
                        copies.push(format!("n{}'s copy of {log} is damaged", node + 1));
                    }
                    None => copies.push(format!("n{} does not answer for {log}", node + 1)),
                }
            }
        }
        copies
    }

    /// After the last heal: how long until no copy is damaged any more
    /// (every damaged copy repaired by its leader), or which are not.
    pub(super) fn wait_repaired(&mut self) -> Result<u64, String> {
        let started = Instant::now();
        loop {
            let damaged = self.damaged_copies();
            let ms = started.elapsed().as_millis() as u64;
            if damaged.is_empty() {
                self.note(&format!(
                    "every copy undamaged {ms} ms after recovery ({} repairs in the run)",
                    damage_found(self.run_dir, self.nodes.len())
                ));
                return Ok(ms);
            }
            if ms > self.options.recovery_seconds * 1000 {
                return Err(damaged.join(", "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What a node logs when its recovery finds damage and acts on it (cuts
/// a log, drops a snapshot file, rebuilds a lost hard state).
const FOUND: [&str; 5] = [
    "damaged record: the log is cut here",
    "entries missing between two segments",
    "the hard state is lost",
    "removing a damaged snapshot",
    "no valid snapshot covers the entries before the log",
];

/// Damage the nodes found and repaired, counted in their own logs
/// (`<run>/nodeN.log`): what the verdict reports as repairs.
pub fn damage_found(run: &Path, nodes: usize) -> u64 {
    (1..=nodes)
        .filter_map(|node| std::fs::read_to_string(run.join(format!("node{node}.log"))).ok())
        .map(|text| {
            text.lines()
                .filter(|line| FOUND.iter().any(|found| line.contains(found)))
                .count() as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A misdirected write puts one block of the source, block-aligned,
    /// over one block of the target's written bytes, and nothing else.
    #[test]
    fn a_misdirected_write_moves_one_block() {
        let dir = std::env::temp_dir().join(format!("rast-misdirect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let block = MISDIRECTED_BYTES as usize;
        let source_path = dir.join("source");
        let target_path = dir.join("target");
        let source: Vec<u8> = (0..4 * block).map(|at| (at / block) as u8 + 1).collect();
        let target = vec![0xee; 3 * block];
        std::fs::write(&source_path, &source).unwrap();
        std::fs::write(&target_path, &target).unwrap();
        for seed in 0..20 {
            std::fs::write(&target_path, &target).unwrap();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&target_path)
                .unwrap();
            let what = misdirect(
                &file,
                target.len() as u64,
                &source_path,
                &mut Random::new(seed),
            )
            .unwrap();
            let after = std::fs::read(&target_path).unwrap();
            assert_eq!(after.len(), target.len(), "{what}");
            let changed: Vec<usize> = (0..3)
                .filter(|at| {
                    after[at * block..(at + 1) * block] != target[at * block..(at + 1) * block]
                })
                .collect();
            assert_eq!(changed.len(), 1, "{what}");
            let written = &after[changed[0] * block..(changed[0] + 1) * block];
            assert!(
                source.chunks(block).any(|chunk| chunk == written),
                "{what}: a block of the source"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
