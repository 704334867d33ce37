//! Unmounting what `strata disk mount` mounted: the file system, then the loop device.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

/// Unmounts `mount_point` and detaches the loop device.
pub fn unmount(mount_point: &Path, loop_device: Option<&str>) -> Result<()> {
    let status = Command::new("umount").arg(mount_point).status()?;
    if !status.success() {
        bail!("cannot unmount {} (is it busy?)", mount_point.display());
    }
    if let Some(dev) = loop_device {
        let _ = Command::new("losetup").args(["-d", dev]).status();
    }
    Ok(())
}
