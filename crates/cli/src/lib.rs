//! The `strata` command line: argument parsing (clap) and presentation. All the work is done by
//! the library crates; this crate only turns arguments into calls and results into text or JSON.

mod checkpoint;
mod client;
mod console;
mod disk;
mod disk_import;
mod disk_text;
mod docs;
mod mount;
mod nic;
mod plug;
mod progress;
mod serve;
mod size;
mod switch;
mod switch_edit;
mod vm;
mod vm_disk;
mod vm_text;

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
    /// Virtual machines: create, list, show, set, start, shutdown, stop, save, console …
    #[command(subcommand)]
    Vm(Box<vm::VmCommand>),
    /// The host service's event log.
    Events {
        /// Only this VM's events
        #[arg(long)]
        vm: Option<String>,
        /// Only events since a time (2026-11-22T10:00:00Z) or a duration ago (10m, 2h)
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Checkpoints of a VM: create, list, apply, revert, rename, delete.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Virtual switches: create, list, show, delete, leases.
    #[command(subcommand)]
    Switch(switch::SwitchCommand),
    /// The host: what it offers; apply the VMs' automatic stop actions (host shutdown).
    #[command(subcommand)]
    Host(vm::HostCommand),
    /// Run the host service (API on STRATA_HOME/api.sock; STRATA_HOME defaults to /var/lib/strata).
    Serve {
        /// The data folder (default: $STRATA_HOME or /var/lib/strata)
        #[arg(long)]
        home: Option<std::path::PathBuf>,
        /// The API's Unix socket (default: DATA/api.sock)
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// Also serve the API on TCP, e.g. 127.0.0.1:8450 (no authentication yet: keep it local)
        #[arg(long)]
        tcp: Option<String>,
    },
    /// Print a shell completion script on stdout (bash, zsh or fish).
    Completions {
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Write the manual pages (strata.1, strata-vm.1, strata-vm-create.1 …) into a folder.
    Man {
        /// The folder to write them into (created if needed)
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// A VM's worker process (started by the host service).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        home: std::path::PathBuf,
        #[arg(long)]
        vm: String,
        #[arg(long)]
        accel: String,
        #[arg(long)]
        restore: bool,
    },
}

impl Command {
    /// The long-running processes and the console relay: they must live on (or say what
    /// happened) when a peer closes a socket, which SIGPIPE's default action would not let them.
    fn handles_closed_sockets(&self) -> bool {
        match self {
            Self::Serve { .. } | Self::Worker { .. } => true,
            Self::Disk(cmd) => matches!(cmd, disk::DiskCommand::Serve { .. }),
            Self::Vm(cmd) => matches!(**cmd, vm::VmCommand::Console { .. }),
            _ => false,
        }
    }
}

/// A closed pipe on stdout (`strata vm show x | head -3`) ends the command quietly, as it does
/// other Unix tools, instead of a panic in `println!`: SIGPIPE gets its default action back
/// (Rust ignores it at start). The processes this one starts are Rust programs too and ignore it
/// again at their own start.
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in `main`, before this process starts any thread; SIG_DFL
    // installs no handler, so no code of ours runs in signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// An `on`/`off` option (`--what`); `None` when it was not given.
fn on_off(what: &str, v: Option<&str>) -> anyhow::Result<Option<bool>> {
    match v {
        None => Ok(None),
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(o) => anyhow::bail!("--{what} '{o}': use on or off"),
    }
}

/// Prints `value` as pretty JSON on stdout (every `--json`).
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs the command line; errors are printed on stderr with a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.handles_closed_sockets() {
        quiet_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Disk(cmd) => disk::run(cmd),
        Command::Vm(cmd) => vm::run(*cmd),
        Command::Events { vm, since, json } => vm::events(vm, since, json),
        Command::Host(cmd) => vm::host(cmd),
        Command::Switch(cmd) => switch::run(cmd),
        Command::Checkpoint(cmd) => checkpoint::run(cmd),
        Command::Serve { home, socket, tcp } => serve_host(home, socket, tcp),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(&out),
        Command::Worker {
            home,
            vm,
            accel,
            restore,
        } => worker(home, vm, &accel, restore),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_host(
    home: Option<std::path::PathBuf>,
    socket: Option<std::path::PathBuf>,
    tcp: Option<String>,
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let opts = strata_host::ServeOptions {
        home: home.unwrap_or_else(client::home),
        socket,
        tcp,
        worker: vec![exe.into_os_string(), "worker".into()],
    };
    strata_host::serve(&opts)?;
    Ok(ExitCode::SUCCESS)
}

fn worker(
    home: std::path::PathBuf,
    vm: String,
    accel: &str,
    restore: bool,
) -> anyhow::Result<ExitCode> {
    let accel = match accel {
        "kvm" => strata_api::Accelerator::Kvm,
        "tcg" => strata_api::Accelerator::Tcg,
        other => anyhow::bail!("unknown accelerator '{other}'"),
    };
    let args = strata_host::worker::WorkerArgs {
        home,
        vm,
        accel,
        restore,
    };
    Ok(ExitCode::from(
        u8::try_from(strata_host::worker::run(&args)).unwrap_or(1),
    ))
}
