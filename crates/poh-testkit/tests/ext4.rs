//! The ext4 harness behaves as the power-cut and disk-full tests assume: after a shutdown
//! without log flush and a remount, what was fsynced is there and what was not synced
//! is not; a full file system reports `ENOSPC`; dropping the mount cleans up.

use std::io::Write;

use poh_testkit::ext4::{EXT4_GOING_FLAGS_NOLOGFLUSH, Ext4Mount};
use poh_testkit::require::root_with_loop;

#[test]
fn shutdown_keeps_what_was_synced_and_loses_what_was_not() {
    let Some(()) = root_with_loop() else { return };
    let mut m = Ext4Mount::new(16, &[]).expect("ext4 mount");
    let synced = m.path().join("synced");
    let unsynced = m.path().join("unsynced");
    let mut f = std::fs::File::create(&synced).expect("create synced");
    f.write_all(b"durable").expect("write synced");
    f.sync_all().expect("fsync synced");
    std::fs::File::open(m.path())
        .and_then(|d| d.sync_all())
        .expect("fsync the directory");
    std::fs::write(&unsynced, b"volatile").expect("write unsynced");

    m.shutdown(EXT4_GOING_FLAGS_NOLOGFLUSH).expect("shutdown");
    let err = std::fs::write(m.path().join("after"), b"x").expect_err("writes fail after");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    m.remount().expect("remount");

    assert_eq!(std::fs::read(&synced).expect("read synced"), b"durable");
    assert!(
        std::fs::read(&unsynced).map_or(true, |d| d.is_empty()),
        "an unsynced file is gone or empty after the cut"
    );
    assert!(!m.path().join("after").exists());
}

#[test]
fn a_full_file_system_says_enospc_and_drop_cleans_up() {
    let Some(()) = root_with_loop() else { return };
    let m = Ext4Mount::new(8, &["-m", "0"]).expect("ext4 mount");
    let mut f = std::fs::File::create(m.path().join("filler")).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    let err = loop {
        if let Err(e) = f.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // Reserved metadata blocks stay free: "full" is well under a MiB of the 8.
    let free = m.free_bytes().expect("free bytes");
    assert!(free < 1024 * 1024, "{free} bytes free");

    let (mount_point, image) = (m.path().to_owned(), m.image().to_owned());
    let device = m.device().expect("attached").to_owned();
    drop(f);
    drop(m);
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read mounts");
    assert!(
        !mounts.contains(&*mount_point.to_string_lossy()),
        "still mounted"
    );
    assert!(!image.exists(), "image removed");
    let attached = std::process::Command::new("losetup")
        .arg("--list")
        .arg("--noheadings")
        .arg("--output")
        .arg("NAME,BACK-FILE")
        .output()
        .expect("losetup --list");
    let attached = String::from_utf8_lossy(&attached.stdout);
    assert!(
        !attached
            .lines()
            .any(|l| l.contains(&*image.to_string_lossy()) && l.contains(&device)),
        "loop device still attached: {attached}"
    );
}
