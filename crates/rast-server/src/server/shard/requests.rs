//! Client requests: a request frame (and an append's batch frame, taken
//! from the receive block as it is) decoded, checked at the edge and served
//! by the group of its log.

use std::sync::Arc;

use bytes::BytesMut;

use super::Shard;
use crate::server::connection::Access;
use crate::server::group::{Group, KV_LOG, Outbound, ReplyTo};
use crate::server::metrics::{Counters, PayloadPath};
use crate::types::{LogId, LogIndex};
use crate::wire::client::{
    self as protocol, AdminRequest, ErrorKind, KvCommand, KvOperation, Request, RequestBody,
    ResponseBody,
};
use crate::wire::{BatchView, FrameLength, WireError, frame_length};

impl Shard {
    pub(super) fn process_client(&mut self, slot: usize, access: Access) -> Result<usize, String> {
        let entry = self.slots[slot].as_mut().expect("present");
        let Some(length) = Self::complete_frame(&entry.connection)? else {
            return Ok(0);
        };
        let request = protocol::decode_request(&entry.connection.unread()[..length])
            .map_err(|error| format!("bad request: {error}"))?;
        // An append carries its batch frame right after the request.
        let mut batch_bytes = None;
        if request.body == RequestBody::Append {
            let rest = &entry.connection.unread()[length..];
            match frame_length(rest) {
                Ok(FrameLength::Complete { frame_bytes, .. }) if rest.len() >= frame_bytes => {
                    entry.connection.read_frames_of(length + frame_bytes);
                    batch_bytes = Some(frame_bytes);
                }
                Ok(FrameLength::Complete { frame_bytes, .. }) => {
                    entry.connection.read_frames_of(length + frame_bytes);
                    // Room for the whole frame in one block: the next recv
                    // brings the rest right after what is here.
                    entry.connection.waiting_for = length + frame_bytes;
                    return Ok(0);
                }
                Ok(FrameLength::NeedHeader(need)) => {
                    entry.connection.waiting_for = length + need;
                    return Ok(0);
                }
                Err(error) => return Err(format!("bad batch frame: {error}")),
            }
        }
        entry.connection.waiting_for = 0;
        let name = if !request.log.is_empty() {
            request.log.clone()
        } else if matches!(
            request.body,
            RequestBody::Get { .. } | RequestBody::Write(_)
        ) {
            KV_LOG.to_owned()
        } else {
            "default".to_owned()
        };
        let id = LogId::from_name(&name);
        let owner = (id.get() % u64::from(self.settings.cores)) as u32;
        if owner != self.index {
            entry.handoff_to = Some(owner);
            return Ok(0);
        }
        let consumed = length + batch_bytes.unwrap_or(0);
        if let Some(frame_bytes) = batch_bytes
            && let Some(group) = self.groups.get(&id)
            && group.storage().writable_bytes() < frame_bytes as u64
        {
            // The write queue is full: stop reading this client until a
            // sync frees room (TCP pushes back on it meanwhile).
            let entry = self.slots[slot].as_mut().expect("present");
            entry.blocked = true;
            return Ok(0);
        }
        let entry = self.slots[slot].as_mut().expect("present");
        entry.connection.consume(length);
        // The batch frame is taken from the inbox as it is: checked, sealed
        // and stamped in place, then written and sent from there.
        let batch = batch_bytes.map(|frame_bytes| entry.connection.take(frame_bytes));
        if let Some(frame_bytes) = batch_bytes {
            let ingest = self.metrics.counters.payload(PayloadPath::Ingest);
            ingest.add_payload(frame_bytes as u64);
        }
        let reply = ReplyTo {
            connection: slot,
            generation: entry.generation,
            request_id: request.request_id,
        };
        if let Some(refusal) = forbidden(access, &request.body) {
            self.out.error(reply, ErrorKind::Forbidden, refusal);
            return Ok(consumed);
        }
        self.handle_request(&name, id, &request, batch, reply);
        Ok(consumed)
    }

    pub(super) fn handle_request(
        &mut self,
        name: &str,
        id: LogId,
        request: &Request,
        batch: Option<BytesMut>,
        reply: ReplyTo,
    ) {
        if let Err(reason) = check_log_name(name) {
            self.out.error(reply, ErrorKind::Invalid, reason);
            return;
        }
        let creates = matches!(request.body, RequestBody::Append | RequestBody::Write(_));
        if !creates && !self.has_log(id) {
            // Only a write creates a log: a status, read, tail or get of a
            // name never written costs this node no file.
            self.out.error(
                reply,
                ErrorKind::Invalid,
                format!("no log named {name:?} on this node (a log is created by its first write)"),
            );
            return;
        }
        if let Some(refusal) = self.over_quota(&request.body) {
            self.out.error(reply, ErrorKind::NoSpace, refusal);
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        let metrics = Arc::clone(&self.metrics);
        match self.group(id, Some(name)) {
            Ok(group) => {
                Self::serve_request(&metrics.counters, group, request, batch, reply, &mut out);
            }
            Err(reason) => out.error(reply, ErrorKind::Unavailable, reason),
        }
        self.out = out;
    }

    /// Why `body` is refused by the node's disk quota, if it is: appends
    /// and key-value puts and cases add data; reads, tails, status, admin
    /// and deletes (which lead to less) always pass.
    fn over_quota(&self, body: &RequestBody) -> Option<String> {
        let quota = self.settings.quota_bytes;
        let adds = match body {
            RequestBody::Append => true,
            RequestBody::Write(command) => !matches!(command.operation, KvOperation::Delete),
            _ => false,
        };
        if quota == 0 || !adds {
            return None;
        }
        let stored = self.metrics.stored_total();
        (stored >= quota).then(|| {
            format!(
                "this node holds {stored} bytes of log, at its quota of {quota} (--quota-bytes): \
                 writes are refused until compaction or retention frees room; reads and deletes go on"
            )
        })
    }

    pub(super) fn serve_request(
        counters: &Counters,
        group: &mut Group,
        request: &Request,
        batch: Option<BytesMut>,
        reply: ReplyTo,
        out: &mut Outbound,
    ) {
        match &request.body {
            RequestBody::Append => {
                let mut frame = batch.expect("append carries a batch");
                match check_client_batch(&mut frame) {
                    Ok(count) => {
                        Counters::add(&counters.entries_appended, u64::from(count));
                        group.propose(frame, reply, out);
                    }
                    Err(error) => out.error(reply, ErrorKind::Invalid, error.to_string()),
                }
            }
            RequestBody::Read {
                from_index,
                max_entries,
            } => group.read(LogIndex(*from_index), *max_entries, reply, out),
            RequestBody::Tail {
                from_index,
                max_entries,
            } => group.tail(LogIndex(*from_index), *max_entries, reply, out),
            RequestBody::Status => {
                let status = group.status();
                out.reply(reply, ResponseBody::Status(status));
            }
            RequestBody::Get { key, stale } => group.get(key.clone(), *stale, reply, out),
            RequestBody::Write(command) => {
                // Log time is the leader's clock, whatever the client sent.
                let command = KvCommand {
                    time_ms: crate::storage::unix_now_ms(),
                    ..command.clone()
                };
                group.write(&command, reply, out);
            }
            RequestBody::Admin(request) => group.admin(request, reply, out),
        }
    }
}

/// A log name is 1 to `LOG_NAME_BYTES_MAX` bytes of `[A-Za-z0-9._-]`.
pub(super) fn check_log_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= crate::constants::LOG_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid log name {name:?}: 1 to {} characters of A-Z a-z 0-9 . _ -",
            crate::constants::LOG_NAME_BYTES_MAX
        ))
    }
}

/// Checks a client's batch at the edge: one valid frame whose payloads are
/// well formed; seals it if the client left the checksum zero, verifies it
/// otherwise.
pub(super) fn check_client_batch(frame: &mut [u8]) -> Result<u32, WireError> {
    let view = BatchView::parse(frame)?;
    view.validate()?;
    let count = view.count();
    if view.checksum() == 0 {
        crate::wire::BatchMut::parse(frame)?.seal();
    } else {
        view.verify_checksum()?;
    }
    Ok(count)
}

/// Why a client with `access` may not make a request of `body`, if it
/// may not (see [`Access`]).
fn forbidden(access: Access, body: &RequestBody) -> Option<&'static str> {
    match body {
        // Printing the configuration changes nothing: any client may.
        RequestBody::Admin(request)
            if access < Access::Admin && !matches!(request, AdminRequest::Members) =>
        {
            Some(
                "admin requests need the admin role: present the admin token (the node's \
             --admin-token-file) or a certificate for admin.rast",
            )
        }
        RequestBody::Append | RequestBody::Write(_) if access < Access::ReadWrite => Some(
            "this client is read-only (it presented the read-only token): appends and \
             key-value writes are refused",
        ),
        _ => None,
    }
}
