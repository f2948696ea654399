//! Roles on real processes, by token: the admin role (`--admin-token-file`)
//! alone may change membership or take snapshots; a read-only client
//! (`--read-only-token-file`) may read but not write; peers present their
//! own token (`--peer-token-file`), so a client's token cannot open a peer
//! link, and a peer's token is no client credential.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Cluster;
use rast::client::{Client, ClientError, ClientOptions};
use rast::wire::client::{AdminRequest, ErrorKind, Hello, HelloResponse, PROTOCOL_VERSION};

fn write_token(dir: &Path, name: &str, token: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn client(cluster: &Cluster, token: &str) -> Client {
    let options = ClientOptions {
        token: token.as_bytes().to_vec(),
        deadline: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    Client::new(&cluster.addresses, options).unwrap()
}

fn forbidden<T: std::fmt::Debug>(outcome: Result<T, ClientError>) -> String {
    match outcome {
        Err(ClientError::Reply(reply)) if reply.kind == ErrorKind::Forbidden => reply.message,
        other => panic!("expected a Forbidden answer, got {other:?}"),
    }
}

/// What a node answers a Hello with `token` claiming `node_id`.
fn hello(address: &str, token: &str, node_id: u64) -> HelloResponse {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let frame = rast::wire::client::encode_hello(&Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "rast".to_owned(),
        node_id,
        token: token.as_bytes().to_vec(),
        core: 0,
        cores: 1,
    });
    stream.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        if let Ok(rast::wire::FrameLength::Complete { frame_bytes, .. }) =
            rast::wire::frame_length(&answer)
            && answer.len() >= frame_bytes
        {
            return rast::wire::client::decode_hello_response(&answer[..frame_bytes]).unwrap();
        }
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "closed before answering");
        answer.extend_from_slice(&buffer[..read]);
    }
}

#[test]
fn each_role_may_do_its_own_and_no_more() {
    let tokens = std::env::temp_dir().join(format!("rast-roles-{}", std::process::id()));
    std::fs::create_dir_all(&tokens).unwrap();
    let args = [
        "--token-file".to_owned(),
        write_token(&tokens, "token", "writer-secret"),
        "--admin-token-file".to_owned(),
        write_token(&tokens, "admin", "admin-secret"),
        "--read-only-token-file".to_owned(),
        write_token(&tokens, "reader", "reader-secret"),
        "--peer-token-file".to_owned(),
        write_token(&tokens, "peer", "peer-secret"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with("roles", 3, 1, &args);

    // A writer appends and writes keys (replicated: the peers linked with
    // their own token), reads, but may not administer.
    let mut writer = client(&cluster, "writer-secret");
    let appended = writer
        .append("default", &[b"by a writer".as_slice()])
        .unwrap();
    writer.put(b"role", b"writer").unwrap();
    let message = forbidden(writer.admin(AdminRequest::Snapshot));
    assert!(message.contains("admin role"), "{message}");
    forbidden(writer.admin(AdminRequest::Remove(3)));
    // Printing the configuration is not administration.
    writer.admin(AdminRequest::Members).unwrap();

    // A read-only client reads and gets, and may not write.
    let mut reader = client(&cluster, "reader-secret");
    let read = reader.read("default", appended.first_index, 1).unwrap();
    assert_eq!(read[0].1, b"by a writer");
    assert_eq!(
        reader.get(b"role", false).unwrap().as_deref(),
        Some(&b"writer"[..])
    );
    let message = forbidden(reader.append("default", &[b"by a reader".as_slice()]));
    assert!(message.contains("read-only"), "{message}");
    forbidden(reader.put(b"role", b"reader"));
    forbidden(reader.admin(AdminRequest::Snapshot));

    // The admin may administer.
    let mut admin = client(&cluster, "admin-secret");
    admin.admin_on("kv", AdminRequest::Snapshot).unwrap();

    // A client's token opens no peer link; a peer's token is no client's.
    let address = &cluster.addresses[0];
    for (token, node_id) in [
        ("writer-secret", 2),
        ("admin-secret", 2),
        ("peer-secret", 0),
    ] {
        assert_eq!(
            hello(address, token, node_id),
            HelloResponse::Refused("wrong cluster id or token".to_owned()),
            "token {token} as node {node_id}"
        );
    }
    assert_eq!(hello(address, "peer-secret", 2), HelloResponse::Ok(1));
    // A refusal is not answered at once (token guessing is slowed).
    let started = std::time::Instant::now();
    assert!(matches!(
        hello(address, "a-guess", 0),
        HelloResponse::Refused(_)
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(rast::constants::HANDSHAKE_REFUSAL_DELAY_MS),
        "refused after {:?}",
        started.elapsed()
    );
    std::fs::remove_dir_all(&tokens).unwrap();
}
