//! The event log: one JSON object per line in `$STRATA_HOME/events.jsonl`, appended by the service
//! and by the workers (each line is one `write` on a file opened with `O_APPEND`, so concurrent
//! writers never interleave). Codes are stable; `docs/EVENTS.md` lists them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use strata_api::Event;

/// Every event Strata logs: (code, name, level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The host service started.
    ServiceStarted,
    /// The host service stopped.
    ServiceStopped,
    /// A VM was created.
    VmCreated,
    /// A VM's settings changed.
    VmChanged,
    /// A VM was deleted.
    VmDeleted,
    /// A VM is starting.
    VmStarting,
    /// A VM runs.
    VmStarted,
    /// A VM could not start.
    VmStartFailed,
    /// A VM was paused.
    VmPaused,
    /// A VM was resumed.
    VmResumed,
    /// A VM was reset.
    VmReset,
    /// A shut-down was requested (ACPI power button).
    VmShutdownRequested,
    /// The guest powered off.
    VmPoweredOff,
    /// The guest ignored the shut-down: it was turned off after the timeout.
    VmShutdownTimedOut,
    /// A VM was turned off.
    VmTurnedOff,
    /// A VM's state was saved.
    VmSaved,
    /// Saving a VM's state failed; it keeps running.
    VmSaveFailed,
    /// A VM was restored from its saved state.
    VmRestored,
    /// QEMU or the worker died unexpectedly.
    VmCrashed,
    /// A restarted service found a VM running and reattached to it.
    VmReattached,
    /// A restarted service found a VM's recorded state stale and corrected it.
    VmReconciled,
    /// An automatic start or stop action was taken.
    VmAutomaticAction,
    /// A request on a VM was refused or failed (the reason is the message).
    VmRequestFailed,
    /// The guest agent answered (for the first time, or again after it was lost).
    HeartbeatOk,
    /// The guest agent stopped answering.
    HeartbeatLost,
    /// The guest's clock was set from the host's (after a restore or a resume).
    GuestTimeSet,
    /// The guest's file systems were frozen or thawed.
    GuestFreeze,
    /// A file was copied into or out of the guest.
    GuestFileCopied,
    /// A checkpoint was taken.
    CheckpointCreated,
    /// A checkpoint was applied (the VM went back to it).
    CheckpointApplied,
    /// A checkpoint was renamed.
    CheckpointRenamed,
    /// A checkpoint (or a subtree) was deleted.
    CheckpointDeleted,
    /// A merge of a deleted checkpoint's layer started (or waits for the VM to be off).
    MergeStarted,
    /// A merge finished (or was finished after an interruption).
    MergeFinished,
    /// A merge failed (the files read the same as before; it is tried again).
    MergeFailed,
    /// A virtual switch was created.
    SwitchCreated,
    /// A virtual switch was deleted.
    SwitchDeleted,
    /// A switch's bridge was made again (after a host reboot) or could not be.
    SwitchRestored,
    /// A DHCP lease was released (its VM or NIC was deleted).
    LeaseReleased,
    /// A switch's DHCP leases could not be saved (they stay in memory; the next change retries).
    LeasesNotSaved,
    /// A switch's settings, reservations or port forwards changed.
    SwitchChanged,
    /// Something on the host would break a switch (another firewall's drop-policy chain).
    SwitchWarning,
    /// Strata turned on the host's IPv4 forwarding (for NAT).
    IpForwardingEnabled,
    /// A DHCP client got a lease.
    LeaseGranted,
    /// A VM's network adapter was added, or connected to a switch.
    NicConnected,
    /// A VM's network adapter was removed, or disconnected from its switch.
    NicDisconnected,
    /// A VM's network adapter's settings changed.
    NicChanged,
}

impl Code {
    /// (code, name, level).
    pub fn describe(self) -> (u32, &'static str, &'static str) {
        match self {
            Self::ServiceStarted => (100, "service-started", "info"),
            Self::ServiceStopped => (101, "service-stopped", "info"),
            Self::VmCreated => (200, "vm-created", "info"),
            Self::VmChanged => (201, "vm-changed", "info"),
            Self::VmDeleted => (202, "vm-deleted", "info"),
            Self::VmStarting => (300, "vm-starting", "info"),
            Self::VmStarted => (301, "vm-started", "info"),
            Self::VmStartFailed => (302, "vm-start-failed", "error"),
            Self::VmPaused => (310, "vm-paused", "info"),
            Self::VmResumed => (311, "vm-resumed", "info"),
            Self::VmReset => (312, "vm-reset", "info"),
            Self::VmShutdownRequested => (320, "vm-shutdown-requested", "info"),
            Self::VmPoweredOff => (321, "vm-powered-off", "info"),
            Self::VmShutdownTimedOut => (322, "vm-shutdown-timed-out", "warning"),
            Self::VmTurnedOff => (323, "vm-turned-off", "info"),
            Self::VmSaved => (330, "vm-saved", "info"),
            Self::VmSaveFailed => (331, "vm-save-failed", "error"),
            Self::VmRestored => (332, "vm-restored", "info"),
            Self::VmCrashed => (340, "vm-crashed", "error"),
            Self::VmReattached => (350, "vm-reattached", "info"),
            Self::VmReconciled => (351, "vm-reconciled", "warning"),
            Self::VmAutomaticAction => (360, "vm-automatic-action", "info"),
            Self::VmRequestFailed => (370, "vm-request-failed", "warning"),
            Self::HeartbeatOk => (380, "heartbeat-ok", "info"),
            Self::HeartbeatLost => (381, "heartbeat-lost", "warning"),
            Self::GuestTimeSet => (382, "guest-time-set", "info"),
            Self::GuestFreeze => (383, "guest-freeze", "info"),
            Self::GuestFileCopied => (384, "guest-file-copied", "info"),
            Self::CheckpointCreated => (430, "checkpoint-created", "info"),
            Self::CheckpointApplied => (431, "checkpoint-applied", "info"),
            Self::CheckpointRenamed => (432, "checkpoint-renamed", "info"),
            Self::CheckpointDeleted => (433, "checkpoint-deleted", "info"),
            Self::MergeStarted => (434, "merge-started", "info"),
            Self::MergeFinished => (435, "merge-finished", "info"),
            Self::MergeFailed => (436, "merge-failed", "error"),
            Self::SwitchCreated => (400, "switch-created", "info"),
            Self::SwitchDeleted => (401, "switch-deleted", "info"),
            Self::SwitchRestored => (402, "switch-restored", "info"),
            Self::LeaseReleased => (410, "lease-released", "info"),
            Self::LeasesNotSaved => (411, "leases-not-saved", "error"),
            Self::SwitchChanged => (403, "switch-changed", "info"),
            Self::SwitchWarning => (404, "switch-warning", "warning"),
            Self::IpForwardingEnabled => (405, "ip-forwarding-enabled", "info"),
            Self::LeaseGranted => (412, "lease-granted", "info"),
            Self::NicConnected => (420, "nic-connected", "info"),
            Self::NicDisconnected => (421, "nic-disconnected", "info"),
            Self::NicChanged => (422, "nic-changed", "info"),
        }
    }
}

/// The current time in RFC 3339 (UTC, milliseconds).
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Appends and reads the event log.
#[derive(Debug, Clone)]
pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    /// The log at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Appends an event. A failure to log is reported on stderr, never fatal.
    pub fn log(&self, code: Code, vm: Option<&str>, user: &str, message: &str) {
        let (code, name, level) = code.describe();
        let event = Event {
            time: now(),
            code,
            name: name.to_string(),
            level: level.to_string(),
            vm: vm.map(str::to_string),
            user: user.to_string(),
            message: message.to_string(),
        };
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line));
        if let Err(e) = result {
            eprintln!("strata: {}: cannot log an event: {e}", self.path.display());
        }
    }

    /// The events, oldest first, optionally of one VM and at or after `since` (RFC 3339).
    /// Lines that are not events (a torn last line after a crash) are skipped.
    pub fn read(&self, vm: Option<&str>, since: Option<SystemTime>) -> Vec<Event> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Event>(l).ok())
            .filter(|e| vm.is_none_or(|v| e.vm.as_deref() == Some(v)))
            .filter(|e| {
                since.is_none_or(|s| humantime::parse_rfc3339_weak(&e.time).is_ok_and(|t| t >= s))
            })
            .collect()
    }
}
