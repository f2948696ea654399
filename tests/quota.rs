//! Quotas on real processes: a node's disk quota refuses appends and
//! key-value writes with a clear "no space" once its logs hold that much,
//! while reads, gets, deletes and status go on and no new log is created;
//! a connection cannot open tails without bound.

mod common;

use rast::client::{ClientError, ClientOptions, Connection};
use rast::constants::TAILS_PER_CONNECTION_MAX;
use rast::wire::client::{ErrorKind, RequestBody, ResponseBody};

/// The quota of the test nodes: a few dozen 4 KiB appends.
const QUOTA_BYTES: u64 = 256 * 1024;

fn is_no_space(error: &ClientError) -> bool {
    matches!(error, ClientError::Reply(reply) if reply.kind == ErrorKind::NoSpace)
}

#[test]
fn the_disk_quota_refuses_writes_and_keeps_reads() {
    let quota = QUOTA_BYTES.to_string();
    let cluster = common::Cluster::start_with("quota", 3, 1, &["--quota-bytes", &quota]);
    let mut client = cluster.client();
    client.put(b"before", b"1").unwrap();
    let payload = vec![b'q'; 4096];
    let mut appended = Vec::new();
    let refusal = loop {
        match client.append("default", &[&payload]) {
            Ok(done) => appended.push(done.first_index),
            Err(error) if is_no_space(&error) => break error.to_string(),
            Err(error) => panic!("append failed otherwise: {error}"),
        }
        assert!(
            appended.len() < 1_000,
            "no refusal after {} appends of 4 KiB",
            appended.len()
        );
    };
    assert!(refusal.contains("quota"), "{refusal}");
    // Refused at the quota, not before it.
    assert!(
        appended.len() as u64 * 4096 >= QUOTA_BYTES / 2,
        "refused after only {} appends",
        appended.len()
    );
    // Writes of every kind that add data are refused, a new log included.
    assert!(is_no_space(&client.put(b"k", b"v").unwrap_err()));
    assert!(is_no_space(
        &client.cas(b"before", Some(b"1"), b"2").unwrap_err()
    ));
    assert!(is_no_space(
        &client.append("another-log", &[b"x"]).unwrap_err()
    ));
    // What reads or frees goes on.
    let entries = client.read("default", appended[0], 1).unwrap();
    assert_eq!(entries[0].1, payload);
    assert_eq!(client.get(b"before", false).unwrap(), Some(b"1".to_vec()));
    client.delete(b"before").unwrap();
    assert_eq!(client.get(b"before", false).unwrap(), None);
    assert!(client.status("default").is_ok());
    let stored = (0..3)
        .filter_map(|node| cluster.metric(node, "rast_stored_bytes"))
        .fold(0.0, f64::max);
    assert!(stored >= QUOTA_BYTES as f64, "rast_stored_bytes {stored}");
}

#[test]
fn tails_per_connection_are_bounded() {
    let cluster = common::Cluster::start("tails", 3, 1);
    cluster.client().append("default", &[b"one"]).unwrap();
    let mut connection =
        Connection::open(&cluster.addresses[0], &ClientOptions::default()).unwrap();
    let tail = || RequestBody::Tail {
        from_index: 1,
        max_entries: 0,
    };
    let mut ids = Vec::new();
    for _ in 0..=TAILS_PER_CONNECTION_MAX {
        ids.push(connection.send("default", tail(), None).unwrap());
    }
    connection.flush().unwrap();
    let over = *ids.last().unwrap();
    let refusal = loop {
        let (response, _) = connection.receive().unwrap();
        if response.request_id == over {
            break response.body;
        }
        assert!(
            !matches!(response.body, ResponseBody::Error(_)),
            "a tail within the limit was refused: {response:?}"
        );
    };
    let ResponseBody::Error(error) = refusal else {
        panic!(
            "tail {} was accepted: {refusal:?}",
            TAILS_PER_CONNECTION_MAX + 1
        );
    };
    assert!(matches!(error.kind, ErrorKind::TooLarge(_)), "{error:?}");
    assert!(error.message.contains("too many tails"), "{error:?}");
}
