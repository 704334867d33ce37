//! Undo disks: a differencing disk `BASE.vud` beside its base that takes every write while the base
//! stays untouched; then commit (merge into the base), discard (delete), or keep it.

use std::path::{Path, PathBuf};

use crate::disk::{Disk, OpenOptions};
use crate::error::{IoContext, Result, VhdError};
use crate::ops::merge::merge_into_parent;
use crate::ops::progress::Progress;

/// The undo disk's path for a base: same folder and stem, extension `.vud`.
pub fn undo_path(base: &Path) -> PathBuf {
    base.with_extension("vud")
}

/// Creates the undo disk of `base`; fails if one exists.
pub fn create(base: &Path) -> Result<PathBuf> {
    let undo = undo_path(base);
    if undo.exists() {
        return Err(VhdError::invalid(
            format!(
                "an undo disk already exists ({}): commit or discard it first",
                undo.display()
            ),
            base,
            "undo create",
        ));
    }
    crate::create_differencing(&undo, base)?;
    Ok(undo)
}

/// The undo disk of `base`, checked to be a child of it.
fn existing(base: &Path, op: &'static str) -> Result<PathBuf> {
    let undo = undo_path(base);
    if !undo.exists() {
        return Err(VhdError::invalid(
            format!("there is no undo disk ({})", undo.display()),
            base,
            op,
        ));
    }
    let disk = Disk::open(&undo, OpenOptions::alone())?;
    let (parent, _) = disk.locate_parent()?;
    if !crate::disk::same_file(&parent, base) {
        return Err(VhdError::invalid(
            format!(
                "{} is not an undo disk of this disk (its parent is {})",
                undo.display(),
                parent.display()
            ),
            base,
            op,
        ));
    }
    Ok(undo)
}

/// Merges the undo disk into the base and removes it.
pub fn commit(base: &Path, progress: &dyn Progress) -> Result<()> {
    let undo = existing(base, "undo commit")?;
    merge_into_parent(&undo, progress).map(|_| ())
}

/// Deletes the undo disk (its changes are lost).
pub fn discard(base: &Path) -> Result<()> {
    let undo = existing(base, "undo discard")?;
    // Take the lock so that a disk in use is not deleted under its writer.
    let disk = Disk::open_maintenance(&undo)?;
    std::fs::remove_file(&undo).ctx(&undo, "undo discard")?;
    drop(disk);
    Ok(())
}
