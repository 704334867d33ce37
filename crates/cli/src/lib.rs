//! The `strata` command line: argument parsing (clap) and presentation. All the work is done by
//! the library crates; this crate only turns arguments into calls and results into text or JSON.

mod disk;
mod disk_text;
mod mount;
mod plug;
mod progress;
mod serve;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use size::parse_size;

/// Strata: server virtualization on Linux.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Virtual hard disks (VHD): create, inspect, check, merge, compact, convert, resize …
    #[command(subcommand)]
    Disk(disk::DiskCommand),
}

/// Runs the command line; errors are printed on stderr with a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Disk(cmd) => disk::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
