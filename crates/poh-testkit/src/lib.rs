//! Test support for the poh-store workspace (a dev-dependency only).
//!
//! - [`require`]: the one way a test asks for something outside the repository (the
//!   prototype's Python model, root with loop devices, other programs). A missing
//!   prerequisite skips the test with a visible note, or fails it when `POH_REQUIRE_ALL=1`
//!   (as CI sets).
//! - [`ext4`]: a small ext4 file system on a loop device, unmounted and detached on drop,
//!   whose power can be cut with the `EXT4_IOC_SHUTDOWN` ioctl.
#![warn(clippy::unwrap_used)]

pub mod ext4;
pub mod require;
