//! A lazy (power-loss) filesystem mounted for a test, or `None` where the
//! test cannot mount one (not root, no `/dev/fuse`): the caller says
//! SKIPPED. As root with `/dev/fuse`, a failure to mount fails the test.

use std::path::PathBuf;

use rast::nemesis::lazyfs::LazyMount;

/// A scratch directory of this test process: `<tmp>/rast-<name>-<pid>`.
pub fn scratch(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("rast-{name}-{}", std::process::id()));
    let _ = nix::mount::umount2(&path.join("mount"), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// Mounts a lazy filesystem at `<scratch>/mount`, its synced bytes in
/// `<scratch>/backing`.
pub fn mount(name: &str) -> Option<(LazyMount, PathBuf)> {
    let root = nix::unistd::geteuid().is_root();
    if !root || !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED {name}: the lazy filesystem needs root and /dev/fuse");
        return None;
    }
    let dir = scratch(name);
    let mount = LazyMount::start(
        env!("CARGO_BIN_EXE_rast-lazyfs").as_ref(),
        &dir.join("backing"),
        &dir.join("mount"),
    )
    .unwrap_or_else(|error| panic!("mounting the lazy filesystem: {error}"));
    Some((mount, dir))
}
