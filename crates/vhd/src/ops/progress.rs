//! Progress reporting for long operations: the library counts bytes, the caller decides how (or
//! whether) to show them.

/// Receives progress of a long operation.
pub trait Progress {
    /// The total amount of work, in bytes.
    fn start(&self, _total: u64) {}
    /// `n` more bytes done.
    fn advance(&self, _n: u64) {}
    /// The operation ended.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
