//! Property tests of the batch format: round trips, stamping, and that no
//! single-byte mutation or truncation of a valid frame either panics or slips
//! past the checks.

use proptest::prelude::*;
use rast::types::{LogIndex, Term};
use rast::wire::{BatchKind, BatchMut, BatchView, WireError, encode_batch, frame_length};

fn kind_strategy() -> impl Strategy<Value = BatchKind> {
    prop_oneof![
        Just(BatchKind::Data),
        Just(BatchKind::Noop),
        Just(BatchKind::Config),
        Just(BatchKind::Kv),
    ]
}

fn entries_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..12)
}

/// Runs every check a node runs on a batch from outside.
fn full_check(bytes: &[u8]) -> Result<BatchView<'_>, WireError> {
    let view = BatchView::parse(bytes)?;
    view.verify_checksum()?;
    view.validate()?;
    Ok(view)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Encoding then parsing gives back every field and payload.
    #[test]
    fn round_trip(kind in kind_strategy(), term in any::<u64>(), index in any::<u64>(), entries in entries_strategy()) {
        let frame = encode_batch(kind, Term(term), LogIndex(index), &entries);
        let view = full_check(&frame).expect("valid");
        prop_assert_eq!(view.len(), frame.len());
        prop_assert_eq!(view.term(), Term(term));
        prop_assert_eq!(view.first_index(), LogIndex(index));
        prop_assert_eq!(view.count() as usize, entries.len());
        prop_assert_eq!(view.kind().unwrap(), kind);
        let mut seen = Vec::new();
        view.for_each_entry(|entry| { seen.push(entry.to_vec()); Ok(()) }).unwrap();
        prop_assert_eq!(seen, entries);
    }

    /// Stamping term and index in place keeps the checksum valid and is
    /// read back by the lazy reader.
    #[test]
    fn stamping_keeps_checksum(entries in entries_strategy(), term in any::<u64>(), index in any::<u64>()) {
        let mut frame = encode_batch(BatchKind::Data, Term(0), LogIndex(0), &entries);
        let original = frame.clone();
        BatchMut::parse(&mut frame).unwrap().stamp(Term(term), LogIndex(index));
        let view = full_check(&frame).expect("stamped frame stays valid");
        prop_assert_eq!(view.term(), Term(term));
        prop_assert_eq!(view.first_index(), LogIndex(index));
        // Only the 16 stamped bytes and the 4 of their check changed.
        let changed = frame.iter().zip(&original).filter(|(a, b)| a != b).count();
        prop_assert!(changed <= 20);
        prop_assert_eq!(view.stamp_check(), rast::wire::batch::stamp_check(Term(term), LogIndex(index)));
    }

    /// Every single-byte change of a stamped frame is caught, the stamped
    /// term and index included (CRC32C detects every burst of up to 32
    /// bits; the stamp has its own), and nothing panics.
    #[test]
    fn single_byte_mutations_are_caught(entries in entries_strategy(), position in any::<prop::sample::Index>(), delta in 1u8..=255) {
        let mut frame = encode_batch(BatchKind::Kv, Term(3), LogIndex(9), &entries);
        let position = position.index(frame.len());
        frame[position] ^= delta;
        let outcome = full_check(&frame);
        prop_assert!(outcome.is_err(), "mutation at {} of {} not caught", position, frame.len());
    }

    /// A batch stamped before `stampCheck` existed (zero there) still
    /// verifies: the field is optional, and old logs open.
    #[test]
    fn a_zero_stamp_check_is_absent(entries in entries_strategy(), term in 1u64.., index in 1u64..) {
        let mut frame = encode_batch(BatchKind::Data, Term(0), LogIndex(0), &entries);
        BatchMut::parse(&mut frame).unwrap().stamp(Term(term), LogIndex(index));
        let data_offset = BatchView::parse(&frame).unwrap().data_offset();
        frame[data_offset + 28..data_offset + 32].fill(0);
        let view = full_check(&frame).expect("an old stamped batch verifies");
        prop_assert_eq!(view.stamp_check(), 0);
    }

    /// Every strict prefix of a valid frame is refused as truncated or
    /// incomplete; never accepted, never a panic.
    #[test]
    fn truncations_are_refused(entries in entries_strategy()) {
        let frame = encode_batch(BatchKind::Data, Term(1), LogIndex(1), &entries);
        for length in 0..frame.len() {
            let prefix = &frame[..length];
            prop_assert!(BatchView::parse(prefix).is_err(), "prefix of {} accepted", length);
            let _ = frame_length(prefix);
        }
    }

    /// Arbitrary bytes never panic any parser.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = frame_length(&bytes);
        if let Ok(view) = BatchView::parse(&bytes) {
            let _ = view.verify_checksum();
            let _ = view.validate();
            let _ = view.kind();
        }
    }
}

/// A root pointer aimed outside segment 0 is a typed error, not a read out
/// of bounds.
#[test]
fn root_pointer_out_of_bounds_is_refused() {
    let mut frame = encode_batch(BatchKind::Data, Term(1), LogIndex(1), &[b"x"]);
    // Root pointer is the word after the 8-byte table; set its offset huge.
    let pointer = u64::from_le_bytes(frame[8..16].try_into().unwrap());
    let bad = (pointer & !0xffff_fffc) | (0x0fff_0000 << 2);
    frame[8..16].copy_from_slice(&bad.to_le_bytes());
    assert!(matches!(
        BatchView::parse(&frame),
        Err(WireError::BadRoot(_))
    ));
}

/// A far pointer or list pointer at the root is refused: batches need a
/// direct struct root for in-place stamping.
#[test]
fn non_struct_root_is_refused() {
    let mut frame = encode_batch(BatchKind::Data, Term(1), LogIndex(1), &[b"x"]);
    frame[8] |= 2; // far pointer kind
    assert!(matches!(
        BatchView::parse(&frame),
        Err(WireError::BadRoot(_))
    ));
}

/// A frame whose count disagrees with its payload list fails validation even
/// with a freshly computed checksum (a buggy or hostile client).
#[test]
fn count_mismatch_is_refused() {
    let mut frame = encode_batch(BatchKind::Data, Term(1), LogIndex(1), &[b"a", b"b"]);
    let data_offset = BatchView::parse(&frame).unwrap().data_offset();
    frame[data_offset + 16..data_offset + 20].copy_from_slice(&3u32.to_le_bytes());
    BatchMut::parse(&mut frame).unwrap().seal();
    let view = BatchView::parse(&frame).unwrap();
    view.verify_checksum().unwrap();
    assert!(matches!(
        view.validate(),
        Err(WireError::CountMismatch {
            count: 3,
            entries: 2
        })
    ));
}

/// A self-referencing struct pointer (a nesting bomb in two words) is
/// refused by the reader limits instead of recursing forever, and is never
/// taken for a batch.
#[test]
fn nesting_bomb_is_refused() {
    let mut frame = vec![0u8; 24];
    frame[4..8].copy_from_slice(&2u32.to_le_bytes());
    // Root: a struct pointer with 0 data words and 1 pointer at offset 0,
    // whose single pointer slot points back at itself (offset -1).
    let root: u64 = 1u64 << 48;
    let self_pointer: u64 = u64::from(((-1i32) << 2).cast_unsigned()) | (1u64 << 48);
    frame[8..16].copy_from_slice(&root.to_le_bytes());
    frame[16..24].copy_from_slice(&self_pointer.to_le_bytes());
    let message = rast::wire::frame::open(&frame).expect("framing is fine");
    let root = message
        .get_root::<capnp::any_pointer::Reader<'_>>()
        .expect("root");
    assert!(root.target_size().is_err(), "nesting bomb traversed");
    assert!(BatchView::parse(&frame).is_err());
}

/// `stampCheck` is where the schema puts field @6: the generated builder's
/// value is what the lazy reader reads.
#[test]
fn stamp_check_is_the_schema_field() {
    let mut message = capnp::message::Builder::new_default();
    {
        let mut root = message.init_root::<rast::rast_capnp::entry_batch::Builder<'_>>();
        root.set_count(0);
        root.set_stamp_check(0xA1B2_C3D4);
        root.init_entries(0);
    }
    let frame = rast::wire::frame::encode(&message);
    let view = BatchView::parse(&frame).unwrap();
    assert_eq!(view.stamp_check(), 0xA1B2_C3D4);
}
