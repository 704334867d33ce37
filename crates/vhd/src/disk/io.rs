//! Reading and writing a [`Disk`]: range checks, then fixed disks directly (virtual offset = file
//! offset) and sparse ones through the engine (`sparse.rs`), which reads the chain below through
//! the [`Parent`] trait implemented here.

use std::os::unix::fs::FileExt;

use super::{read_exact_at, Disk, Layout};
use crate::error::{ErrorKind, IoContext, Result, VhdError};
use crate::sparse::{us, Ctx, Parent};

/// A `Disk` is the whole chain from itself down: the engine of its child reads it like any block
/// device, through the same range checks, and never writes it.
impl Parent for Disk {
    fn size(&self) -> u64 {
        Disk::size(self)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        Disk::read_at(self, buf, off)
    }

    fn may_have_data(&self, off: u64, len: u64) -> bool {
        self.range_may_have_data(off, len)
    }
}

impl Disk {
    /// The chain below, as the engine sees it.
    fn below(&self) -> Option<&dyn Parent> {
        self.parent.as_deref().map(|p| p as &dyn Parent)
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            file: &self.file,
            path: &self.path,
            below: self.below(),
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
            Layout::Sparse(s) => s.may_have_data(self.below(), off, len),
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
}
