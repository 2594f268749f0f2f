//! End-to-end tests of poh-store that need more than one binary: real process crashes
//! (SIGKILL at random moments), a `poh-ttl run` daemon sharing a store with another
//! process, and power cuts and a full disk on a real ext4 file system. The crate has no
//! code of its own; see `tests/`.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
