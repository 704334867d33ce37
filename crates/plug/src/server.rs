//! The disk server: one background process per plugged disk (`strata disk serve`, started by
//! [`crate::Plugs::plug`] with [`strata_proc::spawn_daemon`]). It opens the disk (taking its
//! lock), serves it over NBD on its Unix socket (and TCP when asked) and, for a mount, as a file
//! in a FUSE folder; it reports a [`Readiness`] line, then on SIGTERM or SIGINT flushes, records
//! how it ended in `<socket>.exit` and returns.
//!
//! Starting and stopping it (the starter's side) is here too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use strata_nbd::Backend as _;
use strata_proc::{DaemonError, Readiness};
use strata_vhd::{Disk, OpenOptions};

use crate::error::{Context, PlugError, Result};
use crate::record::{alive, exit_file, log_file, Plugged};

/// What a disk server serves, and how: its command-line arguments, appended to the server
/// command given to [`crate::Plugs::new`]: `PATH --socket SOCKET [--read-only] [--tcp ADDRESS]
/// [--fuse DIR]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerArgs {
    /// The VHD served (the undo disk in mode undo).
    pub path: PathBuf,
    /// The Unix socket.
    pub socket: PathBuf,
    /// Open the disk read-only.
    pub read_only: bool,
    /// Also serve on this TCP address.
    pub tcp: Option<String>,
    /// Also expose the disk as the file `disk` in a FUSE mount on this folder.
    pub fuse: Option<PathBuf>,
}

impl ServerArgs {
    fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            self.path.clone().into(),
            "--socket".into(),
            self.socket.clone().into(),
        ];
        if self.read_only {
            a.push("--read-only".into());
        }
        if let Some(t) = &self.tcp {
            a.extend(["--tcp".into(), t.into()]);
        }
        if let Some(d) = &self.fuse {
            a.extend(["--fuse".into(), d.clone().into()]);
        }
        a
    }
}

/// The body of the disk server: sets up, reports readiness on stdout (ready, or why not), serves
/// until SIGTERM or SIGINT, then flushes and records how it ended. An error is a failed start or
/// a failed final flush (then the exit file says so too).
pub fn serve(args: &ServerArgs) -> Result<()> {
    let running = match start(args) {
        Ok(r) => r,
        Err(e) => {
            Readiness::Failed {
                error: e.to_string(),
                kind: None,
            }
            .report();
            return Err(e);
        }
    };
    Readiness::Ready.report();
    running.wait_and_end()
}

/// A server set up and serving.
struct Running {
    served: strata_nbd::ServedDisk,
    fuse: Option<(fuser::BackgroundSession, PathBuf)>,
    signals: signal_hook::iterator::Signals,
}

fn start(args: &ServerArgs) -> Result<Running> {
    let options = if args.read_only {
        OpenOptions::read()
    } else {
        OpenOptions::write()
    };
    let disk = Disk::open(&args.path, options)?;
    // Signals first: a SIGTERM right after "ready" must find the handler in place.
    // The server outlives the terminal that plugged the disk: a hang-up is noted, not obeyed.
    signal_hook::flag::register(SIGHUP, Arc::new(AtomicBool::new(false)))
        .ctx(|| "cannot handle SIGHUP")?;
    let signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).ctx(|| "cannot handle SIGTERM")?;
    let served = strata_nbd::serve_disk(disk, &args.socket, args.tcp.as_deref())?;
    let _ = std::fs::remove_file(exit_file(&args.socket));
    let fuse = match &args.fuse {
        Some(dir) => match mount_fuse(&served, dir) {
            Ok(session) => Some((session, dir.clone())),
            Err(e) => {
                let _ = std::fs::remove_file(&args.socket);
                return Err(e);
            }
        },
        None => None,
    };
    Ok(Running {
        served,
        fuse,
        signals,
    })
}

fn mount_fuse(served: &strata_nbd::ServedDisk, dir: &Path) -> Result<fuser::BackgroundSession> {
    let fail = || format!("cannot expose the disk through FUSE at {}", dir.display());
    std::fs::create_dir_all(dir).ctx(fail)?;
    let backend: Arc<dyn strata_nbd::Backend> = served.backend.clone();
    strata_nbd::file::mount_file(backend, dir).ctx(fail)
}

impl Running {
    /// Waits for SIGTERM or SIGINT; flushes; records the end; takes the socket and FUSE down.
    fn wait_and_end(mut self) -> Result<()> {
        let _ = self.signals.forever().next();
        let flushed = self.served.backend.flush();
        let said = match &flushed {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("the final flush failed: {e}"),
        };
        let socket = &self.served.socket;
        let _ = std::fs::write(exit_file(socket), &said);
        let _ = std::fs::remove_file(socket);
        if let Some((session, dir)) = self.fuse.take() {
            drop(session);
            let _ = std::fs::remove_dir(dir);
        }
        match flushed {
            Ok(()) => Ok(()),
            Err(_) => Err(PlugError::server(said)),
        }
    }
}

/// How long a starting server may stay silent before it is killed.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a server may take to stop (its final flush) after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// Starts `server` + the arguments of `args` detached (its log beside the socket) and waits for
/// its readiness. Returns its pid.
pub(crate) fn start_server(server: &[OsString], args: &ServerArgs) -> Result<u32> {
    let log_path = log_file(&args.socket);
    let log = std::fs::File::create(&log_path)
        .ctx(|| format!("{}: cannot create", log_path.display()))?;
    let Some((program, prefix)) = server.split_first() else {
        return Err(PlugError::invalid("no command to start the disk server"));
    };
    let mut cmd = Command::new(program);
    cmd.args(prefix).args(args.to_args()).stderr(log);
    match strata_proc::spawn_daemon(&mut cmd, "the disk server", START_LIMIT) {
        Ok(pid) => Ok(pid),
        Err(DaemonError::Failed { error, .. }) => Err(PlugError::server(error)),
        Err(e) => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(PlugError::server(match log.trim() {
                "" => e.to_string(),
                log => format!("{e}: {log}"),
            }))
        }
    }
}

/// Stops a record's server (SIGTERM, then waits for it) and reads how it ended: `None` after a
/// clean end, else what went wrong (a crash, or a failed final flush: then its last writes may
/// be missing).
pub(crate) fn stop_server(rec: &Plugged) -> Result<Option<String>> {
    let was_running = alive(rec);
    if was_running {
        strata_proc::terminate(rec.pid);
        let t = Instant::now();
        while alive(rec) {
            if t.elapsed() > STOP_LIMIT {
                return Err(PlugError::server(format!(
                    "the server of {} (pid {}) does not stop",
                    rec.path.display(),
                    rec.pid
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let said = std::fs::read_to_string(exit_file(&rec.socket)).unwrap_or_default();
    Ok(how_it_ended(&said, was_running))
}

/// What an exit file's text means; `was_running`: the server was stopped just now.
fn how_it_ended(said: &str, was_running: bool) -> Option<String> {
    match said.trim() {
        "ok" => None,
        "" if was_running => Some("the server ended without saying how".into()),
        "" => Some(
            "the server had stopped unexpectedly, so writes it had not flushed may be lost".into(),
        ),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_arguments_in_order() {
        let mut a = ServerArgs {
            path: "/srv/d.vud".into(),
            socket: "/run/k.sock".into(),
            read_only: false,
            tcp: None,
            fuse: None,
        };
        assert_eq!(a.to_args(), ["/srv/d.vud", "--socket", "/run/k.sock"]);
        a.read_only = true;
        a.tcp = Some("127.0.0.1:10809".into());
        a.fuse = Some("/run/k.fuse".into());
        assert_eq!(
            a.to_args(),
            [
                "/srv/d.vud",
                "--socket",
                "/run/k.sock",
                "--read-only",
                "--tcp",
                "127.0.0.1:10809",
                "--fuse",
                "/run/k.fuse"
            ]
        );
    }

    #[test]
    fn an_exit_file_says_how_the_server_ended() {
        assert_eq!(how_it_ended("ok\n", true), None);
        assert_eq!(how_it_ended("ok", false), None);
        assert_eq!(
            how_it_ended("the final flush failed: EIO", true).as_deref(),
            Some("the final flush failed: EIO")
        );
        assert!(how_it_ended("", true)
            .unwrap()
            .contains("without saying how"));
        assert!(how_it_ended("", false)
            .unwrap()
            .contains("stopped unexpectedly"));
    }
}
