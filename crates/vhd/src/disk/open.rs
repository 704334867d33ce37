//! Opening a [`Disk`]: [`OpenOptions`], advisory locks, and reading and checking the footer, the
//! dynamic header and the BAT. A disk with damaged metadata opens read-only (with warnings) or not
//! at all; the chain below is opened by `chain.rs`.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::{chain, Disk, Layout};
use crate::error::{IoContext, Result, VhdError};
use crate::footer::{DiskType, Footer, FooterProblem, FOOTER_SIZE};
use crate::header::{DynamicHeader, HeaderProblem, BAT_UNUSED, HEADER_SIZE};
use crate::lock::{lock, LockMode};
use crate::sparse::{us, Sparse};

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

const READ_FOOTER: &str = "read footer";

/// Reads the footer at the end of the file, falling back to the copy at offset 0.
///
/// Best first: a good 512-byte footer at the end; unless the end holds a damaged one, a 511-byte
/// footer ([`short_footer`]); the copy at offset 0 of a sparse disk ([`footer_copy`]); last, the
/// damaged footer at the end (wrong checksum) rather than nothing. Every fallback is recorded in
/// `problems`, which keeps the disk from being opened for writing.
pub(crate) fn read_footer(file: &File, path: &Path, len: u64) -> Result<FooterRead> {
    if len < 511 {
        return Err(VhdError::corrupt(
            format!("the file is {len} bytes, too small to be a VHD"),
            path,
            READ_FOOTER,
        ));
    }
    let mut problems = Vec::new();
    let mut damaged = None;
    if len >= 512 {
        match end_footer(file, path, len, &mut problems)? {
            EndFooter::Good(footer) => return Ok(found(footer, len - 512, problems)),
            EndFooter::Damaged(footer) => damaged = Some(footer),
            EndFooter::Missing => {}
        }
    }
    if damaged.is_none() {
        if let Some(footer) = short_footer(file, path, len)? {
            return Ok(found(footer, len - 511, problems));
        }
        if problems.is_empty() {
            problems.push("there is no footer at the end of the file".into());
        }
    }
    if let Some(footer) = footer_copy(file, path, len)? {
        problems.push("the footer copy at offset 0 is used instead".into());
        // The data ends where the damaged footer is, or at the end of a file that has none.
        let footer_pos = if damaged.is_some() { len - 512 } else { len };
        return Ok(found(footer, footer_pos, problems));
    }
    match damaged {
        Some(footer) => Ok(found(footer, len - 512, problems)),
        None => Err(VhdError::corrupt(
            format!("not a VHD file: {}", problems.join("; ")),
            path,
            READ_FOOTER,
        )),
    }
}

fn found(footer: Footer, footer_pos: u64, problems: Vec<String>) -> FooterRead {
    FooterRead {
        footer,
        footer_pos,
        problems,
    }
}

/// What the last 512 bytes of a file hold.
enum EndFooter {
    Good(Footer),
    /// A footer with a wrong checksum: used only when nothing better is found.
    Damaged(Footer),
    /// No footer, or an invalid one.
    Missing,
}

/// Reads the last 512 bytes (the file has at least that many); records what is wrong with them.
fn end_footer(file: &File, path: &Path, len: u64, problems: &mut Vec<String>) -> Result<EndFooter> {
    let mut end = [0u8; FOOTER_SIZE];
    read_exact_at(file, path, &mut end, len - 512, READ_FOOTER)?;
    Ok(match Footer::parse(&end) {
        Ok(footer) => EndFooter::Good(footer),
        Err(FooterProblem::BadChecksum { footer, computed }) => {
            problems.push(format!(
                "the footer checksum is {:#010x}, expected {computed:#010x}",
                footer.checksum
            ));
            EndFooter::Damaged(*footer)
        }
        Err(FooterProblem::Invalid(msg)) => {
            problems.push(format!("the footer at the end is invalid: {msg}"));
            EndFooter::Missing
        }
        Err(FooterProblem::NoCookie) => EndFooter::Missing,
    })
}

/// The 511-byte footer Virtual PC wrote before 2004, if the file ends with one.
fn short_footer(file: &File, path: &Path, len: u64) -> Result<Option<Footer>> {
    let mut short = [0u8; FOOTER_SIZE];
    read_exact_at(file, path, &mut short[..511], len - 511, READ_FOOTER)?;
    Ok(Footer::parse(&short).ok())
}

/// The footer copy at offset 0, which only dynamic and differencing disks have (the first sector
/// of a fixed disk is data), in a file large enough for both copies.
fn footer_copy(file: &File, path: &Path, len: u64) -> Result<Option<Footer>> {
    if len < 1024 {
        return Ok(None);
    }
    let mut copy = [0u8; FOOTER_SIZE];
    read_exact_at(file, path, &mut copy, 0, READ_FOOTER)?;
    Ok(Footer::parse(&copy)
        .ok()
        .filter(|f| f.disk_type != DiskType::Fixed))
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

    /// Opens one disk of a chain (`seen`: the disks above it, see [`chain::enter`]): lock, footer,
    /// header and BAT, then the disks below it if `opts.parents`.
    pub(super) fn open_in_chain(
        path: &Path,
        opts: OpenOptions,
        seen: &mut Vec<(u64, u64)>,
        maintenance: bool,
    ) -> Result<Disk> {
        const OP: &str = "open";
        let file = open_locked(path, opts)?;
        let meta = file.metadata().ctx(path, OP)?;
        chain::enter(seen, &meta, path)?;
        let FooterRead {
            mut footer,
            footer_pos,
            mut problems,
        } = read_footer(&file, path, meta.len())?;
        let layout = read_layout(&file, path, &footer, footer_pos, &mut problems)?;
        // Damaged metadata is repaired by `check --repair`, never by writing through it.
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
            // Before `footer` moves: `to_bytes` also stores the checksum it computed.
            footer_bytes: footer.to_bytes(),
            footer,
            layout,
            parent: None,
            warnings: problems,
        };
        if opts.parents && disk.footer.disk_type == DiskType::Differencing {
            disk.open_chain_below(opts, seen)?;
        }
        Ok(disk)
    }
}

/// Reads what the footer describes: for a fixed disk, checks that its data fits before the
/// footer; for a sparse disk, reads the dynamic header and the BAT into the engine. Non-fatal
/// problems are added to `problems`.
fn read_layout(
    file: &File,
    path: &Path,
    footer: &Footer,
    footer_pos: u64,
    problems: &mut Vec<String>,
) -> Result<Layout> {
    match footer.disk_type {
        DiskType::Fixed => {
            if footer.current_size > footer_pos {
                let msg = format!(
                    "the fixed disk declares {} bytes but holds only {footer_pos}",
                    footer.current_size
                );
                return Err(VhdError::corrupt(msg, path, "open").at(footer_pos + 48));
            }
            Ok(Layout::Fixed)
        }
        DiskType::Dynamic | DiskType::Differencing => {
            let (header, hp) = read_header(file, path, footer, footer_pos)?;
            problems.extend(hp);
            let (bat, data_end) = read_bat(file, path, footer, &header, footer_pos)?;
            let diff = footer.disk_type == DiskType::Differencing;
            Ok(Layout::Sparse(Box::new(Sparse::new(
                header, bat, data_end, footer_pos, diff,
            ))))
        }
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
