//! `rast-lazyfs`: a FUSE filesystem that forgets what was not synced, for
//! power-loss tests of the log store and of real `rast serve` processes.
//!
//! ```text
//! rast-lazyfs --backing <dir> --mount <dir>      (root; /dev/fuse)
//! ```
//!
//! Every byte written stays in memory until the file is `fsync`ed or
//! `fdatasync`ed; every create, rename, link and unlink stays pending until
//! its directory is synced (`model.rs` states the rules). Synced bytes live
//! in `<backing>`, one file per inode.
//!
//! It is driven by lines on stdin and answers one line on stdout each:
//!
//! ```text
//! → (at start)                       ← ready
//! off                                ← ok dropped_bytes=N lost_inodes=N torn=none
//! off tear=512|4096 seed=N           ← ok … torn=<ino>:<offset>:<kept>/<len>
//! on                                 ← ok
//! cut [tear=… seed=…]                (off, then on) ← ok …
//! stats                              ← ok pending_bytes=N inodes=N
//! eio <path> <offset> <len>          ← ok  (reads of those bytes fail with
//!                                    EIO until written over; path relative
//!                                    to the mount)
//! quit, or stdin closed              (unmounts and exits)
//! ```
//!
//! `off` loses power: everything pending is dropped (with `tear`, a
//! sector-aligned prefix of the last pending write kept) and every request
//! on the mount fails from then on, so a program still running on it can
//! make nothing more durable; kill it, then `on` mounts the surviving
//! state afresh on the same directory (`mount.rs`).

mod fuse;
mod model;
mod mount;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;

use crate::model::{Model, Tear};
use crate::mount::Mounted;

/// A FUSE filesystem that keeps unsynced writes in memory and drops them
/// on command (a simulated power cut).
#[derive(Debug, Parser)]
#[command(name = "rast-lazyfs", version)]
struct Args {
    /// Directory for the synced bytes (created; must be empty).
    #[arg(long)]
    backing: PathBuf,
    /// Directory to mount on (created if missing).
    #[arg(long)]
    mount: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rast-lazyfs: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.backing)
        .map_err(|error| format!("{}: {error}", args.backing.display()))?;
    let not_empty = std::fs::read_dir(&args.backing)
        .map_err(|error| format!("{}: {error}", args.backing.display()))?
        .next()
        .is_some();
    if not_empty {
        return Err(format!("{} is not empty", args.backing.display()));
    }
    std::fs::create_dir_all(&args.mount)
        .map_err(|error| format!("{}: {error}", args.mount.display()))?;
    let model = Arc::new(Mutex::new(Model::new(args.backing.clone())));
    let mut mounted =
        Mounted::new(&args.mount, Arc::clone(&model)).map_err(|error| error.to_string())?;
    let mut stdout = std::io::stdout().lock();
    let mut say = |line: String| {
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    };
    say("ready".to_string());
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [command @ ("off" | "cut"), options @ ..] => match parse_tear(options) {
                Ok(tear) => {
                    let report = mounted.power_off(tear);
                    let on = if *command == "cut" {
                        mounted.power_on()
                    } else {
                        Ok(())
                    };
                    match on {
                        Ok(()) => say(format!(
                            "ok dropped_bytes={} lost_inodes={} torn={}",
                            report.dropped_bytes,
                            report.lost_inodes,
                            report
                                .torn
                                .map_or("none".to_string(), |(ino, offset, kept, len)| {
                                    format!("{ino}:{offset}:{kept}/{len}")
                                })
                        )),
                        Err(error) => say(format!("error {error}")),
                    }
                }
                Err(error) => say(format!("error {error}")),
            },
            ["on"] => match mounted.power_on() {
                Ok(()) => say("ok".to_string()),
                Err(error) => say(format!("error {error}")),
            },
            ["stats"] => {
                let model = model
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                say(format!(
                    "ok pending_bytes={} inodes={}",
                    model.pending_bytes(),
                    model.inodes()
                ));
            }
            ["eio", path, offset, len] => {
                let range = offset
                    .parse::<u64>()
                    .and_then(|offset| len.parse::<u64>().map(|len| (offset, len)));
                match range {
                    Ok((offset, len)) => {
                        match mounted.make_unreadable(std::path::Path::new(path), offset, len) {
                            Ok(()) => say("ok".to_string()),
                            Err(error) => say(format!("error {path}: {error}")),
                        }
                    }
                    Err(error) => say(format!("error bad offset or length: {error}")),
                }
            }
            ["quit"] => break,
            [] => {}
            _ => say(format!("error unknown command: {line}")),
        }
    }
    drop(mounted);
    Ok(())
}

/// `tear=512|4096 seed=N` (both or neither).
fn parse_tear(options: &[&str]) -> Result<Option<Tear>, String> {
    let mut sector = None;
    let mut seed = 0u64;
    for option in options {
        match option.split_once('=') {
            Some(("tear", "512")) => sector = Some(512),
            Some(("tear", "4096")) => sector = Some(4096),
            Some(("seed", value)) => {
                seed = value.parse().map_err(|_| format!("bad seed: {value}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown cut option: {option} (tear=512|4096 seed=N)"
                ));
            }
        }
    }
    Ok(sector.map(|sector| Tear { sector, seed }))
}
