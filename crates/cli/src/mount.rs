//! `strata disk mount`: plug a disk and mount its file system (`strata_plug::Plugs::mount`: FUSE
//! + a loop device + `mount`).

use std::path::Path;

use anyhow::Result;
use strata_plug::{MountOptions, Plugged};

use crate::plug;

/// Plugs `path` and mounts partition `partition` (default: the first, or the whole disk when it
/// has no partition table) on `dir`.
pub fn mount(
    path: &Path,
    dir: &Path,
    read_only: bool,
    direct: bool,
    partition: Option<u32>,
) -> Result<Plugged> {
    let opts = MountOptions {
        mode: plug::mode(read_only, direct)?,
        partition,
    };
    Ok(plug::plugs()?.mount(path, dir, &opts)?)
}
