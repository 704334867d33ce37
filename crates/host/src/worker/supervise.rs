//! After QEMU ends: flush the disks, work out what the end means, record it.

use std::process::Child;
use std::time::Duration;

use strata_api::VmState;

use super::start::Disks;
use strata_nbd::Backend;

use super::{log_tail, saved_files, DiskPrint, Intent, SavedMeta, Shared};
use crate::events::Code;
use crate::status;

/// Waits for QEMU to end, then flushes the disks and records the outcome.
pub(super) fn supervise(shared: &Shared, mut child: Child, disks: &Disks) {
    let exit = child.wait();
    {
        // From here QEMU's pid may be reused: nothing signals it, no control request records a
        // state any more.
        let _s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        shared
            .qemu_ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let reason = shared.qmp.shutdown_reason();
    let mut flush_error = None;
    for (path, d) in disks {
        if let Err(e) = d.flush() {
            flush_error = Some(format!("{path}: cannot flush: {e}"));
        }
    }
    let intent = shared
        .intent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let (state, code, user, message) = outcome(shared, intent, &exit, reason.as_deref());
    if state == VmState::Saved {
        fingerprint_saved(shared, disks);
    }
    {
        let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = state;
        s.worker = None;
        s.qemu = None;
        s.restoring = false;
        s.last_error = if state == VmState::Crashed {
            Some(message.clone())
        } else {
            flush_error.clone()
        };
        if let Err(e) = status::write(&shared.dir, &s) {
            eprintln!("strata worker: {e}");
        }
    }
    shared.log(code, &user, &message);
    if let Some(e) = flush_error {
        shared.log(
            Code::VmCrashed,
            "system",
            &format!("a disk could not be flushed after QEMU ended: {e}"),
        );
    }
    let (lock, cv) = &shared.ended;
    *lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    cv.notify_all();
    // Give a waiting control request the time to send its reply.
    std::thread::sleep(Duration::from_millis(200));
}

/// What QEMU's end means: from the worker's intent, else QEMU's exit status and the reason of
/// its last SHUTDOWN event (QEMU also exits with 0 when someone sends it SIGTERM).
fn outcome(
    shared: &Shared,
    intent: Option<Intent>,
    exit: &std::io::Result<std::process::ExitStatus>,
    reason: Option<&str>,
) -> (VmState, Code, String, String) {
    match intent {
        Some(Intent::Save(u)) => (VmState::Saved, Code::VmSaved, u, "state saved".to_string()),
        Some(Intent::TurnOff(u)) => (VmState::Off, Code::VmTurnedOff, u, "turned off".to_string()),
        Some(Intent::Shutdown(u)) => (
            VmState::Off,
            Code::VmPoweredOff,
            u,
            "the guest shut down".to_string(),
        ),
        Some(Intent::ShutdownTimedOut(u, secs)) => (
            VmState::Off,
            Code::VmShutdownTimedOut,
            u,
            format!("the guest did not shut down within {secs} s: turned off"),
        ),
        None => match (exit, reason) {
            (Ok(s), Some("guest-shutdown") | None) if s.success() => (
                VmState::Off,
                Code::VmPoweredOff,
                "guest".to_string(),
                "the guest powered off".to_string(),
            ),
            _ => {
                let how = match (exit, reason) {
                    (_, Some("host-signal")) => {
                        "QEMU was stopped by a signal from outside Strata".to_string()
                    }
                    (_, Some("guest-panic")) => "the guest panicked".to_string(),
                    (Ok(s), _) => format!("QEMU ended unexpectedly ({s})"),
                    (Err(e), _) => format!("QEMU ended unexpectedly ({e})"),
                };
                let tail = log_tail(&shared.dir.join("qemu.log"));
                (
                    VmState::Crashed,
                    Code::VmCrashed,
                    "system".to_string(),
                    format!("{how}; its last message: {tail}"),
                )
            }
        },
    }
}

/// Adds the disks' prints to the saved state's metadata, once they are flushed for good.
fn fingerprint_saved(shared: &Shared, disks: &Disks) {
    let (_, meta) = saved_files(&shared.dir);
    let Ok(text) = std::fs::read(&meta) else {
        return;
    };
    let Ok(mut saved) = serde_json::from_slice::<SavedMeta>(&text) else {
        return;
    };
    saved.disks = disks
        .iter()
        .filter_map(|(p, _)| DiskPrint::of(p).ok())
        .collect();
    if let Err(e) = crate::store::write_atomic(
        &meta,
        &serde_json::to_vec_pretty(&saved).unwrap_or_default(),
    ) {
        eprintln!("strata worker: {e}");
    }
}
