//! After QEMU ends: flush the disks, work out what the end means, record it.

use std::process::Child;
use std::time::Duration;

use strata_api::VmState;

use super::{log_tail, saved_files, DiskPrint, Intent, SavedMeta, Shared};
use crate::events::Code;
use crate::status;

/// Waits for QEMU to end, then flushes the disks and records the outcome.
pub(super) fn supervise(shared: &Shared, mut child: Child) {
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
    let flush_error = shared.disks.flush_all().pop();
    let intent = shared
        .intent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let (state, code, user, message) = outcome(intent, &exit, reason.as_deref(), || {
        log_tail(&shared.dir.join("qemu.log"))
    });
    if state == VmState::Saved {
        fingerprint_saved(shared);
    }
    let undo_error = (state == VmState::Off)
        .then(|| apply_undo(shared, &user))
        .flatten();
    let flush_error = flush_error.or(undo_error);
    {
        let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = state;
        s.worker = None;
        s.qemu = None;
        s.restoring = false;
        s.heartbeat = strata_api::Heartbeat::None;
        s.memory_current_mib = None;
        s.memory_available_mib = None;
        s.memory_target = None;
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
    intent: Option<Intent>,
    exit: &std::io::Result<std::process::ExitStatus>,
    reason: Option<&str>,
    last_words: impl FnOnce() -> String,
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
                let tail = last_words();
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

/// Applies the undo action of a VM with undo disks that was turned off or shut down (this
/// time's, else the VM's): the disks are closed first, then all their undo disks committed or
/// discarded together. Returns the failure, if any (the undo disks are then kept).
fn apply_undo(shared: &Shared, user: &str) -> Option<String> {
    let c = shared.undo.as_ref()?;
    let once = *shared.undo_once.lock().unwrap_or_else(|p| p.into_inner());
    // The VM's action as it is now (it may have changed while the VM ran).
    let now = std::fs::read_to_string(shared.dir.join("vm.toml"))
        .ok()
        .and_then(|t| toml::from_str::<crate::store::VmConfig>(&t).ok())
        .map_or(c.vm.undo_action, |n| n.vm.undo_action);
    let action = once.unwrap_or(now);
    if action == strata_api::UndoAction::Keep {
        shared.log(Code::VmChanged, user, "undo disks kept");
        return None;
    }
    let problems = shared.disks.close_all();
    if let Some(p) = problems.first() {
        return Some(format!("undo disks kept: {p}"));
    }
    match crate::service::undo_apply(c, action) {
        Ok(()) => {
            shared.log(
                Code::VmChanged,
                user,
                &format!("undo disks {}", crate::service::undo_done(action)),
            );
            None
        }
        Err(e) => {
            let msg = format!("undo disks kept: {e}");
            shared.log(Code::VmRequestFailed, user, &msg);
            Some(msg)
        }
    }
}

/// Adds the disks' prints to the saved state's metadata, once they are flushed for good.
fn fingerprint_saved(shared: &Shared) {
    let (_, meta) = saved_files(&shared.dir);
    let Ok(text) = std::fs::read(&meta) else {
        return;
    };
    let Ok(mut saved) = serde_json::from_slice::<SavedMeta>(&text) else {
        return;
    };
    saved.disks = shared
        .disks
        .paths()
        .iter()
        .filter_map(|p| DiskPrint::of(p).ok())
        .collect();
    if let Err(e) = crate::store::write_atomic(
        &meta,
        &serde_json::to_vec_pretty(&saved).unwrap_or_default(),
    ) {
        eprintln!("strata worker: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    fn end(
        intent: Option<Intent>,
        code: i32,
        signal: Option<i32>,
        reason: Option<&str>,
    ) -> (VmState, Code, String, String) {
        let status = match signal {
            Some(sig) => ExitStatus::from_raw(sig),
            None => ExitStatus::from_raw(code << 8),
        };
        outcome(intent, &Ok(status), reason, || {
            "qemu: last words".to_string()
        })
    }

    #[test]
    fn an_intent_decides_the_outcome_whatever_qemu_says() {
        let (s, c, u, _) = end(Some(Intent::Save("alice".into())), 0, None, None);
        assert_eq!((s, c, u.as_str()), (VmState::Saved, Code::VmSaved, "alice"));
        let (s, c, _, _) = end(Some(Intent::TurnOff("bob".into())), 0, Some(9), None);
        assert_eq!((s, c), (VmState::Off, Code::VmTurnedOff));
        let (s, c, _, m) = end(
            Some(Intent::ShutdownTimedOut("bob".into(), 30)),
            0,
            Some(9),
            None,
        );
        assert_eq!((s, c), (VmState::Off, Code::VmShutdownTimedOut));
        assert!(m.contains("30 s"), "{m}");
        let (s, c, _, _) = end(Some(Intent::Shutdown("bob".into())), 0, None, None);
        assert_eq!((s, c), (VmState::Off, Code::VmPoweredOff));
    }

    #[test]
    fn without_an_intent_a_clean_guest_power_off_is_off_and_the_rest_crashed() {
        let (s, c, u, _) = end(None, 0, None, Some("guest-shutdown"));
        assert_eq!(
            (s, c, u.as_str()),
            (VmState::Off, Code::VmPoweredOff, "guest")
        );
        let (s, _, _, _) = end(None, 0, None, None);
        assert_eq!(s, VmState::Off);
        // QEMU exits 0 on SIGTERM too: the SHUTDOWN reason tells it apart.
        let (s, c, _, m) = end(None, 0, None, Some("host-signal"));
        assert_eq!((s, c), (VmState::Crashed, Code::VmCrashed));
        assert!(
            m.contains("signal from outside Strata") && m.contains("last words"),
            "{m}"
        );
        let (s, _, _, m) = end(None, 0, None, Some("guest-panic"));
        assert_eq!(s, VmState::Crashed);
        assert!(m.contains("panicked"), "{m}");
        let (s, _, _, m) = end(None, 1, None, None);
        assert_eq!(s, VmState::Crashed);
        assert!(m.contains("unexpectedly"), "{m}");
        let (s, _, _, _) = end(None, 0, Some(9), Some("guest-shutdown"));
        assert_eq!(s, VmState::Crashed, "killed after a guest power-off began");
    }
}
