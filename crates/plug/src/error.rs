//! The crate's one error type: what went wrong ([`ErrorKind`]) and, when known, what was being
//! done to which thing (the context, printed first: `context: what went wrong`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// An I/O call failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The disk engine refused or failed (open, lock, undo disk commit or discard …).
    #[error("{0}")]
    Vhd(#[source] strata_vhd::VhdError),
    /// The disk could not be put on the wire (its socket is taken, a listen failed).
    #[error("{0}")]
    Serve(#[source] strata_nbd::ServeError),
    /// A plug record could not be read or written as JSON.
    #[error("{0}")]
    Record(#[source] serde_json::Error),
    /// The disk is plugged in already, by a server that still runs.
    #[error("{} is already plugged in at {uri}", path.display())]
    AlreadyPlugged {
        /// The disk.
        path: PathBuf,
        /// Where it is served.
        uri: String,
    },
    /// The disk is not plugged in.
    #[error("{} is not plugged in", .0.display())]
    NotPlugged(PathBuf),
    /// The disk server did not start, did not stop, or failed at its end.
    #[error("{0}")]
    Server(String),
    /// Mounting or unmounting failed (a loop device, `mount`, `umount`, a missing partition).
    #[error("{0}")]
    Mount(String),
    /// The caller asked for something impossible.
    #[error("{0}")]
    Invalid(String),
}

/// An error of this crate: its kind, and what was being done when it happened.
#[derive(Debug)]
pub struct PlugError {
    /// What went wrong (boxed: results stay small).
    pub kind: Box<ErrorKind>,
    /// The thing and the operation (`/run/strata/disks: cannot create`), when the kind does not
    /// say it already.
    pub context: Option<String>,
}

impl PlugError {
    /// A new error without context.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind: Box::new(kind),
            context: None,
        }
    }

    /// The same error with `context` before its message; an existing context stays after it.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.context = Some(match self.context.take() {
            Some(inner) => format!("{context}: {inner}"),
            None => context.to_string(),
        });
        self
    }

    pub(crate) fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Server(message.into()))
    }

    pub(crate) fn mount(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Mount(message.into()))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid(message.into()))
    }
}

impl fmt::Display for PlugError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.context {
            Some(c) => write!(f, "{c}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

// The cause's text is already part of the message (Display), so it is not repeated as a
// `source()`: `anyhow`'s `{:#}` would print it twice.
impl std::error::Error for PlugError {}

impl From<io::Error> for PlugError {
    fn from(e: io::Error) -> Self {
        Self::new(ErrorKind::Io(e))
    }
}

impl From<strata_vhd::VhdError> for PlugError {
    fn from(e: strata_vhd::VhdError) -> Self {
        Self::new(ErrorKind::Vhd(e))
    }
}

impl From<strata_nbd::ServeError> for PlugError {
    fn from(e: strata_nbd::ServeError) -> Self {
        Self::new(ErrorKind::Serve(e))
    }
}

impl From<serde_json::Error> for PlugError {
    fn from(e: serde_json::Error) -> Self {
        Self::new(ErrorKind::Record(e))
    }
}

/// The crate's result type.
pub type Result<T, E = PlugError> = std::result::Result<T, E>;

/// Attaches a context to I/O (or JSON) results.
pub(crate) trait Context<T> {
    /// The error, if any, as a [`PlugError`] with `context` (computed only on error).
    fn ctx<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<PlugError>> Context<T> for std::result::Result<T, E> {
    fn ctx<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_comes_first_and_nests() {
        let e = PlugError::from(io::Error::from_raw_os_error(2)).context("/x: cannot open");
        assert_eq!(
            e.to_string(),
            "/x: cannot open: No such file or directory (os error 2)"
        );
        assert!(matches!(*e.kind, ErrorKind::Io(_)));
        let e = PlugError::invalid("bad").context("inner").context("outer");
        assert_eq!(e.to_string(), "outer: inner: bad");
        let e = PlugError::new(ErrorKind::NotPlugged("/d.vhd".into()));
        assert_eq!(e.to_string(), "/d.vhd is not plugged in");
    }
}
