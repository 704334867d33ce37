//! QEMU: which binary, whether KVM can run a guest here, and the command line for a VM.
//!
//! Disks never reach QEMU as files: each is a `-blockdev` of driver `nbd` on a Unix socket served by
//! the VM's worker through Strata's VHD engine. Only an ISO in the CD/DVD drive is opened by QEMU
//! itself, read-only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use strata_api::{Accelerator, BootDevice, ComKind, CreateVm, DiskBus, NicModel};

/// The QEMU binary: `$STRATA_QEMU`, else `qemu-system-x86_64` from `PATH`.
pub fn binary() -> PathBuf {
    std::env::var_os("STRATA_QEMU")
        .map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from)
}

/// QEMU's version line, or why it can't be run.
pub fn version() -> Result<String, String> {
    let out = Command::new(binary())
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "{}: cannot run: {e} (install qemu-system-x86)",
                binary().display()
            )
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// The CPU model used with an accelerator (recorded in saved states).
pub fn cpu_model(accel: Accelerator) -> &'static str {
    match accel {
        Accelerator::Kvm => "host",
        _ => "max",
    }
}

/// The host CPU's model name (`/proc/cpuinfo`): a KVM guest's state (CPU model `host`) restores
/// only on the same kind of CPU.
pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Whether KVM can run a guest on this host: `Ok` or the reason it can't. `/dev/kvm` existing is
/// not enough (nested or sandboxed hosts expose a KVM that can't run Linux), so QEMU boots a
/// 512-byte boot sector under KVM with the baseline x86-64 CPU model enforced; it writes to the
/// `isa-debug-exit` port, which makes QEMU exit with code 131.
pub fn probe_kvm(scratch: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    // mov al, 0x41; out 0xf4, al; hlt; jmp $-1 — then the boot signature.
    let mut sector = vec![0xB0, 0x41, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
    sector.resize(510, 0);
    sector.extend_from_slice(&[0x55, 0xAA]);
    let image = scratch.join("kvm-probe.img");
    std::fs::write(&image, &sector).map_err(|e| format!("{}: {e}", image.display()))?;
    let drive = format!("file={},format=raw,if=ide", image.display());
    let mut child = Command::new(binary())
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "qemu64,enforce",
            "-machine",
            "pc",
            "-nodefaults",
        ])
        .args([
            "-display",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=1",
        ])
        .args(["-drive", &drive])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary().display()))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&image);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(s) if s.code() == Some(131) => Ok(()),
        Some(_) => Err(format!(
            "a test guest failed under KVM: {}",
            err.lines().last().unwrap_or("no message").trim()
        )),
        None => Err("a test guest hung under KVM".to_string()),
    }
}

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
        }
    }

    /// Disk `i`'s NBD socket.
    pub fn disk(&self, i: usize) -> PathBuf {
        self.qmp.with_file_name(format!("disk{i}.sock"))
    }
}

/// IDE slots: (bus, unit) for each IDE disk in order, then the CD/DVD drive.
fn ide_slot(n: usize) -> (usize, usize) {
    (n / 2, n % 2)
}

/// QEMU's arguments for `vm` (without the binary). QEMU starts paused (`-S`); with `incoming`
/// (the versioned machine type the state was saved with) it waits for `migrate-incoming`.
pub fn args(
    vm: &CreateVm,
    accel: Accelerator,
    sockets: &Sockets,
    incoming: Option<&str>,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-name",
        &format!("{},debug-threads=on", vm.name.replace(',', ",,")),
    ]);
    push(&[
        "-machine",
        "pc",
        "-accel",
        accel.as_str(),
        "-cpu",
        cpu_model(accel),
    ]);
    push(&[
        "-m",
        &vm.memory_mib.to_string(),
        "-smp",
        &vm.cpus.to_string(),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-S",
        "-msg",
        "timestamp=on",
    ]);
    push(&["-vga", "std", "-display", "none"]);
    push(&["-vnc", &format!("unix:{}", sockets.vnc.display())]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", sockets.qmp.display()),
    ]);
    let order: String = vm
        .boot_order
        .iter()
        .map(|b| match b {
            BootDevice::Disk => 'c',
            BootDevice::Cdrom => 'd',
            BootDevice::Network => 'n',
        })
        .collect();
    if !order.is_empty() {
        push(&["-boot", &format!("order={order}")]);
    }
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
        push(&["-chardev", &chardev, "-serial", &format!("chardev:{id}")]);
    }
    let mut ide = 0;
    for (i, d) in vm.disks.iter().enumerate() {
        let node = format!("disk{i}");
        let blockdev = json!({
            "driver": "nbd", "node-name": node, "discard": "unmap",
            "server": { "type": "unix", "path": sockets.disk(i) },
        });
        push(&["-blockdev", &blockdev.to_string()]);
        let device = match d.bus {
            DiskBus::Virtio => format!("virtio-blk-pci,drive={node},id=vd{i}"),
            DiskBus::Ide => {
                let (bus, unit) = ide_slot(ide);
                ide += 1;
                format!("ide-hd,drive={node},bus=ide.{bus},unit={unit},id=hd{i}")
            }
        };
        push(&["-device", &device]);
    }
    if let Some(iso) = &vm.cdrom {
        let blockdev = json!({
            "driver": "raw", "node-name": "cd0", "read-only": true,
            "file": { "driver": "file", "filename": iso, "read-only": true },
        });
        let (bus, unit) = ide_slot(ide);
        push(&["-blockdev", &blockdev.to_string()]);
        push(&[
            "-device",
            &format!("ide-cd,drive=cd0,bus=ide.{bus},unit={unit},id=cd0"),
        ]);
    }
    for (i, n) in vm.nics.iter().enumerate() {
        let model = match n.model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000 => "e1000",
        };
        let mac = n.mac.as_deref().unwrap_or_default();
        push(&["-netdev", &format!("user,id=net{i},restrict=on")]);
        push(&[
            "-device",
            &format!("{model},netdev=net{i},mac={mac},id=nic{i}"),
        ]);
    }
    if let Some(k) = &vm.kernel {
        push(&["-kernel", &k.kernel]);
        if let Some(initrd) = &k.initrd {
            push(&["-initrd", initrd]);
        }
        if !k.cmdline.is_empty() {
            push(&["-append", &k.cmdline]);
        }
    }
    if incoming.is_some() {
        push(&["-incoming", "defer"]);
    }
    a
}

/// How many disks each controller takes (IDE: two channels of two, shared with the CD/DVD drive).
pub const MAX_IDE: usize = 4;
/// virtio disks.
pub const MAX_VIRTIO: usize = 16;
/// Network adapters.
pub const MAX_NICS: usize = 8;
