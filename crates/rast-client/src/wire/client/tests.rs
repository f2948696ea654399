//! Round trips and limits of the request and response codecs.

use super::*;

/// A membership of up to `MEMBERS_LIST_MAX` nodes per list reads
/// back; one more in any list is refused before it is walked (a list
/// of empty structs costs a frame nothing and a reader one allocation
/// per element).
#[test]
fn membership_lists_are_bounded() {
    let most = u64::from(MEMBERS_LIST_MAX);
    let members = |count: u64| Members {
        voters: (1..=count).collect(),
        voters_outgoing: (1..=count).collect(),
        learners: (1..=count).collect(),
        addresses: (1..=count).map(|id| (id, format!("n{id}:1"))).collect(),
    };
    assert_eq!(
        decode_members(&encode_members(&members(most))).unwrap(),
        members(most)
    );
    for list in 0..4 {
        let mut over = members(1);
        let extra: Vec<u64> = (1..=most + 1).collect();
        match list {
            0 => over.voters = extra,
            1 => over.voters_outgoing = extra,
            2 => over.learners = extra,
            _ => over.addresses = extra.iter().map(|id| (*id, String::new())).collect(),
        }
        let error = decode_members(&encode_members(&over)).unwrap_err();
        assert!(
            error.to_string().contains("at most"),
            "list {list}: {error}"
        );
    }
}

/// Every request shape survives encode → decode unchanged.
#[test]
fn requests_round_trip() {
    let command = KvCommand {
        client_id: 9,
        sequence: 4,
        key: b"k".to_vec(),
        operation: KvOperation::Cas {
            expected: None,
            new: b"v".to_vec(),
        },
        time_ms: 1_700_000_000_123,
    };
    for body in [
        RequestBody::Append,
        RequestBody::Read {
            from_index: 5,
            max_entries: 10,
        },
        RequestBody::Tail {
            from_index: 1,
            max_entries: 0,
        },
        RequestBody::Get {
            key: b"key".to_vec(),
            stale: true,
        },
        RequestBody::Write(command.clone()),
        RequestBody::Write(KvCommand {
            operation: KvOperation::Delete,
            ..command.clone()
        }),
        RequestBody::Write(KvCommand {
            operation: KvOperation::Put(b"x".to_vec()),
            ..command
        }),
        RequestBody::Status,
        RequestBody::Admin(AdminRequest::AddLearner {
            id: 4,
            address: "127.0.0.1:7004".into(),
        }),
        RequestBody::Admin(AdminRequest::TransferLeader(2)),
    ] {
        let request = Request {
            request_id: 77,
            log: "orders".into(),
            body,
        };
        assert_eq!(decode_request(&encode_request(&request)).unwrap(), request);
    }
}

/// A read or tail from an index above `INDEX_MAX` (a hostile
/// `u64::MAX`) is refused as malformed.
#[test]
fn read_indexes_beyond_the_limit_are_refused() {
    for body in [
        RequestBody::Read {
            from_index: u64::MAX,
            max_entries: 1,
        },
        RequestBody::Tail {
            from_index: INDEX_MAX + 1,
            max_entries: 1,
        },
    ] {
        let request = Request {
            request_id: 1,
            log: "a".into(),
            body,
        };
        assert!(matches!(
            decode_request(&encode_request(&request)),
            Err(WireError::Malformed(_))
        ));
    }
}

/// Every response shape survives encode → decode unchanged.
#[test]
fn responses_round_trip() {
    let value = KvValue {
        found: true,
        value: b"v".to_vec(),
        stale: false,
        index: 12,
    };
    for body in [
        ResponseBody::Appended {
            first_index: 3,
            count: 2,
            term: 1,
        },
        ResponseBody::Batches(4),
        ResponseBody::Value(value.clone()),
        ResponseBody::Done,
        ResponseBody::CasResult(value.clone()),
        ResponseBody::Status(Status {
            node_id: 1,
            role: "leader".into(),
            peers: vec![PeerStatus {
                id: 2,
                match_index: 4,
                next_index: 5,
                state: "replicate".into(),
            }],
            ..Status::default()
        }),
        ResponseBody::Members(Members {
            voters: vec![1, 2, 3],
            voters_outgoing: vec![],
            learners: vec![4],
            addresses: vec![(1, "a".into())],
        }),
        ResponseBody::Error(ErrorReply {
            message: "not the leader".into(),
            kind: ErrorKind::NotLeader {
                leader: 2,
                address: "127.0.0.1:7002".into(),
            },
        }),
        ResponseBody::Error(ErrorReply {
            message: "mismatch".into(),
            kind: ErrorKind::PreconditionFailed(value),
        }),
    ] {
        let response = Response {
            request_id: 5,
            body,
        };
        assert_eq!(
            decode_response(&encode_response(&response)).unwrap(),
            response
        );
    }
}

/// The handshake round trips, and a put request carrying a cas command
/// is refused instead of being misread.
#[test]
fn hello_round_trips_and_mismatched_verbs_are_refused() {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "rast".into(),
        node_id: 0,
        token: b"secret".to_vec(),
        core: 1,
        cores: 2,
    };
    assert_eq!(decode_hello(&encode_hello(&hello)).unwrap(), hello);
    let refused = HelloResponse::Refused("wrong cluster".into());
    assert_eq!(
        decode_hello_response(&encode_hello_response(&refused)).unwrap(),
        refused
    );

    let mut message = crate::wire::frame::builder(64);
    let mut root = message.init_root::<client_request::Builder<'_>>();
    let command = KvCommand {
        client_id: 0,
        sequence: 0,
        key: b"k".to_vec(),
        operation: KvOperation::Delete,
        time_ms: 0,
    };
    build_kv_command(root.reborrow().init_put(), &command);
    let bytes = frame::encode(&message);
    assert!(matches!(
        decode_request(&bytes),
        Err(WireError::Malformed(_))
    ));
}
