//! Plugging a disk in (starting its server and recording it), mounting it, and listing what is
//! plugged in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use strata_vhd::ops::progress::Silent;
use strata_vhd::ops::undo;

use crate::error::{Context, ErrorKind, PlugError, Result};
use crate::record::{alive, fuse_dir, key, Mode, Plugged, RunDir};
use crate::server::{start_server, ServerArgs};
use crate::unplug::UndoChoice;

/// The disks plugged in on this host: where they are recorded (the run folder), and how their
/// server is started.
#[derive(Clone, Debug)]
pub struct Plugs {
    dir: PathBuf,
    server: Vec<OsString>,
}

/// How to plug a disk in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlugOptions {
    /// How it takes writes.
    pub mode: Mode,
    /// Also listen on TCP: a port (on 127.0.0.1) or ADDRESS:PORT.
    pub tcp: Option<String>,
    /// Also expose the disk as a file in a FUSE mount (what [`Plugs::mount`] maps).
    pub fuse: bool,
}

/// How to mount a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// How it takes writes ([`Mode::ReadOnly`] also mounts the file system read-only).
    pub mode: Mode,
    /// The partition (default: the first, or the whole disk when it has no partition table).
    pub partition: Option<u32>,
}

impl Plugs {
    /// Disks recorded in `run_dir` (usually [`crate::run_dir`]), served by `server` (a program
    /// and its first arguments, e.g. `strata disk serve`) + the [`ServerArgs`] of each disk: the
    /// program must call [`crate::serve`] with them.
    pub fn new(run_dir: impl Into<PathBuf>, server: Vec<OsString>) -> Self {
        Self {
            dir: run_dir.into(),
            server,
        }
    }

    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn files(&self) -> RunDir<'_> {
        RunDir(&self.dir)
    }

    /// Plugs a disk in: starts its server (with an undo disk in mode undo) and records it.
    /// Refused while a live server has it plugged; a dead server's record is replaced.
    pub fn plug(&self, path: &Path, opts: &PlugOptions) -> Result<Plugged> {
        let (canon, k) = key(path)?;
        // A bare port listens on loopback only: another address has to be asked for.
        let tcp = opts.tcp.as_ref().map(|a| {
            if a.contains(':') {
                a.clone()
            } else {
                format!("127.0.0.1:{a}")
            }
        });
        let files = self.files();
        let _guard = files.lock(&k)?;
        if let Some(rec) = files.load(&k) {
            if alive(&rec) {
                return Err(PlugError::new(ErrorKind::AlreadyPlugged {
                    path: canon,
                    uri: rec.uri,
                }));
            }
            files.cleanup(&k, &rec);
        }
        let undo_path = match opts.mode {
            Mode::Undo => Some(undo::create(&canon)?),
            Mode::ReadOnly | Mode::Direct => None,
        };
        let socket = files.socket(&k);
        let args = ServerArgs {
            path: undo_path.clone().unwrap_or_else(|| canon.clone()),
            socket: socket.clone(),
            read_only: opts.mode == Mode::ReadOnly,
            tcp: tcp.clone(),
            fuse: opts.fuse.then(|| fuse_dir(&socket)),
        };
        let pid = match start_server(&self.server, &args) {
            Ok(pid) => pid,
            Err(e) => {
                if let Some(u) = &undo_path {
                    let _ = std::fs::remove_file(u);
                }
                return Err(e);
            }
        };
        let rec = Plugged {
            path: canon,
            uri: format!("nbd+unix:///?socket={}", socket.display()),
            tcp_uri: tcp.as_ref().map(|a| format!("nbd://{a}/")),
            mode: opts.mode,
            undo_path,
            mount_point: None,
            loop_device: None,
            socket,
            pid,
            pid_start: strata_proc::start_time(pid),
        };
        files.save(&k, &rec)?;
        Ok(rec)
    }

    /// Plugs `path` in (with FUSE) and mounts its file system on `dir`; on failure the disk is
    /// unplugged again (an undo disk discarded).
    pub fn mount(&self, path: &Path, dir: &Path, opts: &MountOptions) -> Result<Plugged> {
        if !dir.is_dir() {
            return Err(PlugError::invalid(format!(
                "{}: not a folder to mount on",
                dir.display()
            )));
        }
        let dir = &std::fs::canonicalize(dir).ctx(|| format!("{}: cannot open", dir.display()))?;
        let plug = PlugOptions {
            mode: opts.mode,
            tcp: None,
            fuse: true,
        };
        let rec = self.plug(path, &plug)?;
        let file = fuse_dir(&rec.socket).join(strata_nbd::file::FILE_NAME);
        let read_only = opts.mode == Mode::ReadOnly;
        let mounted =
            crate::mount::attach_and_mount(&rec.path, &file, dir, read_only, opts.partition)
                .and_then(|dev| {
                    self.set_mount(&rec, dir, &dev).inspect_err(|_| {
                        let _ = crate::mount::unmount(dir, Some(&dev), &fuse_dir(&rec.socket));
                    })
                });
        if let Err(e) = mounted {
            let _ = self.unplug(Some(path), &mut |_| Ok(UndoChoice::Discard), &Silent);
            return Err(e);
        }
        self.query(Some(path))?
            .pop()
            .ok_or_else(|| PlugError::server("the plugged disk vanished"))
    }

    /// Records a mount on a plugged disk.
    fn set_mount(&self, plugged: &Plugged, mount_point: &Path, loop_device: &str) -> Result<()> {
        let files = self.files();
        let k = plugged.key();
        let path = files.record(&k);
        let text =
            std::fs::read_to_string(&path).ctx(|| format!("{}: cannot read", path.display()))?;
        let mut rec: Plugged =
            serde_json::from_str(&text).ctx(|| format!("{}: damaged record", path.display()))?;
        rec.mount_point = Some(mount_point.to_path_buf());
        rec.loop_device = Some(loop_device.to_string());
        files.save(&k, &rec)
    }

    /// The plugged disks (`path`'s, or all), dropping records of servers that died. Asking for
    /// one disk that is not plugged in is an error.
    pub fn query(&self, path: Option<&Path>) -> Result<Vec<Plugged>> {
        let canon = path.map(key).transpose()?.map(|(c, _)| c);
        let files = self.files();
        let mut out = vec![];
        for rec in files.records() {
            if canon.as_ref().is_some_and(|c| *c != rec.path) {
                continue;
            }
            if !alive(&rec) {
                self.drop_dead(&rec);
                continue;
            }
            out.push(rec);
        }
        match canon {
            Some(c) if out.is_empty() => Err(PlugError::new(ErrorKind::NotPlugged(c))),
            _ => Ok(out),
        }
    }

    /// Removes a dead server's record, unless its disk's lock is held (a plug or unplug at work
    /// there will handle it) or the record changed meanwhile.
    fn drop_dead(&self, rec: &Plugged) {
        let files = self.files();
        let k = rec.key();
        if let Some(_guard) = files.try_lock(&k) {
            if files.load(&k).as_ref() == Some(rec) {
                files.cleanup(&k, rec);
            }
        }
    }
}
