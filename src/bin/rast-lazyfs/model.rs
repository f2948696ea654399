//! What a power cut keeps and what it drops: the lazy filesystem's state,
//! with no FUSE in it (the FUSE layer in `fuse.rs` only translates).
//!
//! Every inode has two versions, the one programs see and the one that
//! survives a power cut:
//!
//! ```text
//!             seen by programs                 survives a cut
//!  file   len, pending extents over ──────►  durable_len bytes of its
//!         the backing bytes below `valid`     backing file  <backing>/<ino>
//!  dir    entries                    ──────►  durable_entries
//! ```
//!
//! The rules are the strict POSIX model, stricter than ext4:
//! * a write, a truncation, a hole punch or a size change is *pending* until
//!   `fsync`/`fdatasync` of that file; the sync applies all of them to the
//!   backing file at once;
//! * a create, mkdir, unlink, rmdir, link or rename is pending until
//!   `fsync` of the directory it changed (a rename across directories needs
//!   both);
//! * a power cut keeps, from the root, the durable entries of the durable
//!   entries, and in each surviving file its durable bytes; everything else
//!   is gone. A file whose data was synced but whose name was not is gone.
//! * optionally the cut *tears* the last pending write: a prefix of it, up
//!   to a 512-byte or 4 KiB boundary, reaches the disk, as a sector-atomic
//!   disk writing the first sectors of a request would.
//!
//! Errors are errno values, as FUSE returns them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::SystemTime;

use nix::libc;
pub use rast::nemesis::lazyfs::Tear;

/// An errno value.
pub type Errno = i32;
/// A result whose error is an errno value.
pub type Result<T> = std::result::Result<T, Errno>;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// Bytes zeroed per write when a hole is applied to a backing file.
const ZEROS_CHUNK: usize = 64 * 1024;

/// A regular file or a directory (nothing else can be created).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What `stat` shows of an inode.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Current size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Current hard links.
    pub nlink: u32,
    /// Last change of contents.
    pub mtime: SystemTime,
}

/// What a power cut did.
#[derive(Clone, Debug, Default)]
pub struct CutReport {
    /// Pending bytes (written, not synced) dropped.
    pub dropped_bytes: u64,
    /// Inodes that did not survive (no durable name).
    pub lost_inodes: u64,
    /// The torn write, if any: (inode, offset, bytes kept, bytes written).
    pub torn: Option<(u64, u64, u64, u64)>,
}

/// A pending change to a range of a file.
#[derive(Clone, Debug)]
enum Extent {
    Data(Vec<u8>),
    Zeros(u64),
}

impl Extent {
    fn len(&self) -> u64 {
        match self {
            Extent::Data(bytes) => bytes.len() as u64,
            Extent::Zeros(len) => *len,
        }
    }

    /// The part `[from, to)` of this extent (offsets relative to its start).
    fn slice(&self, from: u64, to: u64) -> Extent {
        match self {
            Extent::Data(bytes) => Extent::Data(bytes[from as usize..to as usize].to_vec()),
            Extent::Zeros(_) => Extent::Zeros(to - from),
        }
    }
}

/// One inode.
#[derive(Debug)]
struct Node {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
    /// Current names (links) of this inode.
    nlink: u32,
    /// Durable names of this inode (entries in synced directories).
    durable_links: u32,
    /// References the kernel holds (lookups not yet forgotten).
    lookups: u64,
    // Files:
    len: u64,
    durable_len: u64,
    /// Backing bytes at or past `valid` were cut by a pending truncation:
    /// they read as zeros. Invariant: `valid <= min(len, durable_len)`.
    valid: u64,
    /// Pending writes and holes, by offset, never overlapping.
    pending: BTreeMap<u64, Extent>,
    backing: Option<File>,
    // Directories:
    entries: BTreeMap<OsString, u64>,
    durable_entries: BTreeMap<OsString, u64>,
    /// Latent sector errors: ranges `[start, end)` whose reads fail with
    /// `EIO` until they are written over (as a disk remaps a sector on
    /// write). They are on the disk, so a power cut keeps them.
    unreadable: Vec<(u64, u64)>,
}

impl Node {
    fn new(kind: Kind, perm: u16) -> Node {
        Node {
            kind,
            perm,
            mtime: SystemTime::now(),
            nlink: 1,
            durable_links: 0,
            lookups: 0,
            len: 0,
            durable_len: 0,
            valid: 0,
            pending: BTreeMap::new(),
            backing: None,
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            unreadable: Vec::new(),
        }
    }

    /// Writing `[start, end)` makes those bytes readable again.
    fn heal(&mut self, start: u64, end: u64) {
        let mut kept = Vec::new();
        for (from, to) in self.unreadable.drain(..) {
            if to <= start || from >= end {
                kept.push((from, to));
                continue;
            }
            if from < start {
                kept.push((from, start));
            }
            if to > end {
                kept.push((end, to));
            }
        }
        self.unreadable = kept;
    }

    /// Drops every pending change in `[start, end)`, splitting extents
    /// that straddle either end.
    fn punch(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .pending
            .range(..end)
            .rev()
            .take_while(|(offset, extent)| **offset + extent.len() > start)
            .map(|(offset, _)| *offset)
            .collect();
        for offset in overlapping {
            let extent = self.pending.remove(&offset).expect("listed above");
            let extent_end = offset + extent.len();
            if offset < start {
                self.pending.insert(offset, extent.slice(0, start - offset));
            }
            if extent_end > end {
                self.pending
                    .insert(end, extent.slice(end - offset, extent_end - offset));
            }
        }
    }

    fn put(&mut self, offset: u64, extent: Extent) {
        let len = extent.len();
        if len == 0 {
            return;
        }
        self.punch(offset, offset + len);
        self.heal(offset, offset + len);
        self.pending.insert(offset, extent);
        self.mtime = SystemTime::now();
    }

    fn pending_bytes(&self) -> u64 {
        self.pending
            .values()
            .map(|extent| match extent {
                Extent::Data(bytes) => bytes.len() as u64,
                Extent::Zeros(_) => 0,
            })
            .sum()
    }

    /// The current bytes `[offset, offset + size)`, clipped to the size.
    fn read(&self, offset: u64, size: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(size).min(self.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        if self
            .unreadable
            .iter()
            .any(|(from, to)| *from < end && *to > offset)
        {
            return Err(libc::EIO);
        }
        let mut bytes = vec![0u8; (end - offset) as usize];
        let backed_end = self.valid.min(end);
        if offset < backed_end {
            let backing = self.backing.as_ref().ok_or(libc::EIO)?;
            let want = &mut bytes[..(backed_end - offset) as usize];
            let mut done = 0;
            while done < want.len() {
                match backing.read_at(&mut want[done..], offset + done as u64) {
                    Ok(0) => break, // a hole past the backing file's end reads as zeros
                    Ok(n) => done += n,
                    Err(error) => return Err(error.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
        }
        let first = self
            .pending
            .range(..=offset)
            .next_back()
            .map_or(offset, |(start, _)| *start);
        for (start, extent) in self.pending.range(first..end) {
            let extent_end = start + extent.len();
            if extent_end <= offset {
                continue;
            }
            let from = (*start).max(offset);
            let to = extent_end.min(end);
            let target = &mut bytes[(from - offset) as usize..(to - offset) as usize];
            match extent {
                Extent::Data(data) => {
                    target.copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
                }
                Extent::Zeros(_) => target.fill(0),
            }
        }
        Ok(bytes)
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.punch(len, u64::MAX);
            self.heal(len, u64::MAX);
            self.valid = self.valid.min(len);
        }
        self.len = len;
        self.mtime = SystemTime::now();
    }
}

/// The whole filesystem.
#[derive(Debug)]
pub struct Model {
    backing_dir: PathBuf,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// The last write not yet synced: (inode, offset, length).
    last_write: Option<(u64, u64, u64)>,
    /// Power cuts so far; the FUSE layer refuses requests of an older one.
    pub epoch: u64,
}

impl Model {
    /// An empty filesystem whose synced bytes live in `backing_dir` (which
    /// must exist and is used only by this model).
    pub fn new(backing_dir: PathBuf) -> Model {
        let mut root = Node::new(Kind::Dir, 0o755);
        root.durable_links = 1;
        Model {
            backing_dir,
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            last_write: None,
            epoch: 0,
        }
    }

    fn node(&self, ino: u64) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut Node> {
        let node = self.node_mut(ino)?;
        if node.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        Ok(node)
    }

    fn dir(&self, ino: u64) -> Result<&Node> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(node)
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        Ok(Attr {
            ino,
            kind: node.kind,
            size: if node.kind == Kind::File { node.len } else { 0 },
            perm: node.perm,
            nlink: if node.kind == Kind::Dir {
                2
            } else {
                node.nlink
            },
            mtime: node.mtime,
        })
    }

    /// Looks `name` up in `parent`; the kernel now holds one more reference.
    pub fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<Attr> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(libc::ENOENT)?;
        self.node_mut(ino)?.lookups += 1;
        self.attr(ino)
    }

    /// The kernel dropped `count` references to `ino`.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
        }
        self.purge_if_unused(ino);
    }

    /// A new file or directory `name` in `parent` (pending until `parent`
    /// is synced).
    pub fn make(&mut self, parent: u64, name: &OsStr, kind: Kind, perm: u16) -> Result<Attr> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut node = Node::new(kind, perm);
        node.lookups = 1;
        self.nodes.insert(ino, node);
        let dir = self.node_mut(parent)?;
        dir.entries.insert(name.to_owned(), ino);
        dir.mtime = SystemTime::now();
        self.attr(ino)
    }

    /// Removes the name `name` from `parent`: a file (`Kind::File`, unlink)
    /// or an empty directory (`Kind::Dir`, rmdir).
    pub fn remove(&mut self, parent: u64, name: &OsStr, kind: Kind) -> Result<()> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(libc::ENOENT)?;
        let node = self.node(ino)?;
        match (kind, node.kind) {
            (Kind::File, Kind::Dir) => return Err(libc::EISDIR),
            (Kind::Dir, Kind::File) => return Err(libc::ENOTDIR),
            (Kind::Dir, Kind::Dir) if !node.entries.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        let dir = self.node_mut(parent)?;
        dir.entries.remove(name);
        dir.mtime = SystemTime::now();
        self.unlinked(ino);
        Ok(())
    }

    fn unlinked(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.nlink = node.nlink.saturating_sub(1);
        }
        self.purge_if_unused(ino);
    }

    /// Forgets an inode nothing can reach any more: no current name, no
    /// kernel reference, no durable name.
    fn purge_if_unused(&mut self, ino: u64) {
        let unused = self
            .nodes
            .get(&ino)
            .is_some_and(|node| node.nlink == 0 && node.lookups == 0 && node.durable_links == 0);
        if unused && ino != ROOT {
            self.nodes.remove(&ino);
            let _ = std::fs::remove_file(self.backing_path(ino));
            if self.last_write.is_some_and(|(last, _, _)| last == ino) {
                self.last_write = None;
            }
        }
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a file or
    /// an empty directory there unless `no_replace`.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<()> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(libc::ENOENT)?;
        let kind = self.node(ino)?.kind;
        let replaced = self.dir(new_parent)?.entries.get(new_name).copied();
        if let Some(target) = replaced {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            let target_node = self.node(target)?;
            match (kind, target_node.kind) {
                (Kind::File, Kind::Dir) => return Err(libc::EISDIR),
                (Kind::Dir, Kind::File) => return Err(libc::ENOTDIR),
                (Kind::Dir, Kind::Dir) if !target_node.entries.is_empty() => {
                    return Err(libc::ENOTEMPTY);
                }
                _ => {}
            }
        }
        if kind == Kind::Dir && self.is_ancestor(ino, new_parent) {
            return Err(libc::EINVAL);
        }
        let now = SystemTime::now();
        let source = self.node_mut(parent)?;
        source.entries.remove(name);
        source.mtime = now;
        let target_dir = self.node_mut(new_parent)?;
        target_dir.entries.insert(new_name.to_owned(), ino);
        target_dir.mtime = now;
        if let Some(target) = replaced {
            self.unlinked(target);
        }
        Ok(())
    }

    /// Whether `ancestor` is `ino` or a directory above it (current tree).
    fn is_ancestor(&self, ancestor: u64, ino: u64) -> bool {
        if ancestor == ino {
            return true;
        }
        let Ok(dir) = self.dir(ancestor) else {
            return false;
        };
        dir.entries.values().any(|child| {
            self.nodes
                .get(child)
                .is_some_and(|node| node.kind == Kind::Dir)
                && self.is_ancestor(*child, ino)
        })
    }

    /// A new name `new_parent/new_name` for the file `ino` (a hard link).
    pub fn link(&mut self, ino: u64, new_parent: u64, new_name: &OsStr) -> Result<Attr> {
        if self.node(ino)?.kind == Kind::Dir {
            return Err(libc::EPERM);
        }
        if self.dir(new_parent)?.entries.contains_key(new_name) {
            return Err(libc::EEXIST);
        }
        let dir = self.node_mut(new_parent)?;
        dir.entries.insert(new_name.to_owned(), ino);
        dir.mtime = SystemTime::now();
        let node = self.node_mut(ino)?;
        node.nlink += 1;
        node.lookups += 1;
        self.attr(ino)
    }

    /// The current entries of directory `ino`: (name, inode, kind).
    pub fn entries(&self, ino: u64) -> Result<Vec<(OsString, u64, Kind)>> {
        let dir = self.dir(ino)?;
        Ok(dir
            .entries
            .iter()
            .filter_map(|(name, child)| {
                let kind = self.nodes.get(child)?.kind;
                Some((name.clone(), *child, kind))
            })
            .collect())
    }

    /// Sets the permission bits of `ino`.
    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Result<()> {
        self.node_mut(ino)?.perm = perm;
        Ok(())
    }

    /// Reads `size` bytes of file `ino` at `offset` (fewer at the end).
    pub fn read(&self, ino: u64, offset: u64, size: u64) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        node.read(offset, size)
    }

    /// Writes `data` at `offset` of file `ino` (pending until synced).
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u64> {
        let end = offset.checked_add(data.len() as u64).ok_or(libc::EFBIG)?;
        let node = self.file_mut(ino)?;
        node.put(offset, Extent::Data(data.to_vec()));
        node.len = node.len.max(end);
        self.last_write = Some((ino, offset, data.len() as u64));
        Ok(data.len() as u64)
    }

    /// Makes `len` bytes of the file at `path` (relative to the root) from
    /// `offset` unreadable: reads that touch them fail with `EIO` until they
    /// are written over. Returns the file's inode.
    pub fn make_unreadable(
        &mut self,
        path: &std::path::Path,
        offset: u64,
        len: u64,
    ) -> Result<u64> {
        let mut ino = ROOT;
        for component in path.components() {
            ino = *self
                .dir(ino)?
                .entries
                .get(component.as_os_str())
                .ok_or(libc::ENOENT)?;
        }
        let end = offset.checked_add(len).ok_or(libc::EINVAL)?;
        self.file_mut(ino)?.unreadable.push((offset, end));
        Ok(ino)
    }

    /// Truncates or extends file `ino` to `len` (pending until synced).
    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<()> {
        self.file_mut(ino)?.set_len(len);
        Ok(())
    }

    /// `fallocate(2)` on file `ino`: plain allocation (may extend the size),
    /// `KEEP_SIZE` allocation, hole punching and zeroing a range.
    pub fn fallocate(&mut self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let end = offset.checked_add(len).ok_or(libc::EFBIG)?;
        let node = self.file_mut(ino)?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => {
                if !keep_size && end > node.len {
                    node.set_len(end);
                }
            }
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => {
                let end = end.min(node.len);
                if offset < end {
                    node.put(offset, Extent::Zeros(end - offset));
                }
            }
            libc::FALLOC_FL_ZERO_RANGE => {
                let end = if keep_size { end.min(node.len) } else { end };
                if offset < end {
                    node.put(offset, Extent::Zeros(end - offset));
                }
                node.len = node.len.max(end);
            }
            _ => return Err(libc::EOPNOTSUPP),
        }
        Ok(())
    }

    fn backing_path(&self, ino: u64) -> PathBuf {
        self.backing_dir.join(ino.to_string())
    }

    fn open_backing(&mut self, ino: u64) -> Result<()> {
        let path = self.backing_path(ino);
        let node = self.node_mut(ino)?;
        if node.backing.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|error| error.raw_os_error().unwrap_or(libc::EIO))?;
            node.backing = Some(file);
        }
        Ok(())
    }

    /// `fsync`/`fdatasync` of `ino`: a file's pending writes, holes and size
    /// become durable; a directory's current entries become its durable
    /// entries.
    pub fn sync(&mut self, ino: u64) -> Result<()> {
        if self.node(ino)?.kind == Kind::Dir {
            return self.sync_dir(ino);
        }
        self.open_backing(ino)?;
        let node = self.node_mut(ino)?;
        let io = |error: std::io::Error| error.raw_os_error().unwrap_or(libc::EIO);
        let backing = node.backing.as_ref().expect("opened above");
        backing.set_len(node.valid).map_err(io)?;
        backing.set_len(node.len).map_err(io)?;
        for (offset, extent) in &node.pending {
            match extent {
                Extent::Data(bytes) => backing.write_all_at(bytes, *offset).map_err(io)?,
                Extent::Zeros(len) => {
                    let zeros = vec![0u8; ZEROS_CHUNK.min(*len as usize)];
                    let mut done = 0;
                    while done < *len {
                        let step = (*len - done).min(zeros.len() as u64) as usize;
                        backing
                            .write_all_at(&zeros[..step], offset + done)
                            .map_err(io)?;
                        done += step as u64;
                    }
                }
            }
        }
        node.pending.clear();
        node.durable_len = node.len;
        node.valid = node.len;
        if self.last_write.is_some_and(|(last, _, _)| last == ino) {
            self.last_write = None;
        }
        Ok(())
    }

    fn sync_dir(&mut self, ino: u64) -> Result<()> {
        let dir = self.node_mut(ino)?;
        let before = std::mem::replace(&mut dir.durable_entries, dir.entries.clone());
        let after: Vec<u64> = dir.durable_entries.values().copied().collect();
        for child in &after {
            if let Some(node) = self.nodes.get_mut(child) {
                node.durable_links += 1;
            }
        }
        for child in before.values() {
            if let Some(node) = self.nodes.get_mut(child) {
                node.durable_links = node.durable_links.saturating_sub(1);
            }
            self.purge_if_unused(*child);
        }
        Ok(())
    }

    /// Bytes written and not yet synced, over all files.
    pub fn pending_bytes(&self) -> u64 {
        self.nodes.values().map(Node::pending_bytes).sum()
    }

    /// Inodes alive now.
    pub fn inodes(&self) -> usize {
        self.nodes.len()
    }

    /// Loses power: keeps only what was synced (and, with `tear`, a prefix
    /// of the last pending write), and forgets every kernel reference (the
    /// filesystem is mounted afresh after a cut).
    pub fn power_cut(&mut self, tear: Option<Tear>) -> CutReport {
        let mut report = CutReport {
            dropped_bytes: self.pending_bytes(),
            ..CutReport::default()
        };
        if let (Some(tear), Some(last)) = (tear, self.last_write) {
            report.torn = self.tear(tear, last).ok();
        }
        self.last_write = None;
        self.epoch += 1;

        // What survives: the durable tree from the root.
        let mut reachable = HashSet::from([ROOT]);
        let mut links: HashMap<u64, u32> = HashMap::from([(ROOT, 1)]);
        let mut stack = vec![ROOT];
        while let Some(dir) = stack.pop() {
            let Some(node) = self.nodes.get(&dir) else {
                continue;
            };
            for child in node.durable_entries.values() {
                *links.entry(*child).or_default() += 1;
                if reachable.insert(*child)
                    && self
                        .nodes
                        .get(child)
                        .is_some_and(|node| node.kind == Kind::Dir)
                {
                    stack.push(*child);
                }
            }
        }
        let lost: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|ino| !reachable.contains(ino))
            .collect();
        report.lost_inodes = lost.len() as u64;
        for ino in lost {
            self.nodes.remove(&ino);
            let _ = std::fs::remove_file(self.backing_path(ino));
        }
        for (ino, node) in &mut self.nodes {
            node.entries = node.durable_entries.clone();
            node.entries.retain(|_, child| reachable.contains(child));
            node.durable_entries.clone_from(&node.entries);
            node.pending.clear();
            node.len = node.durable_len;
            node.valid = node.durable_len;
            node.lookups = 0;
            let count = links.get(ino).copied().unwrap_or(0);
            node.nlink = count;
            node.durable_links = count;
        }
        report
    }

    /// Writes a sector-aligned prefix of the last pending write through to
    /// the backing file, as the disk would have before the power went.
    fn tear(
        &mut self,
        tear: Tear,
        (ino, offset, len): (u64, u64, u64),
    ) -> Result<(u64, u64, u64, u64)> {
        let sector = tear.sector.max(1);
        let first_boundary = (offset / sector + 1) * sector;
        let end = offset + len;
        let boundaries = if first_boundary < end {
            (end - 1 - first_boundary) / sector + 1
        } else {
            0
        };
        if boundaries == 0 {
            return Ok((ino, offset, 0, len));
        }
        let boundary = first_boundary + (tear.seed % boundaries) * sector;
        let kept = self.node(ino)?.read(offset, boundary - offset)?;
        self.open_backing(ino)?;
        let node = self.node_mut(ino)?;
        let backing = node.backing.as_ref().expect("opened above");
        backing
            .write_all_at(&kept, offset)
            .map_err(|error| error.raw_os_error().unwrap_or(libc::EIO))?;
        node.durable_len = node.durable_len.max(offset + kept.len() as u64);
        Ok((ino, offset, kept.len() as u64, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model() -> (Model, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "rast-lazyfs-model-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Model::new(dir.clone()), dir)
    }

    fn name(text: &str) -> &OsStr {
        OsStr::new(text)
    }

    /// A new file `text` in the root (pending until the root is synced).
    fn file(model: &mut Model, text: &str) -> u64 {
        model.make(ROOT, name(text), Kind::File, 0o644).unwrap().ino
    }

    fn content(model: &Model, ino: u64) -> Vec<u8> {
        model.read(ino, 0, u64::MAX).unwrap()
    }

    /// A file operation of the property test.
    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, Vec<u8>),
        SetLen(u64),
        Punch(u64, u64),
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..5_000, proptest::collection::vec(any::<u8>(), 1..1_500))
                .prop_map(|(offset, bytes)| Op::Write(offset, bytes)),
            1 => (0u64..6_000).prop_map(Op::SetLen),
            1 => (0u64..5_000, 1u64..2_000).prop_map(|(offset, len)| Op::Punch(offset, len)),
            1 => Just(Op::Sync),
        ]
    }

    proptest! {
        /// Against a plain byte vector: reads always show every change;
        /// after a cut, the file is exactly what it was at its last sync.
        #[test]
        fn a_file_reads_as_written_and_a_cut_restores_the_last_sync(ops in proptest::collection::vec(op(), 1..40)) {
            let (mut model, dir) = model();
            let ino = file(&mut model, "f");
            model.sync(ROOT).unwrap();
            let mut current: Vec<u8> = Vec::new();
            let mut durable: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(offset, bytes) => {
                        model.write(ino, offset, &bytes).unwrap();
                        let end = offset as usize + bytes.len();
                        if current.len() < end {
                            current.resize(end, 0);
                        }
                        current[offset as usize..end].copy_from_slice(&bytes);
                    }
                    Op::SetLen(len) => {
                        model.set_len(ino, len).unwrap();
                        current.resize(len as usize, 0);
                    }
                    Op::Punch(offset, len) => {
                        model.fallocate(ino, offset, len, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE).unwrap();
                        let end = ((offset + len) as usize).min(current.len());
                        if (offset as usize) < end {
                            current[offset as usize..end].fill(0);
                        }
                    }
                    Op::Sync => {
                        model.sync(ino).unwrap();
                        durable.clone_from(&current);
                    }
                }
                prop_assert_eq!(&content(&model, ino), &current);
            }
            model.power_cut(None);
            prop_assert_eq!(content(&model, ino), durable);
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn a_name_is_durable_only_once_its_directory_is_synced() {
        let (mut model, dir) = model();
        let kept = file(&mut model, "kept");
        model.write(kept, 0, b"data").unwrap();
        model.sync(kept).unwrap();
        model.sync(ROOT).unwrap();
        let lost = file(&mut model, "lost");
        model.write(lost, 0, b"synced data, unsynced name").unwrap();
        model.sync(lost).unwrap();
        let report = model.power_cut(None);
        assert_eq!(report.lost_inodes, 1);
        assert_eq!(model.lookup(ROOT, name("lost")).unwrap_err(), libc::ENOENT);
        let attr = model.lookup(ROOT, name("kept")).unwrap();
        assert_eq!(content(&model, attr.ino), b"data");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_rename_is_undone_by_a_cut_until_the_directory_is_synced() {
        let (mut model, dir) = model();
        let old = file(&mut model, "state");
        model.write(old, 0, b"old").unwrap();
        model.sync(old).unwrap();
        let new = file(&mut model, "state.tmp");
        model.write(new, 0, b"new").unwrap();
        model.sync(new).unwrap();
        model.sync(ROOT).unwrap();
        model
            .rename(ROOT, name("state.tmp"), ROOT, name("state"), false)
            .unwrap();
        assert_eq!(content(&model, model.attr(new).unwrap().ino), b"new");
        model.power_cut(None);
        let attr = model.lookup(ROOT, name("state")).unwrap();
        assert_eq!(content(&model, attr.ino), b"old");
        // Synced this time: the rename stays.
        model
            .rename(ROOT, name("state.tmp"), ROOT, name("state"), false)
            .unwrap();
        model.sync(ROOT).unwrap();
        model.power_cut(None);
        let attr = model.lookup(ROOT, name("state")).unwrap();
        assert_eq!(content(&model, attr.ino), b"new");
        assert_eq!(
            model.lookup(ROOT, name("state.tmp")).unwrap_err(),
            libc::ENOENT
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_torn_write_keeps_a_sector_aligned_prefix() {
        let (mut model, dir) = model();
        let ino = file(&mut model, "f");
        model.write(ino, 0, &[1u8; 4096]).unwrap();
        model.sync(ino).unwrap();
        model.sync(ROOT).unwrap();
        model.write(ino, 100, &[2u8; 3000]).unwrap();
        let report = model.power_cut(Some(Tear {
            sector: 512,
            seed: 3,
        }));
        let (_, offset, kept, len) = report.torn.unwrap();
        assert_eq!((offset, len), (100, 3000));
        assert_eq!((offset + kept) % 512, 0, "kept {kept}");
        assert!(kept > 0 && kept < len);
        let bytes = content(&model, ino);
        assert_eq!(bytes.len(), 4096);
        assert!(bytes[..100].iter().all(|byte| *byte == 1));
        assert!(
            bytes[100..100 + kept as usize]
                .iter()
                .all(|byte| *byte == 2)
        );
        assert!(bytes[100 + kept as usize..].iter().all(|byte| *byte == 1));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unlinked_file_comes_back_unless_the_directory_was_synced() {
        let (mut model, dir) = model();
        let ino = file(&mut model, "f");
        model.write(ino, 0, b"x").unwrap();
        model.sync(ino).unwrap();
        model.sync(ROOT).unwrap();
        model.forget(ino, 1);
        model.remove(ROOT, name("f"), Kind::File).unwrap();
        model.power_cut(None);
        let attr = model.lookup(ROOT, name("f")).unwrap();
        assert_eq!(content(&model, attr.ino), b"x");
        model.forget(attr.ino, 1);
        model.remove(ROOT, name("f"), Kind::File).unwrap();
        model.sync(ROOT).unwrap();
        assert_eq!(
            model.inodes(),
            1,
            "the file is forgotten once nothing names it"
        );
        model.power_cut(None);
        assert_eq!(model.lookup(ROOT, name("f")).unwrap_err(), libc::ENOENT);
        let _ = std::fs::remove_dir_all(dir);
    }
}
