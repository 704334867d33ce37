//! The one internal command type: REST, the CLI (through REST) and the automatic start and stop
//! actions all feed [`Command`]s to `Service::execute`.

use strata_api::{
    ChangeMedia, CreateSwitch, CreateVm, DiskSpec, NicSpec, PortForward, Proto, Reservation,
    SetNic, SetSwitch, SetVm, UndoAction,
};

/// A management request, whoever sent it.
#[derive(Debug, Clone)]
pub enum Command {
    /// Define a new VM.
    Create(CreateVm),
    /// Change a VM's settings.
    Set(String, SetVm),
    /// Delete a VM (and its disk files if asked).
    Delete {
        /// The VM.
        name: String,
        /// Also delete the disk files.
        delete_disks: bool,
    },
    /// Start (or restore a saved VM).
    Start(String),
    /// ACPI shut-down, turned off after the timeout (with this time's undo action).
    Shutdown(String, Option<u32>, Option<UndoAction>),
    /// Turn off (with this time's undo action).
    TurnOff(String, Option<UndoAction>),
    /// Export a VM to a folder.
    Export(String, strata_api::ExportVm),
    /// Import a VM from an export folder.
    Import(strata_api::ImportVm),
    /// Clone a VM (its name, linked).
    Clone(String, strata_api::CloneVm),
    /// Commit or discard a VM's kept undo disks (the VM off).
    Undo(String, UndoAction),
    /// Reset.
    Reset(String),
    /// Pause.
    Pause(String),
    /// Resume.
    Resume(String),
    /// Save the state.
    Save(String),
    /// Drop a saved state (the VM becomes off).
    DiscardSaved(String),
    /// The host is shutting down: apply each running VM's automatic stop action.
    StopVms,
    /// Create a virtual switch.
    CreateSwitch(CreateSwitch),
    /// Delete a virtual switch (refused while NICs use it).
    DeleteSwitch(String),
    /// Change a switch's settings.
    SetSwitch(String, SetSwitch),
    /// Reserve an address on a switch for a MAC.
    Reserve(String, Reservation),
    /// Remove a MAC's reservation on a switch.
    Unreserve(String, String),
    /// Add a NAT port forward to a switch.
    AddForward(String, PortForward),
    /// Remove a switch's port forward of (protocol, host port).
    RemoveForward(String, Proto, u16),
    /// Add a network adapter to a VM (also while it runs).
    AddNic(String, NicSpec),
    /// Change a VM's network adapter (by index or MAC).
    SetNic(String, String, SetNic),
    /// Remove a VM's network adapter (by index or MAC).
    RemoveNic(String, String),
    /// List a VM's checkpoints.
    Checkpoints(String),
    /// Take a checkpoint (its name, or the default).
    CreateCheckpoint(String, Option<String>),
    /// Apply a checkpoint (by id or name; none: revert to the current one), turning a running
    /// VM off first when `force`.
    ApplyCheckpoint(String, Option<String>, bool),
    /// Rename a checkpoint.
    RenameCheckpoint(String, String, String),
    /// Delete a checkpoint (with its subtree when true).
    DeleteCheckpoint(String, String, bool),
    /// Attach a disk to a VM (also while it runs: virtio or SCSI).
    AddDisk(String, DiskSpec),
    /// Detach a VM's disk (by index or path; the file is kept).
    RemoveDisk(String, String),
    /// Insert an ISO in a VM's CD/DVD drive, or eject it (also while it runs).
    ChangeMedia(String, ChangeMedia),
    /// Set a running VM's dynamic-memory target (MiB).
    SetMemory(String, u32),
    /// Freeze a running guest's file systems (through its agent).
    Freeze(String),
    /// Thaw them.
    Thaw(String),
}

impl Command {
    /// The request's name, for the event log (the variant's name).
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Create(_) => "Create",
            Self::Set(..) => "Set",
            Self::Delete { .. } => "Delete",
            Self::Start(_) => "Start",
            Self::Shutdown(..) => "Shutdown",
            Self::TurnOff(..) => "TurnOff",
            Self::Undo(..) => "Undo",
            Self::Clone(..) => "Clone",
            Self::Export(..) => "Export",
            Self::Import(_) => "Import",
            Self::Reset(_) => "Reset",
            Self::Pause(_) => "Pause",
            Self::Resume(_) => "Resume",
            Self::Save(_) => "Save",
            Self::DiscardSaved(_) => "DiscardSaved",
            Self::StopVms => "StopVms",
            Self::CreateSwitch(_) => "CreateSwitch",
            Self::DeleteSwitch(_) => "DeleteSwitch",
            Self::SetSwitch(..) => "SetSwitch",
            Self::Reserve(..) => "Reserve",
            Self::Unreserve(..) => "Unreserve",
            Self::AddForward(..) => "AddForward",
            Self::RemoveForward(..) => "RemoveForward",
            Self::AddNic(..) => "AddNic",
            Self::SetNic(..) => "SetNic",
            Self::RemoveNic(..) => "RemoveNic",
            Self::AddDisk(..) => "AddDisk",
            Self::Checkpoints(_) => "Checkpoints",
            Self::CreateCheckpoint(..) => "CreateCheckpoint",
            Self::ApplyCheckpoint(..) => "ApplyCheckpoint",
            Self::RenameCheckpoint(..) => "RenameCheckpoint",
            Self::DeleteCheckpoint(..) => "DeleteCheckpoint",
            Self::RemoveDisk(..) => "RemoveDisk",
            Self::Freeze(_) => "Freeze",
            Self::ChangeMedia(..) => "ChangeMedia",
            Self::SetMemory(..) => "SetMemory",
            Self::Thaw(_) => "Thaw",
        }
    }

    /// The VM it concerns, if one.
    pub(super) fn target(&self) -> Option<&str> {
        match self {
            Self::Create(spec) => Some(&spec.name),
            Self::Set(n, _)
            | Self::Delete { name: n, .. }
            | Self::Start(n)
            | Self::Shutdown(n, ..)
            | Self::TurnOff(n, _)
            | Self::Undo(n, _)
            | Self::Clone(n, _)
            | Self::Export(n, _)
            | Self::Reset(n)
            | Self::Pause(n)
            | Self::Resume(n)
            | Self::Save(n)
            | Self::DiscardSaved(n)
            | Self::AddNic(n, _)
            | Self::SetNic(n, ..)
            | Self::RemoveNic(n, _)
            | Self::AddDisk(n, _)
            | Self::Checkpoints(n)
            | Self::CreateCheckpoint(n, _)
            | Self::ApplyCheckpoint(n, ..)
            | Self::RenameCheckpoint(n, ..)
            | Self::DeleteCheckpoint(n, ..)
            | Self::RemoveDisk(n, _)
            | Self::Freeze(n)
            | Self::Thaw(n)
            | Self::ChangeMedia(n, _)
            | Self::SetMemory(n, _) => Some(n),
            Self::Import(req) => req.name.as_deref(),
            Self::StopVms
            | Self::CreateSwitch(_)
            | Self::DeleteSwitch(_)
            | Self::SetSwitch(..)
            | Self::Reserve(..)
            | Self::Unreserve(..)
            | Self::AddForward(..)
            | Self::RemoveForward(..) => None,
        }
    }
}
