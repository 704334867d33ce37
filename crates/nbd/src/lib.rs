//! # strata-nbd
//!
//! Strata's storage server: serves a block device over the NBD protocol, on a Unix socket or TCP,
//! so that QEMU (and qemu-img, qemu-io, nbdcopy …) reach a VHD chain through Strata's own engine.
//!
//! Written by hand: the crates.io `nbd` crate serves one `Read + Write + Seek` object from one
//! connection, without TRIM, WRITE_ZEROES, FUA, NBD_OPT_GO/INFO or concurrent connections, and the
//! fixed-newstyle subset needed here is small (`proto.rs`, `server.rs`).
//!
//! [`serve_disk`] serves an opened VHD on a Unix socket (and TCP): the one way both a VM's worker
//! and a plugged disk's server put a disk on the wire.

pub mod client;
mod disk;
pub mod file;
mod proto;
pub mod server;
mod stop;
mod vhd;

pub use disk::{serve_disk, ServeError, ServeErrorKind, ServedDisk};
pub use server::{handle, serve_tcp, serve_tcp_until, serve_unix, serve_unix_until, Export};
pub use stop::Stop;
pub use vhd::VhdBackend;

/// An error from the backend, as an NBD error number and a message for the log.
#[derive(Debug, thiserror::Error)]
#[error("{message} (errno {errno})")]
pub struct BackendError {
    /// EIO, EINVAL, EPERM, ENOSPC …
    pub errno: u32,
    /// What happened.
    pub message: String,
}

/// What an export serves.
pub trait Backend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), BackendError>;
    /// Writes `data` at `off`.
    fn write_at(&self, data: &[u8], off: u64) -> Result<(), BackendError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), BackendError>;
    /// TRIM: the range may be freed.
    fn discard(&self, off: u64, len: u64) -> Result<(), BackendError>;
    /// The range must read as zeros; `unmap` allows freeing it.
    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), BackendError>;
}
