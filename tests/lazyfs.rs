//! The lazy filesystem's rules, through a real mount and real system
//! calls: what a power cut keeps is exactly what was synced.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::lazy::mount;
use rast::nemesis::lazyfs::Tear;

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn unsynced_writes_are_lost_and_synced_ones_survive() {
    let Some((mut lazy, dir)) = mount("lazyfs-writes") else {
        return;
    };
    let root = lazy.path().to_path_buf();
    let path = root.join("file");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"synced").unwrap();
    file.sync_data().unwrap();
    sync_dir(&root);
    file.write_all(b" and then not").unwrap();
    assert_eq!(read(&path), b"synced and then not");
    drop(file);
    lazy.cut(None).unwrap();
    assert_eq!(read(&path), b"synced");

    // A truncation is pending like a write.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2)
        .unwrap();
    assert_eq!(read(&path), b"sy");
    lazy.cut(None).unwrap();
    assert_eq!(read(&path), b"synced");
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn names_need_their_directory_synced() {
    let Some((mut lazy, dir)) = mount("lazyfs-names") else {
        return;
    };
    let root = lazy.path().to_path_buf();
    // A directory and a file in it, both synced: kept.
    std::fs::create_dir(root.join("dir")).unwrap();
    let mut file = File::create(root.join("dir/kept")).unwrap();
    file.write_all(b"kept").unwrap();
    file.sync_all().unwrap();
    sync_dir(&root.join("dir"));
    sync_dir(&root);
    drop(file);
    // Data synced, name not: gone.
    let mut file = File::create(root.join("unnamed")).unwrap();
    file.write_all(b"data").unwrap();
    file.sync_all().unwrap();
    drop(file);
    lazy.cut(None).unwrap();
    assert!(!root.join("unnamed").exists());
    assert_eq!(read(&root.join("dir/kept")), b"kept");

    // The hard-state pattern without its last directory sync: the rename is lost.
    std::fs::write(root.join("state"), b"old").unwrap();
    File::open(root.join("state")).unwrap().sync_all().unwrap();
    std::fs::write(root.join("state.tmp"), b"new").unwrap();
    File::open(root.join("state.tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    sync_dir(&root);
    std::fs::rename(root.join("state.tmp"), root.join("state")).unwrap();
    assert_eq!(read(&root.join("state")), b"new");
    lazy.cut(None).unwrap();
    assert_eq!(read(&root.join("state")), b"old");
    assert_eq!(read(&root.join("state.tmp")), b"new");
    // With it, the rename stays.
    std::fs::rename(root.join("state.tmp"), root.join("state")).unwrap();
    sync_dir(&root);
    lazy.cut(None).unwrap();
    assert_eq!(read(&root.join("state")), b"new");
    assert!(!root.join("state.tmp").exists());

    // An unlink is pending too.
    std::fs::remove_file(root.join("dir/kept")).unwrap();
    lazy.cut(None).unwrap();
    assert_eq!(read(&root.join("dir/kept")), b"kept");
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_torn_write_keeps_a_prefix_up_to_a_sector_boundary() {
    let Some((mut lazy, dir)) = mount("lazyfs-tear") else {
        return;
    };
    let root = lazy.path().to_path_buf();
    let path = root.join("segment");
    let file = File::create(&path).unwrap();
    file.write_all_at(&[1u8; 16384], 0).unwrap();
    file.sync_all().unwrap();
    sync_dir(&root);
    file.write_all_at(&[2u8; 10000], 1000).unwrap();
    drop(file);
    let report = lazy
        .cut(Some(Tear {
            sector: 4096,
            seed: 1,
        }))
        .unwrap();
    let bytes = read(&path);
    assert_eq!(bytes.len(), 16384);
    let kept = bytes[1000..].iter().take_while(|byte| **byte == 2).count();
    assert_eq!((1000 + kept) % 4096, 0, "{report}");
    assert!(kept > 0 && kept < 10000, "{report}");
    assert!(bytes[1000 + kept..].iter().all(|byte| *byte == 1));
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn holes_and_preallocation_are_pending_until_synced() {
    let Some((mut lazy, dir)) = mount("lazyfs-fallocate") else {
        return;
    };
    let root = lazy.path().to_path_buf();
    let path = root.join("segment");
    let file = File::create(&path).unwrap();
    nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, 8192).unwrap();
    file.write_all_at(&[7u8; 8192], 0).unwrap();
    file.sync_all().unwrap();
    sync_dir(&root);
    let punch = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
    nix::fcntl::fallocate(&file, punch, 4096, 4096).unwrap();
    nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, 65536).unwrap();
    let bytes = read(&path);
    assert_eq!(bytes.len(), 65536);
    assert!(bytes[4096..].iter().all(|byte| *byte == 0));
    drop(file);
    lazy.cut(None).unwrap();
    assert_eq!(read(&path), vec![7u8; 8192]);
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}
