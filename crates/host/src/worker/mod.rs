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
//! The worker reports readiness to the service with one line on its stdout: `ready` or
//! `error: WHY`.

mod console;
mod control;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_api::{Accelerator, VmState};
use strata_nbd::{Backend, Export, VhdBackend};
use strata_vhd::{Disk, OpenOptions};

use crate::events::{Code, EventLog};
use crate::qemu::{self, Sockets};
use crate::qmp::Qmp;
use crate::status::{self, Status};
use crate::store::{Home, VmConfig};

pub use control::{request, ControlReply, ControlRequest};

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

/// What a saved state records beside the memory image (`saved.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMeta {
    /// The accelerator the VM ran with.
    pub accelerator: Accelerator,
    /// The CPU model given to QEMU (`max` under TCG, `host` under KVM).
    pub cpu: String,
    /// The host's CPU (what `host` meant).
    pub host_cpu: String,
    /// The versioned machine type (`pc-i440fx-10.0`), used again to restore.
    pub machine: String,
    /// QEMU's version line.
    pub qemu: String,
    /// When the state was saved.
    pub time: String,
    /// The disks as they were once the VM stopped: a restore is refused if one has changed.
    #[serde(default)]
    pub disks: Vec<DiskPrint>,
}

/// What identifies a disk file's contents cheaply: size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPrint {
    /// The file.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (nanoseconds since the epoch).
    pub mtime_ns: u128,
}

impl DiskPrint {
    /// The print of `path` now.
    pub fn of(path: &str) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        let mtime_ns = m
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Self {
            path: path.to_string(),
            size: m.len(),
            mtime_ns,
        })
    }
}

/// The saved-state files of a VM folder: (memory image, metadata).
pub fn saved_files(vm_dir: &Path) -> (PathBuf, PathBuf) {
    (vm_dir.join("saved.state"), vm_dir.join("saved.json"))
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
    intent: Mutex<Option<Intent>>,
    ended: (Mutex<Option<VmState>>, Condvar),
    op_lock: Mutex<()>,
    accel: Accelerator,
    qemu_ended: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Records a state, unless QEMU has ended (the final state is then recorded already).
    fn set_state(&self, state: VmState) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if self.has_ended() {
            return;
        }
        s.state = state;
        if let Err(e) = status::write(&self.dir, &s) {
            eprintln!("strata worker: {e}");
        }
    }

    fn state(&self) -> VmState {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).state
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
        status::kill(self.qemu_pid);
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
    let mut out = std::io::stdout();
    match start(args) {
        Ok((shared, child, disks)) => {
            let _ = writeln!(out, "ready");
            let _ = out.flush();
            supervise(&shared, child, &disks);
            0
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            let _ = out.flush();
            1
        }
    }
}

type Disks = Vec<(String, Arc<VhdBackend>)>;

fn start(args: &WorkerArgs) -> Result<(Arc<Shared>, Child, Disks), String> {
    let home = Home::new(&args.home).map_err(|e| e.to_string())?;
    let config = home.load(&args.vm).map_err(|e| e.to_string())?;
    let dir = home.vm_dir(&args.vm);
    let events = EventLog::new(&home.events());
    let previous = status::read(&dir).unwrap_or_else(|_| Status::off());
    if previous.worker_alive() {
        return Err(format!(
            "VM '{}' already has a worker (pid {})",
            args.vm,
            previous.worker.map_or(0, |w| w.0)
        ));
    }
    let (image, meta) = saved_files(&dir);
    let machine = if args.restore {
        let text = std::fs::read(&meta).map_err(|e| format!("{}: {e}", meta.display()))?;
        let saved: SavedMeta =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", meta.display()))?;
        Some(saved.machine)
    } else {
        // A VM started afresh has no saved state: whatever a crash left is stale.
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&image);
        None
    };
    let mut st = Status {
        state: VmState::Starting,
        worker: Some(status::me()),
        qemu: None,
        accelerator: Some(args.accel),
        started_at: Some(crate::events::now()),
        last_error: None,
        stopped_by_host: false,
        restoring: args.restore,
        boot: Some(status::boot_id()),
    };
    status::write(&dir, &st).map_err(|e| e.to_string())?;
    let fail = |why: String| {
        let mut back = previous.clone();
        back.state = if args.restore {
            VmState::Saved
        } else {
            previous.state
        };
        if back.state.is_active() {
            back.state = VmState::Off;
        }
        back.worker = None;
        back.qemu = None;
        back.last_error = Some(why.clone());
        let _ = status::write(&dir, &back);
        events.log(Code::VmStartFailed, Some(&args.vm), "system", &why);
        why
    };
    let run_dir = home.run_dir(&config.id);
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| fail(format!("{}: {e}", run_dir.display())))?;
    let sockets = Sockets::new(&run_dir);
    let disks = serve_disks(&config, &sockets).map_err(&fail)?;
    let (mut child, qmp) =
        launch(&config, &dir, &sockets, args.accel, machine.as_deref()).map_err(&fail)?;
    st.qemu = Some((child.id(), status::start_time(child.id()).unwrap_or(0)));
    status::write(&dir, &st).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        name: args.vm.clone(),
        dir: dir.clone(),
        events: events.clone(),
        status: Mutex::new(st),
        qmp,
        qemu_pid: child.id(),
        intent: Mutex::new(None),
        ended: (Mutex::new(None), Condvar::new()),
        op_lock: Mutex::new(()),
        accel: args.accel,
        qemu_ended: std::sync::atomic::AtomicBool::new(false),
    });
    let abort = |why: String, child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
        fail(why)
    };
    if config.vm.com_ports.iter().all(|c| c.port != 1) {
        let serial = std::os::unix::net::UnixStream::connect(&sockets.serial)
            .map_err(|e| abort(format!("QEMU's serial port: {e}"), &mut child))?;
        let listener = UnixListener::bind(&sockets.console)
            .map_err(|e| abort(format!("{}: {e}", sockets.console.display()), &mut child))?;
        console::start(serial, dir.join("console.log"), listener)
            .map_err(|e| abort(format!("console: {e}"), &mut child))?;
    }
    if args.restore {
        shared
            .qmp
            .migrate_from_file(&image)
            .map_err(|e| abort(format!("cannot restore the saved state: {e}"), &mut child))?;
        // The disks move on from here: the saved memory no longer matches them, so the saved
        // state is dropped (metadata first: it is what makes a saved state) before the guest runs.
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&image);
        let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.restoring = false;
        status::write(&dir, &s).map_err(|e| e.to_string())?;
    }
    shared.qmp.cont().map_err(|e| abort(e, &mut child))?;
    let listener = UnixListener::bind(&sockets.control)
        .map_err(|e| abort(format!("{}: {e}", sockets.control.display()), &mut child))?;
    control::serve(listener, shared.clone());
    shared.set_state(VmState::Running);
    let (code, what) = if args.restore {
        (Code::VmRestored, "restored from its saved state")
    } else {
        (Code::VmStarted, "started")
    };
    shared.log(
        code,
        "system",
        &format!(
            "{what} ({}, worker pid {}, QEMU pid {})",
            args.accel.as_str(),
            std::process::id(),
            child.id()
        ),
    );
    watch_sigterm(shared.clone());
    Ok((shared, child, disks))
}

/// Opens each disk (with its parents, locked for writing) and serves it on its socket.
fn serve_disks(config: &VmConfig, sockets: &Sockets) -> Result<Disks, String> {
    let mut out = Vec::new();
    for (i, d) in config.vm.disks.iter().enumerate() {
        let disk = Disk::open(&d.path, OpenOptions::write()).map_err(|e| e.to_string())?;
        let backend = Arc::new(VhdBackend(disk));
        let socket = sockets.disk(i);
        let listener =
            UnixListener::bind(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
        let export = Export {
            name: String::new(),
            backend: backend.clone(),
        };
        std::thread::spawn(move || strata_nbd::serve_unix(listener, export));
        out.push((d.path.clone(), backend));
    }
    Ok(out)
}

/// Starts QEMU (paused) and connects to its monitor.
fn launch(
    config: &VmConfig,
    dir: &Path,
    sockets: &Sockets,
    accel: Accelerator,
    machine: Option<&str>,
) -> Result<(Child, Qmp), String> {
    let log_path = dir.join("qemu.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(qemu::binary());
    cmd.args(qemu::args(&config.vm, accel, sockets, machine))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: cannot start: {e}", qemu::binary().display()))?;
    let pid = child.id();
    let qmp = Qmp::connect(&sockets.qmp, Duration::from_secs(30), || {
        status::start_time(pid).is_some()
    });
    match qmp {
        Ok(q) => Ok((child, q)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{e}: {}", log_tail(&log_path)))
        }
    }
}

/// QEMU gets SIGKILL when the worker dies: without the worker its disks are gone.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only makes the prctl
    // system call, which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
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
            if shared.qmp.execute("quit", None).is_err() {
                shared.kill_qemu();
            }
        }
    });
}

/// Waits for QEMU to end, then flushes the disks and records the outcome.
fn supervise(shared: &Shared, mut child: Child, disks: &Disks) {
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
