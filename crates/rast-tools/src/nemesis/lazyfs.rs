//! A driver for `rast-lazyfs` (the power-loss filesystem, `src/bin/rast-lazyfs`):
//! mounts one, cuts its power, unmounts it. Used by the `power` scenario and
//! by the store's power-loss tests.
//!
//! ```text
//!  LazyMount::start ── spawn rast-lazyfs --backing B --mount M ── "ready"
//!  power_off(tear)  ── "off tear=4096 seed=N" ──────────────────── "ok …"
//!  power_on         ── "on" ───────────────────────────────────── "ok"
//!  cut(tear)        ── "cut tear=4096 seed=N" (off, then on) ───── "ok …"
//!  make_unreadable  ── "eio PATH OFFSET LEN" ─────────────────────── "ok"
//!  drop             ── "quit" (it unmounts), then a lazy unmount in case
//! ```
//!
//! Between off and on every request on the mount fails: a program still
//! running there makes nothing more durable. Kill it before power on (its
//! open files belong to the mount that is then detached).

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `rast-lazyfs` may take to exit after `quit`.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// How a cut tears the last pending write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tear {
    /// 512 or 4096: the prefix kept ends on such a boundary.
    pub sector: u64,
    /// Picks which boundary.
    pub seed: u64,
}

impl Tear {
    /// No tear a third of the time, else a tear at 512 B or at 4 KiB.
    pub fn draw(random: &mut crate::random::Random) -> Option<Tear> {
        let sector = match random.below(3) {
            0 => return None,
            1 => 512,
            _ => 4096,
        };
        Some(Tear {
            sector,
            seed: random.next_u64(),
        })
    }
}

/// A mounted lazy filesystem.
#[derive(Debug)]
pub struct LazyMount {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    mountpoint: PathBuf,
}

impl LazyMount {
    /// Mounts a fresh lazy filesystem on `mountpoint`, its synced bytes in
    /// `backing` (both created; `backing` must be empty), with the
    /// `rast-lazyfs` program at `binary`.
    pub fn start(binary: &Path, backing: &Path, mountpoint: &Path) -> io::Result<LazyMount> {
        let mut command = Command::new(binary);
        command
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // Its mount must not outlive the thread that drives it.
        crate::io::process::kill_with_parent(&mut command);
        let mut child = command.spawn().map_err(|error| {
            io::Error::new(error.kind(), format!("{}: {error}", binary.display()))
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut mount = LazyMount {
            child,
            stdin,
            stdout,
            mountpoint: mountpoint.to_path_buf(),
        };
        let line = mount.answer()?;
        if line != "ready" {
            return Err(io::Error::other(format!(
                "rast-lazyfs did not start: {line}"
            )));
        }
        Ok(mount)
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn answer(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            return Err(io::Error::other(format!(
                "rast-lazyfs exited ({status}); see its stderr"
            )));
        }
        Ok(line.trim_end().to_string())
    }

    fn command(&mut self, command: &str) -> io::Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let line = self.answer()?;
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(io::Error::other(format!("rast-lazyfs {command}: {line}"))),
        }
    }

    /// Cuts the power and brings it back: [`Self::power_off`], then
    /// [`Self::power_on`].
    pub fn cut(&mut self, tear: Option<Tear>) -> io::Result<String> {
        self.command(&with_tear("cut", tear))
    }

    /// Cuts the power: everything not synced is lost (with `tear`, a
    /// sector-aligned prefix of the last pending write survives), and
    /// every request on the mount fails until [`Self::power_on`]. Returns
    /// the filesystem's report (`dropped_bytes=… lost_inodes=… torn=…`).
    pub fn power_off(&mut self, tear: Option<Tear>) -> io::Result<String> {
        self.command(&with_tear("off", tear))
    }

    /// Mounts what survived the power cut afresh.
    pub fn power_on(&mut self) -> io::Result<()> {
        self.command("on").map(drop)
    }

    /// Makes `len` bytes of the file at `path` (relative to the mount) from
    /// `offset` unreadable: reads touching them fail with `EIO` until they
    /// are written over, as a latent sector error does.
    pub fn make_unreadable(&mut self, path: &Path, offset: u64, len: u64) -> io::Result<()> {
        self.command(&format!("eio {} {offset} {len}", path.display()))
            .map(drop)
    }

    /// Bytes pending and inodes alive (`pending_bytes=… inodes=…`).
    pub fn stats(&mut self) -> io::Result<String> {
        self.command("stats")
    }
}

fn with_tear(command: &str, tear: Option<Tear>) -> String {
    match tear {
        Some(tear) => format!("{command} tear={} seed={}", tear.sector, tear.seed),
        None => command.to_string(),
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + QUIT_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A mount left behind by a killed rast-lazyfs answers ENOTCONN.
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
    }
}
