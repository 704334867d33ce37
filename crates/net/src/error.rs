//! The crate's one error type: what went wrong ([`NetErrorKind`]), on which object (a switch, an
//! interface, a file) and why, in words that name the thing and the problem.

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetErrorKind {
    /// A setting is invalid (a subnet, an address, a range).
    Invalid,
    /// It clashes with what exists (an overlapping subnet, an interface of that name).
    Conflict,
    /// No such object.
    NotFound,
    /// The kernel refused (netlink's own reason is in the message).
    Kernel,
    /// An I/O call failed.
    Io,
    /// A file of Strata's is damaged.
    Corrupt,
}

/// An error of the virtual network layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {message}")]
pub struct NetError {
    /// What went wrong.
    pub kind: NetErrorKind,
    /// The object concerned: a switch, an interface, a file.
    pub object: String,
    /// Why.
    pub message: String,
}

impl NetError {
    /// A new error on `object`.
    pub fn new(kind: NetErrorKind, object: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            object: object.to_string(),
            message: message.into(),
        }
    }
}
