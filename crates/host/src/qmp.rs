//! The worker's QMP connection to its QEMU.
//!
//! Written by hand rather than with the `qapi` crate: its synchronous client decodes every
//! message into enums generated from one QEMU schema (9.x for qapi 0.15), so an event that QEMU
//! 10 has and that schema lacks fails the command being executed and leaves its reply unread:
//! the stream falls out of step. Here a reader thread parses each line as plain JSON, routes
//! replies to their command by `id`, and keeps what the worker needs from events (why QEMU shut
//! down). Commands are QMP's JSON; the few the worker uses are methods below.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{ErrorKind, HostError};

/// How long a save or restore may take before it counts as hung.
pub const MIGRATION_LIMIT: Duration = Duration::from_secs(1800);

/// How long a command may take before QEMU counts as hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

type Pending = Arc<Mutex<HashMap<u64, Sender<Result<Value, HostError>>>>>;

/// A QMP connection.
pub struct Qmp {
    writer: Mutex<(UnixStream, u64)>,
    pending: Pending,
    shutdown: Arc<Mutex<Option<String>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path`, waiting up to `limit` for QEMU to create it while
    /// `alive()` says QEMU still runs, and negotiates capabilities.
    pub fn connect(
        path: &Path,
        limit: Duration,
        alive: impl Fn() -> bool,
    ) -> Result<Self, HostError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if !alive() {
                        return Err(HostError::new(
                            ErrorKind::Gone,
                            "QEMU exited before its monitor was ready",
                        ));
                    }
                    if start.elapsed() > limit {
                        return Err(HostError::new(
                            ErrorKind::Hung,
                            format!("{}: QEMU's monitor did not open: {e}", path.display()),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let io = |e: std::io::Error| HostError::new(ErrorKind::Gone, format!("QMP: {e}"));
        let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
        let mut greeting = String::new();
        if reader.read_line(&mut greeting).map_err(io)? == 0 {
            return Err(HostError::new(
                ErrorKind::Gone,
                "QEMU closed its monitor before greeting",
            ));
        }
        let pending: Pending = Arc::default();
        let shutdown = Arc::new(Mutex::new(None));
        let (p, s) = (pending.clone(), shutdown.clone());
        let handle = std::thread::spawn(move || read_loop(reader, &p, &s));
        let qmp = Self {
            writer: Mutex::new((stream, 0)),
            pending,
            shutdown,
            reader: Mutex::new(Some(handle)),
        };
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Whether QEMU has the device `id` (given with `-device …,id=` or hot-plugged).
    pub fn has_device(&self, id: &str) -> Result<bool, HostError> {
        let list = self.execute("qom-list", Some(json!({ "path": "/machine/peripheral" })))?;
        Ok(list.as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i.get("name").and_then(Value::as_str) == Some(id))
        }))
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, HostError> {
        let (tx, rx) = channel();
        {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            w.1 += 1;
            let id = w.1;
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, tx);
            let mut msg = json!({ "execute": command, "id": id });
            if let Some(a) = arguments {
                msg["arguments"] = a;
            }
            let mut line = msg.to_string();
            line.push('\n');
            if let Err(e) = w.0.write_all(line.as_bytes()) {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                return Err(HostError::new(
                    ErrorKind::Gone,
                    format!("QMP {command}: {e}"),
                ));
            }
        }
        match rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(r) => r.map_err(|e| e.context(format_args!("QMP {command}"))),
            Err(_) => Err(HostError::new(
                ErrorKind::Hung,
                format!(
                    "QMP {command}: QEMU did not answer within {} s",
                    REPLY_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// Waits until QEMU has closed the monitor (after it exits), so that every event it sent has
    /// been seen; then why it shut down (the `reason` of its last `SHUTDOWN` event), if it said.
    pub fn shutdown_reason(&self) -> Option<String> {
        if let Some(h) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        self.shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pauses the guest's CPUs (QMP `stop`).
    pub fn pause(&self) -> Result<(), HostError> {
        self.execute("stop", None).map(drop)
    }

    /// Resumes the guest's CPUs (QMP `cont`).
    pub fn resume(&self) -> Result<(), HostError> {
        self.execute("cont", None).map(drop)
    }

    /// Asks QEMU to exit (QMP `quit`).
    pub fn quit(&self) -> Result<(), HostError> {
        self.execute("quit", None).map(drop)
    }

    /// Saves the (paused) VM's state to `file` and waits for the end.
    pub fn migrate_to_file(&self, file: &Path) -> Result<(), HostError> {
        // QEMU caps migrations at 128 MiB/s by default, meant for networks: a save to a local
        // file would spend most of its time in the limiter (bench/vm.sh: 1.25 s against 0.11 s
        // for 150 MiB). 0 lifts the cap.
        self.execute(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": 0 })),
        )?;
        let uri = format!("file:{}", file.display());
        self.execute("migrate", Some(json!({ "uri": uri })))?;
        self.wait_migration()
    }

    /// Loads the state saved in `file` (QEMU started with `-incoming defer`) and waits for the end.
    pub fn migrate_from_file(&self, file: &Path) -> Result<(), HostError> {
        let uri = format!("file:{}", file.display());
        self.execute(
            "migrate-incoming",
            Some(json!({ "uri": uri, "exit-on-error": false })),
        )?;
        self.wait_migration()
    }

    fn wait_migration(&self) -> Result<(), HostError> {
        let start = Instant::now();
        loop {
            let info = self.execute("query-migrate", None)?;
            match info["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    return Err(HostError::new(
                        ErrorKind::Refused,
                        info["error-desc"]
                            .as_str()
                            .unwrap_or("the migration failed"),
                    ))
                }
                _ if start.elapsed() > MIGRATION_LIMIT => {
                    return Err(HostError::new(
                        ErrorKind::Hung,
                        "the migration did not end within 30 minutes",
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Routes replies to their waiting command and records shut-down reasons, until QEMU closes
/// the monitor; then fails whatever still waits.
fn read_loop(
    mut reader: BufReader<UnixStream>,
    pending: &Pending,
    shutdown: &Mutex<Option<String>>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["event"] == "SHUTDOWN" {
            let reason = msg["data"]["reason"]
                .as_str()
                .unwrap_or("unknown")
                .to_string();
            *shutdown.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            continue;
        }
        let Some(id) = msg["id"].as_u64() else {
            continue;
        };
        let Some(tx) = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
        else {
            continue;
        };
        let result = match msg.get("return") {
            Some(r) => Ok(r.clone()),
            None => Err(HostError::new(
                ErrorKind::Refused,
                msg["error"]["desc"]
                    .as_str()
                    .unwrap_or("QEMU refused the command"),
            )),
        };
        let _ = tx.send(result);
    }
    for (_, tx) in pending.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        let _ = tx.send(Err(HostError::new(
            ErrorKind::Gone,
            "QEMU closed its monitor",
        )));
    }
}
