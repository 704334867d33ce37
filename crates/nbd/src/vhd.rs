//! The VHD backend: a [`strata_vhd::Disk`] (with its chain) as an NBD export.

use strata_vhd::{Disk, ErrorKind, VhdError};

use crate::proto::{EINVAL, EIO, ENOSPC, EPERM};
use crate::{Backend, BackendError};

/// Serves an open disk. Errors are logged on stderr (the server's log) and sent as errno.
pub struct VhdBackend(pub Disk);

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

impl Backend for VhdBackend {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_only(&self) -> bool {
        !self.0.is_writable()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), BackendError> {
        self.0.read_at(buf, off).map_err(to_nbd)
    }

    fn write_at(&self, data: &[u8], off: u64) -> Result<(), BackendError> {
        self.0.write_at(data, off).map_err(to_nbd)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.0.flush().map_err(to_nbd)
    }

    fn discard(&self, off: u64, len: u64) -> Result<(), BackendError> {
        self.0.discard(off, len).map_err(to_nbd)
    }

    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), BackendError> {
        self.0.write_zeroes(off, len, unmap).map_err(to_nbd)
    }
}
