//! End-to-end tests of poh-store that need more than one binary: real process crashes
//! (SIGKILL at random moments) and a `poh-ttl run` daemon sharing a store with another
//! process. The crate has no code of its own; see `tests/`.
