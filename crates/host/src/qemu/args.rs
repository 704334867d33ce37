//! QEMU's command line for a VM.
//!
//! Disks never reach QEMU as files: each is a `-blockdev` of driver `nbd` on a Unix socket served by
//! the VM's worker through Strata's VHD engine. Only an ISO in the CD/DVD drive is opened by QEMU
//! itself, read-only.

use std::path::{Path, PathBuf};

use serde_json::json;
use strata_api::{Accelerator, BootDevice, ComKind, CreateVm, NicModel, NicSpec};

use super::cpu_model;

/// Where a running VM's sockets live.
#[derive(Debug, Clone)]
pub struct Sockets {
    /// QMP.
    pub qmp: PathBuf,
    /// COM1 as QEMU serves it (the worker is its only client).
    pub serial: PathBuf,
    /// Where `strata vm console` attaches (served by the worker).
    pub console: PathBuf,
    /// The worker's control socket.
    pub control: PathBuf,
    /// VNC display.
    pub vnc: PathBuf,
    /// The guest agent's channel (QEMU serves it).
    pub agent: PathBuf,
    /// swtpm's control socket (the VM's TPM).
    pub tpm: PathBuf,
}

impl Sockets {
    /// The sockets in `run_dir`.
    pub fn new(run_dir: &Path) -> Self {
        Self {
            qmp: run_dir.join("qmp.sock"),
            serial: run_dir.join("serial.sock"),
            console: run_dir.join("console.sock"),
            control: run_dir.join("control.sock"),
            vnc: run_dir.join("vnc.sock"),
            agent: run_dir.join("agent.sock"),
            tpm: run_dir.join("swtpm.sock"),
        }
    }

    /// A disk's NBD socket (its file name from [`super::disks::DiskIds`]).
    pub fn disk(&self, name: &str) -> PathBuf {
        self.qmp.with_file_name(name)
    }
}

/// How QEMU is to start: which accelerator and machine type, and whether it waits for a saved
/// state.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// `kvm` or `tcg`.
    pub accel: Accelerator,
    /// The versioned machine type (the VM's pinned one, or the saved state's).
    pub machine: &'a str,
    /// Wait for `migrate-incoming` (a restore).
    pub incoming: bool,
    /// The VM's id (its NICs' taps are named after it).
    pub vm_id: &'a str,
    /// The firmware's and the TPM's arguments (`qemu::firmware`), made by the worker, which
    /// prepares what they name.
    pub firmware: Vec<String>,
}

/// QEMU's arguments for `vm` (without the binary). QEMU starts paused (`-S`); with
/// `launch.incoming` it waits for `migrate-incoming`.
pub fn args(vm: &CreateVm, launch: &Launch<'_>, sockets: &Sockets) -> Vec<String> {
    let mut a = base(vm, launch, sockets);
    a.extend(boot_order(vm));
    a.extend(com_ports(vm, sockets));
    a.extend(super::disks::disks(vm, sockets, launch.machine));
    a.extend(nics(vm, launch.vm_id, launch.machine));
    a.extend(agent(vm, sockets));
    // Devices added after the network adapters, so turning them on never moves a NIC's address.
    a.extend(floppy_and_tablet(vm));
    a.extend(launch.firmware.iter().cloned());
    a.extend(kernel(vm));
    if launch.incoming {
        a.extend(strings(&["-incoming", "defer"]));
    }
    a
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// Name, machine, accelerator, CPU, memory, and the fixed devices (display, monitor).
fn base(vm: &CreateVm, launch: &Launch<'_>, sockets: &Sockets) -> Vec<String> {
    let name = format!("{},debug-threads=on", vm.name.replace(',', ",,"));
    let (memory, cpus) = (vm.memory_mib.to_string(), vm.cpus.to_string());
    // Secure boot keeps OVMF's variables behind SMM.
    let machine = if vm.secure_boot {
        format!("{},smm=on", launch.machine)
    } else {
        launch.machine.to_string()
    };
    let vnc = format!("unix:{}", sockets.vnc.display());
    let qmp = format!("unix:{},server=on,wait=off", sockets.qmp.display());
    strings(&[
        "-name",
        &name,
        "-machine",
        &machine,
        "-accel",
        launch.accel.as_str(),
        "-cpu",
        cpu_model(launch.accel),
        "-m",
        &memory,
        "-smp",
        &cpus,
        "-nodefaults",
        "-no-user-config",
        "-S",
        "-msg",
        "timestamp=on",
        "-vga",
        "std",
        "-display",
        "none",
        "-vnc",
        &vnc,
        "-qmp",
        &qmp,
    ])
}

fn boot_order(vm: &CreateVm) -> Vec<String> {
    let order: String = vm
        .boot_order
        .iter()
        .map(|b| match b {
            BootDevice::Disk => 'c',
            BootDevice::Cdrom => 'd',
            BootDevice::Network => 'n',
        })
        .collect();
    if order.is_empty() {
        return Vec::new();
    }
    strings(&["-boot", &format!("order={order}")])
}

/// COM1 and COM2: a file or socket of the user's, else COM1 is the worker's console socket.
fn com_ports(vm: &CreateVm, sockets: &Sockets) -> Vec<String> {
    let mut a = Vec::new();
    for port in 1..=2u8 {
        let id = format!("com{port}");
        let chardev = match vm.com_ports.iter().find(|c| c.port == port) {
            Some(c) => match c.kind {
                ComKind::File => format!("file,id={id},path={}", c.path.replace(',', ",,")),
                ComKind::Socket => format!(
                    "socket,id={id},path={},server=on,wait=off",
                    c.path.replace(',', ",,")
                ),
            },
            None if port == 1 => format!(
                "socket,id={id},path={},server=on,wait=off",
                sockets.serial.display()
            ),
            None => continue,
        };
        a.extend(strings(&[
            "-chardev",
            &chardev,
            "-serial",
            &format!("chardev:{id}"),
        ]));
    }
    a
}

/// The floppy drive (its image as a raw file) and the USB tablet.
fn floppy_and_tablet(vm: &CreateVm) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(img) = &vm.floppy {
        let blockdev = json!({
            "driver": "raw", "node-name": "fd0",
            "file": { "driver": "file", "filename": img },
        });
        a.extend(strings(&[
            "-blockdev",
            &blockdev.to_string(),
            "-device",
            "floppy,unit=0,drive=fd0,id=fd0",
        ]));
    }
    if vm.memory_min_mib.is_some() {
        a.extend(strings(&["-device", "virtio-balloon-pci,id=balloon0"]));
    }
    if vm.usb_tablet {
        a.extend(strings(&[
            "-device",
            "qemu-xhci,id=xhci0",
            "-device",
            "usb-tablet,bus=xhci0.0,id=tablet0",
        ]));
    }
    a
}

/// Network adapters: on a switch, a tap QEMU creates (named after the VM's id and the adapter's
/// slot; the worker puts it on the switch's bridge before the guest runs, and it goes when QEMU
/// ends); otherwise QEMU's user-mode network, restricted to the host. An adapter with a slot sits
/// at PCI slot 0x18 + slot (after every disk) on an i440FX machine, so adapters added while the
/// VM ran are where a restore expects them. (A Q35 machine's root bus takes no hot-plugged
/// devices, and its slot 0x1f is the ICH9's: there QEMU places adapters itself.)
fn nics(vm: &CreateVm, vm_id: &str, machine: &str) -> Vec<String> {
    let fixed = !machine.starts_with("pc-q35-");
    let mut a = Vec::new();
    for (i, n) in vm.nics.iter().enumerate() {
        let slot = n.slot.map_or(i, usize::from);
        let tap = strata_net::link::tap_name(vm_id, slot);
        a.extend(strings(&[
            "-netdev",
            &netdev(n, slot, &tap),
            "-device",
            &nic_device(n, i, fixed),
        ]));
    }
    a
}

/// A NIC's backend: its tap, or the user-mode network.
pub(crate) fn netdev(n: &NicSpec, slot: usize, tap: &str) -> String {
    match n.switch {
        Some(_) => format!("tap,id=net{slot},ifname={tap},script=no,downscript=no"),
        None => format!("user,id=net{slot},restrict=on"),
    }
}

/// QEMU's device model of a NIC.
pub(crate) fn nic_model(model: NicModel) -> &'static str {
    match model {
        NicModel::Virtio => "virtio-net-pci",
        NicModel::E1000 => "e1000",
    }
}

fn nic_device(n: &NicSpec, index: usize, fixed: bool) -> String {
    let mac = n.mac.as_deref().unwrap_or_default();
    let model = nic_model(n.model);
    match n.slot {
        Some(s) if fixed => format!(
            "{model},netdev=net{s},mac={mac},id=nic{s},addr={:#x}",
            NIC_PCI_BASE + usize::from(s)
        ),
        Some(s) => format!("{model},netdev=net{s},mac={mac},id=nic{s}"),
        None => format!("{model},netdev=net{index},mac={mac},id=nic{index}"),
    }
}

/// The PCI slot of a NIC's slot 0.
pub(crate) const NIC_PCI_BASE: usize = 0x18;

/// The guest agent's channel: a virtio-serial port named `org.qemu.guest_agent.0`, its host end
/// a socket QEMU serves for the worker.
fn agent(vm: &CreateVm, sockets: &Sockets) -> Vec<String> {
    if !vm.agent {
        return Vec::new();
    }
    let chardev = format!(
        "socket,id=agent0,path={},server=on,wait=off",
        sockets.agent.display()
    );
    strings(&[
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        &chardev,
        "-device",
        "virtserialport,bus=vser0.0,chardev=agent0,name=org.qemu.guest_agent.0",
    ])
}

fn kernel(vm: &CreateVm) -> Vec<String> {
    let Some(k) = &vm.kernel else {
        return Vec::new();
    };
    let mut a = strings(&["-kernel", &k.kernel]);
    if let Some(initrd) = &k.initrd {
        a.extend(strings(&["-initrd", initrd]));
    }
    if !k.cmdline.is_empty() {
        a.extend(strings(&["-append", &k.cmdline]));
    }
    a
}

/// Network adapters.
pub const MAX_NICS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use strata_api::{ComPort, DiskBus, DiskSpec, KernelBoot, NicSpec};

    fn vm() -> CreateVm {
        let mut vm = CreateVm::named("web,1");
        vm.disks = vec![
            DiskSpec {
                path: "/v/a.vhd".into(),
                bus: DiskBus::Ide,
                slot: None,
            },
            DiskSpec {
                path: "/v/b.vhd".into(),
                bus: DiskBus::Virtio,
                slot: None,
            },
            DiskSpec {
                path: "/v/c.vhd".into(),
                bus: DiskBus::Ide,
                slot: None,
            },
        ];
        vm.cdrom = Some("/iso/x.iso".into());
        vm.nics = vec![
            NicSpec {
                model: NicModel::E1000,
                mac: Some("02:53:54:00:00:01".into()),
                slot: None,
                ..NicSpec::new(None)
            },
            NicSpec {
                model: NicModel::Virtio,
                mac: Some("02:53:54:00:00:02".into()),
                slot: None,
                ..NicSpec::new(Some("lan"))
            },
        ];
        vm.com_ports = vec![ComPort {
            port: 2,
            kind: ComKind::File,
            path: "/tmp/a,b".into(),
        }];
        vm.kernel = Some(KernelBoot {
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            cmdline: "console=ttyS0".into(),
        });
        vm
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn launch(machine: &str, incoming: bool) -> Launch<'_> {
        Launch {
            accel: Accelerator::Tcg,
            machine,
            incoming,
            vm_id: "0123456789abcdef0123456789abcdef",
            firmware: Vec::new(),
        }
    }

    #[test]
    fn the_pinned_machine_type_is_passed_and_a_restore_waits_for_its_state() {
        let s = Sockets::new(Path::new("/run/x"));
        let a = args(&vm(), &launch("pc-i440fx-9.2", false), &s);
        assert_eq!(after(&a, "-machine"), ["pc-i440fx-9.2"]);
        assert!(after(&a, "-incoming").is_empty());
        assert_eq!(after(&a, "-cpu"), ["max"]);
        let a = args(&vm(), &launch("pc-i440fx-8.2", true), &s);
        assert_eq!(after(&a, "-machine"), ["pc-i440fx-8.2"]);
        assert_eq!(after(&a, "-incoming"), ["defer"]);
    }

    #[test]
    fn devices_are_laid_out_on_their_buses() {
        let s = Sockets::new(Path::new("/run/x"));
        let a = args(&vm(), &launch("pc-i440fx-10.0", false), &s);
        assert_eq!(after(&a, "-name"), ["web,,1,debug-threads=on"]);
        assert_eq!(
            after(&a, "-device"),
            [
                "ide-hd,drive=disk0,bus=ide.0,unit=0,id=hd0",
                "virtio-blk-pci,drive=disk1,id=vd1",
                "ide-hd,drive=disk2,bus=ide.0,unit=1,id=hd2",
                "ide-cd,drive=cd0,bus=ide.1,unit=0,id=cd0",
                "e1000,netdev=net0,mac=02:53:54:00:00:01,id=nic0",
                "virtio-net-pci,netdev=net1,mac=02:53:54:00:00:02,id=nic1",
            ]
        );
        let blockdevs = after(&a, "-blockdev");
        assert!(blockdevs[1].contains("/run/x/disk1.sock"), "{blockdevs:?}");
        assert_eq!(
            after(&a, "-chardev"),
            [
                "socket,id=com1,path=/run/x/serial.sock,server=on,wait=off",
                "file,id=com2,path=/tmp/a,,b",
            ]
        );
        assert_eq!(after(&a, "-boot"), ["order=cdn"]);
        assert_eq!(after(&a, "-append"), ["console=ttyS0"]);
        assert_eq!(after(&a, "-initrd"), ["/i"]);
        assert_eq!(
            after(&a, "-netdev"),
            [
                "user,id=net0,restrict=on",
                "tap,id=net1,ifname=stt-01234567-1,script=no,downscript=no",
            ]
        );
    }
}
