//! poh-py: the Python packages `poh_storage` and `poh_ttl` — a drop-in replacement for the
//! prototype's packages of the same names — over the poh-store engine.
//!
//! The Rust half is one extension module, `poh_storage._native`, built by maturin from
//! this crate with the `python` feature; the Python half (`python/`) is thin modules with
//! the prototype's layout and names (`poh_storage.storage.StorageManager`,
//! `poh_storage.types.Tx`, `poh_ttl.manager.TTLManager`, ...).
//!
//! # Layout
//! - `py` (feature `python`): the extension module: one tokio runtime, the bridge that
//!   completes asyncio futures from it, the `Store` class (save, load, delete, list,
//!   recover, expire, close; each also as a blocking `*_sync` call that releases the GIL),
//!   and the id helpers (`file_stem`, `from_file_stem`) and `sha256_hex`.
//!
//! # What it is not
//! Not a second engine: every read and write goes through [`poh_storage::StorageManager`]'s
//! public API, with its durability, group commit and recovery. Without the `python`
//! feature this crate is empty, so the workspace builds and tests without a Python.
//!
//! # Concurrency and shutdown
//! A Python call converts its arguments, hands a future to the runtime and returns at
//! once; the GIL is not held while the engine works, and no OS thread is started per
//! call. When the future completes, a runtime thread attaches to the interpreter only to
//! schedule the result on the caller's event loop (`call_soon_threadsafe`). So one store
//! serves any number of event loops, one after another or at once. At interpreter exit
//! (`atexit`, registered by the Python package) new work is refused, work in flight is
//! waited for (bounded), and a completion that arrives once the interpreter is finalizing
//! is dropped without touching Python (`Python::try_attach`), which is what crashes a
//! naive bridge at exit.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(feature = "python")]
mod py;
