//! `merge`: fold a differencing disk into its parent in place, or flatten a chain into a new disk.
//!
//! # Crash safety of the in-place merge
//! The child is locked exclusively and the parent opened for writing. Only the sectors the child
//! holds are copied into the parent, so the time taken follows the data in the child, not the
//! size of the disk. While the copy runs, every sector written into the parent is one the child
//! also holds, so the chain child → parent reads exactly the same bytes at every instant. The
//! parent is flushed (made durable) before the child is deleted. A crash at any point therefore
//! leaves either the unchanged chain (to be merged again: the merge is idempotent) or the merged
//! parent with the child gone. Only the parent's modification time changes, so other children of
//! the same parent become stale, as with every VHD tool; `check` reports them.

use std::path::{Path, PathBuf};

use crate::disk::{Disk, OpenOptions};
use crate::error::{IoContext, Result, VhdError};
use crate::footer::DiskType;
use crate::ops::convert::{convert, Source, Target};
use crate::ops::progress::Progress;
use crate::ops::resize::resize;
use crate::sparse::us;

/// Merges the differencing disk `child` into its parent and deletes it. Returns the parent's path.
pub fn merge_into_parent(child_path: &Path, progress: &dyn Progress) -> Result<PathBuf> {
    let child = Disk::open_maintenance(child_path)?;
    if child.disk_type() != DiskType::Differencing {
        return Err(VhdError::invalid(
            format!(
                "this is a {} disk, not a differencing disk: there is nothing to merge it into",
                child.disk_type().name()
            ),
            child_path,
            "merge",
        ));
    }
    let (parent_path, _) = child.locate_parent()?;
    if child.size() > Disk::open(&parent_path, OpenOptions::alone())?.size() {
        resize(&parent_path, child.size(), false)?;
    }
    let parent = Disk::open(&parent_path, OpenOptions::write())?;
    let extents = child.extents()?;
    let total: u64 = extents.iter().map(|(a, b)| b - a).sum();
    progress.start(total);
    let mut buf = vec![0u8; 2 << 20];
    for (start, end) in extents {
        let mut off = start;
        while off < end {
            let n = (end - off).min(buf.len() as u64);
            let chunk = &mut buf[..us(n)];
            child.read_at(chunk, off)?;
            parent.write_at(chunk, off)?;
            progress.advance(n);
            off += n;
        }
    }
    parent.close()?;
    // Deleted while still locked, so no writer can slip in between.
    std::fs::remove_file(child_path).ctx(child_path, "merge")?;
    drop(child);
    if let Some(dir) = child_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx(child_path, "merge")?;
    }
    progress.finish();
    Ok(parent_path)
}

/// Writes the whole chain seen from `child` into a new disk at `dst`; changes nothing else.
pub fn merge_to(
    child_path: &Path,
    dst: &Path,
    target: Target,
    progress: &dyn Progress,
) -> Result<()> {
    let src = Source::Vhd(Box::new(Disk::open(child_path, OpenOptions::read())?));
    convert(&src, dst, target, progress)
}
