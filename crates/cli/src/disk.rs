//! `strata disk …`: virtual hard disks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Subcommand, ValueEnum};
use strata_vhd::ops::{check, compact, convert, inspect, merge, resize, set_parent, undo};
use strata_vhd::NewDisk;

use crate::plug;
use crate::print_json;
use crate::progress::Bar;
use crate::size::parse_size;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VhdType {
    Dynamic,
    Fixed,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutType {
    Dynamic,
    Fixed,
    Raw,
}

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Create a disk: dynamic (default) or fixed with --size, or differencing with --parent.
    Create {
        path: PathBuf,
        /// Virtual size, with a unit: 512M, 20G … (not with --parent)
        #[arg(long, value_parser = parse_size, required_unless_present = "parent")]
        size: Option<u64>,
        #[arg(long = "type", value_enum, default_value = "dynamic")]
        kind: VhdType,
        /// Block size of a dynamic disk (power of two, 4K to 256M; default 2M)
        #[arg(long, value_parser = parse_size)]
        block_size: Option<u64>,
        /// Make a differencing disk of this parent (its size is the parent's)
        #[arg(long, conflicts_with_all = ["size", "block_size"])]
        parent: Option<PathBuf>,
    },
    /// Show everything in a disk's footer and header, and its chain.
    Inspect {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a disk and its parent link; --repair fixes what can be fixed without touching data.
    Check {
        path: PathBuf,
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Reconnect a differencing disk to its moved or renamed parent.
    SetParent {
        child: PathBuf,
        parent: PathBuf,
        /// Accept a parent whose unique id differs from the one the child recorded
        #[arg(long)]
        force: bool,
    },
    /// Merge a differencing disk into its parent (then delete it), or with --to flatten its
    /// chain into a new disk.
    Merge {
        child: PathBuf,
        #[arg(long)]
        to: Option<PathBuf>,
        /// Type of the new disk (with --to)
        #[arg(long = "type", value_enum, default_value = "dynamic", requires = "to")]
        kind: VhdType,
    },
    /// Rebuild a dynamic disk at its minimal size, dropping zero blocks.
    Compact {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Copy a VHD (through its chain), a raw image or a block device into a new disk.
    Convert {
        src: PathBuf,
        dst: PathBuf,
        #[arg(long = "type", value_enum)]
        kind: OutType,
        /// Block size of a dynamic output
        #[arg(long, value_parser = parse_size)]
        block_size: Option<u64>,
    },
    /// Bring in a disk of another platform (qcow2, VMDK, VDI, VHDX, raw …), read through QEMU's
    /// own format drivers (qemu-nbd), as a new VHD (zeros left unallocated).
    Import {
        src: PathBuf,
        dst: PathBuf,
        /// dynamic (default) or fixed
        #[arg(long = "type", value_enum, default_value = "dynamic")]
        kind: OutType,
    },
    /// Change a disk's virtual size.
    Resize {
        path: PathBuf,
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Allow a smaller size (only if the part cut off holds no data)
        #[arg(long)]
        allow_shrink: bool,
    },
    /// Serve a disk over NBD in the background and print its URI (writes go to an undo disk
    /// unless --direct or --read-only).
    Plug {
        path: PathBuf,
        #[arg(long)]
        read_only: bool,
        /// Write to the VHD itself instead of an undo disk
        #[arg(long)]
        direct: bool,
        /// Also listen on TCP: a port (on 127.0.0.1) or ADDRESS:PORT
        #[arg(long)]
        tcp: Option<String>,
    },
    /// Stop serving a disk (unmounting it first); an undo disk is committed or discarded.
    Unplug {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        path: Option<PathBuf>,
        #[arg(long)]
        all: bool,
        /// Merge the undo disk's changes into the VHD
        #[arg(long, conflicts_with = "discard")]
        commit: bool,
        /// Throw the undo disk's changes away
        #[arg(long)]
        discard: bool,
    },
    /// List plugged disks.
    Query {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        path: Option<PathBuf>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Plug a disk and mount its file system (the first partition by default) on DIR.
    Mount {
        path: PathBuf,
        dir: PathBuf,
        #[arg(long)]
        read_only: bool,
        /// Write to the VHD itself instead of an undo disk
        #[arg(long)]
        direct: bool,
        /// Partition number (default: 1, or the whole disk when it has no partition table)
        #[arg(long)]
        partition: Option<u32>,
    },
    /// The background server of a plugged disk (started by `plug`).
    #[command(hide = true)]
    Serve {
        path: PathBuf,
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        read_only: bool,
        #[arg(long)]
        tcp: Option<String>,
        #[arg(long)]
        fuse: Option<PathBuf>,
    },
    /// Undo disks (BASE.vud): create, commit into the base, or discard.
    Undo {
        #[arg(value_enum)]
        action: UndoAction,
        base: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UndoAction {
    Create,
    Commit,
    Discard,
}

fn dynamic(block_size: Option<u64>) -> Result<NewDisk> {
    let bs = block_size.unwrap_or(u64::from(strata_vhd::header::DEFAULT_BLOCK_SIZE));
    let Ok(block_size) = u32::try_from(bs) else {
        bail!("block size {bs} is too large (at most 256M)")
    };
    Ok(NewDisk::Dynamic { block_size })
}

/// Runs one `strata disk` command.
pub fn run(cmd: DiskCommand) -> Result<ExitCode> {
    match cmd {
        DiskCommand::Create {
            path,
            size,
            kind,
            block_size,
            parent,
        } => create_disk(&path, size, kind, block_size, parent.as_deref())?,
        DiskCommand::Inspect { path, json } => inspect_disk(&path, json)?,
        DiskCommand::Check { path, repair, json } => return check_disk(&path, repair, json),
        DiskCommand::SetParent {
            child,
            parent,
            force,
        } => set_disk_parent(&child, &parent, force)?,
        DiskCommand::Merge { child, to, kind } => merge_disk(&child, to.as_deref(), kind)?,
        DiskCommand::Compact { path, json } => compact_disk(&path, json)?,
        DiskCommand::Convert {
            src,
            dst,
            kind,
            block_size,
        } => convert_disk(&src, &dst, kind, block_size)?,
        DiskCommand::Resize {
            path,
            size,
            allow_shrink,
        } => resize_disk(&path, size, allow_shrink)?,
        DiskCommand::Import { src, dst, kind } => {
            let target = match kind {
                OutType::Fixed => convert::Target::Vhd(NewDisk::Fixed),
                OutType::Dynamic => convert::Target::Vhd(dynamic(None)?),
                OutType::Raw => bail!("import makes a VHD: --type dynamic or fixed"),
            };
            crate::disk_import::import(&src, &dst, target)?;
        }
        DiskCommand::Plug {
            path,
            read_only,
            direct,
            tcp,
        } => plug_disk(&path, read_only, direct, tcp)?,
        DiskCommand::Unplug {
            path,
            all: _,
            commit,
            discard,
        } => unplug_disk(path.as_deref(), commit, discard)?,
        DiskCommand::Query { path, all: _, json } => query_disks(path.as_deref(), json)?,
        DiskCommand::Mount {
            path,
            dir,
            read_only,
            direct,
            partition,
        } => mount_disk(&path, &dir, read_only, direct, partition)?,
        DiskCommand::Serve {
            path,
            socket,
            read_only,
            tcp,
            fuse,
        } => crate::serve::serve(&path, &socket, read_only, tcp.as_deref(), fuse.as_deref())?,
        DiskCommand::Undo { action, base } => undo_disk(action, &base)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `strata disk create`: a differencing disk with `--parent`, else a dynamic or fixed one.
fn create_disk(
    path: &Path,
    size: Option<u64>,
    kind: VhdType,
    block_size: Option<u64>,
    parent: Option<&Path>,
) -> Result<()> {
    if let Some(parent) = parent {
        strata_vhd::create_differencing(path, parent)?;
        println!(
            "created differencing disk {} (parent {})",
            path.display(),
            parent.display()
        );
        return Ok(());
    }
    let size = size.unwrap_or_default();
    let new = match kind {
        VhdType::Fixed => NewDisk::Fixed,
        VhdType::Dynamic => dynamic(block_size)?,
    };
    for w in strata_vhd::create(path, size, new)? {
        eprintln!("strata: warning: {w}");
    }
    println!(
        "created {} disk {} ({size} bytes)",
        kind_name(kind),
        path.display()
    );
    Ok(())
}

/// `strata disk inspect`.
fn inspect_disk(path: &Path, json: bool) -> Result<()> {
    let info = inspect::inspect(path)?;
    if json {
        print_json(&info)
    } else {
        crate::disk_text::print_info(&info);
        Ok(())
    }
}

/// `strata disk check`: exit 1 when an error is found (repaired or not).
fn check_disk(path: &Path, repair: bool, json: bool) -> Result<ExitCode> {
    let report = check::check(path, repair)?;
    if json {
        print_json(&report)?;
    } else {
        for r in &report.repairs {
            println!("repaired: {r}");
        }
        for e in &report.errors {
            println!("error: {e}");
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
        if report.ok() {
            println!("{}: no errors found", path.display());
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `strata disk set-parent`.
fn set_disk_parent(child: &Path, parent: &Path, force: bool) -> Result<()> {
    set_parent::set_parent(child, parent, force)?;
    println!("{} now has parent {}", child.display(), parent.display());
    Ok(())
}

/// `strata disk merge`: into the parent in place, or with `--to` the whole chain into a new disk.
fn merge_disk(child: &Path, to: Option<&Path>, kind: VhdType) -> Result<()> {
    let Some(to) = to else {
        let parent = merge::merge_into_parent(child, &Bar::new("merging"))?;
        println!(
            "merged {} into {} and removed it",
            child.display(),
            parent.display()
        );
        return Ok(());
    };
    let target = match kind {
        VhdType::Fixed => convert::Target::Vhd(NewDisk::Fixed),
        VhdType::Dynamic => convert::dynamic(),
    };
    merge::merge_to(child, to, target, &Bar::new("merging"))?;
    println!(
        "wrote the chain of {} into {}",
        child.display(),
        to.display()
    );
    Ok(())
}

/// `strata disk compact`.
fn compact_disk(path: &Path, json: bool) -> Result<()> {
    let c = compact::compact(path, &Bar::new("compacting"))?;
    if json {
        return print_json(&c);
    }
    println!(
        "compacted {}: {} → {} bytes ({} zero blocks dropped)",
        path.display(),
        c.before,
        c.after,
        c.zero_blocks_dropped
    );
    Ok(())
}

/// `strata disk convert`.
fn convert_disk(src: &Path, dst: &Path, kind: OutType, block_size: Option<u64>) -> Result<()> {
    let target = match kind {
        OutType::Fixed => convert::Target::Vhd(NewDisk::Fixed),
        OutType::Dynamic => convert::Target::Vhd(dynamic(block_size)?),
        OutType::Raw => convert::Target::Raw,
    };
    let source = convert::Source::open(src)?;
    convert::convert(&source, dst, target, &Bar::new("converting"))?;
    println!("converted {} into {}", src.display(), dst.display());
    Ok(())
}

/// `strata disk resize`.
fn resize_disk(path: &Path, size: u64, allow_shrink: bool) -> Result<()> {
    resize::resize(path, size, allow_shrink)?;
    println!("resized {} to {size} bytes", path.display());
    Ok(())
}

/// `strata disk plug`: prints the NBD URI (and the TCP one with `--tcp`).
fn plug_disk(path: &Path, read_only: bool, direct: bool, tcp: Option<String>) -> Result<()> {
    let rec = plug::plug(
        path,
        &plug::PlugOptions {
            read_only,
            direct,
            tcp,
            fuse: false,
        },
    )?;
    println!("{}", rec.uri);
    if let Some(t) = &rec.tcp_uri {
        println!("{t}");
    }
    Ok(())
}

/// `strata disk unplug`: one disk, or all with no path (`--all`).
fn unplug_disk(path: Option<&Path>, commit: bool, discard: bool) -> Result<()> {
    let choice = match (commit, discard) {
        (true, _) => plug::UndoChoice::Commit,
        (_, true) => plug::UndoChoice::Discard,
        _ => plug::UndoChoice::Ask,
    };
    for line in plug::unplug(path, choice)? {
        eprintln!("{line}");
    }
    Ok(())
}

/// `strata disk query`: one disk, or all with no path (`--all`).
fn query_disks(path: Option<&Path>, json: bool) -> Result<()> {
    let list = plug::query(path)?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no disk is plugged in");
    }
    for r in &list {
        let undo = r
            .undo_path
            .as_ref()
            .map(|u| format!(" undo {}", u.display()))
            .unwrap_or_default();
        let mnt = r
            .mount_point
            .as_ref()
            .map(|m| format!(" mounted on {}", m.display()))
            .unwrap_or_default();
        println!("{} {} ({:?}){undo}{mnt}", r.path.display(), r.uri, r.mode);
    }
    Ok(())
}

/// `strata disk mount`.
fn mount_disk(
    path: &Path,
    dir: &Path,
    read_only: bool,
    direct: bool,
    partition: Option<u32>,
) -> Result<()> {
    let rec = crate::mount::mount(path, dir, read_only, direct, partition)?;
    println!(
        "mounted {} on {} ({})",
        rec.path.display(),
        dir.display(),
        rec.uri
    );
    Ok(())
}

/// `strata disk undo create|commit|discard`.
fn undo_disk(action: UndoAction, base: &Path) -> Result<()> {
    match action {
        UndoAction::Create => println!("created undo disk {}", undo::create(base)?.display()),
        UndoAction::Commit => {
            undo::commit(base, &Bar::new("committing"))?;
            println!("committed the undo disk into {}", base.display());
        }
        UndoAction::Discard => {
            undo::discard(base)?;
            println!("discarded the undo disk of {}", base.display());
        }
    }
    Ok(())
}

fn kind_name(k: VhdType) -> &'static str {
    match k {
        VhdType::Dynamic => "dynamic",
        VhdType::Fixed => "fixed",
    }
}
