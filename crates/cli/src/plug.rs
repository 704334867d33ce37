//! `strata disk plug|unplug|query`: VHDMount for Strata.
//!
//! One background server process per plugged disk (`strata disk serve`, started detached by
//! `plug`): a crash or a stuck client affects one disk only, and the server holds the disk's lock
//! for as long as it is plugged. Each plugged disk has a record (JSON) and a Unix socket in the
//! run folder: `$STRATA_RUN_DIR`, else `/run/strata/disks` for root, else
//! `$XDG_RUNTIME_DIR/strata/disks`.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use strata_vhd::ops::undo;

use crate::progress::Bar;

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

/// A plugged disk, as recorded in the run folder.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugged {
    pub path: PathBuf,
    pub uri: String,
    pub tcp_uri: Option<String>,
    pub mode: Mode,
    pub undo_path: Option<PathBuf>,
    pub mount_point: Option<PathBuf>,
    pub loop_device: Option<String>,
    pub socket: PathBuf,
    pub pid: u32,
    /// The server's start time (clock ticks since boot), so that a reused pid is not mistaken
    /// for the server.
    #[serde(default)]
    pub pid_start: Option<u64>,
}

pub fn run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STRATA_RUN_DIR") {
        return PathBuf::from(d);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/run/strata/disks");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("strata/disks"),
        // Never a folder shared by all users: one per user id.
        None => std::env::temp_dir().join(format!(
            "strata-{}/disks",
            rustix::process::geteuid().as_raw()
        )),
    }
}

/// Creates the run folder, private to its owner.
fn ensure_run_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = run_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Holds the per-disk lock file: plug and unplug of one disk never run at once.
fn lock_disk(k: &str) -> Result<std::fs::File> {
    let dir = ensure_run_dir()?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{k}.lock")))?;
    f.lock()?;
    Ok(f)
}

/// The record and socket names of a disk: its device and inode, stable while the file exists.
fn key(path: &Path) -> Result<(PathBuf, String)> {
    let canon =
        std::fs::canonicalize(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let meta = std::fs::metadata(&canon)?;
    Ok((canon, format!("{:x}-{:x}", meta.dev(), meta.ino())))
}

use strata_proc::start_time;

/// Whether the record's server still runs: the same process (start time), and a disk server
/// for this socket (its command line), not an unrelated process that reused the pid.
fn alive(rec: &Plugged) -> bool {
    let Some(now) = start_time(rec.pid) else {
        return false;
    };
    if rec.pid_start.is_some_and(|then| then != now) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", rec.pid)).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let socket = rec.socket.as_os_str().as_encoded_bytes();
    args.contains(&&b"serve"[..]) && args.contains(&socket)
}

fn records() -> Result<Vec<Plugged>> {
    let dir = run_dir();
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            // A record may vanish under a concurrent unplug; a damaged one is reported, skipped.
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
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn record_path(k: &str) -> PathBuf {
    run_dir().join(format!("{k}.json"))
}

fn save(k: &str, rec: &Plugged) -> Result<()> {
    let tmp = run_dir().join(format!(".{k}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec)?)?;
    std::fs::rename(&tmp, record_path(k))?;
    Ok(())
}

/// Options of `plug`.
pub struct PlugOptions {
    pub read_only: bool,
    pub direct: bool,
    pub tcp: Option<String>,
    /// Also expose the disk as a file in a FUSE mount (for `mount`).
    pub fuse: bool,
}

/// The FUSE folder of a plugged disk, from its socket path.
pub fn fuse_dir(socket: &Path) -> PathBuf {
    socket.with_extension("fuse")
}

/// Plugs a disk in: starts its server and records it. Returns the record.
pub fn plug(path: &Path, opts: &PlugOptions) -> Result<Plugged> {
    let (canon, k) = key(path)?;
    // A bare port listens on loopback only: another address has to be asked for.
    let tcp = opts.tcp.as_ref().map(|a| {
        if a.contains(':') {
            a.clone()
        } else {
            format!("127.0.0.1:{a}")
        }
    });
    let _guard = lock_disk(&k)?;
    if let Ok(text) = std::fs::read_to_string(record_path(&k)) {
        if let Ok(rec) = serde_json::from_str::<Plugged>(&text) {
            if alive(&rec) {
                bail!("{} is already plugged in at {}", canon.display(), rec.uri);
            }
            cleanup(&k, &rec);
        }
    }
    let mode = match (opts.read_only, opts.direct) {
        (true, true) => bail!("--read-only and --direct exclude each other"),
        (true, false) => Mode::ReadOnly,
        (false, true) => Mode::Direct,
        (false, false) => Mode::Undo,
    };
    let (served, undo_path) = if mode == Mode::Undo {
        let u = undo::create(&canon)?;
        (u.clone(), Some(u))
    } else {
        (canon.clone(), None)
    };
    let socket = run_dir().join(format!("{k}.sock"));
    let started = start_server(
        &served,
        &socket,
        mode == Mode::ReadOnly,
        tcp.as_deref(),
        opts.fuse,
    );
    let pid = match started {
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
        mode,
        undo_path,
        mount_point: None,
        loop_device: None,
        socket,
        pid,
        pid_start: start_time(pid),
    };
    save(&k, &rec)?;
    Ok(rec)
}

/// Starts `strata disk serve` detached and waits for its "ready" line.
fn start_server(
    served: &Path,
    socket: &Path,
    read_only: bool,
    tcp: Option<&str>,
    fuse: bool,
) -> Result<u32> {
    let log = std::fs::File::create(socket.with_extension("log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["disk", "serve"])
        .arg(served)
        .arg("--socket")
        .arg(socket);
    if read_only {
        cmd.arg("--read-only");
    }
    if let Some(a) = tcp {
        cmd.args(["--tcp", a]);
    }
    if fuse {
        cmd.arg("--fuse").arg(fuse_dir(socket));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the disk server")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no pipe to the server"))?;
    let mut line = String::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    if line.starts_with("ready") {
        return Ok(child.id());
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(socket.with_extension("log")).unwrap_or_default();
    let msg = line
        .strip_prefix("error: ")
        .unwrap_or(&line)
        .trim()
        .to_string();
    bail!(
        "{}",
        if msg.is_empty() {
            format!("the disk server did not start: {}", log.trim())
        } else {
            msg
        }
    )
}

/// What to do with an undo disk at unplug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndoChoice {
    Commit,
    Discard,
    Ask,
}

/// Unmounts, stops the server and waits for it. Returns what went wrong at its end, if anything
/// (a crash, or a failed final flush: then its last writes may be missing).
fn stop(rec: &Plugged) -> Result<Option<String>> {
    if let Some(mnt) = &rec.mount_point {
        crate::mount::unmount(mnt, rec.loop_device.as_deref(), &fuse_dir(&rec.socket))?;
    }
    let was_running = alive(rec);
    if was_running {
        let pid = rustix::process::Pid::from_raw(i32::try_from(rec.pid)?)
            .ok_or_else(|| anyhow!("bad pid"))?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let t = Instant::now();
        while alive(rec) {
            if t.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the server of {} (pid {}) does not stop",
                    rec.path.display(),
                    rec.pid
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let ended = std::fs::read_to_string(crate::serve::exit_file(&rec.socket)).unwrap_or_default();
    Ok(match ended.trim() {
        "ok" => None,
        "" if was_running => Some("the server ended without saying how".into()),
        "" => Some(
            "the server had stopped unexpectedly, so writes it had not flushed may be lost".into(),
        ),
        other => Some(other.to_string()),
    })
}

fn cleanup(k: &str, rec: &Plugged) {
    let _ = std::fs::remove_file(crate::serve::exit_file(&rec.socket));
    let _ = std::fs::remove_dir(fuse_dir(&rec.socket));
    let _ = std::fs::remove_file(&rec.socket);
    let _ = std::fs::remove_file(rec.socket.with_extension("log"));
    let _ = std::fs::remove_file(record_path(k));
}

/// Unplugs one disk (or all): unmounts, stops the server, then commits or discards its undo disk.
pub fn unplug(path: Option<&Path>, choice: UndoChoice) -> Result<Vec<String>> {
    let targets: Vec<Plugged> = match path {
        Some(p) => {
            let (canon, _) = key(p)?;
            let found: Vec<Plugged> = records()?.into_iter().filter(|r| r.path == canon).collect();
            if found.is_empty() {
                bail!("{} is not plugged in", canon.display());
            }
            found
        }
        None => records()?,
    };
    let mut said = vec![];
    for rec in targets {
        let k = rec
            .socket
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _guard = lock_disk(&k)?;
        // Under the lock, the record must still be the one listed (not a new plug's).
        let current: Option<Plugged> = std::fs::read_to_string(record_path(&k))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if current.as_ref().map(|c| (c.pid, c.pid_start)) != Some((rec.pid, rec.pid_start)) {
            continue;
        }
        let problem = stop(&rec)?;
        if let Some(u) = &rec.undo_path {
            said.extend(finish_undo(&rec, u, choice, problem.as_deref())?);
        } else if let Some(p) = &problem {
            said.push(format!("warning: {}: {p}", rec.path.display()));
        }
        cleanup(&k, &rec);
        said.push(format!("unplugged {}", rec.path.display()));
    }
    Ok(said)
}

/// Commits or discards the undo disk of an unplugged disk. A server that did not end cleanly
/// leaves its undo disk in place instead of a commit, for the user to decide.
fn finish_undo(
    rec: &Plugged,
    u: &Path,
    choice: UndoChoice,
    problem: Option<&str>,
) -> Result<Vec<String>> {
    let mut said = vec![];
    let commit = match choice {
        UndoChoice::Commit => true,
        UndoChoice::Discard => false,
        UndoChoice::Ask if std::io::stdin().is_terminal() => ask(&rec.path, u)?,
        UndoChoice::Ask => {
            said.push(format!(
                "discarding the changes made while {} was plugged in (no --commit, and not on a terminal)",
                rec.path.display()
            ));
            false
        }
    };
    if commit {
        if let Some(p) = problem {
            said.push(format!(
                "not committing: {p}; the undo disk {} is kept: decide with `strata disk undo commit|discard {}`",
                u.display(),
                rec.path.display()
            ));
            return Ok(said);
        }
        undo::commit(&rec.path, &Bar::new("committing"))?;
        said.push(format!("committed the changes into {}", rec.path.display()));
    } else {
        undo::discard(&rec.path)?;
        if choice != UndoChoice::Ask {
            said.push(format!("discarded the changes to {}", rec.path.display()));
        }
    }
    Ok(said)
}

fn ask(base: &Path, undo_disk: &Path) -> Result<bool> {
    eprint!(
        "Commit the changes in {} into {}? [y/N] ",
        undo_disk.display(),
        base.display()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The plugged disks (one, or all), dropping records of servers that died.
pub fn query(path: Option<&Path>) -> Result<Vec<Plugged>> {
    let canon = path.map(key).transpose()?.map(|(c, _)| c);
    let mut out = vec![];
    for rec in records()? {
        if canon.as_ref().is_some_and(|c| *c != rec.path) {
            continue;
        }
        if !alive(&rec) {
            if let Ok((_, k)) = key(&rec.path) {
                cleanup(&k, &rec);
            }
            continue;
        }
        out.push(rec);
    }
    if let (Some(c), true) = (&canon, out.is_empty()) {
        bail!("{} is not plugged in", c.display());
    }
    Ok(out)
}

/// Records a mount on a plugged disk.
pub fn set_mount(path: &Path, mount_point: &Path, loop_device: &str) -> Result<()> {
    let (_, k) = key(path)?;
    let text = std::fs::read_to_string(record_path(&k))?;
    let mut rec: Plugged = serde_json::from_str(&text)?;
    rec.mount_point = Some(mount_point.to_path_buf());
    rec.loop_device = Some(loop_device.to_string());
    save(&k, &rec)
}
