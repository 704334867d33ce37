//! `strata vm disk add|remove`: a VM's disks one at a time, also while it runs (virtio and
//! SCSI disks are hot-added and hot-removed; the file is never deleted).

use anyhow::Result;
use clap::Subcommand;
use strata_api::VmDetails;

use crate::client::{enc, Client};
use crate::print_json;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Attach a VHD (hot-added when the VM runs: virtio or SCSI).
    Add {
        vm: String,
        /// PATH[:virtio|:scsi|:ide] (virtio by default)
        disk: String,
        #[arg(long)]
        json: bool,
    },
    /// Detach a disk, by index or path (hot-removed when the VM runs; the file is kept).
    Remove {
        vm: String,
        /// The disk's index (`strata vm show`) or path
        disk: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs `strata vm disk …`.
pub fn run(c: &Client, cmd: DiskCommand) -> Result<()> {
    let (vm, json) = match cmd {
        DiskCommand::Add { vm, disk, json } => {
            let body = serde_json::to_value(crate::vm::disk_spec(&disk)?)?;
            let d: VmDetails =
                c.json("POST", &format!("/v1/vms/{}/disks", enc(&vm)), Some(body))?;
            (d, json)
        }
        DiskCommand::Remove { vm, disk, json } => {
            // A path is sent as given when it is an index, else made absolute.
            let key = if disk.parse::<usize>().is_ok() {
                disk
            } else {
                crate::vm::absolute(&disk)?
            };
            let path = format!("/v1/vms/{}/disks/{}", enc(&vm), enc(&key));
            let d: VmDetails = c.json("DELETE", &path, None)?;
            (d, json)
        }
    };
    if json {
        return print_json(&vm.disks);
    }
    for (i, d) in vm.disks.iter().enumerate() {
        println!("Disk {i}: {} ({:?})", d.path, d.bus);
    }
    Ok(())
}
