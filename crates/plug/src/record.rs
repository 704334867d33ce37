//! The run folder and what lives in it: one JSON record per plugged disk (`<key>.json`), where
//! the key is the disk file's device and inode (stable while the file exists), beside the disk
//! server's socket (`.sock`), log (`.log`), exit status (`.exit`), FUSE folder (`.fuse`) and the
//! per-disk lock file (`.lock`). Whether a record's server still runs ([`alive`]).

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};

/// How a plugged disk takes writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No writes.
    ReadOnly,
    /// Writes go to an undo disk; the VHD is untouched.
    Undo,
    /// Writes go to the VHD.
    Direct,
}

/// A plugged disk, as recorded in the run folder (and shown by `strata disk query --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugged {
    /// The disk (canonical path).
    pub path: PathBuf,
    /// Its NBD URI on the Unix socket.
    pub uri: String,
    /// Its NBD URI on TCP, when asked.
    pub tcp_uri: Option<String>,
    /// How it takes writes.
    pub mode: Mode,
    /// The undo disk taking the writes (mode undo).
    pub undo_path: Option<PathBuf>,
    /// Where its file system is mounted (`strata disk mount`).
    pub mount_point: Option<PathBuf>,
    /// The loop device mapping its FUSE file (`strata disk mount`).
    pub loop_device: Option<String>,
    /// The server's Unix socket.
    pub socket: PathBuf,
    /// The server's pid.
    pub pid: u32,
    /// The server's start time (clock ticks since boot), so that a reused pid is not mistaken
    /// for the server.
    #[serde(default)]
    pub pid_start: Option<u64>,
}

impl Plugged {
    /// The record's key (its socket's file stem).
    pub(crate) fn key(&self) -> String {
        self.socket
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The FUSE folder of a disk served on `socket`.
pub(crate) fn fuse_dir(socket: &Path) -> PathBuf {
    socket.with_extension("fuse")
}

/// The file where a disk server records how it ended: "ok", or what went wrong.
pub(crate) fn exit_file(socket: &Path) -> PathBuf {
    socket.with_extension("exit")
}

/// The server's log.
pub(crate) fn log_file(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

/// The default run folder: `$STRATA_RUN_DIR`, else `/run/strata/disks` for root, else
/// `$XDG_RUNTIME_DIR/strata/disks`, else a per-user `strata-UID/disks` in the temporary folder.
pub fn run_dir() -> PathBuf {
    let uid = rustix::process::geteuid();
    choose_run_dir(
        std::env::var_os("STRATA_RUN_DIR"),
        uid.is_root(),
        std::env::var_os("XDG_RUNTIME_DIR"),
        uid.as_raw(),
        &std::env::temp_dir(),
    )
}

fn choose_run_dir(
    strata_run_dir: Option<OsString>,
    root: bool,
    xdg_runtime_dir: Option<OsString>,
    uid: u32,
    tmp: &Path,
) -> PathBuf {
    if let Some(d) = strata_run_dir {
        return PathBuf::from(d);
    }
    if root {
        return PathBuf::from("/run/strata/disks");
    }
    match xdg_runtime_dir {
        Some(d) => PathBuf::from(d).join("strata/disks"),
        // Never a folder shared by all users: one per user id.
        None => tmp.join(format!("strata-{uid}/disks")),
    }
}

/// The record files of one run folder.
pub(crate) struct RunDir<'a>(pub &'a Path);

impl RunDir<'_> {
    /// Creates the folder, private to its owner.
    pub fn ensure(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.0)
            .ctx(|| format!("cannot create {}", self.0.display()))
    }

    pub fn record(&self, k: &str) -> PathBuf {
        self.0.join(format!("{k}.json"))
    }

    pub fn socket(&self, k: &str) -> PathBuf {
        self.0.join(format!("{k}.sock"))
    }

    /// Holds the per-disk lock file: plug and unplug of one disk never run at once.
    pub fn lock(&self, k: &str) -> Result<File> {
        self.ensure()?;
        let (f, path) = self.lock_file(k);
        let f = f.ctx(|| format!("{}: cannot open", path.display()))?;
        f.lock()
            .ctx(|| format!("{}: cannot lock", path.display()))?;
        Ok(f)
    }

    /// The per-disk lock, if nobody holds it now.
    pub fn try_lock(&self, k: &str) -> Option<File> {
        let f = self.lock_file(k).0.ok()?;
        f.try_lock().ok()?;
        Some(f)
    }

    fn lock_file(&self, k: &str) -> (std::io::Result<File>, PathBuf) {
        let path = self.0.join(format!("{k}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path);
        (f, path)
    }

    /// The record of key `k`, if there is a readable one.
    pub fn load(&self, k: &str) -> Option<Plugged> {
        let text = std::fs::read_to_string(self.record(k)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the record of key `k` (atomically: a temporary file renamed).
    pub fn save(&self, k: &str, rec: &Plugged) -> Result<()> {
        let tmp = self.0.join(format!(".{k}.json.tmp"));
        let path = self.record(k);
        let text = serde_json::to_vec_pretty(rec)?;
        std::fs::write(&tmp, text).ctx(|| format!("{}: cannot write", tmp.display()))?;
        std::fs::rename(&tmp, &path).ctx(|| format!("{}: cannot write", path.display()))
    }

    /// Every readable record, by disk path. A record may vanish under a concurrent unplug; a
    /// damaged one is reported on stderr and skipped.
    pub fn records(&self) -> Vec<Plugged> {
        let mut out = vec![];
        let Ok(entries) = std::fs::read_dir(self.0) else {
            return out;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            match serde_json::from_str::<Plugged>(&text) {
                Ok(rec) => out.push(rec),
                Err(e) => eprintln!(
                    "strata: warning: {}: unreadable record ({e}), skipped",
                    p.display()
                ),
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Removes everything a record's server left, and the record.
    pub fn cleanup(&self, k: &str, rec: &Plugged) {
        let _ = std::fs::remove_file(exit_file(&rec.socket));
        let _ = std::fs::remove_dir(fuse_dir(&rec.socket));
        let _ = std::fs::remove_file(&rec.socket);
        let _ = std::fs::remove_file(log_file(&rec.socket));
        let _ = std::fs::remove_file(self.record(k));
    }
}

/// A disk's canonical path and key (device and inode, in hex).
pub(crate) fn key(path: &Path) -> Result<(PathBuf, String)> {
    let canon = std::fs::canonicalize(path).ctx(|| format!("{}: cannot open", path.display()))?;
    let meta = std::fs::metadata(&canon).ctx(|| format!("{}: cannot open", canon.display()))?;
    Ok((canon, format!("{:x}-{:x}", meta.dev(), meta.ino())))
}

/// Whether the record's server still runs: the same process (start time), and a disk server
/// for this socket (its command line), not an unrelated process that reused the pid.
pub(crate) fn alive(rec: &Plugged) -> bool {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", rec.pid)).unwrap_or_default();
    is_server(rec, strata_proc::start_time(rec.pid), &cmdline)
}

/// [`alive`] on what `/proc` says about the pid: its start time (`None`: no such process) and
/// its command line (NUL-separated), which must hold `--socket SOCKET`.
fn is_server(rec: &Plugged, start_time: Option<u64>, cmdline: &[u8]) -> bool {
    let Some(now) = start_time else {
        return false;
    };
    if rec.pid_start.is_some_and(|then| then != now) {
        return false;
    }
    let socket = rec.socket.as_os_str().as_encoded_bytes();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--socket" && w[1] == socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Plugged {
        Plugged {
            path: "/srv/d.vhd".into(),
            uri: "nbd+unix:///?socket=/run/strata/disks/803-1a.sock".into(),
            tcp_uri: Some("nbd://127.0.0.1:10809/".into()),
            mode: Mode::Undo,
            undo_path: Some("/srv/d.vud".into()),
            mount_point: None,
            loop_device: None,
            socket: "/run/strata/disks/803-1a.sock".into(),
            pid: 4242,
            pid_start: Some(98765),
        }
    }

    #[test]
    fn a_record_round_trips_and_keeps_its_json_names() {
        let rec = record();
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.contains(r#""mode":"undo""#), "{text}");
        assert!(text.contains(r#""pid_start":98765"#), "{text}");
        assert_eq!(serde_json::from_str::<Plugged>(&text).unwrap(), rec);
        assert_eq!(rec.key(), "803-1a");
        // A record written before start times were recorded still reads.
        let old = text.replace(r#","pid_start":98765"#, "");
        let back: Plugged = serde_json::from_str(&old).unwrap();
        assert_eq!(back.pid_start, None);
        // Unknown fields are refused, not dropped.
        let extra = text.replace(r#""pid":4242"#, r#""pid":4242,"colour":"red""#);
        assert!(serde_json::from_str::<Plugged>(&extra).is_err());
        let modes: Vec<String> = [Mode::ReadOnly, Mode::Undo, Mode::Direct]
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect();
        assert_eq!(modes, [r#""read-only""#, r#""undo""#, r#""direct""#]);
    }

    #[test]
    fn a_reused_pid_is_not_the_server() {
        let rec = record();
        let server = b"/usr/local/bin/strata\0disk\0serve\0/srv/d.vud\0--socket\0/run/strata/disks/803-1a.sock\0";
        assert!(is_server(&rec, Some(98765), server));
        // Same pid, another start time: a new process got the pid.
        assert!(!is_server(&rec, Some(98766), server));
        // No such process.
        assert!(!is_server(&rec, None, server));
        // No recorded start time: the command line decides.
        let old = Plugged {
            pid_start: None,
            ..record()
        };
        assert!(is_server(&old, Some(1), server));
        assert!(!is_server(&old, Some(1), b"sleep\0sixty\0"));
        // Another disk's server, or the socket path in another place, is not this one.
        let other = b"strata\0disk\0serve\0/run/strata/disks/803-1a.sock\0--socket\0/x.sock\0";
        assert!(!is_server(&old, Some(1), other));
    }

    #[test]
    fn the_run_folder_is_chosen_by_environment_then_user() {
        let tmp = Path::new("/tmp");
        let pick = |env: Option<&str>, root, xdg: Option<&str>| {
            choose_run_dir(env.map(Into::into), root, xdg.map(Into::into), 1000, tmp)
        };
        assert_eq!(
            pick(Some("/srv/run"), true, Some("/run/user/0")),
            Path::new("/srv/run")
        );
        assert_eq!(
            pick(None, true, Some("/run/user/0")),
            Path::new("/run/strata/disks")
        );
        assert_eq!(
            pick(None, false, Some("/run/user/1000")),
            Path::new("/run/user/1000/strata/disks")
        );
        assert_eq!(pick(None, false, None), Path::new("/tmp/strata-1000/disks"));
    }

    #[test]
    fn records_are_saved_atomically_and_listed_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir(dir.path());
        let mut b = record();
        b.path = "/srv/b.vhd".into();
        let mut a = record();
        a.path = "/srv/a.vhd".into();
        run.save("k2", &b).unwrap();
        run.save("k1", &a).unwrap();
        std::fs::write(dir.path().join("k3.json"), "{damaged").unwrap();
        assert_eq!(run.load("k1"), Some(a.clone()));
        assert_eq!(run.load("k3"), None);
        assert_eq!(run.records(), [a, b]);
        assert!(!dir.path().join(".k1.json.tmp").exists());
    }
}
