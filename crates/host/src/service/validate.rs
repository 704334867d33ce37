//! Checks a VM's configuration before it is written: names, sizes, limits, files, MAC addresses.
//! Each error names the setting and the value.

use std::collections::HashSet;
use std::path::Path;

use strata_api::{CreateVm, DiskBus};
use strata_vhd::{Disk, OpenOptions};

use crate::error::HostError;
use crate::qemu::{MAX_IDE, MAX_NICS, MAX_SCSI, MAX_VIRTIO};
use crate::store::VmConfig;

/// Memory limits in MiB.
pub const MEMORY_MIB: (u32, u32) = (16, 1 << 20);
/// vCPU limits.
pub const CPUS: (u32, u32) = (1, 64);
/// Longest automatic start delay and shut-down timeout, in seconds.
pub const MAX_SECS: u32 = 3600;

fn invalid(msg: String) -> HostError {
    HostError::invalid(msg)
}

/// Whether `name` is a valid VM name ("import" is taken by the API's `/v1/vms/import`).
pub fn name(name: &str) -> Result<(), HostError> {
    if name == "import" {
        return Err(invalid(
            "VM name 'import' is reserved (the API's /v1/vms/import): choose another".into(),
        ));
    }
    object_name("VM", name)
}

/// A host network interface's name as the kernel allows it: 1 to 15 bytes, no `/`, blank or
/// `:` (and here only letters, digits, `-`, `_`, `.`, so it is safe wherever it goes).
pub fn interface_name(name: &str) -> Result<(), HostError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid network interface name '{name}': 1 to 15 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Whether `name` is a valid name for a `what` (a VM, a switch).
pub fn object_name(what: &str, name: &str) -> Result<(), HostError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid {what} name '{name}': use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        )))
    }
}

fn absolute_file(what: &str, path: &str) -> Result<(), HostError> {
    if !Path::new(path).is_absolute() {
        return Err(invalid(format!(
            "{what} '{path}': the path must be absolute"
        )));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(invalid(format!("{what} '{path}': not a regular file"))),
        Err(e) => Err(invalid(format!("{what} '{path}': {e}"))),
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), lowercased.
pub fn mac(text: &str) -> Result<String, HostError> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let bytes: Option<Vec<u8>> = (parts.len() == 6)
        .then(|| {
            parts
                .iter()
                .map(|p| {
                    (p.len() == 2)
                        .then(|| u8::from_str_radix(p, 16).ok())
                        .flatten()
                })
                .collect()
        })
        .flatten();
    match bytes {
        Some(b) if b.iter().all(|x| *x == 0) => Err(HostError::conflict(format!(
            "MAC address '{text}' is all zeros: no adapter may use it"
        ))),
        Some(b) if b[0] & 1 == 0 => Ok(b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")),
        Some(_) => Err(HostError::conflict(format!(
            "MAC address '{text}' is a multicast address: the first byte must be even"
        ))),
        None => Err(invalid(format!(
            "invalid MAC address '{text}': expected six hex bytes such as 02:53:54:12:34:56"
        ))),
    }
}

/// Checks `vm` against the limits and the files on the host, and against `others` (the host's
/// other VMs) for disks and MAC addresses used twice. MACs must already be assigned.
pub fn config(vm: &CreateVm, others: &[VmConfig]) -> Result<(), HostError> {
    name(&vm.name)?;
    if let Some(min) = vm.memory_min_mib {
        if !(MEMORY_MIB.0..=vm.memory_mib).contains(&min) {
            return Err(invalid(format!(
                "dynamic memory's minimum {min} MiB: choose {} MiB to the VM's memory ({} MiB)",
                MEMORY_MIB.0, vm.memory_mib
            )));
        }
    }
    if !(MEMORY_MIB.0..=MEMORY_MIB.1).contains(&vm.memory_mib) {
        return Err(invalid(format!(
            "memory {} MiB is out of range: {} MiB to {} MiB",
            vm.memory_mib, MEMORY_MIB.0, MEMORY_MIB.1
        )));
    }
    if !(CPUS.0..=CPUS.1).contains(&vm.cpus) {
        return Err(invalid(format!(
            "{} virtual processors: choose {} to {}",
            vm.cpus, CPUS.0, CPUS.1
        )));
    }
    if vm.shutdown_timeout_secs > MAX_SECS || vm.start_delay_secs > MAX_SECS {
        return Err(invalid(format!(
            "timeouts and delays are at most {MAX_SECS} seconds"
        )));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = vm.boot_order.iter().find(|b| !seen.insert(**b)) {
        return Err(invalid(format!("boot order lists {dup:?} twice")));
    }
    disks(vm, others)?;
    if let Some(iso) = vm.cdrom.as_ref().filter(|i| !i.is_empty()) {
        absolute_file("CD/DVD image", iso)?;
    }
    if let Some(k) = &vm.kernel {
        absolute_file("kernel", &k.kernel)?;
        if let Some(i) = &k.initrd {
            absolute_file("initrd", i)?;
        }
    }
    let mut ports = HashSet::new();
    for c in &vm.com_ports {
        if !(1..=2).contains(&c.port) || !ports.insert(c.port) {
            return Err(invalid(format!(
                "COM{}: there are two COM ports, COM1 and COM2, each once",
                c.port
            )));
        }
        let p = Path::new(&c.path);
        if !p.is_absolute() || !p.parent().is_some_and(Path::is_dir) {
            return Err(invalid(format!(
                "COM{} '{}': the path must be absolute, in an existing folder",
                c.port, c.path
            )));
        }
    }
    nics(vm, others)
}

fn disks(vm: &CreateVm, others: &[VmConfig]) -> Result<(), HostError> {
    let ide =
        vm.disks.iter().filter(|d| d.bus == DiskBus::Ide).count() + usize::from(vm.cdrom.is_some());
    if ide > MAX_IDE {
        return Err(invalid(format!(
            "{ide} IDE devices (disks and the CD/DVD drive): the IDE controller has {MAX_IDE} places; put disks on virtio"
        )));
    }
    let virtio = vm.disks.iter().filter(|d| d.bus == DiskBus::Virtio).count();
    if virtio > MAX_VIRTIO {
        return Err(invalid(format!(
            "{virtio} virtio disks: at most {MAX_VIRTIO}"
        )));
    }
    let scsi = vm.disks.iter().filter(|d| d.bus == DiskBus::Scsi).count();
    if scsi > MAX_SCSI {
        return Err(invalid(format!(
            "{scsi} SCSI disks: the SCSI controller has {MAX_SCSI} places"
        )));
    }
    if let Some(f) = &vm.floppy {
        absolute_file("floppy image", f)?;
        if vm
            .machine
            .as_deref()
            .is_some_and(|m| m.starts_with("pc-q35-"))
        {
            return Err(invalid(format!(
                "VM '{}': a Q35 machine has no floppy controller; use an i440FX machine (--machine pc) for a floppy",
                vm.name
            )));
        }
    }
    super::disks::check_slots(&vm.disks)?;
    let mut mine = HashSet::new();
    for d in &vm.disks {
        absolute_file("disk", &d.path)?;
        let canon = std::fs::canonicalize(&d.path)
            .map_err(|e| invalid(format!("disk '{}': {e}", d.path)))?;
        if !mine.insert(canon.clone()) {
            return Err(invalid(format!("disk '{}' is attached twice", d.path)));
        }
        for o in others {
            if o.vm
                .disks
                .iter()
                .any(|x| std::fs::canonicalize(&x.path).is_ok_and(|c| c == canon))
            {
                return Err(invalid(format!(
                    "disk '{}' is already attached to VM '{}'",
                    d.path, o.vm.name
                )));
            }
            // A parent in another VM's chain (a checkpoint's frozen layer, a template's disk
            // under a linked clone) must never be written: only a template owns its own.
            if !vm.template
                && o.vm.disks.iter().any(|x| {
                    crate::checkpoint::layers::chain_of(&x.path)
                        .iter()
                        .skip(1)
                        .any(|c| *c == canon)
                })
            {
                return Err(invalid(format!(
                    "disk '{}' is a parent in VM '{}''s disk chain (a checkpoint's or a template's layer): writing it would corrupt that VM's disks",
                    d.path, o.vm.name
                )));
            }
        }
        // The disk and its whole chain must open as VHD; no lock is taken (it may be in use by
        // `strata disk` now, which only matters at start).
        let opts = OpenOptions {
            lock: false,
            ..OpenOptions::read()
        };
        Disk::open(&d.path, opts).map_err(|e| invalid(format!("disk '{}': {e}", d.path)))?;
    }
    Ok(())
}

fn nics(vm: &CreateVm, others: &[VmConfig]) -> Result<(), HostError> {
    if vm.nics.len() > MAX_NICS {
        return Err(invalid(format!(
            "{} network adapters: at most {MAX_NICS}",
            vm.nics.len()
        )));
    }
    let mut macs = HashSet::new();
    for n in &vm.nics {
        let m = mac(n.mac.as_deref().unwrap_or_default())?;
        if !macs.insert(m.clone()) {
            return Err(HostError::conflict(format!(
                "MAC address {m} is used twice in this VM"
            )));
        }
        if let Some(o) = others.iter().find(|o| {
            o.vm.nics
                .iter()
                .any(|x| x.mac.as_deref() == Some(m.as_str()))
        }) {
            return Err(HostError::conflict(format!(
                "MAC address {m} is already used by VM '{}'",
                o.vm.name
            )));
        }
    }
    for (i, n) in vm.nics.iter().enumerate() {
        if let Some(b) = n.bandwidth_limit {
            bandwidth(i, b)?;
        }
    }
    let mut slots = HashSet::new();
    for s in vm.nics.iter().filter_map(|n| n.slot) {
        if usize::from(s) >= MAX_NICS || !slots.insert(s) {
            return Err(invalid(format!(
                "network adapter slot {s}: slots are 0 to {} and each is used once",
                MAX_NICS - 1
            )));
        }
    }
    Ok(())
}

/// The bandwidth limits a NIC may have: 8 kbit/s (below, a token bucket cannot pass one
/// frame) to 100 Gbit/s (above, nft's limit overflows).
pub const BANDWIDTH_LIMITS: (u64, u64) = (8_000, 100_000_000_000);

/// A NIC's bandwidth limit, in range.
pub fn bandwidth(nic: usize, bits: u64) -> Result<u64, HostError> {
    let (lo, hi) = BANDWIDTH_LIMITS;
    if (lo..=hi).contains(&bits) {
        Ok(bits)
    } else {
        Err(invalid(format!(
            "NIC {nic}: a bandwidth limit of {bits} bit/s is out of range: choose 8K (8000) to 100G"
        )))
    }
}

/// Gives each new adapter (one without a slot) a slot: the old adapter's at its position when
/// it had one and it is free, else the first free slot. Adapters of VMs made before slots keep
/// none (and their QEMU-chosen PCI addresses, so the guest's interface names stay); their
/// indices are taken, since their devices are named after them.
pub fn assign_slots(nics: &mut [strata_api::NicSpec], old: &[strata_api::NicSpec]) {
    let legacy = |i: usize, n: &strata_api::NicSpec| {
        n.slot.is_none()
            && old
                .get(i)
                .is_some_and(|o| o.slot.is_none() && o.mac == n.mac)
    };
    let is_legacy: Vec<bool> = nics.iter().enumerate().map(|(i, n)| legacy(i, n)).collect();
    let mut used: HashSet<u8> = nics.iter().filter_map(|n| n.slot).collect();
    for (i, _) in is_legacy.iter().enumerate().filter(|(_, l)| **l) {
        used.insert(u8::try_from(i).unwrap_or(u8::MAX));
    }
    for (i, n) in nics.iter_mut().enumerate() {
        if n.slot.is_some() || is_legacy[i] {
            continue;
        }
        let kept = old
            .get(i)
            .and_then(|o| o.slot)
            .filter(|s| !used.contains(s));
        // MAX_NICS is 8: every slot fits a u8.
        let free = (0..u8::try_from(MAX_NICS).unwrap_or(u8::MAX)).find(|s| !used.contains(s));
        if let Some(s) = kept.or(free) {
            used.insert(s);
            n.slot = Some(s);
        }
    }
}

/// A MAC address not used on this host: `02:53:54` (locally administered, "ST") and three random
/// bytes.
pub fn new_mac(taken: &HashSet<String>) -> String {
    loop {
        let r = uuid::Uuid::new_v4();
        let b = r.as_bytes();
        let m = format!("02:53:54:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]);
        if !taken.contains(&m) {
            return m;
        }
    }
}

#[cfg(test)]
mod tests {
    use strata_api::{BootDevice, DiskSpec, NicSpec};

    use super::*;
    use crate::error::ErrorKind;

    fn other(name: &str, mac: &str, disk: Option<&str>) -> VmConfig {
        let mut vm = CreateVm::named(name);
        vm.nics = vec![NicSpec {
            model: strata_api::NicModel::Virtio,
            mac: Some(mac.to_string()),
            slot: None,
            ..NicSpec::new(None)
        }];
        vm.disks = disk
            .map(|d| DiskSpec {
                path: d.to_string(),
                bus: DiskBus::Virtio,
                slot: None,
            })
            .into_iter()
            .collect();
        VmConfig {
            schema: crate::store::SCHEMA,
            id: "0".repeat(32),
            vm,
        }
    }

    fn refused(vm: &CreateVm, others: &[VmConfig], words: &str) {
        let e = config(vm, others).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
        assert!(e.message.contains(words), "{e} (wanted: {words})");
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "web-1", "db_2.prod", &"x".repeat(64)] {
            assert!(name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert_eq!(name(bad).unwrap_err().kind, ErrorKind::Invalid, "{bad}");
        }
    }

    #[test]
    fn macs_are_normalized_and_multicast_refused() {
        assert_eq!(mac("02-53-54-0A-0b-0C").unwrap(), "02:53:54:0a:0b:0c");
        assert!(mac("01:00:5e:00:00:01")
            .unwrap_err()
            .message
            .contains("multicast"));
        for bad in [
            "02:53:54:0a:0b",
            "02:53:54:0a:0b:0c:0d",
            "zz:53:54:0a:0b:0c",
            "2:53:54:a:b:c",
        ] {
            assert!(mac(bad).is_err(), "{bad}");
        }
        let taken: HashSet<String> = ["02:53:54:00:00:01".to_string()].into();
        let m = new_mac(&taken);
        assert!(m.starts_with("02:53:54:") && !taken.contains(&m));
        assert_eq!(mac(&m).unwrap(), m);
    }

    #[test]
    fn limits_and_duplicates_are_refused_by_name() {
        let mut vm = CreateVm::named("a");
        assert!(config(&vm, &[]).is_ok());
        vm.memory_mib = 8;
        refused(&vm, &[], "memory 8 MiB is out of range");
        vm.memory_mib = 512;
        vm.cpus = 65;
        refused(&vm, &[], "65 virtual processors");
        vm.cpus = 1;
        vm.shutdown_timeout_secs = MAX_SECS + 1;
        refused(&vm, &[], "at most 3600 seconds");
        vm.shutdown_timeout_secs = 60;
        vm.boot_order = vec![BootDevice::Disk, BootDevice::Disk];
        refused(&vm, &[], "boot order lists Disk twice");
        vm.boot_order = vec![BootDevice::Disk];
        vm.cdrom = Some("relative.iso".into());
        refused(&vm, &[], "the path must be absolute");
        vm.cdrom = None;
        vm.nics = vec![
            NicSpec {
                model: strata_api::NicModel::E1000,
                mac: Some("02:53:54:00:00:01".into()),
                slot: None,
                ..NicSpec::new(None)
            };
            2
        ];
        let conflict = |vm: &CreateVm, others: &[VmConfig], words: &str| {
            let e = config(vm, others).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
            assert!(e.message.contains(words), "{e} (wanted: {words})");
        };
        conflict(&vm, &[], "used twice in this VM");
        vm.nics.truncate(1);
        conflict(
            &vm,
            &[other("b", "02:53:54:00:00:01", None)],
            "already used by VM 'b'",
        );
        vm.nics = vec![vm.nics[0].clone(); MAX_NICS + 1];
        refused(&vm, &[], "9 network adapters");
    }

    #[test]
    fn a_disk_is_attached_to_one_vm_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.vhd");
        strata_vhd::create(&path, 1 << 20, strata_vhd::NewDisk::Fixed).unwrap();
        let p = path.display().to_string();
        let mut vm = CreateVm::named("a");
        vm.disks = vec![
            DiskSpec {
                path: p.clone(),
                bus: DiskBus::Ide,
                slot: None,
            };
            2
        ];
        refused(&vm, &[], "is attached twice");
        vm.disks.truncate(1);
        assert!(config(&vm, &[]).is_ok());
        refused(
            &vm,
            &[other("b", "02:53:54:00:00:09", Some(&p))],
            "already attached to VM 'b'",
        );
        vm.disks = vec![
            DiskSpec {
                path: p.clone(),
                bus: DiskBus::Ide,
                slot: None,
            };
            MAX_IDE + 1
        ];
        refused(&vm, &[], "IDE devices");
        std::fs::write(&path, b"not a vhd").unwrap();
        vm.disks.truncate(1);
        refused(&vm, &[], &format!("disk '{p}'"));
    }

    #[test]
    fn new_adapters_get_free_slots_and_old_ones_keep_theirs() {
        let nic = |mac: &str, slot: Option<u8>| NicSpec {
            mac: Some(mac.into()),
            slot,
            ..NicSpec::new(None)
        };
        // A VM made before slots: its adapters keep none (and their indices are taken).
        let old = [
            nic("02:00:00:00:00:01", None),
            nic("02:00:00:00:00:02", None),
        ];
        let mut new = old.to_vec();
        new.push(nic("02:00:00:00:00:03", None));
        assign_slots(&mut new, &old);
        let slots: Vec<_> = new.iter().map(|n| n.slot).collect();
        assert_eq!(slots, [None, None, Some(2)]);
        // A new VM: slots in order; a removed adapter's slot is reused by the next one.
        let mut fresh = vec![
            nic("02:00:00:00:00:04", None),
            nic("02:00:00:00:00:05", None),
        ];
        assign_slots(&mut fresh, &[]);
        assert_eq!((fresh[0].slot, fresh[1].slot), (Some(0), Some(1)));
        let mut after = vec![fresh[1].clone(), nic("02:00:00:00:00:06", None)];
        assign_slots(&mut after, &fresh);
        assert_eq!((after[0].slot, after[1].slot), (Some(1), Some(0)));
    }

    #[test]
    fn bandwidth_limits_are_bounded() {
        assert!(bandwidth(0, 7_999)
            .unwrap_err()
            .message
            .contains("out of range"));
        assert!(bandwidth(0, 100_000_000_001).is_err());
        assert_eq!(bandwidth(0, 1_000_000).unwrap(), 1_000_000);
        let mut vm = CreateVm::named("v");
        vm.nics = vec![NicSpec {
            mac: Some("02:00:00:00:00:09".into()),
            bandwidth_limit: Some(1),
            ..NicSpec::new(None)
        }];
        refused(&vm, &[], "bandwidth limit of 1 bit/s");
    }
}
