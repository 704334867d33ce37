//! `strata disk plug|unplug|query`: VHDMount for Strata, over `strata-plug`. This module turns
//! the flags into the library's options, asks whether to commit an undo disk on a terminal, and
//! words what happened.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Result};
use strata_plug::{Mode, Plugged, Plugs, UndoOutcome, Unplugged};

use crate::progress::EachBar;

/// This host's plugged disks, served by this very binary (`strata disk serve`).
pub fn plugs() -> Result<Plugs> {
    let exe = std::env::current_exe()?;
    Ok(Plugs::new(
        strata_plug::run_dir(),
        vec![exe.into_os_string(), "disk".into(), "serve".into()],
    ))
}

/// The mode the flags ask for.
pub fn mode(read_only: bool, direct: bool) -> Result<Mode> {
    Ok(match (read_only, direct) {
        (true, true) => bail!("--read-only and --direct exclude each other"),
        (true, false) => Mode::ReadOnly,
        (false, true) => Mode::Direct,
        (false, false) => Mode::Undo,
    })
}

/// Options of `plug`.
pub struct PlugOptions {
    pub read_only: bool,
    pub direct: bool,
    pub tcp: Option<String>,
    /// Also expose the disk as a file in a FUSE mount.
    pub fuse: bool,
}

/// Plugs a disk in: starts its server and records it. Returns the record.
pub fn plug(path: &Path, opts: &PlugOptions) -> Result<Plugged> {
    let options = strata_plug::PlugOptions {
        mode: mode(opts.read_only, opts.direct)?,
        tcp: opts.tcp.clone(),
        fuse: opts.fuse,
    };
    Ok(plugs()?.plug(path, &options)?)
}

/// What to do with an undo disk at unplug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndoChoice {
    Commit,
    Discard,
    /// Ask on a terminal; discard in scripts.
    Ask,
}

/// Unplugs one disk (or all). Returns what to tell the user, a line each.
pub fn unplug(path: Option<&Path>, choice: UndoChoice) -> Result<Vec<String>> {
    let interactive = std::io::stdin().is_terminal();
    let mut decide = |rec: &Plugged| match choice {
        UndoChoice::Commit => Ok(strata_plug::UndoChoice::Commit),
        UndoChoice::Ask if interactive => ask(rec),
        UndoChoice::Discard | UndoChoice::Ask => Ok(strata_plug::UndoChoice::Discard),
    };
    let done = plugs()?.unplug(path, &mut decide, &EachBar::new("committing"))?;
    Ok(done
        .iter()
        .flat_map(|u| said(u, choice, interactive))
        .collect())
}

/// The lines that tell what became of one disk.
fn said(u: &Unplugged, choice: UndoChoice, interactive: bool) -> Vec<String> {
    let path = u.path.display();
    let mut lines = vec![];
    match (&u.undo, &u.problem) {
        (Some(UndoOutcome::Discarded), _) => match (choice, interactive) {
            (UndoChoice::Ask, false) => lines.push(format!(
                "discarding the changes made while {path} was plugged in (no --commit, and not on a terminal)"
            )),
            // Answered "no" on the terminal: nothing to add.
            (UndoChoice::Ask, true) => {}
            _ => lines.push(format!("discarded the changes to {path}")),
        },
        (Some(UndoOutcome::Committed), _) => {
            lines.push(format!("committed the changes into {path}"));
        }
        (Some(UndoOutcome::Kept(undo_disk)), problem) => lines.push(format!(
            "not committing: {}; the undo disk {} is kept: decide with `strata disk undo commit|discard {path}`",
            problem.as_deref().unwrap_or("the server did not end cleanly"),
            undo_disk.display()
        )),
        (None, Some(p)) => lines.push(format!("warning: {path}: {p}")),
        (None, None) => {}
    }
    lines.push(format!("unplugged {path}"));
    lines
}

fn ask(rec: &Plugged) -> std::io::Result<strata_plug::UndoChoice> {
    let undo_disk = rec
        .undo_path
        .as_deref()
        .unwrap_or(Path::new("the undo disk"));
    eprint!(
        "Commit the changes in {} into {}? [y/N] ",
        undo_disk.display(),
        rec.path.display()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(if matches!(answer.trim(), "y" | "Y" | "yes") {
        strata_plug::UndoChoice::Commit
    } else {
        strata_plug::UndoChoice::Discard
    })
}

/// The plugged disks (one, or all), dropping records of servers that died.
pub fn query(path: Option<&Path>) -> Result<Vec<Plugged>> {
    Ok(plugs()?.query(path)?)
}
