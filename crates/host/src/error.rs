//! The host crate's one error type: what went wrong ([`ErrorKind`], the API's stable kinds,
//! matchable, and carried as is across the worker's control protocol) and a message that names the thing and the problem and
//! says what to do. Each kind maps to one HTTP status ([`ErrorKind::http_status`]) and to the
//! stable `kind` of the API's error bodies ([`ErrorKind::as_str`]).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
pub use strata_api::ErrorKind;

/// An error of the host service, its worker or their QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// For people: the thing, the problem, what to do. Context is prefixed as the error rises.
    pub message: String,
}

impl HostError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// No such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The state forbids it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// An invalid request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// A damaged file.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// The host lacks what is needed.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// Anything else.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An I/O error on `path` while doing `what`.
    pub fn io(path: &Path, what: &str, e: std::io::Error) -> Self {
        Self::new(
            ErrorKind::Io,
            format!("{}: cannot {what}: {e}", path.display()),
        )
    }

    /// The same error with `context` before its message (`context: message`).
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The same error as another kind (a worker's refusal is the caller's conflict …).
    #[must_use]
    pub fn as_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The stable kind name used in API error bodies.
    pub fn kind_name(&self) -> &'static str {
        self.kind.as_str()
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_names_and_statuses() {
        let all = [
            (ErrorKind::NotFound, "not-found", 404),
            (ErrorKind::Invalid, "invalid", 400),
            (ErrorKind::Conflict, "conflict", 409),
            (ErrorKind::Unsupported, "unsupported", 409),
            (ErrorKind::Refused, "refused", 409),
            (ErrorKind::Hung, "hung", 504),
            (ErrorKind::Gone, "gone", 503),
            (ErrorKind::Corrupt, "corrupt", 500),
            (ErrorKind::Io, "io", 500),
            (ErrorKind::Internal, "internal", 500),
        ];
        for (kind, name, status) in all {
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.http_status(), status);
            // The serde name (worker protocol) is the API's name.
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }

    #[test]
    fn context_is_prefixed_and_the_kind_kept() {
        let e = HostError::new(ErrorKind::Hung, "QMP stop: QEMU did not answer").context("VM 'a'");
        assert_eq!(e.to_string(), "VM 'a': QMP stop: QEMU did not answer");
        assert_eq!(e.kind, ErrorKind::Hung);
        let back: HostError = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
