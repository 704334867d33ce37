//! The disks a worker serves: opened through the VHD engine (with their locks) and served over
//! NBD, one socket each, at the start and while the VM runs (hot add and remove).
//!
//! Hot add: the disk is opened and served, then QEMU connects its `-blockdev` node to the socket,
//! then the device appears at the disk's slot; each step is undone if a later one fails.
//! Hot remove goes the other way: the guest lets the device go, QEMU closes the node, the
//! server stops, and the engine is flushed and closed, which releases the disk's lock. The list
//! is what `supervise` flushes when QEMU ends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use strata_api::DiskSpec;
use strata_nbd::{serve_disk, Backend, ServeErrorKind, ServedDisk};
use strata_vhd::{Disk, OpenOptions};

use crate::error::{ErrorKind, HostError};
use crate::qemu::disks::{blockdev, disk_ids, hot_device, DiskIds};
use crate::qemu::Sockets;
use crate::qmp::Qmp;

/// How long a guest gets to let a removed disk go (ACPI hot-plug for virtio).
const RELEASE_LIMIT: Duration = Duration::from_secs(30);

/// One served disk.
pub(super) struct Served {
    /// Its device's id in QEMU (`vd3`, `sd0`, …).
    pub device: String,
    /// The VHD file.
    pub path: String,
    disk: ServedDisk,
}

impl Served {
    /// The engine, to flush.
    pub fn backend(&self) -> &Arc<strata_nbd::VhdBackend> {
        &self.disk.backend
    }
}

/// Every disk the worker serves now.
#[derive(Default)]
pub(super) struct ServedDisks(Mutex<Vec<Served>>);

impl ServedDisks {
    /// Runs `f` on the list.
    pub fn with<T>(&self, f: impl FnOnce(&mut Vec<Served>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Flushes every disk; the failures, by path.
    pub fn flush_all(&self) -> Vec<String> {
        self.with(|list| {
            list.iter()
                .filter_map(|s| {
                    s.backend()
                        .flush()
                        .err()
                        .map(|e| format!("{}: cannot flush: {e}", s.path))
                })
                .collect()
        })
    }

    /// Switches each disk whose active layer is `from` to a new layer `to` (made over it), in
    /// order; stops at the first failure (the disks switched so far stay switched).
    pub fn switch(&self, switches: &[(String, String)]) -> Result<(), HostError> {
        self.with(|list| {
            for (from, to) in switches {
                let s = list.iter_mut().find(|s| &s.path == from).ok_or_else(|| {
                    HostError::conflict(format!("the worker serves no disk '{from}'"))
                })?;
                s.backend()
                    .switch_to_child(std::path::Path::new(to))
                    .map_err(|e| HostError::new(ErrorKind::Io, e.to_string()))?;
                s.path.clone_from(to);
            }
            Ok(())
        })
    }

    /// Stops serving every disk and closes it (QEMU has ended): their locks go.
    pub fn close_all(&self) -> Vec<String> {
        let all: Vec<Served> = self.with(std::mem::take);
        all.into_iter()
            .filter_map(|s| close(s).err().map(|e| e.message))
            .collect()
    }

    /// The served disks' paths.
    pub fn paths(&self) -> Vec<String> {
        self.with(|list| list.iter().map(|s| s.path.clone()).collect())
    }
}

/// Opens a disk (with its parents, locked for writing) and serves it on its socket; with
/// `undo`, its undo disk (made when missing) over it.
fn open_and_serve(
    d: &DiskSpec,
    ids: &DiskIds,
    sockets: &Sockets,
    undo: bool,
) -> Result<Served, HostError> {
    let conflict = |e: strata_vhd::VhdError| HostError::new(ErrorKind::Conflict, e.to_string());
    let path = if undo {
        let base = std::path::Path::new(&d.path);
        let u = strata_vhd::ops::undo::undo_path(base);
        if !u.exists() {
            strata_vhd::ops::undo::create(base).map_err(conflict)?;
        }
        u.display().to_string()
    } else {
        d.path.clone()
    };
    let disk = Disk::open(&path, OpenOptions::write()).map_err(conflict)?;
    let socket = sockets.disk(&ids.socket);
    let served = serve_disk(disk, &socket, None).map_err(|e| match e.kind {
        ServeErrorKind::Io(io) => HostError::io(&socket, "listen on", io),
        ServeErrorKind::InUse => HostError::conflict(format!(
            "{}: another server is already serving on it",
            socket.display()
        )),
    })?;
    Ok(Served {
        device: ids.device.clone(),
        path,
        disk: served,
    })
}

/// Serves every disk of `disks` before QEMU starts.
pub(super) fn serve_all(
    disks: &[DiskSpec],
    sockets: &Sockets,
    undo: bool,
) -> Result<ServedDisks, HostError> {
    let mut out = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        out.push(open_and_serve(d, &disk_ids(i, d), sockets, undo)?);
    }
    Ok(ServedDisks(Mutex::new(out)))
}

/// Stops serving a disk, then flushes and closes it (its lock goes).
fn close(served: Served) -> Result<(), HostError> {
    let path = served.path.clone();
    let backend = served
        .disk
        .stop()
        .map_err(|e| HostError::new(ErrorKind::Hung, format!("disk '{path}': {e}")))?;
    backend
        .flush()
        .map_err(|e| HostError::new(ErrorKind::Io, format!("disk '{path}': cannot flush: {e}")))
}

/// Adds disk `d` (with its slot) to the running VM.
pub(super) fn add(
    qmp: &Qmp,
    list: &ServedDisks,
    d: &DiskSpec,
    sockets: &Sockets,
    machine: &str,
) -> Result<(), HostError> {
    let failed = |e: HostError| e.context(format!("cannot add disk '{}'", d.path));
    if d.bus == strata_api::DiskBus::Scsi && !qmp.has_device("scsi0")? {
        return Err(failed(HostError::unsupported(
            "the VM has no SCSI controller while it runs (it was made before slots and has no SCSI disk): add the disk while the VM is off",
        )));
    }
    let ids = disk_ids(0, d);
    let served = open_and_serve(d, &ids, sockets, false).map_err(failed)?;
    if let Err(e) = qmp.execute("blockdev-add", Some(blockdev(&ids, sockets))) {
        let _ = close(served);
        return Err(failed(e));
    }
    if let Err(e) = qmp.execute("device_add", Some(hot_device(d, &ids, machine))) {
        // A reply lost after the device appeared: the disk is in; keep it.
        if qmp.has_device(&ids.device).unwrap_or(false) {
            list.with(|l| l.push(served));
            return Ok(());
        }
        let _ = qmp.execute("blockdev-del", Some(json!({ "node-name": ids.node })));
        let _ = close(served);
        return Err(failed(e));
    }
    list.with(|l| l.push(served));
    Ok(())
}

/// Removes disk `d` from the running VM: the guest lets the device go, then the disk is closed.
pub(super) fn remove(qmp: &Qmp, list: &ServedDisks, d: &DiskSpec) -> Result<(), HostError> {
    let ids = disk_ids(0, d);
    if qmp.has_device(&ids.device)? {
        qmp.execute("device_del", Some(json!({ "id": ids.device })))?;
        let start = Instant::now();
        while qmp.has_device(&ids.device)? {
            if start.elapsed() > RELEASE_LIMIT {
                return Err(HostError::new(
                    ErrorKind::Hung,
                    format!(
                        "the guest did not let disk '{}' go within {} s (does it handle ACPI hot-plug?): it stays in the VM and in its settings; QEMU removes it if the guest lets it go later (try again then), or when the VM is turned off",
                        d.path,
                        RELEASE_LIMIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The device is gone from the guest: from here the removal is done, whatever follows.
    // QEMU closes its NBD connection with the node.
    if let Err(e) = qmp.execute("blockdev-del", Some(json!({ "node-name": ids.node }))) {
        if !e.message.contains("not found") {
            eprintln!("strata worker: disk '{}': its QEMU node stays: {e}", d.path);
        }
    }
    let served = list.with(|l| {
        l.iter()
            .position(|s| s.device == ids.device)
            .map(|i| l.remove(i))
    });
    if let Some(Err(e)) = served.map(close) {
        eprintln!("strata worker: disk '{}' was removed, but: {e}", d.path);
    }
    Ok(())
}
