//! `strata checkpoint …`: a VM's checkpoints (Hyper-V's snapshots) and their tree.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use strata_api::{ApplyCheckpoint, CheckpointInfo, CreateCheckpoint, RenameCheckpoint};

use crate::client::{enc, Client};
use crate::print_json;

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Take a checkpoint (off, saved, paused or running: then with its memory).
    Create {
        vm: String,
        /// Its name (default: "VM - (YYYY-MM-DD - HH:MM:SS)")
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The checkpoint tree ("Now" hangs under the current one).
    List {
        vm: String,
        #[arg(long)]
        json: bool,
    },
    /// Go back to a checkpoint: the VM ends off, or saved with the checkpoint's memory.
    Apply {
        vm: String,
        /// The checkpoint's name or id
        checkpoint: String,
        /// Turn a running VM off first (its current state is discarded)
        #[arg(long)]
        force: bool,
    },
    /// Apply the checkpoint "Now" hangs under.
    Revert {
        vm: String,
        /// Turn a running VM off first (its current state is discarded)
        #[arg(long)]
        force: bool,
    },
    /// Rename a checkpoint.
    Rename {
        vm: String,
        /// The checkpoint's name or id
        checkpoint: String,
        new_name: String,
    },
    /// Delete a checkpoint (its data is merged into its neighbours; the VM may run).
    Delete {
        vm: String,
        /// The checkpoint's name or id
        checkpoint: String,
        /// Also every checkpoint under it
        #[arg(long)]
        subtree: bool,
    },
}

fn base(vm: &str) -> String {
    format!("/v1/vms/{}/checkpoints", enc(vm))
}

fn apply(c: &Client, vm: &str, cp: &str, force: bool) -> Result<Vec<CheckpointInfo>> {
    let body = serde_json::to_value(ApplyCheckpoint { force })?;
    c.json(
        "POST",
        &format!("{}/{}/apply", base(vm), enc(cp)),
        Some(body),
    )
}

/// Runs `strata checkpoint …`.
pub fn run(cmd: CheckpointCommand) -> Result<ExitCode> {
    let c = Client::new();
    let (list, json) = match cmd {
        CheckpointCommand::Create { vm, name, json } => {
            let body = serde_json::to_value(CreateCheckpoint { name })?;
            (c.json("POST", &base(&vm), Some(body))?, json)
        }
        CheckpointCommand::List { vm, json } => (c.json("GET", &base(&vm), None)?, json),
        CheckpointCommand::Apply {
            vm,
            checkpoint,
            force,
        } => (apply(&c, &vm, &checkpoint, force)?, false),
        CheckpointCommand::Revert { vm, force } => {
            let list: Vec<CheckpointInfo> = c.json("GET", &base(&vm), None)?;
            let Some(cur) = list.iter().find(|c| c.current) else {
                bail!("VM '{vm}' has no checkpoint to revert to");
            };
            (apply(&c, &vm, &cur.id, force)?, false)
        }
        CheckpointCommand::Rename {
            vm,
            checkpoint,
            new_name,
        } => {
            let body = serde_json::to_value(RenameCheckpoint { name: new_name })?;
            let path = format!("{}/{}", base(&vm), enc(&checkpoint));
            (c.json("PATCH", &path, Some(body))?, false)
        }
        CheckpointCommand::Delete {
            vm,
            checkpoint,
            subtree,
        } => {
            let path = format!("{}/{}?subtree={subtree}", base(&vm), enc(&checkpoint));
            (c.json("DELETE", &path, None)?, false)
        }
    };
    if json {
        print_json(&list)?;
    } else {
        print_tree(&list);
    }
    Ok(ExitCode::SUCCESS)
}

/// The tree, indented by depth, "Now" under the current checkpoint.
fn print_tree(list: &[CheckpointInfo]) {
    if list.is_empty() {
        println!("no checkpoints");
        return;
    }
    fn walk(list: &[CheckpointInfo], parent: Option<&str>, depth: usize) {
        for c in list.iter().filter(|c| c.parent.as_deref() == parent) {
            let memory = if c.has_memory { ", with memory" } else { "" };
            println!("{}{} ({}{memory})", "  ".repeat(depth), c.name, c.created);
            if c.current {
                println!("{}Now", "  ".repeat(depth + 1));
            }
            walk(list, Some(&c.id), depth + 1);
        }
    }
    walk(list, None, 0);
}
