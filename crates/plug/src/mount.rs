//! Mounting a plugged disk's file system.
//!
//! The kernel's NBD client is used by nothing here: many kernels (this project's CI among them)
//! have no `nbd` module. Instead the disk's server also exposes the disk as a file through FUSE,
//! the loop driver maps that file (with partition scanning), and the partition is mounted with
//! util-linux's `losetup` and `mount`. Every read and write still goes through Strata's VHD
//! engine.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Context, PlugError, Result};

/// Maps the FUSE file `file` on a loop device (with its partitions) and mounts partition
/// `partition` (default: the first, or the whole disk when it has no partition table) on `dir`.
/// Returns the loop device; on failure nothing stays attached. `disk` names the disk in errors.
pub(crate) fn attach_and_mount(
    disk: &Path,
    file: &Path,
    dir: &Path,
    read_only: bool,
    partition: Option<u32>,
) -> Result<String> {
    let mut losetup = Command::new("losetup");
    losetup.args(["-f", "--show", "-P"]);
    if read_only {
        losetup.arg("-r");
    }
    let dev = run(
        losetup.arg(file),
        "losetup (a loop device is needed to mount a disk)",
    )?;
    let target = match partition {
        Some(n) => {
            let p = format!("{dev}p{n}");
            if !wait_for(&p, Duration::from_secs(3)) {
                detach(&dev);
                return Err(PlugError::mount(format!(
                    "{}: the disk has no partition {n}",
                    disk.display()
                )));
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
        detach(&dev);
        return Err(e);
    }
    Ok(dev)
}

/// Unmounts `mount_point` (if still mounted) and detaches the loop device (if it still maps a
/// file in `fuse_dir`: a recorded device may since have been reused for something else).
pub(crate) fn unmount(
    mount_point: &Path,
    loop_device: Option<&str>,
    fuse_dir: &Path,
) -> Result<()> {
    if is_mounted(mount_point) {
        let out = Command::new("umount")
            .arg(mount_point)
            .output()
            .ctx(|| "cannot run umount (util-linux)")?;
        if !out.status.success() && is_mounted(mount_point) {
            return Err(PlugError::mount(format!(
                "cannot unmount {}: {} (close the files open there and unplug again)",
                mount_point.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    if let Some(dev) = loop_device {
        let name = dev.trim_start_matches("/dev/");
        let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
            .unwrap_or_default();
        if Path::new(backing.trim()).starts_with(fuse_dir) {
            detach(dev);
        }
    }
    Ok(())
}

fn detach(dev: &str) {
    let _ = Command::new("losetup").args(["-d", dev]).status();
}

/// Runs a tool; its trimmed stdout, or its stderr as the error.
fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .ctx(|| format!("cannot run {what} (util-linux)"))?;
    if !out.status.success() {
        return Err(PlugError::mount(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
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

/// Whether something is mounted on `dir` (per /proc/self/mountinfo).
fn is_mounted(dir: &Path) -> bool {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounted_in(&info, &want)
}

/// Whether `dir` is a mount point in a mountinfo text (field 5).
fn mounted_in(mountinfo: &str, dir: &Path) -> bool {
    mountinfo.lines().any(|l| {
        l.split_whitespace()
            .nth(4)
            .is_some_and(|m| Path::new(m) == dir)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_field_five_of_mountinfo() {
        let info = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
                    90 22 0:52 / /tmp/x/mnt rw,relatime - ext4 /dev/loop0p1 rw\n";
        assert!(mounted_in(info, Path::new("/tmp/x/mnt")));
        assert!(mounted_in(info, Path::new("/")));
        assert!(!mounted_in(info, Path::new("/tmp/x")));
        assert!(!mounted_in(info, Path::new("/dev/loop0p1")));
    }
}
