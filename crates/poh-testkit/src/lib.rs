//! Test support for the poh-store workspace (a dev-dependency only).
//!
//! - [`require`]: the one way a test asks for something outside the repository (the
//!   prototype's Python model, root with loop devices, other programs). A missing
//!   prerequisite skips the test with a visible note, or fails it when `POH_REQUIRE_ALL=1`
//!   (as CI sets).
//! - [`ext4`]: a small ext4 file system on a loop device, unmounted and detached on drop,
//!   whose power can be cut with the `EXT4_IOC_SHUTDOWN` ioctl.
//! - [`sim`]: [`sim::SimFs`], an in-memory [`poh_storage::FileSystem`] that keeps live and
//!   durable state apart, cuts the power after any operation and injects I/O errors.
//! - [`sim_store`]: [`sim_store::SimStore`], a store whose payloads live in a `SimFs`,
//!   with save/restore of its whole state.
//! - [`snapshot`]: byte-for-byte snapshots of a store (real or simulated), to prove an
//!   operation changed nothing.
//! - [`stores`]: temporary stores made, seeded, reopened and listed through the library.
//! - [`hostile`]: the table of hostile transaction inputs every front end is run against.
#![warn(clippy::unwrap_used)]

pub mod ext4;
pub mod hostile;
pub mod pg;
pub mod require;
pub mod sim;
pub mod sim_store;
pub mod snapshot;
pub mod stores;
