//! The host service's errors. Each maps to one HTTP status; the message says what to do.

use std::path::Path;

/// What went wrong in the host service.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No such VM (404).
    #[error("{0}")]
    NotFound(String),
    /// The VM's state does not allow the request (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// A file of the data folder is damaged (500).
    #[error("{0}")]
    Corrupt(String),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl HostError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(path: &Path, what: &str, e: std::io::Error) -> Self {
        Self::Internal(format!("{}: cannot {what}: {e}", path.display()))
    }

    /// The stable kind name used in API error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::Invalid(_) => "invalid",
            Self::Corrupt(_) | Self::Internal(_) => "internal",
        }
    }
}
