//! `resize`: grow any disk; shrink only when allowed and only when the part cut off reads as
//! zeros. Every step keeps a valid file: new space and a new BAT are written before the structures
//! that point to them, and the footer (the size) changes last.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::disk::{Disk, Layout, OpenOptions};
use crate::error::{IoContext, Result, VhdError};
use crate::footer::{Geometry, MAX_VIRTUAL_SIZE};
use crate::header::{BAT_UNUSED, HEADER_SIZE};
use crate::sparse::{is_zero, us};

/// Changes the virtual size of the disk at `path` to `new_size` bytes.
pub fn resize(path: &Path, new_size: u64, allow_shrink: bool) -> Result<()> {
    const OP: &str = "resize";
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
    let file = disk.file();
    let sync = || file.sync_data().ctx(path, OP);
    let write = |buf: &[u8], at: u64| {
        file.write_all_at(buf, at)
            .map_err(|e| VhdError::io(e, path, OP).at(at))
    };
    match &disk.layout {
        Layout::Fixed => {
            let fb = footer.to_bytes();
            if new_size > old {
                // The new footer first (it extends the file), so there is always one at the end;
                // then the old one, now inside the new space, is zeroed.
                write(&fb, new_size)?;
                sync()?;
                write(&[0u8; 512], old)?;
            } else {
                write(&fb, new_size)?;
                sync()?;
                file.set_len(new_size + 512).ctx(path, OP)?;
            }
            sync()?;
        }
        Layout::Sparse(s) => {
            disk.flush()?;
            let mut st = s.state.write().expect("vhd state");
            let bs = u64::from(s.header.block_size);
            let needed = u32::try_from(new_size.div_ceil(bs))
                .map_err(|_| VhdError::invalid("too many blocks", path, OP))?;
            if new_size < old && disk.disk_type() != crate::DiskType::Differencing {
                // Blocks entirely past the end are dropped from the BAT (they hold only zeros).
                // Not in a differencing disk: there its zeros may hide the parent's data, which
                // a later grow would otherwise bring back.
                for i in us(u64::from(needed))..st.bat.len() {
                    if st.bat[i] != BAT_UNUSED {
                        st.bat[i] = BAT_UNUSED;
                        write(
                            &BAT_UNUSED.to_be_bytes(),
                            s.header.table_offset + 4 * i as u64,
                        )?;
                    }
                }
                sync()?;
            } else if needed > s.header.max_table_entries {
                let mut header = s.header.clone();
                let mut bat = st.bat.clone();
                bat.resize(us(u64::from(needed)), BAT_UNUSED);
                header.max_table_entries = needed;
                let new_bat_at = st.data_end.next_multiple_of(4096);
                let end = new_bat_at + header.bat_bytes();
                // Footer first at the new end, then the BAT, then the header pointing to it.
                let old_fb = disk.footer().clone().to_bytes();
                if end > st.footer_pos {
                    write(&old_fb, end)?;
                    st.footer_pos = end;
                }
                let mut raw: Vec<u8> = bat.iter().flat_map(|e| e.to_be_bytes()).collect();
                raw.resize(us(header.bat_bytes()), 0xFF);
                write(&raw, new_bat_at)?;
                sync()?;
                header.table_offset = new_bat_at;
                let hb: [u8; HEADER_SIZE] = header.to_bytes();
                write(&hb, footer.data_offset)?;
                sync()?;
                st.data_end = end;
            }
            let fb = footer.to_bytes();
            write(&fb, st.footer_pos)?;
            sync()?;
            write(&fb, 0)?;
            sync()?;
        }
    }
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
                    "resize",
                ));
            }
        }
        off += n;
    }
    Ok(())
}
