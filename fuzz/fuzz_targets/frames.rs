//! Fuzzes every parser of outside bytes: stream framing, the batch reader
//! (parse, checksum, payload walk) and the readers of each message root a
//! peer or client can send. Any panic is a bug; errors are expected.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rast::rast_capnp::{client_request, hello, peer_message};
use rast::wire::{self, BatchView};

fuzz_target!(|data: &[u8]| {
    // A stream of frames, as a socket would deliver it.
    let mut rest = data;
    while let Ok(Some((frame, tail))) = wire::split_frame(rest) {
        inspect(frame);
        rest = tail;
    }
    inspect(data);
});

fn inspect(frame: &[u8]) {
    if let Ok(view) = BatchView::parse(frame) {
        let _ = (view.term(), view.first_index(), view.count(), view.kind());
        let _ = view.verify_checksum();
        let _ = view.validate();
    }
    let Ok(message) = wire::frame::open(frame) else {
        return;
    };
    if let Ok(root) = message.get_root::<capnp::any_pointer::Reader<'_>>() {
        let _ = root.target_size();
    }
    if let Ok(root) = message.get_root::<peer_message::Reader<'_>>() {
        let _ = (root.get_group(), root.get_from(), root.get_term());
        if let Ok(peer_message::AppendEntries(Ok(append))) = root.which() {
            if let Ok(batches) = append.get_batches() {
                for batch in batches.iter() {
                    let _ = (batch.get_term(), batch.get_first_index(), batch.get_kind());
                }
            }
        }
    }
    if let Ok(root) = message.get_root::<client_request::Reader<'_>>() {
        let _ = root.get_log().map(|log| log.to_str().map(str::len));
        let _ = root.which().map(|which| {
            if let client_request::Put(Ok(command)) | client_request::Cas(Ok(command)) = which {
                let _ = command.get_key();
                let _ = command.which();
            }
        });
    }
    if let Ok(root) = message.get_root::<hello::Reader<'_>>() {
        let _ = root.get_cluster_id().map(|id| id.to_str().map(str::len));
        let _ = root.get_token();
    }
}
