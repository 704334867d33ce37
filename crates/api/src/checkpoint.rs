//! Checkpoints (Hyper-V's snapshots): a tree of a VM's saved points, each with its disks' state
//! and, when taken while the VM ran, its memory.

use serde::{Deserialize, Serialize};

/// A checkpoint as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Its id (never changes).
    pub id: String,
    /// Its name (unique among the VM's checkpoints).
    pub name: String,
    /// The checkpoint it was taken under (none: the root).
    pub parent: Option<String>,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// Whether it holds the VM's memory and device state (taken while the VM ran or was
    /// paused or saved): applying it leaves the VM saved, ready to resume there.
    pub has_memory: bool,
    /// Whether "Now" (the VM's current state) hangs under it: the one `revert` applies.
    pub current: bool,
}

/// `POST /v1/vms/{name}/checkpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckpoint {
    /// Its name (default: "VM - (YYYY-MM-DD - HH:MM:SS)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `PATCH /v1/vms/{name}/checkpoints/{checkpoint}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameCheckpoint {
    /// The new name.
    pub name: String,
}

/// `DELETE /v1/vms/{name}/checkpoints/{checkpoint}` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteCheckpointQuery {
    /// Also delete every checkpoint under it.
    #[serde(default)]
    pub subtree: bool,
}

/// `POST /v1/vms/{name}/checkpoints/{checkpoint}/apply` (optional body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyCheckpoint {
    /// Turn a running (or paused) VM off first; without it, apply refuses a running VM.
    #[serde(default)]
    pub force: bool,
}

/// A merge the VM's checkpoint deletions left to do: a deleted checkpoint's layer and its one
/// remaining child's are folded together in the background once nothing holds the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMerge {
    /// The child's layer, merged in (of the first disk; every disk's is merged).
    pub layer: String,
    /// The deleted checkpoint's layer it is merged into.
    pub into: String,
    /// "waiting" (the VM holds the files: it runs once the VM is off, within seconds) or
    /// "merging" (a journaled merge is in progress or was cut short and resumes).
    pub state: String,
}
