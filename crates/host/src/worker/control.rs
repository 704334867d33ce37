//! The worker's control socket: one JSON request per connection, one JSON reply. The service is the
//! only client. Requests that end QEMU (shut down, turn off, save) reply once the outcome is
//! recorded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_api::VmState;

use super::{saved_files, Intent, SavedMeta, Shared};
use crate::events::Code;

/// A request to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// `ping`, `pause`, `resume`, `reset`, `shutdown`, `stop` or `save`.
    pub op: String,
    /// Who asked (for the event log).
    pub user: String,
    /// For `shutdown`: seconds before turning the VM off.
    #[serde(default)]
    pub timeout_secs: u32,
}

/// A worker's reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlReply {
    /// The VM's state after the request.
    pub state: Option<VmState>,
    /// Why the request failed.
    pub error: Option<String>,
}

/// Sends `req` to the worker listening on `socket` and waits for the reply (up to `limit`).
pub fn request(
    socket: &Path,
    req: &ControlRequest,
    limit: Duration,
) -> Result<ControlReply, String> {
    let io = |e: std::io::Error| format!("the VM's worker ({}): {e}", socket.display());
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(limit)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply)
        .map_err(|e| format!("the VM's worker sent a bad reply ({e}): {reply:?}"))
}

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
    let result = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(req) => execute(shared, &req),
        Err(e) => Err(format!("bad request: {e}")),
    };
    let reply = match result {
        Ok(state) => ControlReply {
            state: Some(state),
            error: None,
        },
        Err(e) => ControlReply {
            state: Some(shared.state()),
            error: Some(e),
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = writer.write_all(&out);
}

fn refuse(shared: &Shared, what: &str, state: VmState) -> String {
    let advice = match state {
        VmState::Paused => "resume it first, or turn it off",
        VmState::Running => "it is already running",
        VmState::Stopping => "it is shutting down: wait, or turn it off",
        VmState::Saving => "its state is being saved: wait",
        VmState::Starting => "it is starting: wait",
        _ => "start it first",
    };
    format!(
        "VM '{}' is {}: cannot {what} ({advice})",
        shared.name,
        state.as_str()
    )
}

fn execute(shared: &Shared, req: &ControlRequest) -> Result<VmState, String> {
    let user = req.user.as_str();
    if req.op == "ping" {
        return Ok(shared.state());
    }
    if req.op == "stop" {
        return turn_off(shared, user);
    }
    let Ok(_op) = shared.op_lock.try_lock() else {
        return Err(refuse(shared, &req.op, shared.state()));
    };
    let state = shared.state();
    match (req.op.as_str(), state) {
        ("pause", VmState::Running) => {
            shared.qmp.stop()?;
            shared.set_state(VmState::Paused);
            shared.log(Code::VmPaused, user, "paused");
            Ok(VmState::Paused)
        }
        ("resume", VmState::Paused) => {
            shared.qmp.cont()?;
            shared.set_state(VmState::Running);
            shared.log(Code::VmResumed, user, "resumed");
            Ok(VmState::Running)
        }
        ("reset", VmState::Running | VmState::Paused) => {
            shared.qmp.execute("system_reset", None)?;
            shared.log(Code::VmReset, user, "reset");
            Ok(state)
        }
        ("shutdown", VmState::Running) => shutdown(shared, user, req.timeout_secs),
        ("save", VmState::Running | VmState::Paused) => save(shared, user, state),
        ("pause" | "resume" | "reset" | "shutdown" | "save", _) => {
            Err(refuse(shared, &req.op, state))
        }
        (op, _) => Err(format!("unknown request '{op}'")),
    }
}

fn shutdown(shared: &Shared, user: &str, timeout: u32) -> Result<VmState, String> {
    *shared.intent.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Intent::Shutdown(user.to_string()));
    shared.set_state(VmState::Stopping);
    shared.log(
        Code::VmShutdownRequested,
        user,
        &format!("shut-down requested (ACPI power button); turned off after {timeout} s if the guest ignores it"),
    );
    if let Err(e) = shared.qmp.execute("system_powerdown", None) {
        *shared.intent.lock().unwrap_or_else(|p| p.into_inner()) = None;
        shared.set_state(VmState::Running);
        return Err(e);
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

fn turn_off(shared: &Shared, user: &str) -> Result<VmState, String> {
    let state = shared.state();
    if !state.is_active() || state == VmState::Saving {
        return Err(refuse(shared, "turn off", state));
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
fn end_qemu(shared: &Shared) -> Result<VmState, String> {
    if shared.qmp.execute("quit", None).is_err() {
        shared.kill_qemu();
    }
    if let Some(end) = shared.wait_end(Duration::from_secs(10)) {
        return Ok(end);
    }
    shared.kill_qemu();
    shared
        .wait_end(Duration::from_secs(10))
        .ok_or_else(|| "QEMU did not end".to_string())
}

fn save(shared: &Shared, user: &str, before: VmState) -> Result<VmState, String> {
    shared.set_state(VmState::Saving);
    let (image, meta) = saved_files(&shared.dir);
    let tmp = shared.dir.join("saved.state.partial");
    let result = (|| {
        if before == VmState::Running {
            shared.qmp.stop()?;
        }
        // Whatever an earlier save left is not this state: the metadata is written last, and
        // only its presence makes a saved state.
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_file(&tmp);
        let machine = shared.qmp.machine()?;
        shared.qmp.migrate_to_file(&tmp)?;
        let f = std::fs::File::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.sync_all()
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &image).map_err(|e| format!("{}: {e}", image.display()))?;
        let info = SavedMeta {
            accelerator: shared.accel,
            cpu: crate::qemu::cpu_model(shared.accel).to_string(),
            host_cpu: crate::qemu::host_cpu(),
            machine,
            qemu: crate::qemu::version().unwrap_or_default(),
            time: crate::events::now(),
            disks: Vec::new(),
        };
        crate::store::write_atomic(&meta, &serde_json::to_vec_pretty(&info).unwrap_or_default())
            .map_err(|e| e.to_string())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_file(&tmp);
        if shared.has_ended() {
            return Err(format!(
                "VM '{}': saving the state failed: {e}",
                shared.name
            ));
        }
        if before == VmState::Running {
            let _ = shared.qmp.cont();
        }
        shared.set_state(before);
        shared.log(
            Code::VmSaveFailed,
            user,
            &format!("saving the state failed, the VM keeps running: {e}"),
        );
        return Err(format!(
            "VM '{}': saving the state failed: {e}",
            shared.name
        ));
    }
    *shared.intent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Intent::Save(user.to_string()));
    end_qemu(shared)
}
