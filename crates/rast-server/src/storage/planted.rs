//! Durability bugs that a test can plant in the store, so the power-loss
//! tests can be shown to catch each one (as `crate::raft::PlantedBug` does
//! for the Raft core and the simulator).
//!
//! A bug is chosen at run time by the environment variable
//! [`VARIABLE`] (its [`StorageBug::name`]), so a child process (a test's
//! appender, a `rast serve` node) carries it too. Only builds with the
//! `planted-bugs` feature read the variable; in every other build
//! [`is_planted`] is a constant `false` and the bugs compile away.

/// The environment variable naming the planted bug.
pub const VARIABLE: &str = "RAST_PLANTED_STORAGE_BUG";

/// A durability rule of the store, broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageBug {
    /// Every log `fdatasync` is a no-op.
    NoFdatasync,
    /// The directory fsync after the hard state's rename is skipped.
    NoHardStateDirectorySync,
    /// A new segment is named and written without its directory fsync.
    NoNewSegmentDirectorySync,
    /// Synced entries are reported durable without the durable mark
    /// (`storage::durable_mark`) written first: damage at rest at the end
    /// of the log then reads as a power cut's torn tail.
    NoDurableMark,
}

impl StorageBug {
    /// Every bug.
    pub const ALL: [StorageBug; 4] = [
        StorageBug::NoFdatasync,
        StorageBug::NoHardStateDirectorySync,
        StorageBug::NoNewSegmentDirectorySync,
        StorageBug::NoDurableMark,
    ];

    /// Whether a power cut shows the bug (the others need damage at rest).
    pub fn lost_by_power_cuts(self) -> bool {
        self != StorageBug::NoDurableMark
    }

    /// The value of [`VARIABLE`] that plants it.
    pub fn name(self) -> &'static str {
        match self {
            StorageBug::NoFdatasync => "no-fdatasync",
            StorageBug::NoHardStateDirectorySync => "no-hard-state-directory-sync",
            StorageBug::NoNewSegmentDirectorySync => "no-new-segment-directory-sync",
            StorageBug::NoDurableMark => "no-durable-mark",
        }
    }
}

/// Whether `bug` is planted in this process.
#[cfg(feature = "planted-bugs")]
pub fn is_planted(bug: StorageBug) -> bool {
    static PLANTED: std::sync::OnceLock<Option<StorageBug>> = std::sync::OnceLock::new();
    *PLANTED.get_or_init(|| {
        let name = std::env::var(VARIABLE).ok()?;
        let bug = StorageBug::ALL.into_iter().find(|bug| bug.name() == name);
        assert!(
            bug.is_some(),
            "{VARIABLE}={name}: no such planted storage bug"
        );
        bug
    }) == Some(bug)
}

/// Whether `bug` is planted in this process: never, in this build.
#[cfg(not(feature = "planted-bugs"))]
pub fn is_planted(_bug: StorageBug) -> bool {
    false
}
