//! Snapshots in the simulator: what a node's snapshot holds, its bytes on
//! the simulated wire, and both ends of an InstallSnapshot stream.
//!
//! A simulated node runs two state machines over its log: the plain log
//! (whose state is the sequence of committed values: the checkers and the
//! log reads need it) and the real key-value [`StateMachine`]. A snapshot
//! at index `S` holds both as of `S`, so a node that compacted its log below
//! `S` still answers every question the checkers ask about an entry at or
//! below `S`.
//!
//! It also records the committed configuration as of `S`: once the log is
//! compacted, the configuration entries at or below `S` are gone, and a node
//! that restarts from the snapshot or installs it from a leader must still
//! know who votes (a node that joined as a spare may have no other source).
//! The entries after `S` carry the configurations that follow it.
//!
//! ```text
//! offset   bytes      field (all integers u64 little-endian)
//!      0       8      magic "RSIMSNP2"
//!      8       8      last index S
//!     16       8      last term
//!     24       8      voters V of the configuration as of S
//!     32       8      outgoing voters O (joint configuration; else 0)
//!     40       8      learners L
//!     48  8 × (V+O+L) their node ids: voters, outgoing voters, learners
//!      .       8      entry count (= S)
//!      .   16 × S     (term, value) of entries 1..=S
//!      .       8      key-value snapshot bytes K
//!      .       K      the key-value machine's own snapshot stream
//!  end-4       4      CRC32C (u32 LE) of every byte before it
//! ```
//!
//! The stream goes in chunks of `chunk_bytes` (drawn per seed, small, so a
//! transfer takes many chunks), at most `SNAPSHOT_CHUNKS_INFLIGHT_MAX`
//! unacknowledged at once. The receiver keeps the prefix it got in memory
//! (a crash loses it) and answers each chunk with the offset it needs next,
//! so lost, duplicated or reordered chunks cost a resend from that offset,
//! never a corrupt snapshot; the whole is verified before it replaces
//! anything.

use std::rc::Rc;

use crate::constants::NODES_MAX;
use crate::kv::StateMachine;
use crate::net::snapshot_stream::SendWindow;
use crate::raft::{Membership, NodeSet};
use crate::types::{LogIndex, NodeId, Term};

/// First eight bytes of an encoded simulator snapshot.
const MAGIC: [u8; 8] = *b"RSIMSNP2";

/// A node's snapshot: the state of both machines at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSnapshot {
    /// Last index covered.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// The committed configuration as of `index`.
    pub membership: Membership,
    /// (term, value) of every entry `1..=index` (the plain log's state).
    pub entries: Rc<[(Term, u64)]>,
    /// The key-value machine's snapshot stream at `index`.
    pub kv: Rc<[u8]>,
}

impl SimSnapshot {
    /// The snapshot of `kv` (applied exactly up to `index`), the plain log
    /// `entries` and the configuration `membership` as of `index`.
    pub fn take(
        index: LogIndex,
        term: Term,
        membership: Membership,
        entries: Rc<[(Term, u64)]>,
        kv: &StateMachine,
    ) -> Result<Self, String> {
        if kv.applied_index() != index || entries.len() as u64 != index.get() {
            return Err(format!(
                "snapshot at {index}: key-value machine applied {}, {} entries",
                kv.applied_index(),
                entries.len()
            ));
        }
        if membership.voters.is_empty() {
            return Err(format!(
                "snapshot at {index}: configuration {membership:?} has no voter"
            ));
        }
        let mut bytes = Vec::new();
        kv.snapshot_to(&mut bytes)
            .map_err(|error| error.to_string())?;
        Ok(Self {
            index,
            term,
            membership,
            entries,
            kv: bytes.into(),
        })
    }

    /// The entry at `index` (at or below the snapshot's index).
    pub fn entry(&self, index: LogIndex) -> Option<(Term, u64)> {
        if index == LogIndex::ZERO || index > self.index {
            return None;
        }
        self.entries.get((index.get() - 1) as usize).copied()
    }

    /// The bytes sent in an InstallSnapshot stream (layout in the module
    /// docs).
    pub fn encode(&self) -> Vec<u8> {
        let sets = [
            self.membership.voters,
            self.membership.voters_outgoing,
            self.membership.learners,
        ];
        let ids: usize = sets.iter().map(NodeSet::len).sum();
        let mut out =
            Vec::with_capacity(64 + 8 * ids + 16 * self.entries.len() + self.kv.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.index.get().to_le_bytes());
        out.extend_from_slice(&self.term.get().to_le_bytes());
        for set in &sets {
            out.extend_from_slice(&(set.len() as u64).to_le_bytes());
        }
        for id in sets.iter().flat_map(NodeSet::as_slice) {
            out.extend_from_slice(&id.get().to_le_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (term, value) in self.entries.iter() {
            out.extend_from_slice(&term.get().to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.kv);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and verifies a received stream: checksum first, then every
    /// length against the bytes present. The key-value part is checked by
    /// the machine when it restores from it.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some(body_len) = bytes.len().checked_sub(4) else {
            return Err(format!("{} bytes: shorter than a checksum", bytes.len()));
        };
        let (body, crc) = bytes.split_at(body_len);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let mut reader = Reader { bytes: body };
        if reader.take(8)? != MAGIC {
            return Err("bad magic".into());
        }
        let index = LogIndex(reader.u64()?);
        let term = Term(reader.u64()?);
        let membership = reader.membership()?;
        let count = reader.u64()?;
        if count != index.get() || count > (reader.bytes.len() / 16) as u64 {
            return Err(format!("{count} entries for index {index}"));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            entries.push((Term(reader.u64()?), reader.u64()?));
        }
        let kv_len = reader.u64()?;
        if kv_len != reader.bytes.len() as u64 {
            return Err(format!(
                "key-value part of {kv_len} bytes, {} present",
                reader.bytes.len()
            ));
        }
        Ok(Self {
            index,
            term,
            membership,
            entries: entries.into(),
            kv: reader.bytes.into(),
        })
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < length {
            return Err(format!("ends inside a {length}-byte field"));
        }
        let (head, tail) = self.bytes.split_at(length);
        self.bytes = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// The three counts, then the ids of each set; every set valid (no zero
    /// or repeated id, at most [`NODES_MAX`]) and at least one voter.
    fn membership(&mut self) -> Result<Membership, String> {
        let counts = [self.u64()?, self.u64()?, self.u64()?];
        let mut sets = [NodeSet::EMPTY; 3];
        for (set, count) in sets.iter_mut().zip(counts) {
            if count > NODES_MAX as u64 {
                return Err(format!("{count} ids in a configuration set"));
            }
            let mut ids = Vec::with_capacity(count as usize);
            for _ in 0..count {
                ids.push(NodeId(self.u64()?));
            }
            *set = NodeSet::from_ids(&ids)
                .ok_or_else(|| format!("configuration set {ids:?} is not a set of node ids"))?;
        }
        let [voters, voters_outgoing, learners] = sets;
        if voters.is_empty() {
            return Err("configuration without voters".into());
        }
        Ok(Membership {
            voters,
            voters_outgoing,
            learners,
        })
    }
}

/// One chunk of an InstallSnapshot stream on the simulated wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The snapshot's last index (identifies the stream).
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// Offset of `data` in the stream.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// The last chunk.
    pub done: bool,
}

/// A leader's stream of its snapshot to one follower.
#[derive(Clone, Debug)]
pub struct Sending {
    /// The follower.
    pub to: NodeId,
    /// The snapshot's index and term.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// The encoded snapshot.
    pub bytes: Rc<[u8]>,
    /// Which bytes go next (simulated time).
    pub window: SendWindow,
}

impl Sending {
    /// The next chunks to send (see [`SendWindow::next_ranges`]).
    pub fn next_chunks(&mut self, chunk_bytes: u64) -> Vec<Chunk> {
        self.window
            .next_ranges(chunk_bytes)
            .into_iter()
            .map(|range| Chunk {
                index: self.index,
                term: self.term,
                offset: range.offset,
                data: self.bytes[range.offset as usize..(range.offset + range.len) as usize]
                    .to_vec(),
                done: range.done,
            })
            .collect()
    }

    /// See [`SendWindow::acknowledge`].
    pub fn acknowledge(&mut self, next_offset: u64, now_ms: u64) {
        self.window.acknowledge(next_offset, now_ms);
    }

    /// See [`SendWindow::rewind`].
    pub fn rewind(&mut self, now_ms: u64) {
        self.window.rewind(now_ms);
    }
}

/// A follower's partial snapshot: the prefix received so far (memory only).
#[derive(Clone, Debug)]
pub struct Receiving {
    /// The snapshot's index (identifies the stream).
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// The bytes received, in order, from offset 0.
    pub bytes: Vec<u8>,
}

/// What a follower does with a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Answer with the offset needed next.
    Need(u64),
    /// The stream is complete: these are all its bytes.
    Complete(Vec<u8>),
}

/// Adds `chunk` to the partial snapshot `partial` (replacing one of another
/// stream when the chunk starts a new one).
pub fn receive(partial: &mut Option<Receiving>, chunk: &Chunk) -> Received {
    let same = partial
        .as_ref()
        .is_some_and(|receiving| (receiving.index, receiving.term) == (chunk.index, chunk.term));
    if !same {
        if chunk.offset != 0 {
            *partial = None;
            return Received::Need(0);
        }
        *partial = Some(Receiving {
            index: chunk.index,
            term: chunk.term,
            bytes: Vec::new(),
        });
    }
    let receiving = partial.as_mut().expect("set above");
    if chunk.offset == receiving.bytes.len() as u64 {
        receiving.bytes.extend_from_slice(&chunk.data);
        if chunk.done {
            let bytes = std::mem::take(&mut receiving.bytes);
            *partial = None;
            return Received::Complete(bytes);
        }
    }
    Received::Need(receiving.bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Random;

    fn ids(ids: &[u64]) -> NodeSet {
        NodeSet::from_ids(&ids.iter().copied().map(NodeId).collect::<Vec<_>>()).expect("a set")
    }

    /// A joint configuration with a learner: every set non-empty, ids not
    /// in sorted order (the order is part of the value).
    fn joint() -> Membership {
        Membership {
            voters: ids(&[3, 1, 6]),
            voters_outgoing: ids(&[1, 2, 3]),
            learners: ids(&[7]),
        }
    }

    fn snapshot() -> SimSnapshot {
        let mut kv = StateMachine::new();
        kv.advance(LogIndex(3)).expect("advance");
        let entries: Rc<[(Term, u64)]> = vec![(Term(1), 0), (Term(1), 7), (Term(2), 8)].into();
        SimSnapshot::take(LogIndex(3), Term(2), joint(), entries, &kv).expect("take")
    }

    /// `bytes` with the id at `position` (an index into the ids after the
    /// three counts) replaced, and the checksum made valid again: only the
    /// configuration checks can refuse it.
    fn with_id(bytes: &[u8], position: usize, id: u64) -> Vec<u8> {
        let mut body = bytes[..bytes.len() - 4].to_vec();
        let offset = 48 + 8 * position;
        body[offset..offset + 8].copy_from_slice(&id.to_le_bytes());
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    /// Encoding round-trips (the configuration included, with its order),
    /// and any flipped byte is caught by the checksum.
    #[test]
    fn encode_round_trips_and_damage_is_caught() {
        let snapshot = snapshot();
        let bytes = snapshot.encode();
        let decoded = SimSnapshot::decode(&bytes).expect("decodes");
        assert_eq!(decoded.membership, joint());
        assert_eq!(decoded, snapshot);
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            assert!(SimSnapshot::decode(&damaged).is_err(), "byte {position}");
        }
        assert!(SimSnapshot::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(SimSnapshot::decode(&[]).is_err());
    }

    /// A simple configuration (no outgoing voters, no learner) round-trips
    /// as well.
    #[test]
    fn simple_configuration_round_trips() {
        let mut snapshot = snapshot();
        snapshot.membership = Membership::with_voters(&[NodeId(2)]).expect("valid");
        let decoded = SimSnapshot::decode(&snapshot.encode()).expect("decodes");
        assert_eq!(decoded.membership, snapshot.membership);
    }

    /// A configuration that is not one (a zero or repeated id, or no voter)
    /// is refused even with a valid checksum; so is taking a snapshot that
    /// would record no voter.
    #[test]
    fn invalid_configuration_is_refused() {
        let bytes = snapshot().encode();
        assert!(SimSnapshot::decode(&with_id(&bytes, 0, 4)).is_ok());
        assert!(SimSnapshot::decode(&with_id(&bytes, 0, 0)).is_err());
        assert!(SimSnapshot::decode(&with_id(&bytes, 0, 1)).is_err());
        assert!(SimSnapshot::decode(&with_id(&bytes, 6, 0)).is_err());
        let mut no_voters = snapshot();
        no_voters.membership = Membership::default();
        assert!(SimSnapshot::decode(&no_voters.encode()).is_err());
        let mut kv = StateMachine::new();
        kv.advance(LogIndex(1)).expect("advance");
        let entries: Rc<[(Term, u64)]> = vec![(Term(1), 0)].into();
        assert!(
            SimSnapshot::take(LogIndex(1), Term(1), Membership::default(), entries, &kv).is_err()
        );
    }

    /// A stream whose chunks are lost, duplicated and reordered at random
    /// still ends with exactly the leader's bytes, with resends driven only
    /// by the follower's answers and the leader's rewind.
    #[test]
    fn stream_survives_loss_duplication_and_reordering() {
        let bytes: Rc<[u8]> = (0..5_000u32).map(|value| value as u8).collect();
        for seed in 0..50 {
            let mut random = Random::new(seed);
            let mut sending = Sending {
                to: NodeId(2),
                index: LogIndex(9),
                term: Term(3),
                bytes: Rc::clone(&bytes),
                window: SendWindow::new(bytes.len() as u64, 0),
            };
            let mut partial = None;
            let mut wire: Vec<Chunk> = Vec::new();
            let mut received = None;
            for step in 0..100_000u64 {
                wire.extend(sending.next_chunks(97));
                if wire.is_empty() || random.chance(1, 20) {
                    sending.rewind(step);
                    continue;
                }
                let chunk = wire.swap_remove(random.below(wire.len() as u64) as usize);
                if random.chance(1, 5) {
                    continue; // lost
                }
                if random.chance(1, 10) {
                    wire.push(chunk.clone()); // duplicated
                }
                match receive(&mut partial, &chunk) {
                    Received::Need(offset) => sending.acknowledge(offset, step),
                    Received::Complete(all) => {
                        received = Some(all);
                        break;
                    }
                }
            }
            assert_eq!(received.as_deref(), Some(&*bytes), "seed {seed}");
        }
    }

    /// A chunk from the middle of an unknown stream (the follower restarted
    /// and lost its partial copy) asks for the stream from offset 0.
    #[test]
    fn unknown_stream_restarts_from_zero() {
        let mut partial = None;
        let chunk = Chunk {
            index: LogIndex(5),
            term: Term(1),
            offset: 100,
            data: vec![1; 10],
            done: false,
        };
        assert_eq!(receive(&mut partial, &chunk), Received::Need(0));
        assert!(partial.is_none());
    }
}
