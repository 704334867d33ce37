//! Starting a VM, step by step, under a [`StartGuard`]: until the guest runs, anything that fails
//! (or panics) undoes what was done — QEMU is killed, the VM's status goes back to what it was
//! (saved stays saved, so a failed restore loses nothing) and the failure is logged.
//!
//! The steps: [`prepare`] (configuration, machine type, saved state), the run folder, the disks
//! served over NBD (`disks::serve_all`), QEMU started paused ([`launch`]), the console, the saved
//! state loaded, the guest resumed, the control socket opened.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use strata_api::VmState;

use super::{console, control, saved, Shared, WorkerArgs};
use crate::error::{ErrorKind, HostError};
use crate::events::{Code, EventLog};
use crate::qemu::{self, Launch, Sockets};
use crate::qmp::Qmp;
use crate::status::{self, Status};
use crate::store::{Home, VmConfig};

/// A started VM: what the worker supervises.
pub(super) struct Started {
    pub shared: Arc<Shared>,
    pub qemu: Child,
}

/// What [`prepare`] learned before anything was changed.
struct Prepared {
    home: Home,
    config: VmConfig,
    dir: PathBuf,
    events: EventLog,
    previous: Status,
    machine: String,
}

/// Undoes a start that did not finish: kills QEMU, puts the status back, logs why. Disarmed by
/// [`StartGuard::finish`] once the guest runs.
struct StartGuard<'a> {
    args: &'a WorkerArgs,
    prepared: &'a Prepared,
    qemu: Option<Child>,
    why: Option<String>,
    finished: bool,
}

impl StartGuard<'_> {
    /// The guest runs: nothing is undone; QEMU is handed to the caller.
    fn finish(mut self) -> Option<Child> {
        self.finished = true;
        self.qemu.take()
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(child) = self.qemu.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.rollback();
    }
}

impl StartGuard<'_> {
    fn rollback(&mut self) {
        let p = self.prepared;
        let why = self
            .why
            .take()
            .unwrap_or_else(|| "the worker failed while starting the VM".to_string());
        let mut back = p.previous.clone();
        let (state, why) = rolled_back(
            self.args.restore,
            saved_state_exists(&p.dir),
            p.previous.state,
            why,
        );
        back.state = state;
        back.worker = None;
        back.qemu = None;
        back.restoring = false;
        back.last_error = Some(why.clone());
        let _ = status::write(&p.dir, &back);
        p.events
            .log(Code::VmStartFailed, Some(&self.args.vm), "system", &why);
    }
}

fn saved_state_exists(dir: &Path) -> bool {
    let (image, meta) = saved::saved_files(dir);
    image.exists() && meta.exists()
}

/// The state a failed start leaves, and why: a restore whose saved state is still there stays
/// saved (nothing is lost, it can be tried again); one whose state was loaded (and so dropped)
/// before the failure is off; a fresh start goes back to what the VM was (off or crashed).
fn rolled_back(
    restore: bool,
    saved_state_left: bool,
    previous: VmState,
    why: String,
) -> (VmState, String) {
    match (restore, saved_state_left) {
        (true, true) => (VmState::Saved, why),
        (true, false) => (
            VmState::Off,
            format!("{why}; the saved state had been loaded and is gone: the VM is off"),
        ),
        (false, _) if previous.is_active() => (VmState::Off, why),
        (false, _) => (previous, why),
    }
}

/// Starts the VM; on failure everything done is undone (see [`StartGuard`]).
pub(super) fn start(args: &WorkerArgs) -> Result<Started, HostError> {
    let prepared = prepare(args).inspect_err(|e| {
        // Nothing to undo yet; the failure is still the VM's to see.
        if let Ok(home) = Home::new(&args.home) {
            EventLog::new(&home.events()).log(
                Code::VmStartFailed,
                Some(&args.vm),
                "system",
                &e.message,
            );
        }
    })?;
    let mut guard = StartGuard {
        args,
        prepared: &prepared,
        qemu: None,
        why: None,
        finished: false,
    };
    match launch_vm(args, &prepared, &mut guard) {
        Ok(shared) => {
            let qemu = guard
                .finish()
                .ok_or_else(|| HostError::internal("QEMU vanished"))?;
            log_started(args, &shared, &qemu);
            super::watch_sigterm(shared.clone());
            Ok(Started { shared, qemu })
        }
        Err(e) => {
            guard.why = Some(e.message.clone());
            Err(e)
        }
    }
}

/// Reads what the start needs and records the VM as starting. Nothing to undo before this returns.
fn prepare(args: &WorkerArgs) -> Result<Prepared, HostError> {
    let home = Home::new(&args.home)?;
    let config = home.load(&args.vm)?;
    let dir = home.vm_dir(&args.vm);
    let events = EventLog::new(&home.events());
    let previous = status::read(&dir).unwrap_or_else(|_| Status::off());
    if previous.worker_alive() {
        return Err(HostError::conflict(format!(
            "VM '{}' already has a worker (pid {})",
            args.vm,
            previous.worker.map_or(0, |w| w.0)
        )));
    }
    let machine = if args.restore {
        saved::read_meta(&dir)?.machine
    } else {
        // A VM started afresh has no saved state: whatever a crash left is stale.
        saved::remove(&dir);
        config.vm.machine.clone().ok_or_else(|| {
            HostError::corrupt(format!(
                "VM '{}' has no pinned machine type in its vm.toml",
                args.vm
            ))
        })?
    };
    let st = Status {
        state: VmState::Starting,
        worker: Some(strata_proc::me()),
        qemu: None,
        accelerator: Some(args.accel),
        started_at: Some(crate::events::now()),
        last_error: None,
        stopped_by_host: false,
        restoring: args.restore,
        boot: Some(strata_proc::boot_id()),
        heartbeat: strata_api::Heartbeat::None,
        memory_current_mib: None,
        memory_available_mib: None,
        memory_target: None,
    };
    status::write(&dir, &st)?;
    Ok(Prepared {
        home,
        config,
        dir,
        events,
        previous,
        machine,
    })
}

/// The steps from the run folder to a running guest with its control socket open.
fn launch_vm(
    args: &WorkerArgs,
    p: &Prepared,
    guard: &mut StartGuard<'_>,
) -> Result<Arc<Shared>, HostError> {
    let run_dir = p.home.run_dir(&p.config.id);
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| HostError::io(&run_dir, "create", e))?;
    let sockets = Sockets::new(&run_dir);
    let disks = super::disks::serve_all(&p.config.vm.disks, &sockets, p.config.vm.undo_disks)?;
    let vm = &p.config.vm;
    let mut firmware = qemu::firmware::args(vm, &p.dir)?;
    let tpm = if vm.tpm {
        Some(qemu::firmware::start_swtpm(&p.dir, &sockets)?)
    } else {
        None
    };
    firmware.extend(qemu::firmware::tpm_args(vm, &sockets));
    let launch = Launch {
        accel: args.accel,
        machine: &p.machine,
        incoming: args.restore,
        vm_id: &p.config.id,
        firmware,
    };
    let (child, qmp) = self::launch(&p.config, &p.dir, &sockets, &launch)?;
    let qemu_pid = child.id();
    guard.qemu = Some(child);
    let mut st = status::read(&p.dir)?;
    st.qemu = Some((qemu_pid, strata_proc::start_time(qemu_pid).unwrap_or(0)));
    status::write(&p.dir, &st)?;
    let shared = Arc::new(Shared {
        name: args.vm.clone(),
        dir: p.dir.clone(),
        events: p.events.clone(),
        status: Mutex::new(st),
        qmp,
        qemu_pid,
        machine: p.machine.clone(),
        intent: Mutex::new(None),
        ended: (Mutex::new(None), Condvar::new()),
        op_lock: Mutex::new(()),
        accel: args.accel,
        qemu_ended: std::sync::atomic::AtomicBool::new(false),
        agent: p
            .config
            .vm
            .agent
            .then(|| crate::agent::Agent::new(&sockets.agent)),
        time_pending: std::sync::atomic::AtomicBool::new(args.restore),
        _tpm: tpm,
        disks,
        sockets: sockets.clone(),
        undo: p.config.vm.undo_disks.then(|| p.config.clone()),
        undo_once: Mutex::new(None),
    });
    if p.config.vm.com_ports.iter().all(|c| c.port != 1) {
        start_console(&sockets, &p.dir)?;
    }
    connect_nics(&p.home, &p.config, &shared.qmp)?;
    if args.restore {
        restore(&shared)?;
    }
    shared.qmp.resume()?;
    super::agent::start_heartbeat(shared.clone());
    super::devices::watch_balloon(shared.clone(), p.config.vm.memory_min_mib.is_some());
    let listener = UnixListener::bind(&sockets.control)
        .map_err(|e| HostError::io(&sockets.control, "listen on", e))?;
    control::serve(listener, shared.clone());
    shared.set_state(VmState::Running);
    Ok(shared)
}

/// Puts each NIC's tap (made by QEMU) on its switch's bridge (or its VLAN's) with its bandwidth
/// limit, and unplugs the cable of disconnected ones, before the guest runs.
fn connect_nics(home: &Home, config: &VmConfig, qmp: &crate::qmp::Qmp) -> Result<(), HostError> {
    for (i, n) in config.vm.nics.iter().enumerate() {
        let slot = n.slot.map_or(i, usize::from);
        if !n.connected {
            qmp.execute(
                "set_link",
                Some(serde_json::json!({ "name": format!("nic{slot}"), "up": false })),
            )?;
        }
        let Some(switch) = &n.switch else {
            continue;
        };
        let tap = strata_net::link::tap_name(&config.id, slot);
        crate::ports::plug(home, &tap, n, false)
            .map_err(|e| e.context(format_args!("NIC {i} on switch '{switch}'")))?;
    }
    Ok(())
}

/// Relays COM1 to the console socket and its log.
fn start_console(sockets: &Sockets, dir: &Path) -> Result<(), HostError> {
    let serial = std::os::unix::net::UnixStream::connect(&sockets.serial)
        .map_err(|e| HostError::new(ErrorKind::Gone, format!("QEMU's serial port: {e}")))?;
    let listener = UnixListener::bind(&sockets.console)
        .map_err(|e| HostError::io(&sockets.console, "listen on", e))?;
    console::start(serial, dir.join("console.log"), listener)
        .map_err(|e| HostError::io(&sockets.console, "relay the console", e))
}

/// Loads the saved state into the paused QEMU, then drops it: the disks move on from here, so
/// the saved memory no longer matches them.
fn restore(shared: &Shared) -> Result<(), HostError> {
    let (image, _) = saved::saved_files(&shared.dir);
    shared
        .qmp
        .migrate_from_file(&image)
        .map_err(|e| e.context("cannot restore the saved state"))?;
    saved::remove(&shared.dir);
    let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
    s.restoring = false;
    status::write(&shared.dir, &s)
}

fn log_started(args: &WorkerArgs, shared: &Shared, qemu: &Child) {
    let (code, what) = if args.restore {
        (Code::VmRestored, "restored from its saved state")
    } else {
        (Code::VmStarted, "started")
    };
    shared.log(
        code,
        "system",
        &format!(
            "{what} ({}, {}, worker pid {}, QEMU pid {})",
            args.accel.as_str(),
            shared.machine,
            std::process::id(),
            qemu.id()
        ),
    );
}

/// Starts QEMU (paused) and connects to its monitor.
fn launch(
    config: &VmConfig,
    dir: &Path,
    sockets: &Sockets,
    launch: &Launch<'_>,
) -> Result<(Child, Qmp), HostError> {
    let log_path = dir.join("qemu.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| HostError::io(&log_path, "open", e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| HostError::io(&log_path, "open", e))?;
    let mut cmd = Command::new(qemu::binary());
    cmd.args(qemu::args(&config.vm, launch, sockets))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // QEMU gets SIGKILL when the worker dies: without the worker its disks are gone.
    strata_proc::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        HostError::unsupported(format!("{}: cannot start: {e}", qemu::binary().display()))
    })?;
    let pid = child.id();
    let qmp = Qmp::connect(&sockets.qmp, Duration::from_secs(30), || {
        strata_proc::start_time(pid).is_some()
    });
    match qmp {
        Ok(q) => Ok((child, q)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = super::log_tail(&log_path);
            Err(HostError::new(
                ErrorKind::Refused,
                format!("{}: {tail}", e.message),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_leaves_what_is_true() {
        let why = || "QMP cont: QEMU did not answer".to_string();
        assert_eq!(
            rolled_back(true, true, VmState::Saved, why()).0,
            VmState::Saved
        );
        let (state, message) = rolled_back(true, false, VmState::Saved, why());
        assert_eq!(state, VmState::Off);
        assert!(message.contains("loaded and is gone"), "{message}");
        assert_eq!(
            rolled_back(false, false, VmState::Crashed, why()).0,
            VmState::Crashed
        );
        assert_eq!(
            rolled_back(false, true, VmState::Off, why()).0,
            VmState::Off
        );
        assert_eq!(
            rolled_back(false, false, VmState::Starting, why()).0,
            VmState::Off
        );
    }
}
