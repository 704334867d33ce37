//! Creating fixed, dynamic and differencing disks. A new file is written under a temporary name in
//! the target folder, made durable, then renamed: a failure never leaves a half-written disk, and
//! an existing file is never replaced.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::disk::{Disk, OpenOptions};
use crate::error::{IoContext, Result, VhdError};
use crate::footer::{vhd_time, DiskType, Footer, MAX_VIRTUAL_SIZE};
use crate::header::{
    DynamicHeader, LocatorEntry, DEFAULT_BLOCK_SIZE, HEADER_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};
use crate::locator;
use crate::uuid_fmt::DiskId;

/// What to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewDisk {
    /// Fixed: data followed by a footer, all space reserved.
    Fixed,
    /// Dynamic with this block size (bytes, power of two, 4 KiB – 256 MiB).
    Dynamic {
        /// Block size.
        block_size: u32,
    },
}

impl NewDisk {
    /// Dynamic with the default 2 MiB blocks.
    pub fn dynamic() -> Self {
        NewDisk::Dynamic {
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

/// Checks a virtual size for a new disk; returns warnings (e.g. not a whole number of MiB for a
/// fixed disk, which Hyper-V and Azure require).
pub fn validate_size(path: &Path, size: u64, kind: NewDisk) -> Result<Vec<String>> {
    const OP: &str = "create";
    if size == 0 || !size.is_multiple_of(512) {
        return Err(VhdError::invalid(
            format!("size {size} is not a positive multiple of 512 bytes"),
            path,
            OP,
        ));
    }
    if size > MAX_VIRTUAL_SIZE {
        return Err(VhdError::invalid(
            format!("size {size} is larger than the VHD format's limit of 2040 GiB ({MAX_VIRTUAL_SIZE} bytes)"),
            path,
            OP,
        ));
    }
    if let NewDisk::Dynamic { block_size } = kind {
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(VhdError::invalid(
                format!("block size {block_size} must be a power of two from 4 KiB to 256 MiB"),
                path,
                OP,
            ));
        }
    }
    if let NewDisk::Dynamic { block_size } = kind {
        check_bat_entries(path, size, block_size, OP)?;
    }
    let mut warnings = vec![];
    if kind == NewDisk::Fixed && !size.is_multiple_of(1 << 20) {
        warnings.push(format!(
            "{}: size {size} is not a multiple of 1 MiB; Hyper-V and Azure need fixed disks sized in whole MiB",
            path.display()
        ));
    }
    Ok(warnings)
}

/// Refuses a size that needs more BAT entries than a disk may have.
pub(crate) fn check_bat_entries(
    path: &Path,
    size: u64,
    block_size: u32,
    op: &'static str,
) -> Result<()> {
    let entries = size.div_ceil(u64::from(block_size));
    let max = crate::header::MAX_BAT_ENTRIES;
    if entries > u64::from(max) {
        let min_block = size.div_ceil(u64::from(max)).next_power_of_two();
        return Err(VhdError::invalid(
            format!("{size} bytes in blocks of {block_size} needs {entries} blocks, more than the {max} allowed: use a block size of at least {min_block}"),
            path,
            op,
        ));
    }
    Ok(())
}

/// A file being written under a temporary name beside its final path.
pub(crate) struct NewFile {
    tmp: NamedTempFile,
    target: PathBuf,
}

impl NewFile {
    pub fn new(target: &Path) -> Result<NewFile> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if target.exists() {
            return Err(VhdError::invalid(
                "the file already exists",
                target,
                "create",
            ));
        }
        if !dir.is_dir() {
            return Err(VhdError::invalid(
                format!("the folder {} does not exist", dir.display()),
                target,
                "create",
            ));
        }
        Self::new_replacing(target)
    }

    /// Like [`NewFile::new`], for a file that will replace `target` (which must exist).
    pub fn new_replacing(target: &Path) -> Result<NewFile> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .ctx(target, "create")?;
        Ok(NewFile {
            tmp,
            target: target.to_path_buf(),
        })
    }

    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Syncs and renames to the target; `replace` allows overwriting an existing target.
    pub fn commit(self, replace: bool) -> Result<()> {
        let target = self.target.clone();
        self.tmp.as_file().sync_all().ctx(&target, "create")?;
        if replace {
            self.tmp
                .persist(&target)
                .map_err(|e| VhdError::io(e.error, &target, "create"))?;
        } else {
            self.tmp
                .persist_noclobber(&target)
                .map_err(|e| VhdError::io(e.error, &target, "create"))?;
        }
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .ctx(&target, "create")?;
        }
        Ok(())
    }
}

/// A parent to record in a new differencing disk.
pub(crate) struct ParentLink {
    pub id: DiskId,
    pub abs_path: PathBuf,
    pub mtime: u32,
}

impl ParentLink {
    /// The name recorded in the header: the parent's file name alone, as VirtualBox writes it.
    /// (Windows writes its absolute path; libvhdi looks for the base name in the child's folder,
    /// with `\\` as the only separator, so a Unix path there would mislead it.) The locators
    /// carry the paths.
    pub fn file_name(&self) -> String {
        self.abs_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn of(parent: &Disk) -> Result<ParentLink> {
        let abs = std::fs::canonicalize(parent.path()).ctx(parent.path(), "create")?;
        let mtime = std::fs::metadata(&abs)
            .and_then(|m| m.modified())
            .ctx(&abs, "create")?;
        Ok(ParentLink {
            id: parent.footer().unique_id,
            abs_path: abs,
            mtime: vhd_time(mtime),
        })
    }
}

/// Writes the metadata of an empty sparse disk into `file`: footer copy, header, empty BAT,
/// locators, footer. `child_path` is where the file will live (for relative locators).
pub(crate) fn write_sparse_layout(
    file: &File,
    err_path: &Path,
    child_path: &Path,
    footer: &mut Footer,
    block_size: u32,
    parent: Option<&ParentLink>,
) -> Result<()> {
    let entries = u32::try_from(footer.current_size.div_ceil(u64::from(block_size)))
        .map_err(|_| VhdError::invalid("too many blocks", err_path, "create"))?;
    let table_offset = 512 + HEADER_SIZE as u64;
    let mut header = DynamicHeader::new(table_offset, entries, block_size);
    let mut pos = table_offset + header.bat_bytes();
    let mut payloads: Vec<(u64, Vec<u8>)> = vec![];
    if let Some(p) = parent {
        header.parent_id = p.id;
        header.parent_timestamp = p.mtime;
        header.parent_name = p.file_name();
        let child_abs = absolute(child_path);
        for (i, (code, data)) in locator::encode(&child_abs, &p.abs_path)
            .into_iter()
            .enumerate()
        {
            let space = (data.len() as u64).next_multiple_of(512);
            header.locators[i] = LocatorEntry {
                code,
                data_space: u32::try_from(space).unwrap_or(u32::MAX),
                data_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
                data_offset: pos,
            };
            payloads.push((pos, data));
            pos += space;
        }
    }
    let mut bytes = vec![0u8; usize::try_from(pos).expect("64-bit")];
    let fb = footer.to_bytes();
    bytes[..512].copy_from_slice(&fb);
    bytes[512..512 + HEADER_SIZE].copy_from_slice(&header.to_bytes());
    let bat_at = usize::try_from(table_offset).expect("64-bit");
    bytes[bat_at..bat_at + usize::try_from(header.bat_bytes()).expect("64-bit")].fill(0xFF);
    for (at, data) in payloads {
        let at = usize::try_from(at).expect("64-bit");
        bytes[at..at + data.len()].copy_from_slice(&data);
    }
    file.write_all_at(&bytes, 0).ctx(err_path, "create")?;
    file.write_all_at(&fb, pos).ctx(err_path, "create")?;
    Ok(())
}

/// An absolute form of a path that may not exist yet (its folder does).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    std::fs::canonicalize(dir).map_or_else(|_| path.to_path_buf(), |d| d.join(name))
}

/// Creates a fixed or dynamic disk of `size` bytes; returns warnings worth showing.
pub fn create(path: &Path, size: u64, kind: NewDisk) -> Result<Vec<String>> {
    let warnings = validate_size(path, size, kind)?;
    let new = NewFile::new(path)?;
    write_empty(&new, path, size, kind, DiskId::random())?;
    new.commit(false)?;
    Ok(warnings)
}

/// Writes an empty disk of the given kind into a new file.
pub(crate) fn write_empty(
    new: &NewFile,
    path: &Path,
    size: u64,
    kind: NewDisk,
    id: DiskId,
) -> Result<()> {
    match kind {
        NewDisk::Fixed => {
            let mut footer = Footer::new(DiskType::Fixed, size, id);
            preallocate(new.file(), size + 512);
            new.file().set_len(size + 512).ctx(path, "create")?;
            new.file()
                .write_all_at(&footer.to_bytes(), size)
                .ctx(path, "create")
        }
        NewDisk::Dynamic { block_size } => {
            let mut footer = Footer::new(DiskType::Dynamic, size, id);
            write_sparse_layout(new.file(), path, path, &mut footer, block_size, None)
        }
    }
}

/// Reserves space for a fixed disk where the file system can (best effort: the file is sized
/// with `set_len` either way).
fn preallocate(file: &File, len: u64) {
    let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len);
}

/// Creates a differencing disk whose parent is `parent` (any VHD); its size is the parent's.
pub fn create_differencing(path: &Path, parent: &Path) -> Result<()> {
    let parent_disk = Disk::open(parent, OpenOptions::read())?;
    let link = ParentLink::of(&parent_disk)?;
    let block_size = parent_disk.block_size().unwrap_or(DEFAULT_BLOCK_SIZE);
    let mut footer = Footer::new(DiskType::Differencing, parent_disk.size(), DiskId::random());
    footer.original_size = parent_disk.size();
    let new = NewFile::new(path)?;
    write_sparse_layout(new.file(), path, path, &mut footer, block_size, Some(&link))?;
    new.file().flush().ctx(path, "create")?;
    new.commit(false)
}
