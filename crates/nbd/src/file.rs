//! A backend exposed as one regular file (`disk`) in a FUSE file system, so that the kernel's loop
//! driver can map it when the kernel has no NBD client (`strata disk mount`).

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request,
};

use crate::Backend;

const ROOT: u64 = 1;
const FILE: u64 = 2;
/// The file's name in the mount.
pub const FILE_NAME: &str = "disk";
const TTL: Duration = Duration::from_secs(1);
const EIO: i32 = 5;
const ENOENT: i32 = 2;
const EROFS: i32 = 30;

struct DiskFile {
    backend: Arc<dyn Backend>,
    uid: u32,
    gid: u32,
}

impl DiskFile {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            let perm = if self.backend.read_only() {
                0o444
            } else {
                0o644
            };
            (FileType::RegularFile, perm, self.backend.size(), 1)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The part of `[offset, offset + len)` inside the disk.
    fn clamp(&self, offset: i64, len: usize) -> Option<(u64, usize)> {
        let off = u64::try_from(offset).ok()?;
        let avail = self.backend.size().checked_sub(off)?;
        Some((off, usize::try_from(avail.min(len as u64)).ok()?))
    }
}

impl Filesystem for DiskFile {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == FILE_NAME {
            reply.entry(&TTL, &self.attr(FILE), 0);
        } else {
            reply.error(ENOENT);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match ino {
            ROOT | FILE => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let wants_write = flags & 3 != 0; // O_WRONLY or O_RDWR
        if ino != FILE {
            reply.error(ENOENT);
        } else if wants_write && self.backend.read_only() {
            reply.error(EROFS);
        } else {
            reply.opened(0, 0);
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let Some((off, n)) = self.clamp(offset, usize::try_from(size).unwrap_or(0)) else {
            reply.data(&[]);
            return;
        };
        let mut buf = vec![0u8; n];
        match self.backend.read_at(&mut buf, off) {
            Ok(()) => reply.data(&buf),
            Err(_) => reply.error(EIO),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        if self.backend.read_only() {
            reply.error(EROFS);
            return;
        }
        let Some((off, n)) = self.clamp(offset, data.len()) else {
            reply.error(EIO);
            return;
        };
        match self.backend.write_at(&data[..n], off) {
            Ok(()) => reply.written(u32::try_from(n).unwrap_or(0)),
            Err(_) => reply.error(EIO),
        }
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.backend.flush() {
            Ok(()) => reply.ok(),
            Err(_) => reply.error(EIO),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            reply.error(ENOENT);
            return;
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        for (i, (ino, kind, name)) in entries
            .iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(0))
        {
            if reply.add(*ino, i64::try_from(i + 1).unwrap_or(i64::MAX), *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Mounts a FUSE file system at `dir` holding one file, `disk`, backed by `backend`. The mount
/// lasts as long as the returned session.
pub fn mount_file(backend: Arc<dyn Backend>, dir: &Path) -> std::io::Result<BackgroundSession> {
    let mut options = vec![
        MountOption::FSName("strata".into()),
        MountOption::DefaultPermissions,
    ];
    options.push(if backend.read_only() {
        MountOption::RO
    } else {
        MountOption::RW
    });
    let fs = DiskFile {
        backend,
        uid: rustix_uid(),
        gid: rustix_gid(),
    };
    fuser::spawn_mount2(fs, dir, &options)
}

fn rustix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

fn rustix_gid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .unwrap_or(0)
}
