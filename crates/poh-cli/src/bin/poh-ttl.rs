//! `poh-ttl`: expires old transactions, once (`scan`) or as a daemon (`run`); run
//! `poh-ttl --help` for flags and exit codes. All logic lives in [`poh_cli::ttl`].

#![warn(clippy::unwrap_used)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    poh_cli::ttl::main(poh_cli::ttl::Cli::parse())
}
