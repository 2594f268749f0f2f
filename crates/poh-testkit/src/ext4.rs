//! A small ext4 file system in an image file, mounted on a loop device, for tests that need
//! a real kernel file system they can cut the power of or fill up. Needs root (see
//! [`crate::require::root_with_loop`]).
//!
//! [`Ext4Mount`] unmounts and detaches its loop device when dropped, also while a test
//! panics, and removes its image with its temporary directory.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `EXT4_IOC_SHUTDOWN` = `_IOR('X', 125, __u32)`.
pub const EXT4_IOC_SHUTDOWN: u32 = 0x8004_587D;
/// Shut down as a power cut would: neither the page cache nor the journal is flushed.
pub const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;
/// Shut down after flushing the page cache and the journal.
pub const EXT4_GOING_FLAGS_DEFAULT: u32 = 0;

/// How long `unmount` retries a busy file system before unmounting it lazily.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a command; its stdout (trimmed) on success, or a message with its stderr.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let shown = || {
        let mut s = program.to_owned();
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", shown()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// An ext4 image `<tmp>/ext4.img` mounted at `<tmp>/mnt` through a loop device.
#[derive(Debug)]
pub struct Ext4Mount {
    image: PathBuf,
    mount_point: PathBuf,
    /// The attached loop device, e.g. `/dev/loop3`.
    device: Option<String>,
    mounted: bool,
    /// Holds the image and the mount point; removed after the unmount in `drop`.
    dir: tempfile::TempDir,
}

impl Ext4Mount {
    /// Creates a `size_mib` MiB image in a new temporary directory, formats it with
    /// `mkfs.ext4 -q -F <mkfs_args>` and mounts it.
    pub fn new(size_mib: u64, mkfs_args: &[&str]) -> Result<Self, String> {
        let dir = tempfile::TempDir::new().map_err(|e| format!("temporary directory: {e}"))?;
        let image = dir.path().join("ext4.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point)
            .map_err(|e| format!("create {}: {e}", mount_point.display()))?;
        File::create(&image)
            .and_then(|f| f.set_len(size_mib * 1024 * 1024))
            .map_err(|e| format!("create {}: {e}", image.display()))?;
        let mut args = vec![os("-q"), os("-F")];
        args.extend(mkfs_args.iter().map(|a| os(a)));
        args.push(image.as_os_str());
        run("mkfs.ext4", &args)?;
        let mut m = Self {
            image,
            mount_point,
            device: None,
            mounted: false,
            dir,
        };
        m.mount()?;
        Ok(m)
    }

    /// The mounted file system's root.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The temporary directory holding the image and the mount point (on the host's file
    /// system, outside the mount).
    pub fn host_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The loop device while attached.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// Whether the file system is mounted.
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }

    /// Attaches the image to a free loop device and mounts it (which replays the journal
    /// after a shutdown).
    pub fn mount(&mut self) -> Result<(), String> {
        if self.mounted {
            return Ok(());
        }
        if self.device.is_none() {
            let dev = run(
                "losetup",
                &[os("--find"), os("--show"), self.image.as_os_str()],
            )?;
            self.device = Some(dev);
        }
        let dev = self.device.clone().unwrap_or_default();
        run("mount", &[os(&dev), self.mount_point.as_os_str()])?;
        self.mounted = true;
        Ok(())
    }

    /// Cuts the power as the file system sees it: `EXT4_IOC_SHUTDOWN` with `flags`
    /// (normally [`EXT4_GOING_FLAGS_NOLOGFLUSH`]). Every later operation on the mount
    /// fails with `EIO`; what was not yet written to the device is lost, what fsync
    /// made durable is kept. [`Ext4Mount::remount`] brings it back.
    pub fn shutdown(&self, flags: u32) -> Result<(), String> {
        let dir = File::open(&self.mount_point)
            .map_err(|e| format!("open {}: {e}", self.mount_point.display()))?;
        ext4_shutdown(&dir, flags).map_err(|e| format!("EXT4_IOC_SHUTDOWN: {e}"))
    }

    /// Unmounts (retrying while busy for a bounded time, then lazily) and detaches the
    /// loop device. The image keeps what was on the device.
    pub fn unmount(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        if self.mounted {
            let started = Instant::now();
            loop {
                match run("umount", &[self.mount_point.as_os_str()]) {
                    Ok(_) => break,
                    Err(e) if e.contains("busy") && started.elapsed() < BUSY_TIMEOUT => {
                        // Polling for the last user of the file system to go away.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        // Detach it from the tree anyway, so nothing is left mounted.
                        if let Err(lazy) =
                            run("umount", &[os("--lazy"), self.mount_point.as_os_str()])
                        {
                            result = Err(format!("{e}; then {lazy}"));
                        } else {
                            result = Err(format!("{e} (unmounted lazily)"));
                        }
                        break;
                    }
                }
            }
            self.mounted = false;
        }
        if let Some(dev) = self.device.take() {
            // A device still in use (lazy unmount) is detached when its last user goes.
            let detached = run("losetup", &[os("--detach"), os(&dev)]);
            result = result.and(detached.map(drop));
            // The kernel finishes a detach asynchronously; wait (bounded) until the device
            // no longer names our image, so a caller never sees it half-released.
            let started = Instant::now();
            while self.attached_to_image(&dev) && started.elapsed() < BUSY_TIMEOUT {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        result
    }

    /// True while `losetup` lists `dev` as backed by this mount's image.
    fn attached_to_image(&self, dev: &str) -> bool {
        let image = self.image.to_string_lossy();
        run(
            "losetup",
            &[
                os("--list"),
                os("--noheadings"),
                os("--output"),
                os("NAME,BACK-FILE"),
            ],
        )
        .is_ok_and(|out| out.lines().any(|l| l.contains(dev) && l.contains(&*image)))
    }

    /// Unmounts, detaches and mounts again: after [`Ext4Mount::shutdown`], this is the
    /// reboot (the mount replays the journal).
    pub fn remount(&mut self) -> Result<(), String> {
        self.unmount()?;
        self.mount()
    }

    /// Bytes available to root on the file system (`statvfs` `f_bfree * f_frsize`).
    pub fn free_bytes(&self) -> Result<u64, String> {
        let out = run(
            "stat",
            &[
                os("--file-system"),
                os("--format=%f %S"),
                self.mount_point.as_os_str(),
            ],
        )?;
        let mut it = out.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
            _ => Err(format!("unexpected `stat --file-system` output: {out}")),
        }
    }
}

impl Drop for Ext4Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "poh-testkit: cleaning up the ext4 mount at {}: {e}",
                self.mount_point.display()
            );
        }
    }
}

/// The `EXT4_IOC_SHUTDOWN` ioctl on an open file or directory of an ext4 mount.
#[allow(unsafe_code)]
pub fn ext4_shutdown(fd: &impl AsRawFd, flags: u32) -> std::io::Result<()> {
    let flags: u32 = flags;
    // SAFETY: `fd` is an open descriptor borrowed for the call; EXT4_IOC_SHUTDOWN reads one
    // `__u32` through the pointer (`_IOR(.., __u32)`), which points at a live local.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &flags as *const u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
