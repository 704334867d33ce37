//! Checkpoints (Hyper-V's snapshots): the tree of a VM's saved points (`tree.rs`) and their
//! files — new layers, merges with their journal, the sweep of unreferenced files (`layers.rs`).
//! The service drives them (`service/checkpoints.rs`); for a running VM the worker switches each
//! disk to its new layer between NBD requests (`strata_nbd::VhdBackend::switch_to_child`).

#[cfg(test)]
mod crash_test;
pub mod layers;
pub mod tree;

pub use tree::{Checkpoint, Tree, MAX_CHECKPOINTS};
