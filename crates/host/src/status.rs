//! A VM's run status, `status.json` in its folder: written by its worker while one is alive and by
//! the service otherwise, always atomically. With the worker's pid and start time it lets a
//! restarted service tell a running VM from a stale record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_api::{Accelerator, VmState};

use crate::error::HostError;
use crate::store::write_atomic;
use strata_proc::{alive, boot_id, ProcessId};

/// What `status.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The state.
    pub state: VmState,
    /// The worker's pid and start time (clock ticks since boot), while active.
    #[serde(default)]
    pub worker: Option<ProcessId>,
    /// QEMU's pid and start time, once started.
    #[serde(default)]
    pub qemu: Option<ProcessId>,
    /// `kvm` or `tcg` while active.
    #[serde(default)]
    pub accelerator: Option<Accelerator>,
    /// When the VM last started.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Why the VM last stopped abnormally.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Whether `stop-vms` stopped it (for the `if-running` start action).
    #[serde(default)]
    pub stopped_by_host: bool,
    /// Whether the worker is loading the saved state (which stays valid until it is loaded).
    #[serde(default)]
    pub restoring: bool,
    /// The kernel's boot id when the worker started: after a reboot (power loss) no recorded
    /// process is alive, whatever pid reuse says.
    #[serde(default)]
    pub boot: Option<String>,
    /// Whether the guest agent answers (written by the worker's heartbeat).
    #[serde(default)]
    pub heartbeat: strata_api::Heartbeat,
    /// What the guest's memory is now, with dynamic memory (written by the worker).
    #[serde(default)]
    pub memory_current_mib: Option<u32>,
    /// What the guest reports available (its balloon driver's statistics), in MiB.
    #[serde(default)]
    pub memory_available_mib: Option<u32>,
    /// The balloon's last target, and whether a person set it (`vm memory`): the service's
    /// policy then leaves the VM alone until its next start.
    #[serde(default)]
    pub memory_target: Option<(u32, bool)>,
}

impl Status {
    /// A VM that is off.
    pub fn off() -> Self {
        Self {
            state: VmState::Off,
            worker: None,
            qemu: None,
            accelerator: None,
            started_at: None,
            last_error: None,
            stopped_by_host: false,
            restoring: false,
            boot: None,
            heartbeat: strata_api::Heartbeat::None,
            memory_current_mib: None,
            memory_available_mib: None,
            memory_target: None,
        }
    }

    /// Whether this status's worker is alive (same boot, same pid and start time).
    pub fn worker_alive(&self) -> bool {
        self.same_boot() && alive(self.worker)
    }

    /// Whether this status's QEMU is alive.
    pub fn qemu_alive(&self) -> bool {
        self.same_boot() && alive(self.qemu)
    }

    fn same_boot(&self) -> bool {
        self.boot.as_deref() == Some(boot_id().as_str())
    }
}

/// The status file in `vm_dir`.
pub fn path(vm_dir: &Path) -> PathBuf {
    vm_dir.join("status.json")
}

/// Reads the status; a missing file means off.
pub fn read(vm_dir: &Path) -> Result<Status, HostError> {
    let p = path(vm_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            HostError::corrupt(format!("{}: not a valid status file: {e}", p.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Status::off()),
        Err(e) => Err(HostError::io(&p, "read", e)),
    }
}

/// Writes the status atomically.
pub fn write(vm_dir: &Path, status: &Status) -> Result<(), HostError> {
    let data = serde_json::to_vec_pretty(status).unwrap_or_default();
    write_atomic(&path(vm_dir), &data)
}
