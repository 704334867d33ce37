//! `strata disk mount`: plug a disk and mount its file system.
//!
//! The kernel's NBD client is used by nothing here: many kernels (this project's CI among them)
//! have no `nbd` module. Instead the disk's server also exposes the disk as a file through FUSE,
//! the loop driver maps that file (with partition scanning), and the partition is mounted. Every
//! read and write still goes through Strata's VHD engine.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::plug::{self, PlugOptions, Plugged, UndoChoice};

/// Plugs `path` and mounts partition `partition` (default: the first, or the whole disk when it
/// has no partition table) on `dir`.
pub fn mount(
    path: &Path,
    dir: &Path,
    read_only: bool,
    direct: bool,
    partition: Option<u32>,
) -> Result<Plugged> {
    if !dir.is_dir() {
        bail!("{}: not a folder to mount on", dir.display());
    }
    let dir = &std::fs::canonicalize(dir)?;
    let rec = plug::plug(
        path,
        &PlugOptions {
            read_only,
            direct,
            tcp: None,
            fuse: true,
        },
    )?;
    match attach_and_mount(&rec, dir, read_only, partition) {
        Ok(dev) => {
            plug::set_mount(path, dir, &dev)?;
            plug::query(Some(path))?
                .pop()
                .context("the plugged disk vanished")
        }
        Err(e) => {
            let _ = plug::unplug(Some(path), UndoChoice::Discard);
            Err(e)
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what} (util-linux)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wait_for(p: &str, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if Path::new(p).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Maps the FUSE file on a loop device and mounts the partition; returns the loop device.
fn attach_and_mount(
    rec: &Plugged,
    dir: &Path,
    read_only: bool,
    partition: Option<u32>,
) -> Result<String> {
    let file = plug::fuse_dir(&rec.socket).join(strata_nbd::file::FILE_NAME);
    let mut losetup = Command::new("losetup");
    losetup.args(["-f", "--show", "-P"]);
    if read_only {
        losetup.arg("-r");
    }
    let dev = run(
        losetup.arg(&file),
        "losetup (a loop device is needed to mount a disk)",
    )?;
    let target = match partition {
        Some(n) => {
            let p = format!("{dev}p{n}");
            if !wait_for(&p, Duration::from_secs(3)) {
                let _ = Command::new("losetup").args(["-d", &dev]).status();
                bail!("{}: the disk has no partition {n}", rec.path.display());
            }
            p
        }
        None if wait_for(&format!("{dev}p1"), Duration::from_secs(2)) => format!("{dev}p1"),
        None => dev.clone(),
    };
    let mut m = Command::new("mount");
    if read_only {
        m.args(["-o", "ro"]);
    }
    if let Err(e) = run(m.arg(&target).arg(dir), "mount") {
        let _ = Command::new("losetup").args(["-d", &dev]).status();
        return Err(e);
    }
    Ok(dev)
}

/// Whether something is mounted on `dir` (per /proc/self/mountinfo).
fn is_mounted(dir: &Path) -> bool {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| Path::new(m) == want)
        })
}

/// Unmounts `mount_point` (if still mounted) and detaches the loop device (if it still maps
/// this disk's FUSE file: a recorded device may since have been reused for something else).
pub fn unmount(mount_point: &Path, loop_device: Option<&str>, fuse_dir: &Path) -> Result<()> {
    if is_mounted(mount_point) {
        let out = Command::new("umount").arg(mount_point).output()?;
        if !out.status.success() && is_mounted(mount_point) {
            bail!(
                "cannot unmount {}: {} (close the files open there and unplug again)",
                mount_point.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    if let Some(dev) = loop_device {
        let name = dev.trim_start_matches("/dev/");
        let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
            .unwrap_or_default();
        if Path::new(backing.trim()).starts_with(fuse_dir) {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
    Ok(())
}
