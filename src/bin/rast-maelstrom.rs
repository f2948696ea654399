//! `rast-maelstrom`: a Rast node for Jepsen's Maelstrom (workload `lin-kv`).
//!
//! Maelstrom starts it without arguments and speaks JSON lines on
//! stdin/stdout; logs go to stderr (`RAST_LOG`, as for `rast`; default `warn`). One thread
//! reads stdin into a channel; the main loop waits on it with a timeout so
//! the node ticks every `MAELSTROM_TICK_MS` even when no message arrives.
//!
//! `RAST_MAELSTROM_SEED` fixes the seed of the election timers (default:
//! the clock and the process id).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::RecvTimeoutError;
use rast::constants::MAELSTROM_TICK_MS;
use rast::maelstrom::{Node, Now};

/// Lines read ahead of the node; the reader blocks beyond this.
const STDIN_LINES_QUEUED_MAX: usize = 4096;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let (sender, receiver) = crossbeam_channel::bounded::<String>(STDIN_LINES_QUEUED_MAX);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let now = || Now {
        monotonic_ms: started.elapsed().as_millis() as u64,
        wall_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64),
    };
    let mut node = Node::new(seed());
    let tick = Duration::from_millis(MAELSTROM_TICK_MS);
    let mut next_tick = started + tick;
    let stdout = std::io::stdout();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(wait) {
            Ok(line) => {
                node.handle_line(&line, now());
                // Take whatever else is already queued before writing.
                while let Ok(line) = receiver.try_recv() {
                    node.handle_line(&line, now());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            node.tick(now());
            next_tick = (next_tick + tick).max(Instant::now());
        }
        let lines = node.take_output();
        if !lines.is_empty() {
            let mut out = stdout.lock();
            for line in lines {
                if writeln!(out, "{line}").is_err() {
                    return;
                }
            }
            if out.flush().is_err() {
                return;
            }
        }
    }
}

fn seed() -> u64 {
    if let Some(seed) = std::env::var("RAST_MAELSTROM_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
    {
        return seed;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
