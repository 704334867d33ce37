//! `compact`: rebuild a dynamic disk at its minimal size. Blocks that hold only zeros are dropped,
//! unused space is dropped, and the rest is written in order into a temporary file beside the
//! disk, made durable, and renamed over it: a failure (a full file system, say) changes nothing.
//! The unique id, time stamps and block size are kept, so children still recognise their parent.

use std::path::Path;

use crate::create::{write_sparse_layout, NewFile};
use crate::disk::{Disk, OpenOptions};
use crate::error::{Result, VhdError};
use crate::footer::DiskType;
use crate::ops::convert::for_each_data_run;
use crate::ops::progress::Progress;
use crate::sparse::{is_zero, us};

/// Sizes before and after.
#[derive(Debug, serde::Serialize)]
pub struct Compacted {
    /// File size before.
    pub before: u64,
    /// File size after.
    pub after: u64,
    /// Blocks dropped because they held only zeros.
    pub zero_blocks_dropped: u32,
}

/// Compacts the dynamic disk at `path`.
pub fn compact(path: &Path, progress: &dyn Progress) -> Result<Compacted> {
    const OP: &str = "compact";
    let src = Disk::open(path, OpenOptions::write())?;
    match src.disk_type() {
        DiskType::Dynamic => {}
        DiskType::Differencing => {
            return Err(VhdError::invalid(
                "a differencing disk cannot be compacted: merge it into its parent first (`strata disk merge`), or flatten it into a new disk (`strata disk merge CHILD --to NEW`)",
                path,
                OP,
            ))
        }
        DiskType::Fixed => {
            return Err(VhdError::invalid(
                "a fixed disk cannot be compacted: convert it to a dynamic disk first (`strata disk convert SRC DST --type dynamic`)",
                path,
                OP,
            ))
        }
    }
    let before = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let block_size = src
        .block_size()
        .unwrap_or(crate::header::DEFAULT_BLOCK_SIZE);
    let new = NewFile::new_replacing(path)?;
    let mut footer = src.footer().clone();
    write_sparse_layout(new.file(), path, path, &mut footer, block_size, None)?;
    let out = Disk::open(new.path(), OpenOptions::write())?;
    let bs = u64::from(block_size);
    let blocks = src.size().div_ceil(bs);
    progress.start(src.size());
    let mut buf = vec![0u8; us(bs)];
    let mut dropped = 0u32;
    for b in 0..blocks {
        let off = b * bs;
        let n = bs.min(src.size() - off);
        if src.range_may_have_data(off, n) {
            let chunk = &mut buf[..us(n)];
            src.read_at(chunk, off)?;
            if is_zero(chunk) {
                dropped += 1;
            } else {
                for_each_data_run(chunk, |at, run| out.write_at(run, off + at as u64))?;
            }
        }
        progress.advance(n);
    }
    out.close()?;
    new.commit(true)?;
    drop(src);
    progress.finish();
    let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(Compacted {
        before,
        after,
        zero_blocks_dropped: dropped,
    })
}
