//! The worker's QMP connection to its QEMU, through the `qapi` crate (typed commands generated from
//! QEMU's schema). Commands are serialized by a mutex; events are drained and dropped after each
//! command: the worker learns how QEMU ended from its exit status and its own intent.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qapi::qmp;

type Stream = qapi::Stream<BufReader<UnixStream>, UnixStream>;

/// A QMP connection.
pub struct Qmp {
    inner: Mutex<qapi::Qmp<Stream>>,
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path`, waiting up to `limit` for QEMU to create it while
    /// `alive()` says QEMU still runs, and negotiates capabilities.
    pub fn connect(path: &Path, limit: Duration, alive: impl Fn() -> bool) -> Result<Self, String> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if !alive() {
                        return Err("QEMU exited before its monitor was ready".to_string());
                    }
                    if start.elapsed() > limit {
                        return Err(format!(
                            "{}: QEMU's monitor did not open: {e}",
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let io = |e: std::io::Error| format!("QMP: {e}");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
        // The greeting is read here rather than by `qapi::Qmp::handshake`, which panics when QEMU
        // closes the socket before greeting; nothing else arrives before the reply to
        // `qmp_capabilities`, so the buffered reader can be handed over.
        let mut greeting = String::new();
        if reader.read_line(&mut greeting).map_err(io)? == 0 {
            return Err("QEMU closed its monitor before greeting".to_string());
        }
        let mut q = qapi::Qmp::new(qapi::Stream::new(reader, stream));
        q.execute(&qmp::qmp_capabilities { enable: None })
            .map_err(|e| format!("QMP capabilities: {e}"))?;
        Ok(Self {
            inner: Mutex::new(q),
        })
    }

    /// Runs a command and returns its result.
    pub fn execute<C: qapi::Command>(&self, command: &C) -> Result<C::Ok, String> {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let result = q
            .execute(command)
            .map_err(|e| format!("QMP {}: {e}", C::NAME));
        q.events().for_each(drop);
        result
    }

    /// `stop`: pauses the CPUs.
    pub fn stop(&self) -> Result<(), String> {
        self.execute(&qmp::stop {}).map(drop)
    }

    /// `cont`: resumes the CPUs.
    pub fn cont(&self) -> Result<(), String> {
        self.execute(&qmp::cont {}).map(drop)
    }

    /// Saves the (paused) VM's state to `file` and waits for the end.
    pub fn migrate_to_file(&self, file: &Path) -> Result<(), String> {
        self.execute(&qmp::migrate {
            uri: Some(format!("file:{}", file.display())),
            channels: None,
            detach: None,
            resume: None,
        })?;
        self.wait_migration()
    }

    /// Loads the state saved in `file` (QEMU started with `-incoming defer`) and waits for the end.
    pub fn migrate_from_file(&self, file: &Path) -> Result<(), String> {
        self.execute(&qmp::migrate_incoming {
            uri: Some(format!("file:{}", file.display())),
            channels: None,
            exit_on_error: Some(false),
        })?;
        self.wait_migration()
    }

    fn wait_migration(&self) -> Result<(), String> {
        loop {
            let info = self.execute(&qmp::query_migrate {})?;
            match info.status {
                Some(qmp::MigrationStatus::completed) => return Ok(()),
                Some(qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled) => {
                    return Err(info
                        .error_desc
                        .unwrap_or_else(|| "the migration failed".to_string()))
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
