//! The chain of parents of a differencing disk: where the parent may be (its locators and names,
//! see [`crate::locator`]), checking that the file found is the parent (unique id, time stamp),
//! and opening the chain below a disk, without loops and at most 255 disks deep.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Disk, Layout, OpenOptions};
use crate::error::{ErrorKind, Result, VhdError};
use crate::footer::{vhd_time, DiskType};
use crate::header::DynamicHeader;
use crate::locator;
use crate::sparse::us;

/// Disks a chain may hold, counting the one opened first.
const MAX_CHAIN: usize = 255;

/// Records the disk about to be opened in `seen`, the (device, inode) of every disk opened so far
/// in this chain, from the top down. Refuses a disk already there (the parents loop back) and a
/// chain longer than [`MAX_CHAIN`]: opening a chain always ends.
pub(super) fn enter(seen: &mut Vec<(u64, u64)>, meta: &Metadata, path: &Path) -> Result<()> {
    const OP: &str = "open";
    if seen.contains(&(meta.dev(), meta.ino())) {
        return Err(VhdError::corrupt(
            "the chain of parents loops back to this disk",
            path,
            OP,
        ));
    }
    if seen.len() >= MAX_CHAIN {
        return Err(VhdError::corrupt(
            "the chain of parents is longer than 255 disks",
            path,
            OP,
        ));
    }
    seen.push((meta.dev(), meta.ino()));
    Ok(())
}

impl Disk {
    /// Opens the chain below this differencing disk, read-only whatever `opts` says (a parent is
    /// never written through its child), and keeps it for reads.
    pub(super) fn open_chain_below(
        &mut self,
        opts: OpenOptions,
        seen: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let parent_opts = OpenOptions {
            write: false,
            ..opts
        };
        let (found, warning) = self.locate_parent()?;
        let parent = Disk::open_in_chain(&found, parent_opts, seen, false)?;
        self.warnings.extend(warning);
        self.parent = Some(Box::new(parent));
        Ok(())
    }

    /// Where the parent may be, best first (see [`crate::locator`]).
    pub fn parent_candidates(&self) -> Vec<PathBuf> {
        let Layout::Sparse(s) = &self.layout else {
            return vec![];
        };
        parent_candidates(&self.file, &self.path, &s.header)
    }

    /// Finds this differencing disk's parent and checks its unique id; returns its path and a
    /// warning when its time stamp differs from the one recorded.
    pub fn locate_parent(&self) -> Result<(PathBuf, Option<String>)> {
        let Layout::Sparse(s) = &self.layout else {
            return Err(VhdError::invalid(
                "a fixed disk has no parent",
                &self.path,
                "open parent",
            ));
        };
        if self.footer.disk_type != DiskType::Differencing {
            return Err(VhdError::invalid(
                "this disk is not a differencing disk",
                &self.path,
                "open parent",
            ));
        }
        let candidates = self.parent_candidates();
        let Some(found) = candidates.iter().find(|p| p.is_file()) else {
            let tried = candidates.iter().map(|p| p.display().to_string()).collect();
            return Err(VhdError::new(
                ErrorKind::ParentNotFound { tried },
                &self.path,
                "open parent",
            ));
        };
        let alone = OpenOptions::alone();
        let parent = Disk::open(found, alone)?;
        if parent.footer.unique_id != s.header.parent_id {
            let kind = ErrorKind::ParentMismatch {
                parent: found.display().to_string(),
                expected: s.header.parent_id.to_string(),
                found: parent.footer.unique_id.to_string(),
            };
            return Err(VhdError::new(kind, &self.path, "open parent"));
        }
        Ok((found.clone(), parent_time_warning(&s.header, found)))
    }
}

/// The candidate paths of a differencing disk's parent, best first, without duplicates.
fn parent_candidates(file: &File, path: &Path, h: &DynamicHeader) -> Vec<PathBuf> {
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut entries: Vec<_> = h
        .locators
        .iter()
        .filter(|l| l.code != 0 && l.data_len > 0)
        .collect();
    entries.sort_by_key(|l| locator::preference(l.code));
    let mut out: Vec<PathBuf> = Vec::new();
    for loc in entries {
        let mut data = vec![0u8; us(u64::from(loc.data_len.min(64 * 1024)))];
        if file.read_exact_at(&mut data, loc.data_offset).is_err() {
            continue;
        }
        if let Some(p) = locator::decode(loc.code, &data).and_then(|t| locator::host_path(&dir, &t))
        {
            out.push(p);
        }
    }
    if let Some(p) = locator::host_path(&dir, &h.parent_name) {
        out.push(p);
    }
    let base = locator::base_name(&h.parent_name);
    if !base.is_empty() {
        out.push(dir.join(base));
    }
    let mut unique = Vec::new();
    for p in out {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    unique
}

/// A warning when the parent was modified after the child recorded its time stamp.
fn parent_time_warning(h: &DynamicHeader, parent: &Path) -> Option<String> {
    if h.parent_timestamp == 0 {
        return None; // Windows 10 records 0: nothing to compare.
    }
    let mtime = std::fs::metadata(parent).and_then(|m| m.modified()).ok()?;
    let now = vhd_time(mtime);
    (now != h.parent_timestamp).then(|| {
        format!(
            "the parent {} was modified after this disk was made (time stamp {} recorded, {} now)",
            parent.display(),
            h.parent_timestamp,
            now
        )
    })
}

/// Whether two paths name the same file.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}
