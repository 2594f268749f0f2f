//! `poh-storage`: the command line of the store. All logic lives in
//! [`poh_storage::cli`]; run `poh-storage --help` for commands, flags and exit codes.

use std::process::ExitCode;

use clap::Parser;
use poh_storage::cli::{self, Cli};

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging();
    cli::finish(cli::run(args))
}
