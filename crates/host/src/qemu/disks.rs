//! Where a VM's disks sit in QEMU: their controllers, addresses and names.
//!
//! Each disk is a `-blockdev` of driver `nbd` on a socket the worker serves, and a device on its
//! controller. A disk with a slot (every disk of a VM made since slots) is named after its bus
//! and slot (`vd3`, `sd0`, `hd1`) and placed by it: a virtio disk at PCI slot
//! [`DISK_PCI_BASE`] + slot on an i440FX machine, a SCSI disk at target `slot`. So a disk added
//! or removed while the VM runs leaves every other device where it was, and a restore finds the
//! devices the saved state describes. Such a VM always has its SCSI controller (at PCI slot
//! [`SCSI_PCI_SLOT`] on i440FX), so SCSI disks can come and go while it runs.
//!
//! Disks of VMs made before slots keep their index-based names and QEMU-chosen addresses (and
//! a SCSI controller only when they have a SCSI disk), so their saved states still restore.

use serde_json::{json, Value};
use strata_api::{CreateVm, DiskBus, DiskSpec};

use super::args::strings;
use super::Sockets;

/// How many disks each controller takes (IDE: two channels of two, shared with the CD/DVD drive).
pub const MAX_IDE: usize = 4;
/// virtio disks.
pub const MAX_VIRTIO: usize = 16;
/// Disks on the SCSI controller (Virtual Server's SCSI adapter took 7).
pub const MAX_SCSI: usize = 7;
/// The PCI slot of a virtio disk's slot 0 on i440FX (slots 0x08–0x17; network adapters follow
/// at 0x18).
pub const DISK_PCI_BASE: usize = 0x08;
/// The SCSI controller's PCI slot on i440FX.
pub const SCSI_PCI_SLOT: usize = 0x07;

/// The names of one disk in QEMU and its socket's file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIds {
    /// The `-blockdev` node.
    pub node: String,
    /// The device's id.
    pub device: String,
    /// The NBD socket's file name in the run folder.
    pub socket: String,
}

fn prefix(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio => "vd",
        DiskBus::Ide => "hd",
        DiskBus::Scsi => "sd",
    }
}

/// The names of disk `index` of a VM.
pub fn disk_ids(index: usize, d: &DiskSpec) -> DiskIds {
    let p = prefix(d.bus);
    match d.slot {
        Some(s) => DiskIds {
            node: format!("disk-{p}{s}"),
            device: format!("{p}{s}"),
            socket: format!("disk-{p}{s}.sock"),
        },
        None => DiskIds {
            node: format!("disk{index}"),
            device: format!("{p}{index}"),
            socket: format!("disk{index}.sock"),
        },
    }
}

/// Whether the VM has disks and every one has a slot (it was made since slots): then the SCSI
/// controller is always there. (A VM without disks keeps the layout it had.)
pub fn slotted(vm: &CreateVm) -> bool {
    !vm.disks.is_empty() && vm.disks.iter().all(|d| d.slot.is_some())
}

fn is_q35(machine: &str) -> bool {
    machine.starts_with("pc-q35-")
}

/// IDE places: (bus, unit) for each IDE disk in order, then the CD/DVD drive.
fn ide_place(n: usize, q35: bool) -> (usize, usize) {
    // PIIX: two buses of two units; Q35's AHCI: six ports of one unit.
    if q35 {
        (n, 0)
    } else {
        (n / 2, n % 2)
    }
}

/// The `-blockdev` of a disk: the worker's NBD socket.
pub fn blockdev(ids: &DiskIds, sockets: &Sockets) -> Value {
    json!({
        "driver": "nbd", "node-name": ids.node, "discard": "unmap",
        "server": { "type": "unix", "path": sockets.disk(&ids.socket) },
    })
}

/// The device of a disk with a slot, as `device_add` takes it (virtio or SCSI; IDE disks are
/// never added to a running VM).
pub fn hot_device(d: &DiskSpec, ids: &DiskIds, machine: &str) -> Value {
    let slot = usize::from(d.slot.unwrap_or_default());
    match d.bus {
        DiskBus::Scsi => json!({
            "driver": "scsi-hd", "drive": ids.node, "id": ids.device, "bus": "scsi0.0",
            "channel": 0, "scsi-id": slot, "lun": 0,
        }),
        _ if is_q35(machine) => json!({
            "driver": "virtio-blk-pci", "drive": ids.node, "id": ids.device,
        }),
        _ => json!({
            "driver": "virtio-blk-pci", "drive": ids.node, "id": ids.device,
            "addr": format!("{:#x}", DISK_PCI_BASE + slot),
        }),
    }
}

/// The SCSI controller, when the VM has one.
fn controller(vm: &CreateVm, q35: bool) -> Option<String> {
    if slotted(vm) {
        Some(if q35 {
            "virtio-scsi-pci,id=scsi0".into()
        } else {
            format!("virtio-scsi-pci,id=scsi0,addr={SCSI_PCI_SLOT:#x}")
        })
    } else {
        vm.disks
            .iter()
            .any(|d| d.bus == DiskBus::Scsi)
            .then(|| "virtio-scsi-pci,id=scsi0".into())
    }
}

/// Each disk on its NBD socket, then the CD/DVD drive after the IDE disks.
pub(super) fn disks(vm: &CreateVm, sockets: &Sockets, machine: &str) -> Vec<String> {
    let q35 = is_q35(machine);
    let mut a = Vec::new();
    let (mut ide, mut scsi) = (0, 0);
    if let Some(c) = controller(vm, q35) {
        a.extend(strings(&["-device", &c]));
    }
    for (i, d) in vm.disks.iter().enumerate() {
        let ids = disk_ids(i, d);
        let (node, id) = (&ids.node, &ids.device);
        let device = match (d.bus, d.slot) {
            (DiskBus::Ide, _) => {
                let (bus, unit) = ide_place(ide, q35);
                ide += 1;
                format!("ide-hd,drive={node},bus=ide.{bus},unit={unit},id={id}")
            }
            (DiskBus::Virtio, Some(s)) if !q35 => format!(
                "virtio-blk-pci,drive={node},id={id},addr={:#x}",
                DISK_PCI_BASE + usize::from(s)
            ),
            (DiskBus::Virtio, _) => format!("virtio-blk-pci,drive={node},id={id}"),
            (DiskBus::Scsi, slot) => {
                let target = slot.map_or(scsi, usize::from);
                scsi += 1;
                format!("scsi-hd,drive={node},bus=scsi0.0,channel=0,scsi-id={target},lun=0,id={id}")
            }
        };
        a.extend(strings(&[
            "-blockdev",
            &blockdev(&ids, sockets).to_string(),
            "-device",
            &device,
        ]));
    }
    a.extend(cdrom(vm, ide_place(ide, q35)));
    a
}

/// The CD/DVD drive, at the IDE place after the disks.
fn cdrom(vm: &CreateVm, (bus, unit): (usize, usize)) -> Vec<String> {
    let Some(iso) = &vm.cdrom else {
        return Vec::new();
    };
    if iso.is_empty() {
        // An empty drive: media can be inserted while the VM runs.
        let device = format!("ide-cd,bus=ide.{bus},unit={unit},id=cd0");
        return strings(&["-device", &device]);
    }
    let blockdev = json!({
        "driver": "raw", "node-name": "cd0", "read-only": true,
        "file": { "driver": "file", "filename": iso, "read-only": true },
    });
    let device = format!("ide-cd,drive=cd0,bus=ide.{bus},unit={unit},id=cd0");
    strings(&["-blockdev", &blockdev.to_string(), "-device", &device])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn disk(path: &str, bus: DiskBus, slot: Option<u8>) -> DiskSpec {
        DiskSpec {
            path: path.into(),
            bus,
            slot,
        }
    }

    fn devices(a: &[String]) -> Vec<&str> {
        a.windows(2)
            .filter(|w| w[0] == "-device")
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn slotted_disks_are_placed_and_named_by_their_slot() {
        let mut vm = CreateVm::named("a");
        vm.disks = vec![
            disk("/v/a.vhd", DiskBus::Virtio, Some(0)),
            disk("/v/b.vhd", DiskBus::Virtio, Some(5)),
            disk("/v/c.vhd", DiskBus::Scsi, Some(3)),
            disk("/v/d.vhd", DiskBus::Ide, Some(0)),
        ];
        vm.cdrom = Some(String::new());
        let s = Sockets::new(Path::new("/run/x"));
        let a = disks(&vm, &s, "pc-i440fx-10.0");
        assert_eq!(
            devices(&a),
            [
                "virtio-scsi-pci,id=scsi0,addr=0x7",
                "virtio-blk-pci,drive=disk-vd0,id=vd0,addr=0x8",
                "virtio-blk-pci,drive=disk-vd5,id=vd5,addr=0xd",
                "scsi-hd,drive=disk-sd3,bus=scsi0.0,channel=0,scsi-id=3,lun=0,id=sd3",
                "ide-hd,drive=disk-hd0,bus=ide.0,unit=0,id=hd0",
                "ide-cd,bus=ide.0,unit=1,id=cd0",
            ]
        );
        assert!(a.iter().any(|x| x.contains("/run/x/disk-vd5.sock")));
        // What a hot add of the same disk asks for matches its place at start.
        let ids = disk_ids(1, &vm.disks[1]);
        assert_eq!(
            hot_device(&vm.disks[1], &ids, "pc-i440fx-10.0")["addr"],
            "0xd"
        );
        let ids = disk_ids(2, &vm.disks[2]);
        assert_eq!(
            hot_device(&vm.disks[2], &ids, "pc-i440fx-10.0")["scsi-id"],
            3
        );
        // Q35: QEMU places PCI devices itself.
        let a = disks(&vm, &s, "pc-q35-10.0");
        assert_eq!(devices(&a)[0], "virtio-scsi-pci,id=scsi0");
        assert_eq!(devices(&a)[1], "virtio-blk-pci,drive=disk-vd0,id=vd0");
    }

    #[test]
    fn disks_made_before_slots_keep_their_layout() {
        let mut vm = CreateVm::named("a");
        vm.disks = vec![
            disk("/v/a.vhd", DiskBus::Virtio, None),
            disk("/v/b.vhd", DiskBus::Scsi, None),
        ];
        let s = Sockets::new(Path::new("/run/x"));
        assert_eq!(
            devices(&disks(&vm, &s, "pc-i440fx-10.0")),
            [
                "virtio-scsi-pci,id=scsi0",
                "virtio-blk-pci,drive=disk0,id=vd0",
                "scsi-hd,drive=disk1,bus=scsi0.0,channel=0,scsi-id=0,lun=0,id=sd1",
            ]
        );
        vm.disks.pop();
        let a = disks(&vm, &s, "pc-i440fx-10.0");
        assert_eq!(devices(&a), ["virtio-blk-pci,drive=disk0,id=vd0"]);
        assert!(a.iter().any(|x| x.contains("/run/x/disk0.sock")));
    }
}
