//! A VM's disks one at a time (`strata vm disk add|remove`), also while it runs (Hyper-V R2's
//! hot add of storage): the settings are saved first, then the worker serves the disk and QEMU
//! plugs it in (or the guest lets it go and the worker closes it); a failure puts the old
//! settings back.
//!
//! Slots: every disk of a VM made since slots has one, unique on its bus, which places its
//! device (`qemu::disks`). A running VM takes virtio disks (on i440FX, whose PCI slots
//! hot-plug) and SCSI disks; IDE never changes while a VM runs, and its boot disk stays.

use std::collections::HashSet;

use strata_api::{DiskBus, DiskSpec, VmState};

use super::lifecycle::busy;
use super::{validate, Service};
use crate::error::HostError;
use crate::events::Code;
use crate::qemu::{MAX_IDE, MAX_SCSI, MAX_VIRTIO};
use crate::store::VmConfig;
use crate::worker::Verb;

/// How many slots a bus has.
fn places(bus: DiskBus) -> usize {
    match bus {
        DiskBus::Virtio => MAX_VIRTIO,
        DiskBus::Scsi => MAX_SCSI,
        DiskBus::Ide => MAX_IDE,
    }
}

fn bus_name(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio => "virtio",
        DiskBus::Scsi => "SCSI",
        DiskBus::Ide => "IDE",
    }
}

/// Gives each new disk (one without a slot) the first free slot of its bus; a disk that was
/// already attached (same path, same bus) keeps its slot, or none when it had none. While one
/// disk made before slots stays, new disks get none either: the old disks' names and places
/// follow their positions, which slots would collide with.
pub fn assign_slots(disks: &mut [DiskSpec], old: &[DiskSpec]) {
    // Each old disk is matched once (a disk listed twice is refused later, by name).
    let mut matched = vec![false; old.len()];
    let mut before = |d: &DiskSpec| {
        let i = (0..old.len())
            .find(|&i| !matched[i] && old[i].path == d.path && old[i].bus == d.bus)?;
        matched[i] = true;
        Some(old[i].slot)
    };
    let kept: Vec<Option<Option<u8>>> = disks.iter().map(&mut before).collect();
    let mut used: HashSet<(DiskBus, u8)> = HashSet::new();
    for (d, k) in disks.iter_mut().zip(&kept) {
        if d.slot.is_none() {
            if let Some(slot) = k {
                d.slot = *slot;
            }
        }
        if let Some(s) = d.slot {
            used.insert((d.bus, s));
        }
    }
    if disks
        .iter()
        .zip(&kept)
        .any(|(d, k)| d.slot.is_none() && k.is_some())
    {
        return;
    }
    for (d, k) in disks.iter_mut().zip(&kept) {
        if d.slot.is_some() || k.is_some() {
            continue;
        }
        // Every bus has at most 16 places: a slot fits a u8.
        let max = u8::try_from(places(d.bus)).unwrap_or(u8::MAX);
        if let Some(s) = (0..max).find(|s| !used.contains(&(d.bus, *s))) {
            used.insert((d.bus, s));
            d.slot = Some(s);
        }
    }
}

/// Refuses slots out of their bus's range or used twice on one bus.
pub fn check_slots(disks: &[DiskSpec]) -> Result<(), HostError> {
    let mut used = HashSet::new();
    for d in disks {
        if let Some(s) = d.slot {
            if usize::from(s) >= places(d.bus) || !used.insert((d.bus, s)) {
                return Err(HostError::invalid(format!(
                    "disk '{}': {} slot {s}: slots are 0 to {} and each is used once",
                    d.path,
                    bus_name(d.bus),
                    places(d.bus) - 1
                )));
            }
        }
    }
    Ok(())
}

/// Finds a disk by index (`1`) or path.
fn find(c: &VmConfig, disk: &str) -> Result<usize, HostError> {
    let by_index = disk.parse::<usize>().ok().filter(|i| *i < c.vm.disks.len());
    let canon = |p: &str| std::fs::canonicalize(p).ok();
    let by_path = || {
        let want = canon(disk);
        c.vm.disks
            .iter()
            .position(|d| d.path == disk || (want.is_some() && canon(&d.path) == want))
    };
    by_index.or_else(by_path).ok_or_else(|| {
        HostError::not_found(format!(
            "VM '{}' has no disk '{disk}' (give its index or path: `strata vm show {}`)",
            c.vm.name, c.vm.name
        ))
    })
}

/// What a running VM allows: IDE never changes, virtio needs i440FX's hot-plug slots, a disk
/// without a slot (made before slots) stays where QEMU put it.
fn check_hot(c: &VmConfig, d: &DiskSpec, what: &str) -> Result<(), HostError> {
    let name = &c.vm.name;
    let q35 =
        c.vm.machine
            .as_deref()
            .is_some_and(|m| m.starts_with("pc-q35-"));
    let why = match d.bus {
        _ if c.vm.undo_disks => Some("the VM has undo disks, which change only while it is off"),
        DiskBus::Ide => Some("an IDE disk cannot be added or removed while the VM runs: use virtio or SCSI (`PATH:virtio`, `PATH:scsi`), or turn the VM off"),
        DiskBus::Virtio if q35 => Some("a Q35 machine's root bus takes no hot-plugged disks: use SCSI (`PATH:scsi`), or turn the VM off"),
        _ if d.slot.is_none() => Some("the VM's disks were attached by an older Strata, without slots: turn the VM off to change them"),
        _ => None,
    };
    why.map_or(Ok(()), |w| {
        Err(HostError::unsupported(format!(
            "VM '{name}': cannot {what} '{}': {w}",
            d.path
        )))
    })
}

impl Service {
    /// Refuses `what` for a VM with checkpoints: its current disks are layers in its folder,
    /// which would be lost with it (delete the checkpoints first: they merge back).
    pub(super) fn refuse_with_checkpoints(&self, name: &str, what: &str) -> Result<(), HostError> {
        let tree = crate::checkpoint::Tree::load(&self.home.vm_dir(name))?;
        if tree.checkpoints.is_empty() {
            return Ok(());
        }
        Err(HostError::conflict(format!(
            "VM '{name}' has checkpoints: cannot {what} (its current disks are layers in its folder); delete the checkpoints first (`strata checkpoint delete {name} …`), which merges them back into its disks"
        )))
    }

    /// Whether a change is hot (the VM runs) or cold (settings only); other states refuse.
    fn disk_mode(name: &str, state: VmState, what: &str) -> Result<bool, HostError> {
        match state {
            VmState::Off | VmState::Crashed => Ok(false),
            VmState::Running => Ok(true),
            VmState::Paused => Err(busy(
                name,
                state,
                &format!("{what} (the guest must take part: resume it first)"),
            )),
            s => Err(busy(name, s, what)),
        }
    }

    /// Saves `new` (then lets the host-wide `define` lock go), runs `hot` when the VM runs,
    /// and puts `old` back if that fails.
    fn change_disks(
        &self,
        define: std::sync::MutexGuard<'_, ()>,
        old: &VmConfig,
        new: &VmConfig,
        hot: Option<&dyn Fn() -> Result<(), HostError>>,
    ) -> Result<(), HostError> {
        validate::config(&new.vm, &self.others(&new.vm.name))?;
        self.home.save(new)?;
        drop(define);
        if let Err(e) = hot.map_or(Ok(()), |f| f()) {
            self.home.save(old)?;
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn add_disk(&self, name: &str, spec: DiskSpec, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (old, st) = self.current_locked(name)?;
        let hot = Self::disk_mode(name, st.state, "add a disk")?;
        let mut new = old.clone();
        new.vm.disks.push(DiskSpec { slot: None, ..spec });
        assign_slots(&mut new.vm.disks, &old.vm.disks);
        let disk = new
            .vm
            .disks
            .last()
            .cloned()
            .unwrap_or_else(|| unreachable!());
        if hot {
            check_hot(&old, &disk, "add disk")?;
        }
        let add = || self.request(&new, user, Verb::DiskAdd { disk: disk.clone() });
        self.change_disks(d, &old, &new, hot.then_some(&add as _))?;
        self.events.log(
            Code::VmChanged,
            Some(name),
            user,
            &format!(
                "disk '{}' added on {}{}{}",
                disk.path,
                bus_name(disk.bus),
                disk.slot.map_or(String::new(), |s| format!(" slot {s}")),
                if hot { " while running" } else { "" }
            ),
        );
        Ok(())
    }

    pub(super) fn remove_disk(&self, name: &str, disk: &str, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (old, st) = self.current_locked(name)?;
        let hot = Self::disk_mode(name, st.state, "remove a disk")?;
        let index = find(&old, disk)?;
        self.refuse_with_checkpoints(name, "remove a disk")?;
        let mut new = old.clone();
        let gone = new.vm.disks.remove(index);
        if hot {
            if index == 0 {
                return Err(HostError::conflict(format!(
                    "VM '{name}': disk '{}' is its boot disk, which stays while the VM runs: turn the VM off to remove it",
                    gone.path
                )));
            }
            check_hot(&old, &gone, "remove disk")?;
        }
        let remove = || {
            let verb = Verb::DiskRemove { disk: gone.clone() };
            self.request(&old, user, verb)
        };
        self.change_disks(d, &old, &new, hot.then_some(&remove as _))?;
        self.events.log(
            Code::VmChanged,
            Some(name),
            user,
            &format!(
                "disk '{}' removed{} (the file is kept)",
                gone.path,
                if hot { " while running" } else { "" }
            ),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &str, bus: DiskBus, slot: Option<u8>) -> DiskSpec {
        DiskSpec {
            path: path.into(),
            bus,
            slot,
        }
    }

    #[test]
    fn new_disks_take_the_first_free_slot_of_their_bus_and_old_ones_keep_theirs() {
        let old = vec![
            disk("/a", DiskBus::Virtio, Some(0)),
            disk("/b", DiskBus::Virtio, Some(2)),
        ];
        // The list as a `set --disk` sends it: no slots.
        let mut new = vec![
            disk("/b", DiskBus::Virtio, None),
            disk("/c", DiskBus::Virtio, None),
            disk("/d", DiskBus::Scsi, None),
            disk("/a", DiskBus::Ide, None),
        ];
        assign_slots(&mut new, &old);
        let slots: Vec<_> = new.iter().map(|d| d.slot).collect();
        assert_eq!(slots, [Some(2), Some(0), Some(0), Some(0)]);
        assert!(check_slots(&new).is_ok());
        new[1].slot = Some(2);
        let e = check_slots(&new).unwrap_err();
        assert!(e.message.contains("disk '/c': virtio slot 2"), "{e}");
        new[1].slot = Some(16);
        assert!(check_slots(&new).is_err());
        // Beside a disk made before slots, a new disk gets none (their names would collide).
        let old = vec![disk("/legacy", DiskBus::Virtio, None)];
        let mut new = vec![
            disk("/legacy", DiskBus::Virtio, None),
            disk("/new", DiskBus::Virtio, None),
        ];
        assign_slots(&mut new, &old);
        assert_eq!(new[1].slot, None);
        // Off, with the old disk gone, slots are given again.
        let mut new = vec![disk("/new", DiskBus::Virtio, None)];
        assign_slots(&mut new, &old);
        assert_eq!(new[0].slot, Some(0));
    }
}
