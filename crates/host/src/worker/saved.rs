//! A saved state: the memory image `saved.state` and its metadata `saved.json` in the VM's folder.
//! The metadata is written last: its presence alone makes a saved state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_api::Accelerator;

use crate::error::HostError;

/// What a saved state records beside the memory image (`saved.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMeta {
    /// The accelerator the VM ran with.
    pub accelerator: Accelerator,
    /// The CPU model given to QEMU (`max` under TCG, `host` under KVM).
    pub cpu: String,
    /// The host's CPU (what `host` meant).
    pub host_cpu: String,
    /// The versioned machine type (`pc-i440fx-10.0`), used again to restore.
    pub machine: String,
    /// QEMU's version line.
    pub qemu: String,
    /// When the state was saved.
    pub time: String,
    /// The disks as they were once the VM stopped: a restore is refused if one has changed.
    #[serde(default)]
    pub disks: Vec<DiskPrint>,
}

/// What identifies a disk file's contents cheaply: size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPrint {
    /// The file.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (nanoseconds since the epoch).
    pub mtime_ns: u128,
}

impl DiskPrint {
    /// The print of `path` now.
    pub fn of(path: &str) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        let mtime_ns = m
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Self {
            path: path.to_string(),
            size: m.len(),
            mtime_ns,
        })
    }
}

/// The saved-state files of a VM folder: (memory image, metadata).
pub fn saved_files(vm_dir: &Path) -> (PathBuf, PathBuf) {
    (vm_dir.join("saved.state"), vm_dir.join("saved.json"))
}

/// Reads the saved state's metadata in `vm_dir`.
pub fn read_meta(vm_dir: &Path) -> Result<SavedMeta, HostError> {
    let (_, meta) = saved_files(vm_dir);
    let text = std::fs::read(&meta)
        .map_err(|e| HostError::io(&meta, "read the saved state's description", e))?;
    serde_json::from_slice(&text).map_err(|e| {
        HostError::corrupt(format!(
            "{}: not a valid saved-state description: {e}",
            meta.display()
        ))
    })
}

/// Removes a saved state (metadata first: without it the image is no saved state).
pub fn remove(vm_dir: &Path) {
    let (image, meta) = saved_files(vm_dir);
    let _ = std::fs::remove_file(meta);
    let _ = std::fs::remove_file(image);
}
