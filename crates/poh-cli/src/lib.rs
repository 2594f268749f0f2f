//! poh-cli: the `poh-storage` and `poh-ttl` command lines over the poh-storage engine
//! and the poh-ttl expiry library. The binaries in `src/bin/` only parse arguments and
//! call [`storage::main`] or [`ttl::main`], so tests run the real binaries.
//!
//! # Layout
//! - [`common`]: what both binaries share — the store's location flags and defaults
//!   (`--base`, `--db` = `<base>/poh.db`, `--lock-timeout`, their env vars), how a command
//!   opens the store (create, existing, read-only), the exit-code table, error printing
//!   and logging.
//! - [`storage`]: `poh-storage`'s commands (init, save, load, delete, list, recover,
//!   verify, stats) and, in `storage::import`, the JSON Lines importer.
//! - [`ttl`]: `poh-ttl`'s commands (scan, run) and the streamed `Expired: [...]` printer.
//! - [`pyfmt`]: output in the prototype's exact bytes (Python `json.dumps`, `repr`).
//!
//! # What it is not
//! No storage logic: every rule about what is on disk lives in the `poh-storage` crate,
//! so the library, these binaries and the Python package behave alike.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod common;
pub mod pyfmt;
pub mod storage;
pub mod ttl;
