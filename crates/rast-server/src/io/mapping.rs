//! Read-only memory maps of log files, and what a page of one that does
//! not read becomes.
//!
//! A mapped page whose blocks the disk cannot read (a latent sector
//! error: EIO) cannot be paged in, and the access raises `SIGBUS`, whose
//! default action ends the process — every log of the node for one bad
//! block. So every map registers its address range in a fixed table, and
//! one process-wide `SIGBUS` handler, for a fault inside a registered map,
//! maps a page of zeros over the faulting page (the access then completes)
//! and *poisons* the map with the faulting offset:
//!
//! ```text
//!  read of a mapped record ─► page fault ─► EIO ─► SIGBUS ─► handler:
//!    address in a registered map?  yes: zero page over it (mmap MAP_FIXED),
//!                                       map poisoned at that offset
//!                                  no:  default action (the process ends)
//!  the store, after verifying what it read ─► map poisoned? ─► Unreadable
//!    (damage of the records there: the log is reopened, recovery reads
//!    with pread, cuts at the block, and the leader repairs it)
//! ```
//!
//! The zeros never pass for data: the store checks the poison after every
//! read it verifies, and the map is dropped with the store. At most
//! [`MAPS_MAX`] maps are registered at once; one beyond that keeps the
//! default action (logged once).

use std::fs::File;
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::libc;

/// Maps registered with the `SIGBUS` handler at once.
pub const MAPS_MAX: usize = 4096;

/// A registered map: its address range, and where it was first poisoned
/// (0: not poisoned).
struct Registered {
    start: AtomicUsize,
    end: AtomicUsize,
    poisoned_at: AtomicUsize,
}

static MAPS: [Registered; MAPS_MAX] = [const {
    Registered {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        poisoned_at: AtomicUsize::new(0),
    }
}; MAPS_MAX];

static PAGE_BYTES: AtomicUsize = AtomicUsize::new(4096);
static INSTALLED: Once = Once::new();
static FULL_LOGGED: AtomicBool = AtomicBool::new(false);

/// The `SIGBUS` handler (see the module docs). Async-signal-safe: atomics
/// and raw `mmap`/`signal` calls only.
extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: an SA_SIGINFO handler receives a valid siginfo.
    let address = unsafe { (*info).si_addr() } as usize;
    let page = PAGE_BYTES.load(Ordering::Relaxed);
    for map in &MAPS {
        let start = map.start.load(Ordering::Acquire);
        if start == 0 || address < start || address >= map.end.load(Ordering::Acquire) {
            continue;
        }
        let at = address & !(page - 1);
        // SAFETY: `at` is a page inside a live read-only map of ours; a
        // private anonymous page replaces it (zeros), and the map's owner
        // unmaps the whole range, this page included, when it drops it.
        let zero = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zero != libc::MAP_FAILED {
            let _ =
                map.poisoned_at
                    .compare_exchange(0, address, Ordering::AcqRel, Ordering::Acquire);
            return;
        }
        break;
    }
    // Not a map of ours (or its page could not be replaced): the default
    // action, when the access runs again.
    // SAFETY: resetting a signal's disposition is async-signal-safe.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
    }
}

/// Installs the handler, once per process.
fn install() {
    INSTALLED.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page)
            && page.is_power_of_two()
        {
            PAGE_BYTES.store(page, Ordering::Relaxed);
        }
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigAction(on_sigbus),
            nix::sys::signal::SaFlags::SA_SIGINFO,
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler is async-signal-safe (see `on_sigbus`).
        let installed =
            unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGBUS, &action) };
        if let Err(errno) = installed {
            tracing::warn!(%errno, "installing the SIGBUS handler failed: an unreadable mapped page ends the process");
        }
    });
}

/// Registers `start..start + len` with the handler; the slot, or `None`
/// when the table is full.
fn register(start: usize, len: usize) -> Option<usize> {
    install();
    for (slot, map) in MAPS.iter().enumerate() {
        if map
            .start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            map.poisoned_at.store(0, Ordering::Release);
            map.end.store(start + len, Ordering::Release);
            return Some(slot);
        }
    }
    if !FULL_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            maps = MAPS_MAX,
            "more log files mapped than the SIGBUS table holds: an unreadable page in the others ends the process"
        );
    }
    None
}

/// A read-only map of the first `len` bytes of a file.
///
/// The owner promises (see [`Mapping::new`]) not to shrink the file below
/// the mapped length while the map lives, so no access faults unless the
/// disk fails to read (see the module docs); bytes still being written
/// may be read only once their write has completed.
#[derive(Debug)]
pub struct Mapping {
    map: Option<memmap2::Mmap>,
    /// Its slot in the `SIGBUS` handler's table (see the module docs).
    slot: Option<usize>,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` (nothing when `len` is zero).
    ///
    /// The file must stay at least `len` bytes long while the map lives
    /// (the log never shrinks a file: it punches holes, keeping the size),
    /// and no other process may write it (the log directory is locked).
    /// Bytes the kernel is writing concurrently must not be read until their
    /// write completes — the log only reads below its written mark.
    pub fn new(file: &File, len: u64) -> io::Result<Self> {
        if len == 0 {
            return Ok(Self {
                map: None,
                slot: None,
            });
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        // SAFETY: the map is read-only and private to this process's log;
        // the caller keeps the file at least `len` bytes long (no SIGBUS
        // from a short file) and reads only bytes whose writes completed (no
        // torn observation that Rust's aliasing rules could mind: those
        // bytes never change while borrowed, because the log only appends
        // past them). A page that does not read was never observed: the
        // handler gives its first access zeros, and the store refuses what
        // it read through a poisoned map.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        let slot = register(map.as_ptr() as usize, len);
        Ok(Self {
            map: Some(map),
            slot,
        })
    }

    /// The offset of the first access to a page that did not read (EIO),
    /// if there was one: from then on the map holds zeros there, and what
    /// was read through it cannot be trusted (see the module docs).
    pub fn poisoned(&self) -> Option<u64> {
        let map = &MAPS[self.slot?];
        let at = map.poisoned_at.load(Ordering::Acquire);
        (at != 0).then(|| (at - map.start.load(Ordering::Acquire)) as u64)
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Drops this process's page-table entries for the mapped pages. The
    /// pages stay in the page cache, so the process's resident memory no
    /// longer counts them and the next access maps them back from the
    /// cache (a minor fault, no disk read while the cache holds them).
    pub fn release_resident(&self) {
        if let Some(map) = &self.map {
            // SAFETY: the map is shared and read-only (`MmapOptions::map`),
            // so MADV_DONTNEED only unmaps pages: the next access reads the
            // same file bytes back (for a private map it would zero them,
            // which this map never is). Bytes borrowed from the map keep
            // their value; the log never rewrites bytes it has handed out.
            // Advice only: a failure leaves the pages resident.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Tells the kernel the mapped pages will be read in order once
    /// (recovery scans), so it reads ahead and drops them early.
    pub fn advise_sequential(&self) {
        if let Some(map) = &self.map {
            // Advice only: failure changes nothing but speed.
            let _ = map.advise(memmap2::Advice::Sequential);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            // Out of the table before the map goes (the fields drop after
            // this): the handler never takes a page of someone else's.
            let map = &MAPS[slot];
            map.end.store(0, Ordering::Release);
            map.poisoned_at.store(0, Ordering::Release);
            map.start.store(0, Ordering::Release);
        }
    }
}
