//! The state machine's answers as client-protocol responses
//! (`ClientResponse` in the schema), for the server's groups.
//!
//! | state machine                   | client response                          |
//! |---------------------------------|------------------------------------------|
//! | `Done`                          | `done`                                   |
//! | `CasApplied`                    | `casResult{found: true}`                 |
//! | `CasMismatch(Absent)`           | error `preconditionFailed{found: false}` |
//! | `CasMismatch(Value(v))`         | error `preconditionFailed{found, v}`     |
//! | `CasMismatch(NotRetained)`      | error `preconditionFailed{found}`, value empty, said in the message |
//! | `Refused(Key/ValueTooLarge)`    | error `tooLarge{limit}`                  |
//! | `Refused(SessionExpired)`       | error `sessionExpired`                   |
//! | `Refused(StaleSequence/Malformed)` | error `invalid`                       |
//! | a read                          | `value{found, value, stale, index}`      |
//! | the machine stopped             | error `failed`                           |

use crate::kv::{ApplyError, Current, KvResponse, Refusal, StateMachine};
use crate::types::LogIndex;
use crate::wire::client::{ErrorKind, ErrorReply, KvValue, ResponseBody};

/// The response to a write applied at `index`.
pub fn response_body(response: &KvResponse, index: LogIndex) -> ResponseBody {
    let value = |found: bool, value: Vec<u8>| KvValue {
        found,
        value,
        stale: false,
        index: index.get(),
    };
    match response {
        KvResponse::Done => ResponseBody::Done,
        KvResponse::CasApplied => ResponseBody::CasResult(value(true, Vec::new())),
        KvResponse::CasMismatch(current) => {
            let (found, bytes, message) = match current {
                Current::Absent => (false, Vec::new(), "cas failed: the key is absent"),
                Current::Value(bytes) => (true, bytes.clone(), "cas failed: the value differs"),
                Current::NotRetained => (
                    true,
                    Vec::new(),
                    "cas failed: the value differed (a retried request: the value, too large \
                     to keep in the session, is not repeated)",
                ),
            };
            error(ErrorKind::PreconditionFailed(value(found, bytes)), message)
        }
        KvResponse::Refused(refusal) => {
            let kind = match refusal {
                Refusal::KeyTooLarge { limit, .. } | Refusal::ValueTooLarge { limit, .. } => {
                    ErrorKind::TooLarge(*limit as u64)
                }
                Refusal::SessionExpired { .. } => ErrorKind::SessionExpired,
                Refusal::StaleSequence { .. } | Refusal::Malformed => ErrorKind::Invalid,
            };
            error(kind, refusal.to_string())
        }
    }
}

/// The response to a read of `key` served now (after its ReadIndex round,
/// or at once when `stale`, which the answer repeats).
pub fn read_body(machine: &StateMachine, key: &[u8], stale: bool) -> ResponseBody {
    if let Some(failure) = machine.failure() {
        return error(
            ErrorKind::Failed,
            format!(
                "the state machine stopped at index {}: {}",
                failure.index, failure.reason
            ),
        );
    }
    let stored = machine.get(key);
    ResponseBody::Value(KvValue {
        found: stored.is_some(),
        value: stored.map(<[u8]>::to_vec).unwrap_or_default(),
        stale,
        index: machine.applied_index().get(),
    })
}

/// The response to a request the stopped machine cannot serve.
pub fn failed_body(error: &ApplyError) -> ResponseBody {
    self::error(ErrorKind::Failed, error.to_string())
}

fn error(kind: ErrorKind, message: impl Into<String>) -> ResponseBody {
    ResponseBody::Error(ErrorReply {
        message: message.into(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::client::{KvCommand, KvOperation, Response, decode_response, encode_response};

    /// Every kind of answer encodes to a client response that decodes back
    /// to itself, with the meaning the client library reads from it.
    #[test]
    fn answers_survive_the_wire() {
        let bodies = [
            response_body(&KvResponse::Done, LogIndex(3)),
            response_body(&KvResponse::CasApplied, LogIndex(3)),
            response_body(&KvResponse::CasMismatch(Current::Absent), LogIndex(3)),
            response_body(
                &KvResponse::CasMismatch(Current::Value(b"v".to_vec())),
                LogIndex(3),
            ),
            response_body(&KvResponse::CasMismatch(Current::NotRetained), LogIndex(3)),
            response_body(
                &KvResponse::Refused(Refusal::SessionExpired { client_id: 4 }),
                LogIndex(3),
            ),
            response_body(&KvResponse::Refused(Refusal::Malformed), LogIndex(3)),
        ];
        for body in bodies {
            let response = Response {
                request_id: 9,
                body,
            };
            assert_eq!(
                decode_response(&encode_response(&response)).unwrap(),
                response
            );
        }
        assert!(matches!(
            response_body(&KvResponse::CasApplied, LogIndex(3)),
            ResponseBody::CasResult(KvValue {
                found: true,
                index: 3,
                ..
            })
        ));
    }

    /// A read answers found / not found with the applied index and the
    /// stale flag; a stopped machine answers `failed`.
    #[test]
    fn reads_say_where_they_read() {
        let mut machine = StateMachine::new();
        let command = KvCommand {
            client_id: 0,
            sequence: 0,
            key: b"k".to_vec(),
            operation: KvOperation::Put(b"v".to_vec()),
            time_ms: 0,
        };
        machine.apply(LogIndex(5), &command).unwrap();
        assert_eq!(
            read_body(&machine, b"k", true),
            ResponseBody::Value(KvValue {
                found: true,
                value: b"v".to_vec(),
                stale: true,
                index: 5
            })
        );
        assert!(matches!(
            read_body(&machine, b"missing", false),
            ResponseBody::Value(KvValue { found: false, .. })
        ));
        machine.panic_on_key(Some(b"k".to_vec()));
        let error = machine.apply(LogIndex(6), &command).unwrap_err();
        assert!(matches!(
            read_body(&machine, b"k", false),
            ResponseBody::Error(ErrorReply {
                kind: ErrorKind::Failed,
                ..
            })
        ));
        assert!(matches!(
            failed_body(&error),
            ResponseBody::Error(ErrorReply {
                kind: ErrorKind::Failed,
                ..
            })
        ));
    }
}
