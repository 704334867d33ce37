//! The VHD backend: a [`strata_vhd::Disk`] (with its chain) as an NBD export, whose active
//! layer can be switched between requests ([`VhdBackend::switch_to_child`]): a checkpoint's
//! disk switch happens here, below QEMU, which never notices.
//!
//! Invariant: every request runs under the read side of one lock and a switch under its write
//! side, so a switch waits for the requests in flight and the next request sees the new layer;
//! a completed write is in the old layer (flushed before the switch) or the new one, never lost.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use strata_vhd::{Disk, ErrorKind, OpenOptions, VhdError};

use crate::proto::{EINVAL, EIO, ENOSPC, EPERM};
use crate::{Backend, BackendError};

/// Serves an open disk. Errors are logged on stderr (the server's log) and sent as errno.
pub struct VhdBackend {
    /// None only after a switch failed and the old layer could not be opened again: every
    /// request then fails with EIO (and the switch's error said so).
    disk: RwLock<Option<Disk>>,
    size: u64,
    read_only: bool,
}

fn to_nbd(e: VhdError) -> BackendError {
    let errno = match &*e.kind {
        ErrorKind::OutOfRange { .. } | ErrorKind::InvalidArgument(_) => EINVAL,
        ErrorKind::ReadOnly => EPERM,
        ErrorKind::Io(io) if io.raw_os_error() == Some(28) => ENOSPC,
        _ => EIO,
    };
    eprintln!("strata-nbd: {e}");
    BackendError {
        errno,
        message: e.to_string(),
    }
}

fn offline() -> BackendError {
    BackendError {
        errno: EIO,
        message: "the disk is offline: a layer switch failed".into(),
    }
}

impl VhdBackend {
    /// Serves `disk`.
    pub fn new(disk: Disk) -> Self {
        Self {
            size: disk.size(),
            read_only: !disk.is_writable(),
            disk: RwLock::new(Some(disk)),
        }
    }

    fn disk(&self) -> RwLockReadGuard<'_, Option<Disk>> {
        self.disk.read().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, f: impl FnOnce(&Disk) -> strata_vhd::Result<T>) -> Result<T, BackendError> {
        match &*self.disk() {
            Some(d) => f(d).map_err(to_nbd),
            None => Err(offline()),
        }
    }

    /// The active layer's path (none while offline).
    pub fn path(&self) -> Option<PathBuf> {
        self.disk().as_ref().map(|d| d.path().to_path_buf())
    }

    /// Makes a new differencing disk at `child` over the active layer and serves it from the
    /// next request on: requests in flight finish first, the old layer is flushed and closed
    /// (it becomes read-only, a parent), the child is opened for writing. Its cost follows the
    /// disk's metadata, not its data. On failure the old layer is served again (and `child`
    /// removed); if even that fails, the disk goes offline and the error says so. Returns the
    /// old layer's path.
    pub fn switch_to_child(&self, child: &Path) -> Result<PathBuf, VhdError> {
        let mut slot = self.disk.write().unwrap_or_else(|p| p.into_inner());
        let old = slot.take().ok_or_else(|| {
            VhdError::invalid("the disk is offline", child, "switch to a new layer")
        })?;
        let old_path = old.path().to_path_buf();
        if let Err(e) = old.close() {
            // Not switched: serve the old layer again (its completed writes are in the file).
            if let Ok(d) = Disk::open(&old_path, OpenOptions::write()) {
                *slot = Some(d);
            }
            return Err(e);
        }
        let opened = strata_vhd::create_differencing(child, &old_path)
            .and_then(|()| Disk::open(child, OpenOptions::write()));
        match opened {
            Ok(d) => {
                *slot = Some(d);
                Ok(old_path)
            }
            Err(e) => {
                let _ = std::fs::remove_file(child);
                match Disk::open(&old_path, OpenOptions::write()) {
                    Ok(d) => {
                        *slot = Some(d);
                        Err(e)
                    }
                    Err(again) => Err(VhdError::invalid(
                        format!("{e}; and the old layer could not be opened again ({again}): the disk is offline until the VM restarts"),
                        &old_path,
                        "switch to a new layer",
                    )),
                }
            }
        }
    }
}

impl Backend for VhdBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), BackendError> {
        self.with(|d| d.read_at(buf, off))
    }

    fn write_at(&self, data: &[u8], off: u64) -> Result<(), BackendError> {
        self.with(|d| d.write_at(data, off))
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.with(Disk::flush)
    }

    fn discard(&self, off: u64, len: u64) -> Result<(), BackendError> {
        self.with(|d| d.discard(off, len))
    }

    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), BackendError> {
        self.with(|d| d.write_zeroes(off, len, unmap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use strata_vhd::NewDisk;

    #[test]
    fn a_switch_between_writes_loses_none_and_leaves_the_old_layer_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.vhd");
        strata_vhd::create(&base, 8 << 20, NewDisk::dynamic()).unwrap();
        let b = Arc::new(VhdBackend::new(
            Disk::open(&base, OpenOptions::write()).unwrap(),
        ));
        // Four writers, each its own sectors, while the layer switches three times.
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..300u64 {
                        let s = t * 4096 + i;
                        b.write_at(&[u8::try_from(t + 1).unwrap(); 512], s * 512)
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut layers = vec![base.clone()];
        for n in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let child = dir.path().join(format!("layer{n}.avhd"));
            let old = b.switch_to_child(&child).unwrap();
            assert_eq!(&old, layers.last().unwrap());
            layers.push(child);
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(b.path().unwrap(), *layers.last().unwrap());
        let mut buf = [0u8; 512];
        for t in 0..4u64 {
            for i in 0..300u64 {
                b.read_at(&mut buf, (t * 4096 + i) * 512).unwrap();
                assert!(buf.iter().all(|x| u64::from(*x) == t + 1), "sector {t}/{i}");
            }
        }
        b.flush().unwrap();
        // A frozen layer opens for writing no more from here: it is a parent, its bytes kept.
        assert!(Disk::open(&layers[1], OpenOptions::write()).is_err());
        // A failed switch (the child's folder is missing) keeps serving the old layer.
        let bad = dir.path().join("no/such/dir.avhd");
        assert!(b.switch_to_child(&bad).is_err());
        assert_eq!(b.path().unwrap(), *layers.last().unwrap());
        b.write_at(&[9u8; 512], 0).unwrap();
    }
}
