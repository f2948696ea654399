//! TLS on real processes: a cluster whose peers link over mutual TLS and
//! whose clients speak TLS, with certificates from `rast certs`; a peer
//! is who its certificate says; a node that requires client certificates
//! refuses clients without one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::Cluster;
use rast::client::{Client, ClientOptions};
use rast::types::LogIndex;
use rast::wire::client::{Hello, HelloResponse, PROTOCOL_VERSION};
use rast::wire::{FrameLength, frame_length};
use rast_client::TlsOptions;

fn options(tls: Option<TlsOptions>) -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(20),
        timeout: Duration::from_secs(5),
        tls,
        ..ClientOptions::default()
    }
}

/// Entries appended over TLS are committed and stored on every node (so
/// the peers' mutual-TLS links carry the replication), and read back.
#[test]
fn a_tls_cluster_replicates_and_serves() {
    let cluster = Cluster::start_tls("tls-replicates", 3, &[]);
    let mut client = cluster.client();
    let payloads: Vec<Vec<u8>> = (0..50)
        .map(|n| format!("entry {n} over TLS").into_bytes())
        .collect();
    let mut last = 0;
    for payload in &payloads {
        last = client
            .append("default", &[payload.as_slice()])
            .unwrap()
            .first_index
            .get();
    }
    cluster.wait_for_commit("default", last, Duration::from_secs(30));
    let first = last + 1 - payloads.len() as u64;
    for node in 0..3 {
        let entries = cluster.read_all(node, "default", last);
        let ours: Vec<&Vec<u8>> = (first..=last).map(|index| &entries[&index]).collect();
        assert_eq!(ours, payloads.iter().collect::<Vec<_>>(), "node {node}");
    }
    // A read large enough to come from the segment files, over TLS.
    let read = client.read("default", LogIndex(first), 0).unwrap();
    assert_eq!(read[0].1, payloads[0]);
    // The node says how it encrypts: in status and at /metrics.
    assert_eq!(cluster.status(0, "default").unwrap().tls, "user-space");
    assert_eq!(
        cluster.metric(0, "rast_tls{mode=\"user-space\"}"),
        Some(1.0)
    );
    assert_eq!(cluster.metric(0, "rast_tls{mode=\"off\"}"), Some(0.0));
}

/// A client without TLS is told the node serves it, not handed a
/// protocol error.
#[test]
fn a_plain_client_is_told_the_node_serves_tls() {
    let cluster = Cluster::start_tls("tls-plain-client", 1, &[]);
    let mut plain = ClientOptions {
        deadline: Duration::from_secs(3),
        ..options(None)
    };
    plain.timeout = Duration::from_secs(2);
    let mut client = Client::new(&cluster.addresses, plain).unwrap();
    let error = client.append("default", &[b"x".as_slice()]).unwrap_err();
    assert!(error.to_string().contains("serves TLS"), "{error}");
}

type Session = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Opens a TLS connection to `address` presenting `identity`, sends a
/// peer Hello claiming `node_id`, and returns the node's answer.
/// A TLS connection to `address` (the node's certificate checked against
/// `tls`'s CA, for the name 127.0.0.1), reads bounded by 10 s.
fn tls_stream(address: &str, tls: &TlsOptions) -> Session {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::clone(&tls.config), name).unwrap();
    let socket = TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(session, socket)
}

fn hello_as(address: &str, certs: &Path, identity: &str, node_id: u64) -> HelloResponse {
    session_as(address, certs, identity, node_id).0
}

/// `hello_as`, keeping the session.
fn session_as(
    address: &str,
    certs: &Path,
    identity: &str,
    node_id: u64,
) -> (HelloResponse, Session) {
    let tls = TlsOptions::from_files(
        &certs.join("ca.pem"),
        Some((
            &certs.join(format!("{identity}.pem")),
            &certs.join(format!("{identity}.key")),
        )),
    )
    .unwrap();
    let mut stream = tls_stream(address, &tls);
    let hello = rast::wire::client::encode_hello(&Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "rast".to_owned(),
        node_id,
        token: Vec::new(),
        core: 0,
        cores: 1,
    });
    stream.write_all(&hello).unwrap();
    stream.flush().unwrap();
    let mut frame = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Ok(FrameLength::Complete { frame_bytes, .. }) = frame_length(&frame)
            && frame.len() >= frame_bytes
        {
            frame.truncate(frame_bytes);
            break;
        }
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "the node closed before answering the Hello");
        frame.extend_from_slice(&buffer[..read]);
    }
    (
        rast::wire::client::decode_hello_response(&frame).unwrap(),
        stream,
    )
}

/// With TLS a connection is a peer only with the certificate of the node
/// it claims to be: a client's certificate or another node's is refused,
/// the node's own is accepted.
#[test]
fn only_a_node_certificate_links_as_that_node() {
    let cluster = Cluster::start_tls("tls-peer-identity", 3, &[]);
    let certs = cluster.certs.clone().unwrap();
    cluster.wait_for_leader("default", Duration::from_secs(30));
    let target = &cluster.addresses[0];
    for impostor in ["client", "node-3"] {
        match hello_as(target, &certs, impostor, 2) {
            HelloResponse::Refused(reason) => {
                assert!(reason.contains("certificate of node 2"), "{reason}");
            }
            HelloResponse::Ok(_) => panic!("{impostor}'s certificate linked as node 2"),
        }
    }
    assert_eq!(hello_as(target, &certs, "node-2", 2), HelloResponse::Ok(1));
    // A client Hello (node id 0) with a client certificate is a client.
    assert_eq!(hello_as(target, &certs, "client", 0), HelloResponse::Ok(1));
}

/// A node with a valid certificate that no log here counts (never added)
/// links, but its first Raft message closes the connection, and the
/// cluster serves on.
#[test]
fn a_node_no_log_counts_is_refused_at_its_first_message() {
    let cluster = Cluster::start_tls("tls-non-member", 3, &[]);
    let certs = cluster.certs.clone().unwrap();
    cluster.wait_for_leader("default", Duration::from_secs(30));
    // The same CA signs node 4's certificate: valid, but not a member.
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(["certs", "--nodes", "4", "--out"])
        .arg(&certs)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let (answer, mut stream) = session_as(&cluster.addresses[0], &certs, "node-4", 4);
    assert_eq!(answer, HelloResponse::Ok(1));
    let vote = rast::raft::Outgoing {
        from: rast::types::NodeId(4),
        to: rast::types::NodeId(1),
        term: rast::types::Term(1_000),
        body: rast::raft::OutgoingBody::RequestVote(rast::raft::RequestVote {
            last_index: LogIndex(1_000_000),
            last_term: rast::types::Term(999),
            pre_vote: false,
            leadership_transfer: true,
        }),
    };
    let frame = rast::net::codec::encode(rast::types::LogId::from_name("default"), &vote, &[]);
    stream.write_all(&frame).unwrap();
    stream.flush().unwrap();
    let mut buffer = [0u8; 64];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
        other => panic!("the connection of a non-member stayed open: {other:?}"),
    }
    // No election was forced: node 1 is still in a term below the one the
    // message claimed.
    assert!(cluster.status(0, "default").unwrap().term < 1_000);
    let mut client = cluster.client();
    client
        .append("default", &[b"still serving".as_slice()])
        .unwrap();
}

/// With --client-cert-auth a client must present a certificate the CA
/// signed: without one the handshake fails; with one it is served.
#[test]
fn client_cert_auth_refuses_clients_without_a_certificate() {
    let cluster = Cluster::start_tls("tls-client-auth", 1, &["--client-cert-auth"]);
    let certs = cluster.certs.clone().unwrap();
    let mut anonymous = options(cluster.tls());
    anonymous.deadline = Duration::from_secs(3);
    let mut client = Client::new(&cluster.addresses, anonymous).unwrap();
    assert!(
        client
            .append("default", &[b"anonymous".as_slice()])
            .is_err()
    );
    let identity = TlsOptions::from_files(
        &certs.join("ca.pem"),
        Some((&certs.join("client.pem"), &certs.join("client.key"))),
    )
    .unwrap();
    let mut client = Client::new(&cluster.addresses, options(Some(identity))).unwrap();
    let appended = client.append("default", &[b"known".as_slice()]).unwrap();
    let read = client.read("default", appended.first_index, 1).unwrap();
    assert_eq!(read[0].1, b"known");
}

/// `--metrics-tls`: the metrics endpoint speaks HTTPS with the node's
/// certificate (a scraper trusting the CA reads the exposition), and a
/// plain HTTP request gets no exposition.
#[test]
fn metrics_tls_serves_https_only() {
    let cluster = Cluster::start_tls("tls-metrics", 1, &["--metrics-tls"]);
    cluster.wait_for_leader("default", Duration::from_secs(30));
    let certs = cluster.certs.clone().unwrap();
    let address = &cluster.metrics[0];
    let request = b"GET /metrics HTTP/1.0\r\n\r\n";

    let tls = TlsOptions::from_files(&certs.join("ca.pem"), None).unwrap();
    let mut stream = tls_stream(address, &tls);
    stream.write_all(request).unwrap();
    stream.flush().unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(
        rast::bench::stats::sample(&text, "rast_tls{mode=\"user-space\"}"),
        Some(1.0)
    );

    let mut plain = TcpStream::connect(address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("rast_tls"),
        "plain HTTP was served the exposition"
    );
}
