//! The metrics endpoint: a small blocking HTTP(S) server for `GET
//! /metrics`, `/health` and `/ready`, bounded against slow and hostile
//! scrapers (a thread per request, a cap on them, bounded request lines
//! and one deadline per exchange).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Metrics;
use crate::constants::{
    METRICS_CONNECTIONS_MAX, METRICS_REQUEST_BYTES_MAX, METRICS_REQUEST_MS_MAX,
};

/// Serves `GET /metrics`, `/health` and `/ready` on `address` (see
/// `route`); returns once the socket is bound.
///
/// Each request is answered on a thread of its own, at most
/// [`METRICS_CONNECTIONS_MAX`] at once (beyond that a caller gets `503`
/// without being read); a request line longer than
/// [`METRICS_REQUEST_BYTES_MAX`] or slower than [`METRICS_REQUEST_MS_MAX`]
/// is dropped. A slow or hostile scraper cannot hold the endpoint. With
/// `tls` the endpoint speaks HTTPS only (`--metrics-tls`: the node's
/// certificate, and a client certificate when `--client-cert-auth`).
pub fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(address)?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("rast-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if active.fetch_add(1, Ordering::AcqRel) >= METRICS_CONNECTIONS_MAX {
                    active.fetch_sub(1, Ordering::AcqRel);
                    // Under TLS a plain answer would be noise to the
                    // caller: closing says "try again" as well.
                    if tls.is_none() {
                        let _ = respond(&mut stream, "503 Service Unavailable", "busy\n");
                    }
                    continue;
                }
                let (metrics, finished) = (Arc::clone(&metrics), Arc::clone(&active));
                let tls = tls.clone();
                let spawned = std::thread::Builder::new()
                    .name("rast-metrics-request".into())
                    .spawn(move || {
                        answer_over(stream, tls, &metrics);
                        finished.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    Ok(())
}

/// Answers one request on `stream`, through a TLS session when the
/// endpoint has one. The whole exchange, handshake included, shares one
/// deadline of [`METRICS_REQUEST_MS_MAX`].
fn answer_over(
    stream: std::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: &Metrics,
) {
    let deadline = Instant::now() + Duration::from_millis(METRICS_REQUEST_MS_MAX);
    let Ok(socket) = stream.try_clone() else {
        return;
    };
    match tls.map(rustls::ServerConnection::new) {
        None => answer(stream, &socket, deadline, metrics),
        Some(Ok(session)) => {
            let mut stream = rustls::StreamOwned::new(session, stream);
            answer(&mut stream, &socket, deadline, metrics);
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
        Some(Err(error)) => tracing::warn!("metrics: TLS session: {error}"),
    }
}

/// Reads one request line (bounded in bytes and by `deadline`) and
/// answers it. `socket` is the connection under `stream`, for timeouts.
fn answer<S: Read + Write>(
    mut stream: S,
    socket: &std::net::TcpStream,
    deadline: Instant,
    metrics: &Metrics,
) {
    let mut line = Vec::new();
    let mut buffer = [0u8; 512];
    while !line.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || line.len() > METRICS_REQUEST_BYTES_MAX {
            return;
        }
        if socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => line.extend_from_slice(&buffer[..read]),
        }
    }
    let (status, body) = route(&line, metrics);
    let _ = socket.set_write_timeout(Some(Duration::from_millis(METRICS_REQUEST_MS_MAX)));
    let _ = respond(&mut stream, status, &body).and_then(|()| stream.flush());
}

/// The answer to a request line: `/metrics` (the exposition), `/health`
/// (200 while the process serves: a core that panics ends the process, see
/// `fail_stop`), `/ready` (200 once every log has a leader and none has
/// stopped; 503 and the reason otherwise).
pub(super) fn route(line: &[u8], metrics: &Metrics) -> (&'static str, String) {
    let path = line
        .strip_prefix(b"GET ")
        .and_then(|rest| rest.split(|byte| *byte == b' ').next())
        .unwrap_or_default();
    match path {
        b"/metrics" => ("200 OK", metrics.render()),
        b"/health" => ("200 OK", "ok\n".to_owned()),
        b"/ready" => match metrics.ready() {
            Ok(()) => ("200 OK", "ready\n".to_owned()),
            Err(reason) => ("503 Service Unavailable", format!("not ready: {reason}\n")),
        },
        _ => (
            "404 Not Found",
            "try /metrics, /health or /ready\n".to_owned(),
        ),
    }
}

fn respond<S: Write>(stream: &mut S, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
