//! What the blocking [`Client`](crate::Client) and the async client share,
//! free of IO: each verb's request and the reading of its answer, the
//! exactly-once session, the route to the leader, and the retry rule.
//!
//! ```text
//!  verb ──► Call { log, body, batch, repeatable }
//!             │ the client's own IO: connect, send, receive
//!             ▼
//!  Attempt ──► judge ──► Answer ──► the verb's reader (appended, entries, …)
//!                   ├──► Move { hint, wait } ──► Route::advance, Backoff
//!                   └──► Fail (a typed error, or Unknown for a sent append)
//! ```

use std::time::Duration;

use crate::client::{Appended, CasOutcome, ClientError};
use crate::types::{LogIndex, Term};
use crate::wire::client::{
    self as protocol, AdminRequest, ErrorKind, ErrorReply, KvCommand, KvOperation, KvValue,
    Request, RequestBody, ResponseBody, Status,
};
use crate::wire::{BatchKind, BatchView, encode_batch};

/// A response and the batch frames that followed it.
pub(crate) type Answer = (ResponseBody, Vec<Vec<u8>>);

/// One request, as every client sends it.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub log: String,
    pub body: RequestBody,
    /// The `EntryBatch` frame that follows an append.
    pub batch: Option<Vec<u8>>,
    /// Safe to send again after the connection broke mid-call: reads, and
    /// key-value writes (the session applies a repeat once). An append is
    /// not: its outcome is then unknown.
    pub repeatable: bool,
}

pub(crate) fn append<P: AsRef<[u8]>>(log: &str, entries: &[P]) -> Call {
    Call {
        log: log.to_owned(),
        body: RequestBody::Append,
        batch: Some(encode_batch(BatchKind::Data, Term(0), LogIndex(0), entries)),
        repeatable: false,
    }
}

pub(crate) fn appended(answer: Answer) -> Result<Appended, ClientError> {
    match answer.0 {
        ResponseBody::Appended {
            first_index,
            count,
            term,
        } => Ok(Appended {
            first_index: LogIndex(first_index),
            count,
            term: Term(term),
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn read(log: &str, from: LogIndex, max_entries: u32) -> Call {
    plain(
        log,
        RequestBody::Read {
            from_index: from.get(),
            max_entries,
        },
    )
}

pub(crate) fn entries(
    answer: Answer,
    from: LogIndex,
    max_entries: u32,
) -> Result<Vec<(LogIndex, Vec<u8>)>, ClientError> {
    match answer {
        (ResponseBody::Batches(_), batches) => entries_of(&batches, from, max_entries),
        (other, _) => Err(unexpected(&other)),
    }
}

/// A tail's request: its answers stream on the connection for good.
pub(crate) fn tail(from: LogIndex) -> RequestBody {
    RequestBody::Tail {
        from_index: from.get(),
        max_entries: 0,
    }
}

/// A tail's entries received and not yet handed out.
#[derive(Debug)]
pub(crate) struct TailBuffer {
    next: LogIndex,
    entries: std::collections::VecDeque<(LogIndex, Vec<u8>)>,
}

impl TailBuffer {
    pub(crate) fn new(from: LogIndex) -> Self {
        Self {
            next: from,
            entries: std::collections::VecDeque::new(),
        }
    }

    /// The next entry, if one was received.
    pub(crate) fn pop(&mut self) -> Option<(LogIndex, Vec<u8>)> {
        let entry = self.entries.pop_front()?;
        self.next = entry.0.next();
        Some(entry)
    }

    /// Takes one answer of the tail in: its entries from the next on.
    pub(crate) fn fill(
        &mut self,
        answer: Result<(crate::wire::client::Response, Vec<Vec<u8>>), ClientError>,
    ) -> Result<(), ClientError> {
        let (response, batches) = answer?;
        let skip = self
            .entries
            .back()
            .map_or(self.next, |(index, _)| index.next());
        self.entries
            .extend(entries((response.body, batches), skip, 0)?);
        Ok(())
    }
}

pub(crate) fn get(key: &[u8], stale: bool) -> Call {
    plain(
        "",
        RequestBody::Get {
            key: key.to_vec(),
            stale,
        },
    )
}

pub(crate) fn got(result: Result<Answer, ClientError>) -> Result<Option<Vec<u8>>, ClientError> {
    match result {
        Ok((ResponseBody::Value(value), _)) => Ok(value.found.then_some(value.value)),
        Err(ClientError::Reply(ErrorReply {
            kind: ErrorKind::NotFound,
            ..
        })) => Ok(None),
        Ok((other, _)) => Err(unexpected(&other)),
        Err(error) => Err(error),
    }
}

pub(crate) fn put(value: &[u8]) -> KvOperation {
    KvOperation::Put(value.to_vec())
}

pub(crate) fn cas(expected: Option<&[u8]>, new: &[u8]) -> KvOperation {
    KvOperation::Cas {
        expected: expected.map(<[u8]>::to_vec),
        new: new.to_vec(),
    }
}

/// A put's or delete's answer.
pub(crate) fn done(result: Result<ResponseBody, ClientError>) -> Result<(), ClientError> {
    match result? {
        ResponseBody::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn cas_outcome(
    result: Result<ResponseBody, ClientError>,
) -> Result<CasOutcome, ClientError> {
    match result {
        Ok(ResponseBody::CasResult(KvValue { found: true, .. })) => Ok(CasOutcome::Swapped),
        Ok(ResponseBody::CasResult(value))
        | Err(ClientError::Reply(ErrorReply {
            kind: ErrorKind::PreconditionFailed(value),
            ..
        })) => Ok(CasOutcome::Mismatch(value.found.then_some(value.value))),
        Ok(other) => Err(unexpected(&other)),
        Err(error) => Err(error),
    }
}

pub(crate) fn status(log: &str) -> Call {
    plain(log, RequestBody::Status)
}

pub(crate) fn status_of(answer: Answer) -> Result<Status, ClientError> {
    match answer.0 {
        ResponseBody::Status(status) => Ok(status),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn admin(log: &str, request: AdminRequest) -> Call {
    Call {
        repeatable: false,
        ..plain(log, RequestBody::Admin(request))
    }
}

fn plain(log: &str, body: RequestBody) -> Call {
    Call {
        log: log.to_owned(),
        body,
        batch: None,
        repeatable: true,
    }
}

/// The node's answer to a client's `Hello`: its id, or why it refused.
pub(crate) fn welcomed(frame: &[u8]) -> Result<u64, ClientError> {
    match protocol::decode_hello_response(frame)? {
        protocol::HelloResponse::Ok(node_id) => Ok(node_id),
        protocol::HelloResponse::Refused(why) => Err(ClientError::Refused(why)),
    }
}

/// The next request id of a connection and the request's frame.
pub(crate) fn request_frame(next_id: &mut u64, log: &str, body: RequestBody) -> (u64, Vec<u8>) {
    let request_id = *next_id;
    *next_id += 1;
    let request = Request {
        request_id,
        log: log.to_owned(),
        body,
    };
    (request_id, protocol::encode_request(&request))
}

/// An exactly-once session: the id and sequence number every key-value
/// write carries, so a retried write applies once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Session {
    pub client_id: u64,
    sequence: u64,
}

impl Session {
    /// A session with `client_id` (0: a random one).
    pub(crate) fn new(client_id: u64) -> Self {
        Self {
            client_id: if client_id == 0 {
                random_client_id()
            } else {
                client_id
            },
            sequence: 0,
        }
    }

    /// The next write's request (repeatable: the session makes it so).
    pub(crate) fn write(&mut self, key: &[u8], operation: KvOperation) -> Call {
        self.sequence += 1;
        let command = KvCommand {
            client_id: self.client_id,
            sequence: self.sequence,
            key: key.to_vec(),
            operation,
            // The leader stamps the log time when it builds the entry.
            time_ms: 0,
        };
        plain("", RequestBody::Write(command))
    }

    /// After a write's answer: when the state machine no longer knows the
    /// session (it expired, or its first request never applied), later
    /// writes open a new one. This write's outcome is the caller's to
    /// judge (an earlier attempt may have applied).
    pub(crate) fn observe(&mut self, result: &Result<Answer, ClientError>) {
        if let Err(ClientError::Reply(ErrorReply {
            kind: ErrorKind::SessionExpired,
            ..
        })) = result
        {
            *self = Self::new(0);
        }
    }
}

/// Where the leader is believed to be.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub addresses: Vec<String>,
    cursor: usize,
}

impl Route {
    pub(crate) fn new<S: AsRef<str>>(addresses: &[S]) -> Result<Self, ClientError> {
        if addresses.is_empty() {
            return Err(ClientError::Unexpected("no cluster addresses given".into()));
        }
        Ok(Self {
            addresses: addresses.iter().map(|a| a.as_ref().to_owned()).collect(),
            cursor: 0,
        })
    }

    /// The address to try.
    pub(crate) fn current(&self) -> &str {
        &self.addresses[self.cursor % self.addresses.len()]
    }

    /// Moves to the hinted leader, or to the next address.
    pub(crate) fn advance(&mut self, hint: Option<String>) {
        match hint {
            Some(hint) => {
                self.cursor = if let Some(position) = self.addresses.iter().position(|a| *a == hint)
                {
                    position
                } else {
                    self.addresses.push(hint);
                    self.addresses.len() - 1
                };
            }
            None => self.cursor = (self.cursor + 1) % self.addresses.len(),
        }
    }

    /// The error when no node answered usefully in time.
    pub(crate) fn gave_up(&self, attempts: u32, last: String) -> ClientError {
        ClientError::NoLeader {
            addresses: self.addresses.join(","),
            attempts,
            last,
        }
    }
}

/// How one attempt went.
pub(crate) enum Attempt {
    /// No connection: nothing was sent.
    NotSent(ClientError),
    /// Sent; the answer, or the failure after sending.
    Sent(Result<Answer, ClientError>),
}

/// What to do after an attempt.
pub(crate) enum Next {
    /// The answer (errors other than "ask elsewhere" included, as `Fail`).
    Answer(Answer),
    /// A failure to give the caller.
    Fail(ClientError),
    /// Ask another node: the hinted leader, or the next address; after a
    /// back-off when `wait` (no leader known, or none reachable).
    Move { hint: Option<String>, wait: bool },
}

/// The retry rule: another node is asked only when the answer proves the
/// request was not applied (not the leader, unavailable, no connection),
/// or when the request is repeatable.
pub(crate) fn judge(attempt: Attempt, repeatable: bool, last: &mut String) -> Next {
    match attempt {
        Attempt::NotSent(error) => {
            *last = error.to_string();
            Next::Move {
                hint: None,
                wait: true,
            }
        }
        Attempt::Sent(Ok((ResponseBody::Error(reply), _))) => match &reply.kind {
            ErrorKind::NotLeader { address, .. } => {
                last.clone_from(&reply.message);
                let hint = (!address.is_empty()).then(|| address.clone());
                // No leader known yet (an election): wait a little.
                let wait = hint.is_none();
                Next::Move { hint, wait }
            }
            ErrorKind::Unavailable => {
                last.clone_from(&reply.message);
                Next::Move {
                    hint: None,
                    wait: true,
                }
            }
            _ => Next::Fail(ClientError::Reply(reply)),
        },
        Attempt::Sent(Ok(answer)) => Next::Answer(answer),
        Attempt::Sent(Err(error)) if !repeatable => {
            Next::Fail(ClientError::Unknown(error.to_string()))
        }
        Attempt::Sent(Err(error)) => {
            *last = error.to_string();
            Next::Move {
                hint: None,
                wait: false,
            }
        }
    }
}

/// Exponential back-off between attempts: 20 ms doubling to half a second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(Duration::from_millis(20))
    }

    /// The wait before the next attempt.
    pub(crate) fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_millis(500));
        wait
    }
}

/// The typed error an unexpected answer carries, or an `Unexpected`.
pub(crate) fn unexpected(body: &ResponseBody) -> ClientError {
    match body {
        ResponseBody::Error(reply) => ClientError::Reply(reply.clone()),
        other => ClientError::Unexpected(format!("{other:?}")),
    }
}

/// Flattens batch frames into (index, payload) pairs from `from` on: the
/// entries clients appended. A read or tail answers with the stored
/// batches as they are, the log's own among them — the empty entry a new
/// leader appends in its term (`noop`), configurations (`config`) — which
/// take an index each and are skipped here: the indexes a reader sees may
/// have gaps.
pub(crate) fn entries_of(
    batches: &[Vec<u8>],
    from: LogIndex,
    max_entries: u32,
) -> Result<Vec<(LogIndex, Vec<u8>)>, ClientError> {
    let mut entries = Vec::new();
    for frame in batches {
        let view = BatchView::parse(frame)?;
        if matches!(view.kind()?, BatchKind::Noop | BatchKind::Config) {
            continue;
        }
        let mut index = view.first_index();
        view.for_each_entry(|payload| {
            if index >= from && (max_entries == 0 || entries.len() < max_entries as usize) {
                entries.push((index, payload.to_vec()));
            }
            index = index.next();
            Ok(())
        })?;
    }
    Ok(entries)
}

/// A session id unlikely to collide: time and process id mixed.
fn random_client_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    crate::random::Random::new(nanos ^ (u64::from(std::process::id()) << 32))
        .next_u64()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read's batches flatten to the entries clients appended: the log's
    /// own (a new leader's no-op, a configuration) are skipped, their
    /// indexes left as gaps; `from` and `max_entries` still apply.
    #[test]
    fn reads_skip_the_logs_own_entries() {
        let frames = vec![
            encode_batch(BatchKind::Data, Term(1), LogIndex(1), &[b"a", b"b"]),
            encode_batch(BatchKind::Noop, Term(2), LogIndex(3), &[b""]),
            encode_batch(BatchKind::Config, Term(2), LogIndex(4), &[b"members"]),
            encode_batch(BatchKind::Data, Term(2), LogIndex(5), &[b"c"]),
        ];
        let entry = |index: u64, payload: &[u8]| (LogIndex(index), payload.to_vec());
        assert_eq!(
            entries_of(&frames, LogIndex(1), 0).unwrap(),
            vec![entry(1, b"a"), entry(2, b"b"), entry(5, b"c")]
        );
        assert_eq!(
            entries_of(&frames, LogIndex(2), 2).unwrap(),
            vec![entry(2, b"b"), entry(5, b"c")]
        );
    }
}
