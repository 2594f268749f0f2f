//! `poh-storage`: the command line of the store; run `poh-storage --help` for commands,
//! flags and exit codes. All logic lives in [`poh_cli::storage`].

#![warn(clippy::unwrap_used)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    poh_cli::storage::main(poh_cli::storage::Cli::parse())
}
