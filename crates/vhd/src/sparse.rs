//! The engine of dynamic and differencing disks: block allocation table, sector bitmaps, reads
//! through the chain and crash-safe writes.
//!
//! # Write ordering
//! A write that needs a new block:
//! 1. writes the footer at the new end of the file (the file always ends with a valid footer; the
//!    space between old and new end is unreferenced until step 4);
//! 2. writes the block's bitmap (over the old footer) and the data;
//! 3. on `flush`: `fdatasync` (data and bitmaps durable), then
//! 4. writes the changed bitmaps of blocks already in the BAT and the new BAT entries, then
//!    `fdatasync` again.
//!
//! Metadata reaches the file only after the data it describes is durable, so a crash at any
//! instant (process or power) leaves a consistent file in which every write acknowledged before
//! the last completed flush is present; later writes may be lost, and blocks they allocated are
//! left unreferenced (reported by `check`, reused by the next writer, dropped by `compact`).
//!
//! In differencing disks the unit of allocation inside a block is 4 KiB (one bitmap byte): a
//! smaller write is completed from the chain below first, so Strata only ever writes bitmap bytes
//! 0x00 or 0xFF.
//!
//! # The chain below
//! The engine sits under [`Disk`](crate::Disk) and does not know it: it sees the chain of parents
//! only through the [`Parent`] trait (size, reads, where data may be), which `Disk` implements. This
//! module therefore never imports `crate::disk`; the dependency goes one way, from the disk to its
//! engine.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::bitmap::{Bitmap, CHUNK};
use crate::error::{IoContext, Result, VhdError};
use crate::header::{DynamicHeader, BAT_UNUSED};

/// Dirty metadata entries after which a write flushes by itself (bounds memory).
const AUTO_FLUSH_AT: usize = 4096;
/// Clean bitmaps kept in memory.
const CACHE_ENTRIES: usize = 2048;

pub(crate) fn us(x: u64) -> usize {
    usize::try_from(x).expect("Strata runs on 64-bit hosts")
}

/// The chain below a differencing disk, as the engine sees it: what shows through where this file
/// holds nothing. Implemented by [`Disk`](crate::Disk) (which reads through its own parents in
/// turn).
///
/// The engine only reads below: it never writes, flushes or locks a parent. Reads stay within
/// [`Parent::size`] ([`Ctx::read_below`] clips them; a parent smaller than its child reads as
/// zeros past its end).
pub(crate) trait Parent {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// Reads `buf.len()` bytes at virtual offset `off`, with `off + buf.len() <= self.size()`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()>;

    /// Whether `[off, off + len)` may hold data anywhere in this chain (false: it reads as
    /// zeros, so the engine need not complete or preserve it from below).
    fn may_have_data(&self, off: u64, len: u64) -> bool;
}

/// What the engine needs from its disk.
pub(crate) struct Ctx<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    /// The chain below; `None` reads as zeros (a dynamic disk, or a differencing disk opened
    /// alone, which never takes data writes: see `Disk::open` and `Disk::open_maintenance`).
    pub below: Option<&'a dyn Parent>,
    pub footer: &'a [u8; 512],
}

impl Ctx<'_> {
    fn pread(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| VhdError::io(e, self.path, "read").at(off))
    }

    fn pwrite(&self, buf: &[u8], off: u64) -> Result<()> {
        self.file
            .write_all_at(buf, off)
            .map_err(|e| VhdError::io(e, self.path, "write").at(off))
    }

    /// Reads from the chain below, zeros where there is none. The only read of a [`Parent`]:
    /// it asks for nothing past the parent's size (see the trait).
    fn read_below(&self, buf: &mut [u8], off: u64) -> Result<()> {
        match self.below {
            None => buf.fill(0),
            Some(parent) => {
                let psize = parent.size();
                let avail = us(psize.saturating_sub(off).min(buf.len() as u64));
                if avail > 0 {
                    parent.read_at(&mut buf[..avail], off)?;
                }
                buf[avail..].fill(0);
            }
        }
        Ok(())
    }
}

/// Mutable metadata, guarded by the engine's lock.
pub(crate) struct State {
    pub bat: Vec<u32>,
    dirty_bat: BTreeSet<u32>,
    dirty_bitmaps: HashMap<u32, Arc<Bitmap>>,
    /// Block slots (sectors) unmapped since the last flush: not reusable until the BAT on disk
    /// no longer points to them.
    freed: Vec<u32>,
    /// Slots free for reuse (the BAT on disk no longer points to them), and whether their space
    /// already reads as zeros (hole punched).
    free_slots: Vec<(u32, bool)>,
    /// A flush failed: the file's state is unknown, so no later flush may report success.
    failed: bool,
    /// Next allocation starts at or after this offset.
    pub data_end: u64,
    /// Where the footer at the end is.
    pub footer_pos: u64,
}

/// A dynamic or differencing disk's engine.
pub(crate) struct Sparse {
    pub header: DynamicHeader,
    pub block_size: u64,
    pub bitmap_size: u64,
    differencing: bool,
    pub state: RwLock<State>,
    cache: Mutex<HashMap<u32, Arc<Bitmap>>>,
}

impl Sparse {
    pub fn new(
        header: DynamicHeader,
        bat: Vec<u32>,
        data_end: u64,
        footer_pos: u64,
        differencing: bool,
    ) -> Sparse {
        Sparse {
            block_size: u64::from(header.block_size),
            bitmap_size: header.bitmap_bytes(),
            header,
            differencing,
            state: RwLock::new(State {
                bat,
                dirty_bat: BTreeSet::new(),
                dirty_bitmaps: HashMap::new(),
                data_end,
                footer_pos,
                freed: Vec::new(),
                free_slots: Vec::new(),
                failed: false,
            }),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn sectors_per_block(&self) -> u64 {
        self.block_size / 512
    }

    fn block_of(&self, off: u64) -> (u32, u64) {
        (
            u32::try_from(off / self.block_size).unwrap_or(u32::MAX),
            off % self.block_size,
        )
    }

    /// The bitmap of an allocated block, from the dirty set, the cache or the file.
    fn bitmap(&self, st: &State, ctx: &Ctx, block: u32) -> Result<Arc<Bitmap>> {
        if let Some(b) = st.dirty_bitmaps.get(&block) {
            return Ok(b.clone());
        }
        if let Some(b) = self.cache.lock().expect("bitmap cache").get(&block) {
            return Ok(b.clone());
        }
        let mut bytes = vec![0u8; us(self.bitmap_size)];
        ctx.pread(&mut bytes, u64::from(st.bat[us(u64::from(block))]) * 512)?;
        let bm = Arc::new(Bitmap::from_bytes(bytes, self.sectors_per_block()));
        let mut cache = self.cache.lock().expect("bitmap cache");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(block, bm.clone());
        Ok(bm)
    }

    /// Reads `buf.len()` bytes at virtual offset `off` (already bounds-checked).
    pub fn read_at(&self, ctx: &Ctx, buf: &mut [u8], off: u64) -> Result<()> {
        let st = self.state.read().expect("vhd state");
        self.read_locked(&st, ctx, buf, off, None)
    }

    fn read_locked(
        &self,
        st: &State,
        ctx: &Ctx,
        buf: &mut [u8],
        off: u64,
        pending: Option<(u32, &Bitmap)>,
    ) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let (block, in_block) = self.block_of(pos);
            let n = us((self.block_size - in_block).min((buf.len() - done) as u64));
            let out = &mut buf[done..done + n];
            let entry = st
                .bat
                .get(us(u64::from(block)))
                .copied()
                .unwrap_or(BAT_UNUSED);
            if entry == BAT_UNUSED {
                ctx.read_below(out, pos)?;
            } else {
                let data_off = u64::from(entry) * 512 + self.bitmap_size;
                let bm = match pending {
                    Some((b, bm)) if b == block => Arc::new(bm.clone()),
                    _ => self.bitmap(st, ctx, block)?,
                };
                let first = in_block / 512;
                let end = (in_block + n as u64).div_ceil(512);
                for (present, s, e) in bm.runs(first, end) {
                    let lo = (s * 512).max(in_block);
                    let hi = (e * 512).min(in_block + n as u64);
                    let part = &mut out[us(lo - in_block)..us(hi - in_block)];
                    if present {
                        ctx.pread(part, data_off + lo)?;
                    } else if self.differencing {
                        ctx.read_below(part, pos - in_block + lo)?;
                    } else {
                        part.fill(0);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Whether the virtual range may hold data in this file or the chain below.
    pub fn may_have_data(&self, below: Option<&dyn Parent>, off: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let st = self.state.read().expect("vhd state");
        let (first, _) = self.block_of(off);
        let (last, _) = self.block_of(off + len - 1);
        let here = (first..=last).any(|b| {
            st.bat
                .get(us(u64::from(b)))
                .is_some_and(|&e| e != BAT_UNUSED)
        });
        here || below.is_some_and(|p| p.may_have_data(off, len))
    }

    /// Writes `data` at virtual offset `off` (already bounds-checked, disk writable).
    pub fn write_at(&self, ctx: &Ctx, data: &[u8], off: u64) -> Result<()> {
        let mut st = self.state.write().expect("vhd state");
        let mut done = 0usize;
        while done < data.len() {
            let pos = off + done as u64;
            let (block, in_block) = self.block_of(pos);
            let n = us((self.block_size - in_block).min((data.len() - done) as u64));
            self.write_block(&mut st, ctx, block, in_block, &data[done..done + n])?;
            done += n;
        }
        if st.dirty_bat.len() + st.dirty_bitmaps.len() >= AUTO_FLUSH_AT {
            self.flush_locked(&mut st, ctx)?;
        }
        Ok(())
    }

    fn write_block(
        &self,
        st: &mut State,
        ctx: &Ctx,
        block: u32,
        in_block: u64,
        data: &[u8],
    ) -> Result<()> {
        let idx = us(u64::from(block));
        if st.bat[idx] == BAT_UNUSED {
            let vstart = u64::from(block) * self.block_size;
            let below_has = self.differencing
                && ctx
                    .below
                    .is_some_and(|p| p.may_have_data(vstart, self.block_size));
            if !below_has && is_zero(data) {
                return Ok(());
            }
            self.allocate(st, ctx, block)?;
        }
        let data_off = u64::from(st.bat[idx]) * 512 + self.bitmap_size;
        let bm = self.bitmap(st, ctx, block)?;
        if bm.is_full() {
            return ctx.pwrite(data, data_off + in_block);
        }
        // Widen to whole 4 KiB chunks, completing partial ones from the current view.
        let end = in_block + data.len() as u64;
        let a_start = in_block / CHUNK * CHUNK;
        let a_end = end.div_ceil(CHUNK) * CHUNK;
        let mut buf = vec![0u8; us(a_end - a_start)];
        let vblock = u64::from(block) * self.block_size;
        if in_block != a_start {
            self.read_locked(
                st,
                ctx,
                &mut buf[..us(CHUNK)],
                vblock + a_start,
                Some((block, &bm)),
            )?;
        }
        if end != a_end && (a_end - a_start > CHUNK || in_block == a_start) {
            let at = buf.len() - us(CHUNK);
            self.read_locked(
                st,
                ctx,
                &mut buf[at..],
                vblock + a_end - CHUNK,
                Some((block, &bm)),
            )?;
        }
        buf[us(in_block - a_start)..us(end - a_start)].copy_from_slice(data);
        ctx.pwrite(&buf, data_off + a_start)?;
        let mut new_bm = (*bm).clone();
        for c in a_start / CHUNK..a_end / CHUNK {
            new_bm.set_byte(c, 0xFF);
        }
        if new_bm != *bm {
            st.dirty_bitmaps.insert(block, Arc::new(new_bm));
        }
        Ok(())
    }

    /// Gives `block` space at the end of the data, keeping a valid footer at the end of the file.
    fn allocate(&self, st: &mut State, ctx: &Ctx, block: u32) -> Result<()> {
        if let Some((sector, zeroed)) = st.free_slots.pop() {
            return self.reuse_slot(st, ctx, block, sector, zeroed);
        }
        // Blocks are placed so that their data starts on a 4 KiB boundary, as Windows does.
        let start = (st.data_end + self.bitmap_size).next_multiple_of(CHUNK) - self.bitmap_size;
        let end = start + self.bitmap_size + self.block_size;
        let sector = u32::try_from(start / 512)
            .ok()
            .filter(|&s| s != BAT_UNUSED)
            .ok_or_else(|| {
                VhdError::invalid(
                    "the file would grow past the format's 2 TiB offset limit",
                    ctx.path,
                    "write",
                )
            })?;
        let old_len = st.footer_pos + 512;
        if end > st.footer_pos {
            ctx.pwrite(ctx.footer, end)?;
            st.footer_pos = end;
        }
        // Bytes of an old footer or of an unreferenced block may lie in the new block: zero them.
        let stale_from = start + self.bitmap_size;
        let stale_to = end.min(old_len);
        if stale_to > stale_from {
            write_zeros(ctx, stale_from, stale_to - stale_from)?;
        }
        st.data_end = end;
        self.install(st, ctx, block, sector)
    }

    /// Gives `block` a slot freed by an earlier unmap (so that write/trim cycles do not grow the
    /// file). The slot is unreferenced on disk; its data area is zeroed unless a hole was punched.
    fn reuse_slot(
        &self,
        st: &mut State,
        ctx: &Ctx,
        block: u32,
        sector: u32,
        zeroed: bool,
    ) -> Result<()> {
        let start = u64::from(sector) * 512;
        if !zeroed {
            write_zeros(ctx, start + self.bitmap_size, self.block_size)?;
        }
        self.install(st, ctx, block, sector)
    }

    /// Writes a new block's initial bitmap at `sector` (all present in a dynamic disk, where the
    /// data area reads as zeros; all absent in a differencing disk) and points the in-memory BAT
    /// at it. The BAT entry reaches the file at the next flush.
    fn install(&self, st: &mut State, ctx: &Ctx, block: u32, sector: u32) -> Result<()> {
        let bm = Bitmap::filled(
            us(self.bitmap_size),
            self.sectors_per_block(),
            !self.differencing,
        );
        ctx.pwrite(&bm.bytes, u64::from(sector) * 512)?;
        st.bat[us(u64::from(block))] = sector;
        st.dirty_bat.insert(block);
        let mut cache = self.cache.lock().expect("bitmap cache");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(block, Arc::new(bm));
        Ok(())
    }

    /// Makes every earlier write durable (see the module docs for the order).
    pub fn flush(&self, ctx: &Ctx) -> Result<()> {
        let mut st = self.state.write().expect("vhd state");
        self.flush_locked(&mut st, ctx)
    }

    fn flush_locked(&self, st: &mut State, ctx: &Ctx) -> Result<()> {
        if st.failed {
            return Err(VhdError::invalid(
                "an earlier flush failed, so recent writes may not be on disk: close and reopen the disk, then check it",
                ctx.path,
                "flush",
            ));
        }
        let result = self.flush_steps(st, ctx);
        if result.is_err() {
            st.failed = true;
        }
        result
    }

    fn flush_steps(&self, st: &mut State, ctx: &Ctx) -> Result<()> {
        ctx.file.sync_data().ctx(ctx.path, "flush")?;
        if st.dirty_bat.is_empty() && st.dirty_bitmaps.is_empty() {
            return Ok(());
        }
        for (block, bm) in &st.dirty_bitmaps {
            ctx.pwrite(&bm.bytes, u64::from(st.bat[us(u64::from(*block))]) * 512)?;
        }
        let dirty: Vec<u32> = st.dirty_bat.iter().copied().collect();
        let mut i = 0;
        while i < dirty.len() {
            let mut j = i + 1;
            while j < dirty.len() && dirty[j] == dirty[j - 1] + 1 {
                j += 1;
            }
            let (lo, hi) = (us(u64::from(dirty[i])), us(u64::from(dirty[j - 1])) + 1);
            let bytes: Vec<u8> = st.bat[lo..hi]
                .iter()
                .flat_map(|e| e.to_be_bytes())
                .collect();
            ctx.pwrite(&bytes, self.header.table_offset + 4 * lo as u64)?;
            i = j;
        }
        ctx.file.sync_data().ctx(ctx.path, "flush")?;
        let mut cache = self.cache.lock().expect("bitmap cache");
        for (block, bm) in st.dirty_bitmaps.drain() {
            if cache.len() < CACHE_ENTRIES {
                cache.insert(block, bm);
            } else {
                cache.remove(&block);
            }
        }
        st.dirty_bat.clear();
        drop(cache);
        // Slots unmapped before this flush are now unreferenced on disk: punch them out (the
        // host gets the space back) and make them reusable.
        for sector in std::mem::take(&mut st.freed) {
            let at = u64::from(sector) * 512;
            let punched = rustix::fs::fallocate(
                ctx.file,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                at,
                self.bitmap_size + self.block_size,
            )
            .is_ok();
            st.free_slots.push((sector, punched));
        }
        Ok(())
    }

    /// Returns whole blocks inside `[off, off + len)` to unallocated, where nothing below would
    /// show through. Returns the ranges left as they were (partial blocks, blocks over data).
    /// Like every metadata change, the BAT reaches the file at the next flush; only after it is
    /// the freed slot punched out and reused, so an unflushed unmap can only be forgotten.
    pub fn unmap(&self, ctx: &Ctx, off: u64, len: u64) -> Vec<(u64, u64)> {
        let mut st = self.state.write().expect("vhd state");
        let mut rest = vec![];
        let end = off + len;
        let mut pos = off;
        while pos < end {
            let (block, in_block) = self.block_of(pos);
            let block_start = pos - in_block;
            let block_end = (block_start + self.block_size).min(end);
            let whole = in_block == 0 && block_start + self.block_size <= end;
            let below = self.differencing
                && ctx
                    .below
                    .is_some_and(|p| p.may_have_data(block_start, self.block_size));
            let idx = us(u64::from(block));
            if whole && !below {
                if st.bat[idx] != BAT_UNUSED {
                    let sector = st.bat[idx];
                    st.freed.push(sector);
                    st.bat[idx] = BAT_UNUSED;
                    st.dirty_bat.insert(block);
                    st.dirty_bitmaps.remove(&block);
                    self.cache.lock().expect("bitmap cache").remove(&block);
                }
            } else {
                match rest.last_mut() {
                    Some((_, e)) if *e == pos => *e = block_end,
                    _ => rest.push((pos, block_end)),
                }
            }
            pos = block_end;
        }
        rest
    }

    /// Allocated blocks.
    pub fn allocated_blocks(&self) -> u32 {
        let st = self.state.read().expect("vhd state");
        u32::try_from(st.bat.iter().filter(|&&e| e != BAT_UNUSED).count()).unwrap_or(u32::MAX)
    }

    /// Virtual byte ranges whose data is stored in this file (sector precision), merged.
    pub fn extents(&self, ctx: &Ctx) -> Result<Vec<(u64, u64)>> {
        let st = self.state.read().expect("vhd state");
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, &e) in st.bat.iter().enumerate() {
            if e == BAT_UNUSED {
                continue;
            }
            let block = u32::try_from(i).unwrap_or(u32::MAX);
            let base = i as u64 * self.block_size;
            let bm = self.bitmap(&st, ctx, block)?;
            for (present, s, e) in bm.runs(0, self.sectors_per_block()) {
                if !present {
                    continue;
                }
                let (lo, hi) = (base + s * 512, base + e * 512);
                match out.last_mut() {
                    Some(last) if last.1 == lo => last.1 = hi,
                    _ => out.push((lo, hi)),
                }
            }
        }
        Ok(out)
    }
}

/// Whether a buffer holds only zeros.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(16);
    let all = words.all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0);
    all && words.remainder().iter().all(|&b| b == 0)
}

/// Writes `len` zero bytes at `off`.
pub(crate) fn write_zeros(ctx: &Ctx, off: u64, len: u64) -> Result<()> {
    let zeros = vec![0u8; us(len.min(1 << 20))];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        ctx.pwrite(&zeros[..us(n)], off + done)?;
        done += n;
    }
    Ok(())
}
