//! Whole-disk operations.

pub mod progress;
pub mod inspect;
pub mod check;
pub mod compact;
pub mod convert;
pub mod merge;
pub mod resize;
pub mod set_parent;
pub mod undo;
