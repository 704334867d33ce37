//! The one error type of the crate: what went wrong ([`ErrorKind`]), in which file, at which byte
//! offset when that is known, and during which operation.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// An I/O call failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The file is not a VHD, or one of its structures is damaged.
    #[error("{0}")]
    Corrupt(String),
    /// A checksum does not match its structure.
    #[error("{what} checksum is {stored:#010x}, expected {computed:#010x}")]
    BadChecksum {
        /// Which structure.
        what: &'static str,
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A valid VHD uses something this implementation does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller asked for something impossible or invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A read or write reaches past the end of the virtual disk.
    #[error("range {offset}+{len} is outside the virtual disk of {size} bytes")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// Virtual size of the disk.
        size: u64,
    },
    /// Another process holds a conflicting lock.
    #[error("the file is in use{}", holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    Locked {
        /// The holder (process id and name) when it can be known.
        holder: Option<String>,
    },
    /// The parent of a differencing disk cannot be found.
    #[error("parent not found (looked for {})", tried.join(", "))]
    ParentNotFound {
        /// Every path that was tried.
        tried: Vec<String>,
    },
    /// The parent found is not the disk the child was made from.
    #[error("parent {parent} has unique id {found}, but the child was made from {expected}")]
    ParentMismatch {
        /// The parent's path.
        parent: String,
        /// The id the child recorded.
        expected: String,
        /// The id the parent has.
        found: String,
    },
    /// The disk is opened read-only.
    #[error("the disk is open read-only")]
    ReadOnly,
}

/// An error carrying its kind, the file, the operation and, when known, the byte offset.
#[derive(Debug)]
pub struct VhdError {
    /// What went wrong (boxed: results stay small on the hot path).
    pub kind: Box<ErrorKind>,
    /// The file concerned.
    pub path: PathBuf,
    /// The operation that failed ("open", "read", "write", "merge" …).
    pub op: &'static str,
    /// The byte offset in the file, when the error concerns one place.
    pub offset: Option<u64>,
}

impl VhdError {
    /// A new error.
    pub fn new(kind: ErrorKind, path: &Path, op: &'static str) -> Self {
        Self {
            kind: Box::new(kind),
            path: path.to_path_buf(),
            op,
            offset: None,
        }
    }

    /// The same error, located at a byte offset of the file.
    #[must_use]
    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// An I/O error.
    pub fn io(err: io::Error, path: &Path, op: &'static str) -> Self {
        Self::new(ErrorKind::Io(err), path, op)
    }

    /// A damaged structure.
    pub fn corrupt(msg: impl Into<String>, path: &Path, op: &'static str) -> Self {
        Self::new(ErrorKind::Corrupt(msg.into()), path, op)
    }

    /// An invalid request.
    pub fn invalid(msg: impl Into<String>, path: &Path, op: &'static str) -> Self {
        Self::new(ErrorKind::InvalidArgument(msg.into()), path, op)
    }
}

impl fmt::Display for VhdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} failed: {}",
            self.path.display(),
            self.op,
            self.kind
        )?;
        if let Some(off) = self.offset {
            write!(f, " (at byte offset {off:#x})")?;
        }
        Ok(())
    }
}

// The I/O error's text is already part of the message (Display), so it is not repeated as a
// `source()`: `anyhow`'s `{:#}` would print it twice.
impl std::error::Error for VhdError {}

/// The crate's result type.
pub type Result<T, E = VhdError> = std::result::Result<T, E>;

/// Attaches a path and an operation to I/O results.
pub(crate) trait IoContext<T> {
    fn ctx(self, path: &Path, op: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, path: &Path, op: &'static str) -> Result<T> {
        self.map_err(|e| VhdError::io(e, path, op))
    }
}
