//! Mounting and unmounting, done here with `mount(2)` (root only) rather
//! than through `fusermount`, so nothing beyond `/dev/fuse` is needed.
//!
//! A power cut has two halves. *Off*: the model drops what was not synced
//! and starts a new power epoch; the mount stays, but every request of the
//! old epoch now fails with `EIO`, so a program still running on it (as a
//! machine keeps running for an instant) can neither make anything durable
//! nor write anywhere else. *On*: abort its FUSE connection, detach the
//! mount (`umount2(MNT_DETACH)`), and mount afresh on the same directory. The
//! fresh mount starts with an empty kernel page cache and dentry cache:
//! nothing cached from before the cut can be read after it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, Session, SessionACL};
use nix::mount::{MntFlags, MsFlags};

use crate::fuse::LazyFs;
use crate::model::Model;

/// Where the kernel lists live FUSE connections (the `fusectl` filesystem).
const FUSE_CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// The lazy filesystem mounted on a directory.
pub struct Mounted {
    mountpoint: PathBuf,
    model: Arc<Mutex<Model>>,
    session: Option<BackgroundSession>,
    /// The mount's FUSE connection (its device minor), read when it is
    /// mounted: after a power off its own requests fail, a `stat` too.
    connection: Option<u64>,
}

impl Mounted {
    /// Mounts `model` on `mountpoint`.
    pub fn new(mountpoint: &Path, model: Arc<Mutex<Model>>) -> io::Result<Mounted> {
        let mut mounted = Mounted {
            mountpoint: mountpoint.to_path_buf(),
            model,
            session: None,
            connection: None,
        };
        mounted.mount()?;
        Ok(mounted)
    }

    fn mount(&mut self) -> io::Result<()> {
        let device: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|error| io::Error::new(error.kind(), format!("/dev/fuse: {error}")))?
            .into();
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            device.as_raw_fd()
        );
        nix::mount::mount(
            Some("rast-lazyfs"),
            &self.mountpoint,
            Some("fuse.rast-lazyfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|errno| {
            io::Error::other(format!(
                "mounting FUSE on {} (needs root): {errno}",
                self.mountpoint.display()
            ))
        })?;
        let session = Session::from_fd(
            LazyFs::new(Arc::clone(&self.model)),
            device,
            SessionACL::All,
            Config::default(),
        )?;
        self.session = Some(session.spawn()?);
        self.connection = std::fs::metadata(&self.mountpoint)
            .ok()
            .map(|metadata| nix::sys::stat::minor(metadata.dev()));
        Ok(())
    }

    /// Detaches the mount and aborts its connection. Errors are reported,
    /// not fatal: the mount may already be gone.
    fn unmount(&mut self) -> io::Result<()> {
        // Abort first, while the mount still holds its connection: once
        // detached, the connection's number can be freed and taken by
        // another mount (another test's, a moment later), whose
        // connection would then be the one aborted.
        if let Some(connection) = self.connection.take() {
            abort_connection(connection);
        }
        let detached =
            nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH).map_err(|errno| {
                io::Error::other(format!("unmounting {}: {errno}", self.mountpoint.display()))
            });
        // The session's loop ends once the connection is gone; it is not
        // waited for (were it to linger, it serves nothing: its epoch is
        // over).
        drop(self.session.take());
        detached
    }

    /// Power off: see the module's documentation.
    pub fn power_off(&mut self, tear: Option<crate::model::Tear>) -> crate::model::CutReport {
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .power_cut(tear)
    }

    /// Makes a range of a file unreadable (`Model::make_unreadable`) and
    /// drops the kernel's cached pages of the file, so the next read of it
    /// reaches the model.
    pub fn make_unreadable(&mut self, path: &Path, offset: u64, len: u64) -> io::Result<()> {
        let ino = self
            .model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .make_unreadable(path, offset, len)
            .map_err(io::Error::from_raw_os_error)?;
        // Not under the model's lock: invalidating waits for pages that
        // requests being served (which take it) hold.
        if let Some(session) = &self.session {
            session.notifier().inval_inode(fuser::INodeNo(ino), 0, 0)?;
        }
        Ok(())
    }

    /// Power on: see the module's documentation.
    pub fn power_on(&mut self) -> io::Result<()> {
        self.unmount()?;
        self.mount()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// Aborts FUSE connection `id` through fusectl (mounting fusectl first if
/// it is not); a best effort.
fn abort_connection(id: u64) {
    let abort = Path::new(FUSE_CONNECTIONS)
        .join(id.to_string())
        .join("abort");
    if !Path::new(FUSE_CONNECTIONS).join(id.to_string()).exists() {
        let _ = nix::mount::mount(
            Some("fusectl"),
            FUSE_CONNECTIONS,
            Some("fusectl"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    let _ = std::fs::write(abort, "1");
}
