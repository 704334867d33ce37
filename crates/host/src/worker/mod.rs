//! The worker: one process per running VM (`strata worker`, started by the service in its own
//! process group, so it outlives a restart of the service). It
//!
//! 1. opens the VM's disks through `strata-vhd` (taking their locks) and serves each to QEMU on a
//!    Unix socket with `strata-nbd`: every guest write goes through Strata's VHD engine;
//! 2. starts QEMU paused, connects to its QMP monitor and its COM1, optionally loads a saved state,
//!    and resumes the guest;
//! 3. answers the service's requests on its control socket (`control.rs`);
//! 4. when QEMU ends, flushes the disks, records the outcome (off, saved, crashed) in the VM's
//!    status file and the event log, and exits.
//!
//! The worker reports readiness to the service with one typed line on its stdout
//! ([`strata_proc::Readiness`]).

mod agent;
mod checkpoint;
mod console;
mod control;
mod devices;
mod disks;
mod legacy;
mod nics;
pub mod protocol;
pub mod saved;
mod start;
mod supervise;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use strata_api::{Accelerator, VmState};
use strata_proc::Readiness;

use crate::events::{Code, EventLog};
use crate::qmp::Qmp;
use crate::status::{self, Status};

pub use agent::read_guest_info;
pub use protocol::{request, Verb};
pub use saved::{saved_files, DiskPrint, SavedMeta};

/// What the service asks the worker to do.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The data folder.
    pub home: PathBuf,
    /// The VM.
    pub vm: String,
    /// `kvm` or `tcg`, decided by the service.
    pub accel: Accelerator,
    /// Start from the saved state.
    pub restore: bool,
}

/// Why QEMU is ending, as requested through the control socket.
#[derive(Debug, Clone)]
enum Intent {
    Shutdown(String),
    ShutdownTimedOut(String, u32),
    TurnOff(String),
    Save(String),
}

/// State shared by the worker's threads.
struct Shared {
    name: String,
    dir: PathBuf,
    events: EventLog,
    status: Mutex<Status>,
    qmp: Qmp,
    qemu_pid: u32,
    /// The versioned machine type QEMU runs (recorded in a saved state).
    machine: String,
    intent: Mutex<Option<Intent>>,
    ended: (Mutex<Option<VmState>>, Condvar),
    op_lock: Mutex<()>,
    accel: Accelerator,
    qemu_ended: std::sync::atomic::AtomicBool,
    /// The guest agent's channel, when the VM has one.
    agent: Option<crate::agent::Agent>,
    /// The guest's clock is to be set once its agent answers (after a restore).
    time_pending: std::sync::atomic::AtomicBool,
    /// The VM's TPM (swtpm), kept running as long as QEMU.
    _tpm: Option<crate::qemu::firmware::Swtpm>,
    /// The disks served now (hot add and remove change the list).
    disks: disks::ServedDisks,
    /// The VM's sockets.
    sockets: crate::qemu::Sockets,
    /// With undo disks: the VM's settings (its disks, its undo action).
    undo: Option<crate::store::VmConfig>,
    /// This turn-off's undo action, when the request named one.
    undo_once: Mutex<Option<strata_api::UndoAction>>,
}

impl Shared {
    /// Changes the recorded status with `change` and writes it, unless QEMU has ended (the
    /// final state is then recorded already).
    fn update_status(&self, change: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if self.has_ended() {
            return;
        }
        change(&mut s);
        if let Err(e) = status::write(&self.dir, &s) {
            eprintln!("strata worker: {e}");
        }
    }

    /// Records a state.
    fn set_state(&self, state: VmState) {
        self.update_status(|s| s.state = state);
    }

    fn state(&self) -> VmState {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).state
    }

    fn heartbeat(&self) -> strata_api::Heartbeat {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .heartbeat
    }

    /// Records what the guest's memory is now and what it reports available (dynamic memory),
    /// unless QEMU has ended.
    fn set_memory_seen(&self, current: Option<u32>, available: Option<u32>) {
        // Read every few seconds: written only when it changed.
        let seen = {
            let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            (s.memory_current_mib, s.memory_available_mib)
        };
        if seen == (current, available) {
            return;
        }
        self.update_status(|s| {
            s.memory_current_mib = current;
            s.memory_available_mib = available;
        });
    }

    /// Records the balloon's target and who set it.
    fn set_memory_target(&self, target: (u32, bool)) {
        self.update_status(|s| s.memory_target = Some(target));
    }

    /// Records the heartbeat, unless QEMU has ended.
    fn set_heartbeat(&self, h: strata_api::Heartbeat) {
        self.update_status(|s| s.heartbeat = h);
    }

    fn log(&self, code: Code, user: &str, message: &str) {
        self.events.log(code, Some(&self.name), user, message);
    }

    fn has_ended(&self) -> bool {
        self.qemu_ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// SIGKILL to QEMU, unless it has ended (and been reaped: its pid may be reused).
    fn kill_qemu(&self) {
        if self.has_ended() {
            return;
        }
        strata_proc::kill(self.qemu_pid);
    }

    /// Waits until QEMU has ended and the outcome is recorded, up to `limit`.
    fn wait_end(&self, limit: Duration) -> Option<VmState> {
        let (lock, cv) = &self.ended;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, limit, |e| e.is_none())
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// Runs the worker; returns the process's exit code.
pub fn run(args: &WorkerArgs) -> i32 {
    match start::start(args) {
        Ok(started) => {
            Readiness::Ready.report();
            supervise::supervise(&started.shared, started.qemu);
            0
        }
        Err(e) => {
            Readiness::Failed {
                error: e.message,
                kind: Some(e.kind.as_str().to_string()),
            }
            .report();
            1
        }
    }
}

/// The last meaningful line QEMU wrote to its log.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or_else(
            || "QEMU printed nothing".to_string(),
            |l| l.trim().to_string(),
        )
}

/// SIGTERM to the worker turns the VM off cleanly (disks flushed) rather than abandoning it.
fn watch_sigterm(shared: Arc<Shared>) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
    else {
        return;
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            *shared.intent.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Intent::TurnOff("system (worker terminated)".to_string()));
            if shared.qmp.quit().is_err() {
                shared.kill_qemu();
            }
        }
    });
}
