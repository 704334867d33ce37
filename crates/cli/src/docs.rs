//! `strata completions` and `strata man`: shell completion scripts (`clap_complete`) and manual
//! pages (`clap_mangen`), both generated from the command line's own clap definition, so they
//! always match the binary that prints them. Hidden commands (the workers) get no manual page;
//! `clap_complete` has no way to leave them out, so the scripts still offer `worker` and
//! `disk serve`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, ValueEnum};

use crate::Cli;

/// The shells `strata completions` knows.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `strata completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> Result<ExitCode> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "strata", &mut out);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &out) {
        // A reader that stops early (`| head`) is no error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completion script")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `strata man --out DIR`: `strata.1` and one page per visible subcommand, nested ones
/// included (`strata-vm.1`, `strata-vm-create.1`, …), written into `out` (created if needed).
pub fn man(out: &Path) -> Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand its full name (`strata-vm-create`), used as the page name.
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, out, &mut written)?;
    println!(
        "wrote {} manual pages into {}",
        written.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `cmd` and of each of its visible subcommands, depth first.
fn write_pages(cmd: clap::Command, out: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            write_pages(sub.clone(), out, written)?;
        }
    }
    // Every page's footer names the program and its version (clap_mangen's default would name
    // the subcommand alone).
    let page = clap_mangen::Man::new(cmd).source(concat!("strata ", env!("CARGO_PKG_VERSION")));
    let path = out.join(page.get_filename());
    page.generate_to(out)
        .with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}
