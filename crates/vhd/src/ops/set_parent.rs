//! `set-parent`: reconnect a differencing disk whose parent moved or was renamed. The new locators
//! are written after the data (with the footer moved first), made durable, and only then does the
//! header point to them: a crash leaves either the old link or the new one.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::create::ParentLink;
use crate::disk::{Disk, OpenOptions};
use crate::error::{ErrorKind, IoContext, Result, VhdError};
use crate::footer::DiskType;
use crate::header::LocatorEntry;
use crate::locator;

/// Points `child` at `parent`. Refuses a parent whose unique id differs from the one the child
/// recorded unless `force` (then the child records the new parent's id).
pub fn set_parent(child_path: &Path, parent_path: &Path, force: bool) -> Result<()> {
    const OP: &str = "set parent";
    let child = Disk::open_maintenance(child_path)?;
    if child.disk_type() != DiskType::Differencing {
        return Err(VhdError::invalid(
            "this is not a differencing disk",
            child_path,
            OP,
        ));
    }
    let parent = Disk::open(parent_path, OpenOptions::read())?;
    if crate::disk::same_file(child_path, parent_path) {
        return Err(VhdError::invalid(
            "a disk cannot be its own parent",
            child_path,
            OP,
        ));
    }
    let mut header = child
        .header()
        .expect("differencing disks have a header")
        .clone();
    if parent.footer().unique_id != header.parent_id && !force {
        let kind = ErrorKind::ParentMismatch {
            parent: parent_path.display().to_string(),
            expected: header.parent_id.to_string(),
            found: parent.footer().unique_id.to_string(),
        };
        return Err(VhdError::new(kind, child_path, OP));
    }
    if parent.size() < child.size() {
        return Err(VhdError::invalid(
            "the new parent is smaller than the child",
            child_path,
            OP,
        ));
    }
    let link = ParentLink::of(&parent)?;
    drop(parent);
    let file = child.file();
    let footer_pos = child.footer_pos();
    let child_abs = crate::create::absolute(child_path);
    let payloads = locator::encode(&child_abs, &link.abs_path);
    let mut pos = footer_pos;
    let mut blob = vec![];
    header.locators = [LocatorEntry::default(); 8];
    for (i, (code, data)) in payloads.into_iter().enumerate() {
        let space = (data.len() as u64).next_multiple_of(512);
        header.locators[i] = LocatorEntry {
            code,
            data_space: u32::try_from(space).unwrap_or(u32::MAX),
            data_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            data_offset: pos,
        };
        let mut padded = data;
        padded.resize(usize::try_from(space).expect("64-bit"), 0);
        blob.extend(padded);
        pos += space;
    }
    let write = |buf: &[u8], at: u64| {
        file.write_all_at(buf, at)
            .map_err(|e| VhdError::io(e, child_path, OP).at(at))
    };
    let mut footer = child.footer().clone();
    write(&footer.to_bytes(), pos)?;
    write(&blob, footer_pos)?;
    file.sync_data().ctx(child_path, OP)?;
    header.parent_id = link.id;
    header.parent_timestamp = link.mtime;
    header.parent_name = link.file_name();
    write(&header.to_bytes(), footer.data_offset)?;
    file.sync_data().ctx(child_path, OP)?;
    Ok(())
}
