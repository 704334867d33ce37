//! [`Disk`]: an open VHD (with its chain of parents), to read and write like a block device.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, IoContext, Result, VhdError};
use crate::footer::{vhd_time, DiskType, Footer, FooterProblem, FOOTER_SIZE};
use crate::header::{DynamicHeader, HeaderProblem, BAT_UNUSED, HEADER_SIZE};
use crate::locator;
use crate::lock::{lock, LockMode};
use crate::sparse::{us, Ctx, Sparse};

/// How to open a disk.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Open for writing (exclusive lock) rather than reading (shared lock).
    pub write: bool,
    /// Take advisory locks (on by default; off only for inspection).
    pub lock: bool,
    /// Open the parents of a differencing disk (on by default). Off: the disk stands alone and
    /// sectors it does not hold read as zeros.
    pub parents: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            write: false,
            lock: true,
            parents: true,
        }
    }
}

impl OpenOptions {
    /// Read-only, shared locks, with parents.
    pub fn read() -> Self {
        Self::default()
    }

    /// This file alone, read-only and without locks: for looking at metadata (inspect, check,
    /// parent look-ups) even while another process uses the disk.
    pub fn alone() -> Self {
        OpenOptions {
            write: false,
            lock: false,
            parents: false,
        }
    }

    /// Read-write, exclusive lock on the disk, shared locks on its parents.
    pub fn write() -> Self {
        OpenOptions {
            write: true,
            ..Self::default()
        }
    }
}

pub(crate) enum Layout {
    Fixed,
    Sparse(Box<Sparse>),
}

/// An open VHD.
pub struct Disk {
    path: PathBuf,
    file: File,
    writable: bool,
    footer: Footer,
    footer_bytes: [u8; FOOTER_SIZE],
    pub(crate) layout: Layout,
    parent: Option<Box<Disk>>,
    warnings: Vec<String>,
}

/// The footer a file ends with, or the best substitute, and what was wrong.
pub(crate) struct FooterRead {
    pub footer: Footer,
    /// Where the data of the file ends (the footer's position when it is there).
    pub footer_pos: u64,
    pub problems: Vec<String>,
}

pub(crate) fn read_exact_at(
    file: &File,
    path: &Path,
    buf: &mut [u8],
    off: u64,
    op: &'static str,
) -> Result<()> {
    file.read_exact_at(buf, off)
        .map_err(|e| VhdError::io(e, path, op).at(off))
}

/// Reads the footer at the end of the file, falling back to the copy at offset 0.
pub(crate) fn read_footer(file: &File, path: &Path, len: u64) -> Result<FooterRead> {
    const OP: &str = "read footer";
    if len < 511 {
        return Err(VhdError::corrupt(
            format!("the file is {len} bytes, too small to be a VHD"),
            path,
            OP,
        ));
    }
    let mut problems = Vec::new();
    let mut damaged: Option<(Footer, u64)> = None;
    let mut end = [0u8; FOOTER_SIZE];
    if len >= 512 {
        read_exact_at(file, path, &mut end, len - 512, OP)?;
        match Footer::parse(&end) {
            Ok(footer) => {
                return Ok(FooterRead {
                    footer,
                    footer_pos: len - 512,
                    problems,
                })
            }
            Err(FooterProblem::BadChecksum { footer, computed }) => {
                problems.push(format!(
                    "the footer checksum is {:#010x}, expected {computed:#010x}",
                    footer.checksum
                ));
                damaged = Some((*footer, len - 512));
            }
            Err(FooterProblem::Invalid(msg)) => {
                problems.push(format!("the footer at the end is invalid: {msg}"))
            }
            Err(FooterProblem::NoCookie) => {}
        }
    }
    if damaged.is_none() {
        // Virtual PC before 2004 wrote 511-byte footers.
        let mut short = [0u8; FOOTER_SIZE];
        read_exact_at(file, path, &mut short[..511], len - 511, OP)?;
        if let Ok(footer) = Footer::parse(&short) {
            return Ok(FooterRead {
                footer,
                footer_pos: len - 511,
                problems,
            });
        }
        if problems.is_empty() {
            problems.push("there is no footer at the end of the file".into());
        }
    }
    if len >= 1024 {
        let mut copy = [0u8; FOOTER_SIZE];
        read_exact_at(file, path, &mut copy, 0, OP)?;
        if let Ok(footer) = Footer::parse(&copy) {
            if footer.disk_type != DiskType::Fixed {
                problems.push("the footer copy at offset 0 is used instead".into());
                let footer_pos = damaged.map_or(len, |(_, p)| p);
                return Ok(FooterRead {
                    footer,
                    footer_pos,
                    problems,
                });
            }
        }
    }
    match damaged {
        Some((footer, footer_pos)) => Ok(FooterRead {
            footer,
            footer_pos,
            problems,
        }),
        None => Err(VhdError::corrupt(
            format!("not a VHD file: {}", problems.join("; ")),
            path,
            OP,
        )),
    }
}

/// Reads and checks the dynamic header, returns it with a list of non-fatal problems.
pub(crate) fn read_header(
    file: &File,
    path: &Path,
    footer: &Footer,
    footer_pos: u64,
) -> Result<(DynamicHeader, Vec<String>)> {
    const OP: &str = "read header";
    let at = footer.data_offset;
    if at
        .checked_add(HEADER_SIZE as u64)
        .is_none_or(|e| e > footer_pos)
    {
        return Err(VhdError::corrupt(
            format!("the header offset {at:#x} is outside the file"),
            path,
            OP,
        )
        .at(40));
    }
    let mut b = [0u8; HEADER_SIZE];
    read_exact_at(file, path, &mut b, at, OP)?;
    let (header, problems) = match DynamicHeader::parse(&b) {
        Ok(h) => (h, vec![]),
        Err(HeaderProblem::BadChecksum { header, computed }) => {
            let msg = format!(
                "the header checksum is {:#010x}, expected {computed:#010x}",
                header.checksum
            );
            (*header, vec![msg])
        }
        Err(HeaderProblem::NoCookie) => {
            return Err(VhdError::corrupt(
                "no dynamic header (cookie \"cxsparse\") where the footer points",
                path,
                OP,
            )
            .at(at))
        }
        Err(HeaderProblem::Invalid(msg)) => return Err(VhdError::corrupt(msg, path, OP).at(at)),
    };
    let capacity = u64::from(header.max_table_entries) * u64::from(header.block_size);
    if capacity < footer.current_size {
        let msg = format!(
            "the BAT has {} entries of {} bytes, too few for the virtual size {}",
            header.max_table_entries, header.block_size, footer.current_size
        );
        return Err(VhdError::corrupt(msg, path, OP).at(at + 28));
    }
    if header
        .table_offset
        .checked_add(header.bat_bytes())
        .is_none_or(|e| e > footer_pos)
    {
        let msg = format!(
            "the BAT at {:#x} reaches past the end of the file",
            header.table_offset
        );
        return Err(VhdError::corrupt(msg, path, OP).at(at + 16));
    }
    Ok((header, problems))
}

/// Reads the BAT and checks every entry: in bounds, no overlaps. Returns it and the end of data.
pub(crate) fn read_bat(
    file: &File,
    path: &Path,
    footer: &Footer,
    h: &DynamicHeader,
    footer_pos: u64,
) -> Result<(Vec<u32>, u64)> {
    const OP: &str = "read BAT";
    let mut raw = vec![0u8; us(u64::from(h.max_table_entries) * 4)];
    read_exact_at(file, path, &mut raw, h.table_offset, OP)?;
    let bat: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let block_len = h.bitmap_bytes() + u64::from(h.block_size);
    // (start, end, what) of every structure, to find overlaps.
    let mut spans: Vec<(u64, u64, String)> = vec![
        (0, 512, "the footer copy".into()),
        (
            footer.data_offset,
            footer.data_offset + HEADER_SIZE as u64,
            "the dynamic header".into(),
        ),
        (
            h.table_offset,
            h.table_offset + h.bat_bytes(),
            "the BAT".into(),
        ),
    ];
    for (i, &e) in bat.iter().enumerate() {
        if e == BAT_UNUSED {
            continue;
        }
        let start = u64::from(e) * 512;
        let end = start + block_len;
        if end > footer_pos {
            let msg = format!(
                "BAT entry {i} points to {start:#x}, past the end of the data ({footer_pos:#x})"
            );
            return Err(VhdError::corrupt(msg, path, OP).at(h.table_offset + 4 * i as u64));
        }
        spans.push((start, end, format!("block {i}")));
    }
    spans.sort_by_key(|s| s.0);
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            let msg = format!("{} and {} overlap in the file", w[0].2, w[1].2);
            return Err(VhdError::corrupt(msg, path, OP).at(w[1].0));
        }
    }
    let mut data_end = spans.last().map_or(0, |s| s.1);
    // Locator data and the space reserved for it (Windows reserves up to 64 KiB, in bytes).
    for loc in h.locators.iter().filter(|l| l.code != 0) {
        let reserved = u64::from(loc.data_len.max(loc.data_space));
        data_end = data_end.max(loc.data_offset.saturating_add(reserved).min(footer_pos));
    }
    Ok((bat, data_end.next_multiple_of(512).min(footer_pos)))
}

impl Disk {
    /// Opens a VHD and, for a differencing disk, its chain of parents.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Disk> {
        let path = path.as_ref();
        if opts.write && !opts.parents {
            // Writing without the chain below would complete partial writes with zeros instead of
            // the parent's bytes: refused. (Maintenance that writes no data has its own mode.)
            let probe = Disk::open(path, OpenOptions::alone())?;
            if probe.disk_type() == DiskType::Differencing {
                return Err(VhdError::invalid(
                    "a differencing disk cannot be opened for writing without its parents",
                    path,
                    "open",
                ));
            }
        }
        Self::open_in_chain(path, opts, &mut Vec::new(), false)
    }

    /// Opens a disk alone, read-write at the file level and locked exclusively, but refusing
    /// data writes: for operations that only rewrite metadata (set-parent) or read a child that
    /// nobody else may touch (merge, undo discard).
    pub(crate) fn open_maintenance(path: &Path) -> Result<Disk> {
        let opts = OpenOptions {
            write: true,
            lock: true,
            parents: false,
        };
        Self::open_in_chain(path, opts, &mut Vec::new(), true)
    }

    fn open_in_chain(
        path: &Path,
        opts: OpenOptions,
        seen: &mut Vec<(u64, u64)>,
        maintenance: bool,
    ) -> Result<Disk> {
        const OP: &str = "open";
        let file = open_locked(path, opts)?;
        let meta = file.metadata().ctx(path, OP)?;
        if seen.contains(&(meta.dev(), meta.ino())) {
            return Err(VhdError::corrupt(
                "the chain of parents loops back to this disk",
                path,
                OP,
            ));
        }
        if seen.len() >= 255 {
            return Err(VhdError::corrupt(
                "the chain of parents is longer than 255 disks",
                path,
                OP,
            ));
        }
        seen.push((meta.dev(), meta.ino()));
        let len = file.metadata().ctx(path, OP)?.len();
        let FooterRead {
            mut footer,
            footer_pos,
            mut problems,
        } = read_footer(&file, path, len)?;
        let layout = match footer.disk_type {
            DiskType::Fixed => {
                if footer.current_size > footer_pos {
                    let msg = format!(
                        "the fixed disk declares {} bytes but holds only {footer_pos}",
                        footer.current_size
                    );
                    return Err(VhdError::corrupt(msg, path, OP).at(footer_pos + 48));
                }
                Layout::Fixed
            }
            DiskType::Dynamic | DiskType::Differencing => {
                let (header, hp) = read_header(&file, path, &footer, footer_pos)?;
                problems.extend(hp);
                let (bat, data_end) = read_bat(&file, path, &footer, &header, footer_pos)?;
                let diff = footer.disk_type == DiskType::Differencing;
                Layout::Sparse(Box::new(Sparse::new(
                    header, bat, data_end, footer_pos, diff,
                )))
            }
        };
        if opts.write && !problems.is_empty() {
            let msg = format!(
                "{}; it is not opened for writing: run `strata disk check --repair {}` first",
                problems.join("; "),
                path.display()
            );
            return Err(VhdError::corrupt(msg, path, OP));
        }
        let mut disk = Disk {
            path: path.to_path_buf(),
            file,
            writable: opts.write && !maintenance,
            footer_bytes: footer.to_bytes(),
            footer,
            layout,
            parent: None,
            warnings: problems,
        };
        if opts.parents && disk.footer.disk_type == DiskType::Differencing {
            let parent_opts = OpenOptions {
                write: false,
                ..opts
            };
            let (parent, warning) = disk.open_parent(parent_opts, seen)?;
            disk.warnings.extend(warning);
            disk.parent = Some(Box::new(parent));
        }
        Ok(disk)
    }

    /// Where the parent may be, best first (see [`crate::locator`]).
    pub fn parent_candidates(&self) -> Vec<PathBuf> {
        let Layout::Sparse(s) = &self.layout else {
            return vec![];
        };
        parent_candidates(&self.file, &self.path, &s.header)
    }

    fn open_parent(
        &self,
        opts: OpenOptions,
        seen: &mut Vec<(u64, u64)>,
    ) -> Result<(Disk, Option<String>)> {
        let (found, warning) = self.locate_parent()?;
        let parent = Disk::open_in_chain(&found, opts, seen, false)?;
        Ok((parent, warning))
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

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.footer.current_size
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header (dynamic and differencing disks).
    pub fn header(&self) -> Option<&DynamicHeader> {
        match &self.layout {
            Layout::Sparse(s) => Some(&s.header),
            Layout::Fixed => None,
        }
    }

    /// The disk type.
    pub fn disk_type(&self) -> DiskType {
        self.footer.disk_type
    }

    /// The open parent, if any.
    pub fn parent(&self) -> Option<&Disk> {
        self.parent.as_deref()
    }

    /// Problems noticed while opening that did not prevent it (damaged footer read from its copy,
    /// parent modified since the child was made …).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether the disk is open for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Block size of a sparse disk.
    pub fn block_size(&self) -> Option<u32> {
        self.header().map(|h| h.block_size)
    }

    /// Number of allocated blocks (0 for fixed disks).
    pub fn allocated_blocks(&self) -> u32 {
        match &self.layout {
            Layout::Sparse(s) => s.allocated_blocks(),
            Layout::Fixed => 0,
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            file: &self.file,
            path: &self.path,
            below: self.parent.as_deref(),
            footer: &self.footer_bytes,
        }
    }

    fn check_range(&self, off: u64, len: usize, op: &'static str) -> Result<()> {
        let size = self.size();
        if off.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(VhdError::new(
                ErrorKind::OutOfRange {
                    offset: off,
                    len: len as u64,
                    size,
                },
                &self.path,
                op,
            ));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at virtual offset `off`, through the chain.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.check_range(off, buf.len(), "read")?;
        match &self.layout {
            Layout::Fixed => read_exact_at(&self.file, &self.path, buf, off, "read"),
            Layout::Sparse(s) => s.read_at(&self.ctx(), buf, off),
        }
    }

    /// Writes `data` at virtual offset `off`. Durable after [`Disk::flush`].
    pub fn write_at(&self, data: &[u8], off: u64) -> Result<()> {
        if !self.writable {
            return Err(VhdError::new(ErrorKind::ReadOnly, &self.path, "write"));
        }
        self.check_range(off, data.len(), "write")?;
        match &self.layout {
            Layout::Fixed => self
                .file
                .write_all_at(data, off)
                .map_err(|e| VhdError::io(e, &self.path, "write").at(off)),
            Layout::Sparse(s) => s.write_at(&self.ctx(), data, off),
        }
    }

    /// Makes `[off, off + len)` read as zeros. With `unmap`, whole blocks go back to unallocated
    /// where nothing below would show through; everything else is written with zeros (which
    /// allocates nothing where the disk already reads zeros).
    pub fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<()> {
        if !self.writable {
            return Err(VhdError::new(
                ErrorKind::ReadOnly,
                &self.path,
                "write zeroes",
            ));
        }
        self.check_range(off, us(len), "write zeroes")?;
        let rest = match (&self.layout, unmap) {
            (Layout::Sparse(s), true) => s.unmap(&self.ctx(), off, len),
            _ => vec![(off, off + len)],
        };
        let zeros = vec![0u8; us(len.min(1 << 20))];
        for (start, end) in rest {
            let mut pos = start;
            while pos < end {
                let n = (end - pos).min(zeros.len() as u64);
                self.write_at(&zeros[..us(n)], pos)?;
                pos += n;
            }
        }
        Ok(())
    }

    /// Discards (TRIM) `[off, off + len)`: whole blocks that can be freed are freed (and read as
    /// zeros); the rest keeps its contents, which TRIM allows.
    pub fn discard(&self, off: u64, len: u64) -> Result<()> {
        if !self.writable {
            return Err(VhdError::new(ErrorKind::ReadOnly, &self.path, "discard"));
        }
        self.check_range(off, us(len), "discard")?;
        if let Layout::Sparse(s) = &self.layout {
            s.unmap(&self.ctx(), off, len);
        }
        Ok(())
    }

    /// Makes every completed write durable.
    pub fn flush(&self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        match &self.layout {
            Layout::Fixed => self.file.sync_data().ctx(&self.path, "flush"),
            Layout::Sparse(s) => s.flush(&self.ctx()),
        }
    }

    /// Flushes and closes.
    pub fn close(self) -> Result<()> {
        self.flush()
    }

    /// Tells the kernel this disk (and its chain) will be read from start to end, so that it
    /// reads ahead further (a hint only: errors are ignored).
    pub fn advise_sequential(&self) {
        let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::Sequential);
        if let Some(p) = &self.parent {
            p.advise_sequential();
        }
    }

    /// Whether a virtual range may hold data anywhere in the chain (false: it reads as zeros).
    pub fn range_may_have_data(&self, off: u64, len: u64) -> bool {
        match &self.layout {
            Layout::Fixed => len > 0 && off < self.size(),
            Layout::Sparse(s) => s.may_have_data(self.parent.as_deref(), off, len),
        }
    }

    /// Virtual byte ranges whose data this file itself holds (not its parents), merged, within
    /// the virtual size (a block may hold sectors past the end after a shrink or at an odd size).
    pub fn extents(&self) -> Result<Vec<(u64, u64)>> {
        let size = self.size();
        let all = match &self.layout {
            Layout::Fixed => vec![(0, size)],
            Layout::Sparse(s) => s.extents(&self.ctx())?,
        };
        Ok(all
            .into_iter()
            .filter(|&(a, _)| a < size)
            .map(|(a, b)| (a, b.min(size)))
            .collect())
    }

    /// Where the footer at the end of the file is.
    pub(crate) fn footer_pos(&self) -> u64 {
        match &self.layout {
            Layout::Fixed => self.size(),
            Layout::Sparse(s) => s.state.read().expect("vhd state").footer_pos,
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Best effort: callers that care about errors call `close`.
        let _ = self.flush();
    }
}

/// The candidate paths of a differencing disk's parent, best first, without duplicates.
pub(crate) fn parent_candidates(file: &File, path: &Path, h: &DynamicHeader) -> Vec<PathBuf> {
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
pub(crate) fn parent_time_warning(h: &DynamicHeader, parent: &Path) -> Option<String> {
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

/// Opens and locks a file, making sure the file locked is still the one at `path` (a compact
/// renames a new file over the old one; a lock on the old one would protect nothing).
fn open_locked(path: &Path, opts: OpenOptions) -> Result<File> {
    const OP: &str = "open";
    let mode = match (opts.lock, opts.write) {
        (false, _) => LockMode::None,
        (true, true) => LockMode::Exclusive,
        (true, false) => LockMode::Shared,
    };
    for _ in 0..3 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(opts.write)
            .open(path)
            .ctx(path, OP)?;
        lock(&file, mode, path, OP)?;
        let (held, now) = (
            file.metadata().ctx(path, OP)?,
            std::fs::metadata(path).ctx(path, OP)?,
        );
        if mode == LockMode::None || (held.dev(), held.ino()) == (now.dev(), now.ino()) {
            return Ok(file);
        }
    }
    Err(VhdError::invalid(
        "the file keeps being replaced while it is opened",
        path,
        OP,
    ))
}
