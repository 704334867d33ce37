//! Undo disks for a whole VM (Virtual Server 2005 R2): while `undo_disks` is on, the worker serves
//! each disk's `DISK.vud` (made at start when missing) and the disk itself stays untouched. When
//! the VM is turned off or shut down, its undo action (or this time's, `vm stop --undo …`)
//! commits, discards or keeps them, for all disks together (the worker does it once QEMU has
//! ended, before it records the VM as off). `strata vm commit-undo|discard-undo` acts on kept
//! ones while the VM is off.

use std::path::Path;

use strata_api::{UndoAction, VmState};
use strata_vhd::ops::undo;

use super::lifecycle::busy;
use super::Service;
use crate::error::HostError;
use crate::events::Code;
use crate::store::VmConfig;
use crate::worker::Verb;

/// Whether any of the VM's disks has an undo disk.
pub fn kept(c: &VmConfig) -> bool {
    c.vm.disks
        .iter()
        .any(|d| undo::undo_path(Path::new(&d.path)).exists())
}

impl Service {
    /// Tells the worker this time's undo action before a turn-off or shut-down.
    pub(super) fn undo_once(
        &self,
        name: &str,
        action: Option<UndoAction>,
        user: &str,
    ) -> Result<(), HostError> {
        let Some(action) = action else {
            return Ok(());
        };
        let (c, _) = self.current(name)?;
        if !c.vm.undo_disks {
            return Err(HostError::invalid(format!(
                "VM '{name}' has no undo disks (`strata vm set {name} --undo-disks on` while it is off)"
            )));
        }
        self.control(name, Verb::SetUndo { action }, user)
    }

    /// Refuses to turn undo disks off while some are kept (their changes would be stranded),
    /// and to turn them on for a VM with checkpoints (one or the other).
    pub(super) fn check_undo_change(
        &self,
        name: &str,
        c: &VmConfig,
        set: &strata_api::SetVm,
    ) -> Result<(), HostError> {
        match set.undo_disks {
            Some(false) if kept(c) => Err(HostError::conflict(format!(
                "VM '{name}' has kept undo disks: commit or discard them first (`strata vm commit-undo|discard-undo {name}`)"
            ))),
            Some(true) if !crate::checkpoint::Tree::load(&self.home.vm_dir(name))?.checkpoints.is_empty() => {
                Err(HostError::conflict(format!(
                    "VM '{name}' has checkpoints: undo disks and checkpoints do not mix; delete the checkpoints first"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Commits or discards a VM's kept undo disks (the VM off).
    pub(super) fn undo(&self, name: &str, action: UndoAction, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (c, st) = self.current_locked(name)?;
        if !matches!(st.state, VmState::Off | VmState::Crashed) {
            return Err(busy(name, st.state, "commit or discard its undo disks"));
        }
        if !kept(&c) {
            return Err(HostError::conflict(format!(
                "VM '{name}' has no kept undo disks"
            )));
        }
        apply(&c, action)?;
        self.events.log(
            Code::VmChanged,
            Some(name),
            user,
            &format!("undo disks {}", done(action)),
        );
        Ok(())
    }
}

/// "committed", "discarded", "kept".
pub fn done(action: UndoAction) -> &'static str {
    match action {
        UndoAction::Keep => "kept",
        UndoAction::Commit => "committed",
        UndoAction::Discard => "discarded",
    }
}

/// Commits or discards every disk's undo disk (those that exist); the first failure stops and
/// is named.
pub fn apply(c: &VmConfig, action: UndoAction) -> Result<(), HostError> {
    for d in &c.vm.disks {
        let base = Path::new(&d.path);
        if !undo::undo_path(base).exists() {
            continue;
        }
        let r = match action {
            UndoAction::Keep => Ok(()),
            UndoAction::Commit => undo::commit(base, &strata_vhd::ops::progress::Silent),
            UndoAction::Discard => undo::discard(base),
        };
        r.map_err(|e| HostError::conflict(format!("undo disk of '{}': {e}", d.path)))?;
    }
    Ok(())
}
