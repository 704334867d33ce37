//! The worker's side of the control socket ([`super::protocol`]): one request per connection, one
//! reply. The service is the only client. Requests that end QEMU (shut down, turn off, save) reply
//! once the outcome is recorded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use strata_api::VmState;

use super::protocol::{self, Reply, Verb};
use super::{saved_files, Intent, SavedMeta, Shared};
use crate::error::{ErrorKind, HostError};
use crate::events::Code;

pub(super) fn serve(listener: UnixListener, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let shared = shared.clone();
            std::thread::spawn(move || handle(conn, &shared));
        }
    });
}

fn handle(conn: UnixStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    if BufReader::new(conn).read_line(&mut line).is_err() {
        return;
    }
    let result =
        protocol::decode_request(&line).and_then(|req| execute(shared, &req.user, &req.verb));
    let reply = match result {
        Ok(state) => Reply {
            version: protocol::VERSION,
            state,
            error: None,
        },
        Err(e) => Reply {
            version: protocol::VERSION,
            state: shared.state(),
            error: Some(e),
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = writer.write_all(&out);
}

fn refuse(shared: &Shared, verb: &Verb, state: VmState) -> HostError {
    let advice = match state {
        VmState::Paused => "resume it first, or turn it off",
        VmState::Running => "it is already running",
        VmState::Stopping => "it is shutting down: wait, or turn it off",
        VmState::Saving => "its state is being saved: wait",
        VmState::Starting => "it is starting: wait",
        _ => "start it first",
    };
    HostError::conflict(format!(
        "VM '{}' is {}: cannot {} ({advice})",
        shared.name,
        state.as_str(),
        verb.describe()
    ))
}

fn execute(shared: &Shared, user: &str, verb: &Verb) -> Result<VmState, HostError> {
    match verb {
        Verb::Ping => return Ok(shared.state()),
        // Turning off must not wait behind a shut-down or a pause in progress.
        Verb::TurnOff => return turn_off(shared, user),
        _ => {}
    }
    // Requests that leave the VM's state alone (and may take long: a file copy) run beside the
    // others rather than holding them off.
    if let Some(result) = beside(shared, user, verb) {
        return result;
    }
    let Ok(_op) = shared.op_lock.try_lock() else {
        return Err(HostError::conflict(format!(
            "VM '{}': another request on it is in progress (a shut-down, a save, a pause …): cannot {} now, try again",
            shared.name,
            verb.describe()
        )));
    };
    let state = shared.state();
    match (verb, state) {
        (Verb::Pause, VmState::Running) => {
            shared.qmp.pause()?;
            shared.set_state(VmState::Paused);
            shared.log(Code::VmPaused, user, "paused");
            Ok(VmState::Paused)
        }
        (Verb::Resume, VmState::Paused) => {
            shared.qmp.resume()?;
            shared.set_state(VmState::Running);
            shared.log(Code::VmResumed, user, "resumed");
            super::agent::sync_time(shared, user, "resumed");
            Ok(VmState::Running)
        }
        (Verb::Reset, VmState::Running | VmState::Paused) => {
            shared.qmp.execute("system_reset", None)?;
            shared.log(Code::VmReset, user, "reset");
            Ok(state)
        }
        (Verb::Shutdown { timeout_secs }, VmState::Running) => {
            shutdown(shared, user, *timeout_secs)
        }
        (Verb::Save, VmState::Running | VmState::Paused) => save(shared, user, state),
        (
            Verb::NicAdd { .. } | Verb::NicRemove { .. } | Verb::NicLink { .. },
            VmState::Running | VmState::Paused,
        ) => super::nics::execute(&shared.qmp, verb).map(|()| state),
        (Verb::DiskAdd { disk }, VmState::Running | VmState::Paused) => super::disks::add(
            &shared.qmp,
            &shared.disks,
            disk,
            &shared.sockets,
            &shared.machine,
        )
        .map(|()| state),
        (Verb::Checkpoint { switches, memory }, VmState::Running | VmState::Paused) => {
            super::checkpoint::take(shared, user, switches, memory.as_deref())
        }
        (Verb::DiskRemove { disk }, VmState::Running) => {
            super::disks::remove(&shared.qmp, &shared.disks, disk).map(|()| state)
        }
        _ => Err(refuse(shared, verb, state)),
    }
}

/// The requests that do not change the VM's state, run without the operation lock; `None` for
/// the others.
fn beside(shared: &Shared, user: &str, verb: &Verb) -> Option<Result<VmState, HostError>> {
    let state = shared.state();
    let running = state == VmState::Running;
    let live = matches!(state, VmState::Running | VmState::Paused);
    let result = match verb {
        Verb::CopyFile {
            source,
            destination,
            direction,
        } if running => {
            let c = strata_api::CopyFile {
                source: source.clone(),
                destination: destination.clone(),
                direction: *direction,
            };
            super::agent::copy_file(shared, user, &c).map(|_| state)
        }
        Verb::SetUndo { action } if live => {
            *shared.undo_once.lock().unwrap_or_else(|p| p.into_inner()) = Some(*action);
            Ok(state)
        }
        Verb::Freeze if running => super::agent::freeze(shared, user, true).map(|_| state),
        Verb::Thaw if running => super::agent::freeze(shared, user, false).map(|_| state),
        Verb::MediaChange { iso } if live => {
            super::devices::change_media(shared, user, iso.as_deref()).map(|()| state)
        }
        Verb::Balloon { target_mib } if live => {
            super::devices::balloon(shared, user, *target_mib).map(|()| state)
        }
        Verb::CopyFile { .. }
        | Verb::Freeze
        | Verb::Thaw
        | Verb::MediaChange { .. }
        | Verb::SetUndo { .. }
        | Verb::Balloon { .. } => Err(refuse(shared, verb, state)),
        _ => return None,
    };
    Some(result)
}

fn shutdown(shared: &Shared, user: &str, timeout: u32) -> Result<VmState, HostError> {
    *shared.intent.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Intent::Shutdown(user.to_string()));
    shared.set_state(VmState::Stopping);
    shared.log(
        Code::VmShutdownRequested,
        user,
        &format!("shut-down requested (ACPI power button); turned off after {timeout} s if the guest ignores it"),
    );
    let by_agent = super::agent::shutdown(shared);
    if by_agent {
        shared.log(
            Code::VmShutdownRequested,
            user,
            "shut-down sent through the guest agent too",
        );
    }
    if let Err(e) = shared.qmp.execute("system_powerdown", None) {
        *shared.intent.lock().unwrap_or_else(|p| p.into_inner()) = None;
        shared.set_state(VmState::Running);
        return Err(e);
    }
    // The agent too, for guests that ignore the power button (best effort, bounded).
    if super::agent::shutdown(shared) {
        shared.log(
            Code::VmShutdownRequested,
            user,
            "shut-down sent through the guest agent too",
        );
    }
    if let Some(end) = shared.wait_end(Duration::from_secs(u64::from(timeout))) {
        return Ok(end);
    }
    {
        let mut intent = shared.intent.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*intent, Some(Intent::Shutdown(_))) {
            *intent = Some(Intent::ShutdownTimedOut(user.to_string(), timeout));
        }
    }
    end_qemu(shared)
}

fn turn_off(shared: &Shared, user: &str) -> Result<VmState, HostError> {
    let state = shared.state();
    if !state.is_active() || state == VmState::Saving {
        return Err(refuse(shared, &Verb::TurnOff, state));
    }
    {
        let mut intent = shared.intent.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*intent, Some(Intent::Save(_))) {
            *intent = Some(Intent::TurnOff(user.to_string()));
        }
    }
    shared.set_state(VmState::Stopping);
    end_qemu(shared)
}

/// Asks QEMU to quit, kills it if it does not, and waits for the outcome to be recorded.
fn end_qemu(shared: &Shared) -> Result<VmState, HostError> {
    if shared.qmp.quit().is_err() {
        shared.kill_qemu();
    }
    if let Some(end) = shared.wait_end(Duration::from_secs(10)) {
        return Ok(end);
    }
    shared.kill_qemu();
    shared.wait_end(Duration::from_secs(10)).ok_or_else(|| {
        HostError::new(
            ErrorKind::Hung,
            format!(
                "VM '{}': QEMU did not end within 20 s, even after SIGKILL",
                shared.name
            ),
        )
    })
}

fn save(shared: &Shared, user: &str, before: VmState) -> Result<VmState, HostError> {
    shared.set_state(VmState::Saving);
    if let Err(e) = write_saved_state(shared, before) {
        let (image, meta) = saved_files(&shared.dir);
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_file(partial(shared));
        let e = e.context(format_args!(
            "VM '{}': saving the state failed",
            shared.name
        ));
        if shared.has_ended() {
            return Err(e);
        }
        if before == VmState::Running {
            let _ = shared.qmp.resume();
        }
        shared.set_state(before);
        shared.log(
            Code::VmSaveFailed,
            user,
            &format!("{e}; the VM stays {}", before.as_str()),
        );
        return Err(e);
    }
    *shared.intent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Intent::Save(user.to_string()));
    end_qemu(shared)
}

/// The metadata of a state saved now (its disks' prints are added once they are flushed).
pub(super) fn saved_meta(shared: &Shared) -> SavedMeta {
    SavedMeta {
        accelerator: shared.accel,
        cpu: crate::qemu::cpu_model(shared.accel).to_string(),
        host_cpu: crate::qemu::host_cpu(),
        machine: shared.machine.clone(),
        qemu: crate::qemu::version().unwrap_or_default(),
        time: crate::events::now(),
        disks: Vec::new(),
    }
}

/// Where the memory image is written before it is complete.
fn partial(shared: &Shared) -> std::path::PathBuf {
    shared.dir.join("saved.state.partial")
}

/// Pauses the guest and writes its state: the image first (fsynced, renamed into place), then the
/// metadata, whose presence alone makes a saved state.
fn write_saved_state(shared: &Shared, before: VmState) -> Result<(), HostError> {
    let (image, meta) = saved_files(&shared.dir);
    let tmp = partial(shared);
    if before == VmState::Running {
        shared.qmp.pause()?;
    }
    // Whatever an earlier save left is not this state.
    let _ = std::fs::remove_file(&meta);
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(&tmp);
    shared.qmp.migrate_to_file(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| HostError::io(&tmp, "flush", e))?;
    std::fs::rename(&tmp, &image).map_err(|e| HostError::io(&image, "create", e))?;
    let info = saved_meta(shared);
    let text = serde_json::to_vec_pretty(&info).map_err(|e| {
        HostError::internal(format!("cannot encode the saved state's metadata: {e}"))
    })?;
    crate::store::write_atomic(&meta, &text)
}
