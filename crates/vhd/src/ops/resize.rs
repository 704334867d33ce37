//! `resize`: grow any disk; shrink only when allowed and only when the part cut off reads as
//! zeros. Every step keeps a valid file: new space and a new BAT are written before the structures
//! that point to them, and the footer (the size) changes last.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::disk::{Disk, Layout, OpenOptions};
use crate::error::{IoContext, Result, VhdError};
use crate::footer::{Footer, Geometry, MAX_VIRTUAL_SIZE};
use crate::header::{BAT_UNUSED, HEADER_SIZE};
use crate::sparse::{is_zero, us, Sparse, State};

const OP: &str = "resize";

/// Changes the virtual size of the disk at `path` to `new_size` bytes.
pub fn resize(path: &Path, new_size: u64, allow_shrink: bool) -> Result<()> {
    if new_size == 0 || !new_size.is_multiple_of(512) || new_size > MAX_VIRTUAL_SIZE {
        return Err(VhdError::invalid(
            format!("size {new_size} must be a positive multiple of 512 bytes, at most 2040 GiB"),
            path,
            OP,
        ));
    }
    let disk = Disk::open(path, OpenOptions::write())?;
    let old = disk.size();
    if new_size == old {
        return Ok(());
    }
    if new_size < old {
        if !allow_shrink {
            return Err(VhdError::invalid(
                format!("{new_size} is smaller than the current size {old}: pass --allow-shrink to shrink"),
                path,
                OP,
            ));
        }
        ensure_zero(&disk, new_size, old)?;
    }
    if let Some(bs) = disk.block_size() {
        crate::create::check_bat_entries(path, new_size, bs, OP)?;
    }
    let mut footer = disk.footer().clone();
    footer.current_size = new_size;
    // libvhdi takes the size from `original_size`; Strata keeps both equal after a resize.
    footer.original_size = new_size;
    footer.geometry = Geometry::for_size(new_size);
    let out = Out {
        file: disk.file(),
        path,
    };
    match &disk.layout {
        Layout::Fixed => resize_fixed(&out, &mut footer, old),
        Layout::Sparse(s) => resize_sparse(&disk, s, &out, &mut footer, old),
    }
}

/// Writes to the file being resized, every error naming it.
struct Out<'a> {
    file: &'a File,
    path: &'a Path,
}

impl Out<'_> {
    fn write(&self, buf: &[u8], at: u64) -> Result<()> {
        self.file
            .write_all_at(buf, at)
            .map_err(|e| VhdError::io(e, self.path, OP).at(at))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data().ctx(self.path, OP)
    }
}

/// A fixed disk: the footer (the new size) moves to the new end of the data.
fn resize_fixed(out: &Out, footer: &mut Footer, old: u64) -> Result<()> {
    let new_size = footer.current_size;
    let fb = footer.to_bytes();
    if new_size > old {
        // The new footer first (it extends the file), so there is always one at the end;
        // then the old one, now inside the new space, is zeroed.
        out.write(&fb, new_size)?;
        out.sync()?;
        out.write(&[0u8; 512], old)?;
    } else {
        out.write(&fb, new_size)?;
        out.sync()?;
        out.file.set_len(new_size + 512).ctx(out.path, OP)?;
    }
    out.sync()
}

/// A dynamic or differencing disk: first the BAT (blocks past a smaller size dropped, or a BAT
/// too small for a larger size replaced), then the footer with the new size at the end, then its
/// copy at offset 0.
fn resize_sparse(disk: &Disk, s: &Sparse, out: &Out, footer: &mut Footer, old: u64) -> Result<()> {
    let new_size = footer.current_size;
    disk.flush()?;
    let mut st = s.state.write().expect("vhd state");
    let bs = u64::from(s.header.block_size);
    let needed = u32::try_from(new_size.div_ceil(bs))
        .map_err(|_| VhdError::invalid("too many blocks", out.path, OP))?;
    if new_size < old && disk.disk_type() != crate::DiskType::Differencing {
        // Blocks past the end are dropped, but not in a differencing disk: there its zeros may
        // hide the parent's data, which a later grow would otherwise bring back.
        drop_blocks_from(s, &mut st, out, needed)?;
    } else if needed > s.header.max_table_entries {
        let old_fb = disk.footer().clone().to_bytes();
        grow_bat(s, &mut st, out, needed, &old_fb, footer.data_offset)?;
    }
    let fb = footer.to_bytes();
    out.write(&fb, st.footer_pos)?;
    out.sync()?;
    out.write(&fb, 0)?;
    out.sync()
}

/// Drops from the BAT the blocks from `first` on, entirely past the new end (they hold only
/// zeros, which `ensure_zero` checked).
fn drop_blocks_from(s: &Sparse, st: &mut State, out: &Out, first: u32) -> Result<()> {
    for i in us(u64::from(first))..st.bat.len() {
        if st.bat[i] != BAT_UNUSED {
            st.bat[i] = BAT_UNUSED;
            out.write(
                &BAT_UNUSED.to_be_bytes(),
                s.header.table_offset + 4 * i as u64,
            )?;
        }
    }
    out.sync()
}

/// Writes a BAT of `entries` entries after the data and points the dynamic header (at
/// `header_at`) to it. The footer first at the new end (`footer`: the current one, the size
/// changes later), then the BAT, then the header.
fn grow_bat(
    s: &Sparse,
    st: &mut State,
    out: &Out,
    entries: u32,
    footer: &[u8],
    header_at: u64,
) -> Result<()> {
    let mut header = s.header.clone();
    let mut bat = st.bat.clone();
    bat.resize(us(u64::from(entries)), BAT_UNUSED);
    header.max_table_entries = entries;
    let new_bat_at = st.data_end.next_multiple_of(4096);
    let end = new_bat_at + header.bat_bytes();
    if end > st.footer_pos {
        out.write(footer, end)?;
        st.footer_pos = end;
    }
    let mut raw: Vec<u8> = bat.iter().flat_map(|e| e.to_be_bytes()).collect();
    raw.resize(us(header.bat_bytes()), 0xFF);
    out.write(&raw, new_bat_at)?;
    out.sync()?;
    header.table_offset = new_bat_at;
    let hb: [u8; HEADER_SIZE] = header.to_bytes();
    out.write(&hb, header_at)?;
    out.sync()?;
    st.data_end = end;
    Ok(())
}

/// Fails unless every byte in `[from, to)` reads as zero through the chain.
fn ensure_zero(disk: &Disk, from: u64, to: u64) -> Result<()> {
    let mut buf = vec![0u8; 2 << 20];
    let mut off = from;
    while off < to {
        let n = (to - off).min(buf.len() as u64);
        if disk.range_may_have_data(off, n) {
            let chunk = &mut buf[..us(n)];
            disk.read_at(chunk, off)?;
            if !is_zero(chunk) {
                return Err(VhdError::invalid(
                    format!("the part to cut off holds data (near virtual offset {off}): the disk was not shrunk"),
                    disk.path(),
                    OP,
                ));
            }
        }
        off += n;
    }
    Ok(())
}
