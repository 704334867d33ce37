//! Whole-disk operations.

pub mod check;
pub mod compact;
pub mod convert;
pub mod inspect;
pub mod merge;
pub mod progress;
pub mod resize;
pub mod set_parent;
pub mod undo;
