//! The Raft side: messages from the other nodes decoded and stepped into
//! the group, and the group's peer frames sent back out as `raft`
//! messages.
//!
//! Why apart: this is the node's whole transport; everything between a
//! message in and the frames out (the core's actions, storage, apply) is
//! the daemon's replica.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::Value;

use super::Node;
use crate::maelstrom::protocol::{Envelope, body};
use crate::net::codec::{self, PeerBody};
use crate::server::group::{KV_LOG, PeerFrame, Piece};
use crate::types::{LogId, NodeId};
use crate::wire::{WireError, split_frame};

impl Node {
    /// A `raft` message: its frame decoded with the daemon's codec and
    /// stepped into the group.
    pub(super) fn step(&mut self, envelope: &Envelope) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let Some(bytes) = envelope
            .body
            .get("data")
            .and_then(Value::as_str)
            .and_then(|data| BASE64.decode(data).ok())
        else {
            tracing::warn!(from = %envelope.src, "raft message without base64 data");
            return;
        };
        let bytes = Bytes::from(bytes);
        let decoded = split_frame(&bytes).and_then(|split| {
            let (header, rest) = split.ok_or(WireError::Truncated {
                have: bytes.len(),
                need: bytes.len() + 1,
            })?;
            let header = codec::decode(header, &mut running.summaries)?;
            Ok((header, bytes.len() - rest.len()))
        });
        let (header, header_len) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(from = %envelope.src, %error, "dropping a malformed raft message");
                return;
            }
        };
        if header.to != running.id || header.group != LogId::from_name(KV_LOG) {
            return;
        }
        // A snapshot chunk's bytes are its whole frame; AppendEntries'
        // batches are what follows the header.
        let batch_bytes = if matches!(header.body, PeerBody::InstallSnapshot(_)) {
            bytes
        } else {
            bytes.slice(header_len..)
        };
        let summaries = std::mem::take(&mut running.summaries);
        if let Err(error) = running
            .group
            .step(&header, &summaries, &batch_bytes, &mut running.out)
        {
            tracing::warn!(from = %envelope.src, %error, "refused a raft message");
        }
        running.summaries = summaries;
    }

    /// A peer frame the group wants sent, as a `raft` message to its node.
    pub(super) fn send_peer(&mut self, to: NodeId, frame: PeerFrame) {
        let mut bytes = frame.header;
        for piece in frame.pieces {
            match piece {
                Piece::Shared(piece) | Piece::Copied(piece) => bytes.extend_from_slice(&piece),
                Piece::File(_) => {
                    // Only a file-backed log hands out file spans.
                    tracing::error!("a file span from the in-memory log; message dropped");
                    return;
                }
            }
        }
        let Some(dest) = self
            .running
            .as_ref()
            .and_then(|running| running.name_of(to))
            .cloned()
        else {
            return;
        };
        self.send(
            &dest,
            body("raft", &[("data", BASE64.encode(&bytes).into())]),
        );
    }
}
