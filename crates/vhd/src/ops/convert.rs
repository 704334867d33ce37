//! `convert`: copy any VHD (read through its chain), a raw image or a block device (a "linked
//! disk") into a new fixed, dynamic or raw file. Zero blocks are never allocated in dynamic output
//! and never written in fixed or raw output (their space reads as zeros already). The new file is
//! written under a temporary name and renamed at the end: a failure leaves nothing behind.

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

use crate::create::{write_empty, NewFile};
use crate::disk::{Disk, OpenOptions};
use crate::error::{IoContext, Result, VhdError};
use crate::footer::FOOTER_COOKIE;
use crate::header::DEFAULT_BLOCK_SIZE;
use crate::ops::progress::Progress;
use crate::sparse::{is_zero, us};
use crate::{DiskId, NewDisk};

/// Unit of copying.
const CHUNK: u64 = 2 << 20;

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A VHD of this kind.
    Vhd(NewDisk),
    /// A raw image (sparse where the source reads zeros).
    Raw,
}

/// A source read through something other than a file: an NBD export of another format's image
/// (`strata disk import` reads qcow2, VMDK, VDI … through QEMU's own drivers this way). Every
/// range may hold data; chunks of zeros are still skipped when written.
pub trait ReadSource: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes (at most 2 MiB) at `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
    /// What is read, for errors.
    fn path(&self) -> &Path;
}

/// Something to copy from.
pub enum Source {
    /// Read through a [`ReadSource`].
    Other(Box<dyn ReadSource>),
    /// A VHD and its chain.
    Vhd(Box<Disk>),
    /// A raw image file or a block device.
    Raw {
        /// The open file.
        file: File,
        /// Its path.
        path: std::path::PathBuf,
        /// Its size.
        size: u64,
        /// Whether holes can be found with SEEK_DATA (regular files).
        seekable_holes: bool,
    },
}

impl Source {
    /// Opens a path as a VHD if it is one, otherwise as a raw image or block device. A block
    /// device with a mounted file system is refused.
    pub fn open(path: &Path) -> Result<Source> {
        let file = File::open(path).ctx(path, "open source")?;
        let meta = file.metadata().ctx(path, "open source")?;
        let is_dev = meta.file_type().is_block_device();
        if is_dev {
            if let Some(m) = mounted_on(meta.rdev()) {
                return Err(VhdError::invalid(
                    format!("the device has a mounted file system ({m}): unmount it first"),
                    path,
                    "open source",
                ));
            }
        } else if looks_like_vhd(&file, meta.len()) {
            return Ok(Source::Vhd(Box::new(Disk::open(
                path,
                OpenOptions::read(),
            )?)));
        }
        let size = if is_dev {
            use std::io::Seek;
            (&file)
                .seek(std::io::SeekFrom::End(0))
                .ctx(path, "open source")?
        } else {
            meta.len()
        };
        Ok(Source::Raw {
            file,
            path: path.to_path_buf(),
            size,
            seekable_holes: !is_dev,
        })
    }

    /// Virtual size.
    pub fn size(&self) -> u64 {
        match self {
            Source::Vhd(d) => d.size(),
            Source::Raw { size, .. } => *size,
            Source::Other(r) => r.size(),
        }
    }

    /// Whether the range may hold non-zero data.
    fn may_have_data(&self, off: u64, len: u64) -> bool {
        match self {
            Source::Vhd(d) => d.range_may_have_data(off, len),
            Source::Raw {
                file,
                seekable_holes: true,
                ..
            } => match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(off)) {
                Ok(next) => next < off + len,
                Err(rustix::io::Errno::NXIO) => false,
                Err(_) => true,
            },
            Source::Raw { .. } | Source::Other(_) => true,
        }
    }

    fn read(&self, buf: &mut [u8], off: u64) -> Result<()> {
        match self {
            Source::Vhd(d) => d.read_at(buf, off),
            Source::Raw { file, path, .. } => file
                .read_exact_at(buf, off)
                .map_err(|e| VhdError::io(e, path, "read").at(off)),
            Source::Other(r) => r
                .read_at(buf, off)
                .map_err(|e| VhdError::io(e, r.path(), "read").at(off)),
        }
    }
}

/// Whether a file ends with (or starts with) a VHD footer cookie.
fn looks_like_vhd(file: &File, len: u64) -> bool {
    let mut cookie = [0u8; 8];
    let at_end = len >= 512
        && file.read_exact_at(&mut cookie, len - 512).is_ok()
        && &cookie == FOOTER_COOKIE;
    let at_end_511 = len >= 511
        && file.read_exact_at(&mut cookie, len - 511).is_ok()
        && &cookie == FOOTER_COOKIE;
    let at_start = file.read_exact_at(&mut cookie, 0).is_ok() && &cookie == FOOTER_COOKIE;
    at_end || at_end_511 || at_start
}

/// The mount point of a file system on the device or one of its partitions, if any.
fn mounted_on(rdev: u64) -> Option<String> {
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let mut devs = vec![format!("{major}:{minor}")];
    if let Ok(dir) = std::fs::read_dir(format!("/sys/dev/block/{major}:{minor}")) {
        for entry in dir.flatten() {
            if entry.path().join("partition").exists() {
                if let Ok(d) = std::fs::read_to_string(entry.path().join("dev")) {
                    devs.push(d.trim().to_string());
                }
            }
        }
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 4 && devs.iter().any(|d| d == f[2])).then(|| f[4].to_string())
    })
}

/// Copies `src` into a new file at `dst`.
pub fn convert(src: &Source, dst: &Path, target: Target, progress: &dyn Progress) -> Result<()> {
    let size = src.size();
    if let Target::Vhd(kind) = target {
        let size = size.next_multiple_of(512);
        crate::validate_size(dst, size, kind)?;
    }
    let new = NewFile::new(dst)?;
    progress.start(size);
    match target {
        Target::Raw => {
            new.file().set_len(size).ctx(dst, "convert")?;
            copy(src, size, progress, |buf, off| {
                new.file()
                    .write_all_at(buf, off)
                    .map_err(|e| VhdError::io(e, dst, "write").at(off))
            })?;
        }
        Target::Vhd(NewDisk::Fixed) => {
            let vsize = size.next_multiple_of(512);
            write_empty(&new, dst, vsize, NewDisk::Fixed, DiskId::random())?;
            copy(src, size, progress, |buf, off| {
                new.file()
                    .write_all_at(buf, off)
                    .map_err(|e| VhdError::io(e, dst, "write").at(off))
            })?;
        }
        Target::Vhd(kind @ NewDisk::Dynamic { .. }) => {
            let vsize = size.next_multiple_of(512);
            write_empty(&new, dst, vsize, kind, DiskId::random())?;
            let out = Disk::open(new.path(), OpenOptions::write())?;
            copy(src, size, progress, |buf, off| out.write_at(buf, off))?;
            out.close()?;
        }
    }
    progress.finish();
    new.commit(false)
}

/// Reads `src` chunk by chunk and hands every chunk that is not all zeros to `write`.
pub(crate) fn copy(
    src: &Source,
    size: u64,
    progress: &dyn Progress,
    mut write: impl FnMut(&[u8], u64) -> Result<()>,
) -> Result<()> {
    match src {
        Source::Vhd(d) => d.advise_sequential(),
        Source::Raw { file, .. } => {
            let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Sequential);
        }
        Source::Other(_) => {}
    }
    // A reader thread fills chunks while this thread writes the previous ones: reading and
    // writing overlap. Three buffers circulate, so memory stays at 6 MiB whatever the size.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(u64, Option<Vec<u8>>)>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..3 {
        empty_tx.send(vec![0u8; us(CHUNK)]).expect("channel open");
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<()> {
            let mut off = 0;
            while off < size {
                let n = CHUNK.min(size - off);
                let chunk = if src.may_have_data(off, n) {
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Ok(());
                    };
                    buf.resize(us(n), 0);
                    src.read(&mut buf, off)?;
                    Some(buf)
                } else {
                    None
                };
                if full_tx.send((off, chunk)).is_err() {
                    return Ok(()); // the writer stopped on an error
                }
                off += n;
            }
            Ok(())
        });
        let mut result = Ok(());
        for (off, chunk) in full_rx.iter() {
            let n = chunk
                .as_ref()
                .map_or(CHUNK.min(size - off), |c| c.len() as u64);
            if let Some(buf) = chunk {
                result = for_each_data_run(&buf, |at, run| write(run, off + at as u64));
                let _ = empty_tx.send(buf);
            }
            if result.is_err() {
                break;
            }
            progress.advance(n);
        }
        drop(full_rx);
        let read_result = reader.join().expect("reader thread");
        result.and(read_result)
    })
}

/// Zero detection granularity inside a chunk: a new file reads as zeros wherever nothing is
/// written, so runs of zeros this long are skipped (what makes a half-zero image half the size).
const ZERO_RUN: usize = 4096;

/// Calls `f(offset, bytes)` for each maximal run of `buf` made of non-zero 4 KiB pieces.
pub(crate) fn for_each_data_run(
    buf: &[u8],
    mut f: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < buf.len() {
        let end = (at + ZERO_RUN).min(buf.len());
        let zero = is_zero(&buf[at..end]);
        match (zero, start) {
            (false, None) => start = Some(at),
            (true, Some(s)) => {
                f(s, &buf[s..at])?;
                start = None;
            }
            _ => {}
        }
        at = end;
    }
    if let Some(s) = start {
        f(s, &buf[s..])?;
    }
    Ok(())
}

/// The default dynamic target.
pub fn dynamic() -> Target {
    Target::Vhd(NewDisk::Dynamic {
        block_size: DEFAULT_BLOCK_SIZE,
    })
}

#[cfg(test)]
mod tests {
    use super::for_each_data_run;

    #[test]
    fn data_runs_skip_zero_pieces() {
        let mut buf = vec![0u8; 5 * 4096 + 100];
        buf[10] = 1;
        buf[4096 * 2 + 5] = 2;
        buf[4096 * 3] = 3;
        buf[5 * 4096 + 99] = 4;
        let mut runs = vec![];
        for_each_data_run(&buf, |at, run| {
            runs.push((at, run.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(runs, vec![(0, 4096), (8192, 8192), (20480, 100)]);
    }
}
