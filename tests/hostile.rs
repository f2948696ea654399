//! Hostile connections against a real 3-node cluster: what an
//! unauthenticated caller can make a node hold, and for how long, while
//! the cluster keeps committing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Cluster;
use rast::constants::{FRAME_BYTES_MAX, HANDSHAKE_MS_MAX};
use rast::types::LogIndex;

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Waits (until `deadline`) for the node to close `stream`: a read sees
/// the end of the stream or a reset.
fn closed_by_node(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buffer = [0u8; 64];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Appends to log `log` in a loop until `stop`; counts acknowledgements.
fn appender(
    cluster: &Cluster,
    log: &'static str,
) -> (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut client = cluster.client();
    let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&acknowledged));
    let thread = std::thread::spawn(move || {
        while !stop_flag.load(Ordering::Relaxed) {
            if client
                .append(log, &[b"still committing".as_slice()])
                .is_ok()
            {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (stop, acknowledged, thread)
}

/// 1,000 connections that each claim a 16 MiB frame before any handshake:
/// the node closes every one at once, its memory stays under 128 MiB,
/// and the cluster keeps committing meanwhile. (Before the handshake
/// limit, the node sized a receive buffer from each claimed length and
/// waited for the bytes.)
#[test]
fn claimed_frames_before_the_handshake_cost_nothing() {
    let cluster = Cluster::start("hostile-claims", 3, 1);
    cluster.wait_for_leader("default", Duration::from_secs(20));
    let (stop, acknowledged, thread) = appender(&cluster, "default");
    let pid = cluster.pid(0).unwrap();
    // One segment as large as a frame may be (16 MiB), claimed in 8 bytes.
    let words = (FRAME_BYTES_MAX / 8 - 1) as u32;
    let mut claim = Vec::new();
    claim.extend_from_slice(&0u32.to_le_bytes());
    claim.extend_from_slice(&words.to_le_bytes());
    let mut streams = Vec::new();
    for _ in 0..1_000 {
        let mut stream = TcpStream::connect(&cluster.addresses[0]).unwrap();
        stream.write_all(&claim).unwrap();
        streams.push(stream);
    }
    // At once: well before the handshake time is up (which would close
    // them too, but only after holding what they claimed that long).
    let deadline = Instant::now() + Duration::from_millis(HANDSHAKE_MS_MAX / 2);
    let open = streams
        .iter_mut()
        .map(|stream| closed_by_node(stream, deadline))
        .filter(|closed| !closed)
        .count();
    let rss = rss_bytes(pid);
    let before = acknowledged.load(Ordering::Relaxed);
    // Still committing after the attack: another acknowledgement arrives.
    let waited = Instant::now();
    while acknowledged.load(Ordering::Relaxed) == before {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "no append acknowledged after the attack"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    println!(
        "node 1: {} MiB resident after 1,000 claimed 16 MiB frames; {} appends acknowledged",
        rss >> 20,
        acknowledged.load(Ordering::Relaxed)
    );
    assert_eq!(open, 0, "connections the node left open");
    assert!(rss < 128 << 20, "node 1 holds {} MiB", rss >> 20);
}

/// Connections that never send a Hello are closed once the handshake time
/// is up.
#[test]
fn silent_connections_are_closed_after_the_handshake_time() {
    let cluster = Cluster::start("hostile-silent", 3, 1);
    cluster.wait_for_leader("default", Duration::from_secs(20));
    let started = Instant::now();
    let mut streams: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&cluster.addresses[1]).unwrap())
        .collect();
    let deadline = started + Duration::from_millis(HANDSHAKE_MS_MAX) + Duration::from_secs(10);
    for stream in &mut streams {
        assert!(
            closed_by_node(stream, deadline),
            "a silent connection still open {:?} after it was made",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(HANDSHAKE_MS_MAX),
        "closed before the handshake time was up"
    );
    // A well-behaved client still gets in.
    assert!(cluster.status(1, "default").is_some());
}

/// Bytes of every file under `dir`.
fn tree_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        total += if metadata.is_dir() {
            tree_bytes(&entry.path())
        } else {
            metadata.len()
        };
    }
    total
}

/// 10,000 status and read calls with random log names (over every node)
/// are refused with a clear error and create no log: the data directory
/// does not grow. (Any request used to create the log it named, a 64 MiB
/// segment each.)
#[test]
fn requests_for_unknown_logs_create_nothing() {
    let cluster = Cluster::start("hostile-names", 3, 1);
    cluster.wait_for_leader("default", Duration::from_secs(20));
    let before = tree_bytes(&cluster.data);
    let mut client = cluster.client();
    let mut random = rast::random::Random::new(7);
    let started = Instant::now();
    for call in 0..10_000 {
        let name = format!("junk{:016x}", random.next_u64());
        let error = if call % 2 == 0 {
            let address = &cluster.addresses[call % 3];
            client
                .status_of(address, &name)
                .expect_err("a status of a log never written")
        } else {
            client
                .read(&name, LogIndex(1), 0)
                .expect_err("a read of a log never written")
        };
        assert!(
            error.to_string().contains("no log named"),
            "unclear refusal: {error}"
        );
    }
    let after = tree_bytes(&cluster.data);
    println!(
        "data directory: {before} bytes before, {after} after 10,000 status and read calls ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        after <= before + (1 << 20),
        "the data directory grew from {before} to {after} bytes"
    );
}

/// A scraper that sends its request a byte at a time, never finishing it,
/// does not hold the metrics endpoint: another scrape is answered while it
/// is still sending. (The endpoint once served one connection at a time,
/// reading the request line without a bound.)
#[test]
fn a_slow_scraper_does_not_block_the_metrics_endpoint() {
    let cluster = Cluster::start("hostile-metrics", 3, 1);
    cluster.wait_for_leader("default", Duration::from_secs(20));
    let address = cluster.metrics[0].clone();
    let sending = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let (still_sending, stop_sending) = (Arc::clone(&sending), Arc::clone(&stop));
    let (started, has_started) = std::sync::mpsc::channel();
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        for byte in 0..40 {
            if stop_sending.load(Ordering::Relaxed) || stream.write_all(b"G").is_err() {
                break;
            }
            if byte == 0 {
                started.send(()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        still_sending.store(false, Ordering::Relaxed);
    });
    // The slow scraper is connected and has begun its request.
    has_started.recv().unwrap();
    let value = cluster.metric(0, "rast_is_leader");
    let answered_while_sending = sending.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    slow.join().unwrap();
    assert!(value.is_some(), "no answer from the metrics endpoint");
    assert!(
        answered_while_sending,
        "the second scrape was answered only after the slow one gave up"
    );
}

/// One address cannot take every connection of a core: connections from
/// one address beyond `CONNECTIONS_PER_ADDRESS_MAX` are closed at once
/// (checked well inside the handshake time, which closes silent ones
/// later anyway); the node serves again once they are gone.
#[test]
fn one_address_cannot_take_every_connection() {
    use rast::constants::CONNECTIONS_PER_ADDRESS_MAX;
    let cluster = Cluster::start("hostile-address", 3, 1);
    cluster.wait_for_leader("default", Duration::from_secs(20));
    let over = 64;
    let started = Instant::now();
    let mut streams: Vec<TcpStream> = (0..CONNECTIONS_PER_ADDRESS_MAX + over)
        .map(|_| TcpStream::connect(&cluster.addresses[0]).expect("connect"))
        .collect();
    // Let the node accept (and close) them all, then look once, well
    // before the handshake time.
    std::thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for stream in &mut streams {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        // Open: nothing to read yet. Closed: the end, or a reset.
        let open = matches!(stream.read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock);
        if !open {
            closed += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(HANDSHAKE_MS_MAX / 2),
        "too slow to tell the limit from the handshake time"
    );
    // The cluster's own links come from this address too: at least the
    // excess is closed, and no more than the excess plus those few.
    assert!(
        (over..=over + 8).contains(&closed),
        "{closed} of {} connections closed at once",
        streams.len()
    );
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.status(0, "default").is_none() {
        assert!(Instant::now() < deadline, "node 1 does not serve again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client connection that sends nothing for the idle time is closed; one
/// that follows a log is not, however quiet the log.
#[test]
fn idle_clients_are_closed_and_tails_are_not() {
    use rast::client::{ClientOptions, Connection};
    use rast::wire::client::{self as protocol, Hello, HelloResponse, RequestBody};
    let cluster = Cluster::start_with("hostile-idle", 3, 1, &["--client-idle-secs", "1"]);
    cluster.wait_for_leader("default", Duration::from_secs(20));
    let first = cluster
        .client()
        .append("default", &[b"before".as_slice()])
        .unwrap()
        .first_index;
    // A tail, silent from now on.
    let mut tail = Connection::open(&cluster.addresses[0], &ClientOptions::default()).unwrap();
    let body = RequestBody::Tail {
        from_index: first.get(),
        max_entries: 0,
    };
    tail.send("default", body, None).unwrap();
    tail.flush().unwrap();
    tail.receive().unwrap(); // the entry already there
    // A client that completes its handshake and then says nothing.
    let mut idle = TcpStream::connect(&cluster.addresses[0]).unwrap();
    let hello = protocol::encode_hello(&Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        cluster_id: "rast".into(),
        node_id: 0,
        token: Vec::new(),
        core: 0,
        cores: 0,
    });
    idle.write_all(&hello).unwrap();
    let mut answer = vec![0u8; 256];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let read = idle.read(&mut answer).unwrap();
    let welcome = protocol::decode_hello_response(&answer[..read]).unwrap();
    assert!(matches!(welcome, HelloResponse::Ok(_)), "{welcome:?}");
    let opened = Instant::now();
    assert!(
        closed_by_node(&mut idle, opened + Duration::from_secs(10)),
        "the idle client was never closed"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed before its idle time: {:?}",
        opened.elapsed()
    );
    // The tail, silent longer still, follows the log.
    let later = cluster
        .client()
        .append("default", &[b"after".as_slice()])
        .unwrap()
        .first_index;
    tail.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (_, batches) = tail.receive().expect("the tail still delivers");
    let view = rast::wire::BatchView::parse(&batches[0]).unwrap();
    assert_eq!(view.first_index(), later);
}
