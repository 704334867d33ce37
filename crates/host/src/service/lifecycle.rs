//! Changing, deleting, starting and controlling VMs; the automatic start and stop actions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use strata_api::{
    Accelerator, CreateVm, NicSpec, SetVm, StartAction, StopAction, StopVmsReport, VmState,
};

use super::{validate, Command, Service};
use crate::error::{ErrorKind, HostError};
use crate::events::Code;
use crate::qemu::QemuInfo;
use crate::status;
use crate::worker::{self, saved, SavedMeta, Verb};

/// What to tell a user who asks for something the VM's state forbids.
pub(super) fn busy(name: &str, state: VmState, what: &str) -> HostError {
    let advice = match state {
        VmState::Running => "shut it down, turn it off or save it first",
        VmState::Paused => "resume it and shut it down, or turn it off or save it first",
        VmState::Saved if what.starts_with("change") || what.starts_with("delete") => {
            "start it and shut it down, or discard its saved state first"
        }
        VmState::Saved => "start it first: it resumes from its saved state",
        VmState::Starting | VmState::Saving | VmState::Stopping => "wait until it finishes",
        VmState::Off | VmState::Crashed => "start it first",
    };
    HostError::conflict(format!(
        "VM '{name}' is {}: cannot {what} ({advice})",
        state.as_str()
    ))
}

/// The first hardware setting `set` changes, if any: those change only while the VM is off.
fn offline_change(set: &SetVm, state: VmState) -> Option<&'static str> {
    let offline = [
        ("memory", set.memory_mib.is_some()),
        ("processors", set.cpus.is_some()),
        ("boot order", set.boot_order.is_some()),
        ("disks", set.disks.is_some()),
        (
            "CD/DVD (while it runs: `strata vm media`)",
            set.cdrom.is_some(),
        ),
        ("network adapters", set.nics.is_some()),
        ("COM ports", set.com_ports.is_some()),
        ("machine type", set.machine.is_some()),
        ("direct kernel boot", set.kernel.is_some()),
        ("guest agent channel", set.agent.is_some()),
        ("USB tablet", set.usb_tablet.is_some()),
        ("dynamic memory", set.memory_min_mib.is_some()),
        ("floppy", set.floppy.is_some()),
        ("firmware", set.firmware.is_some()),
        ("secure boot", set.secure_boot.is_some()),
        ("TPM", set.tpm.is_some()),
        ("undo disks", set.undo_disks.is_some()),
        ("template setting", set.template.is_some()),
        // A saved VM may change accelerator: the saved state's own check decides at start.
        (
            "accelerator",
            set.accelerator.is_some() && state != VmState::Saved,
        ),
    ];
    offline
        .iter()
        .find(|(_, changed)| *changed)
        .map(|(w, _)| *w)
}

/// Applies the plain settings of `set` to `vm`; returns what changed. The machine type and the
/// adapters (which need the host's view) are the caller's.
fn apply(vm: &mut CreateVm, set: SetVm) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! apply {
        ($field:ident, $label:expr) => {
            if let Some(v) = set.$field {
                vm.$field = v;
                changed.push($label);
            }
        };
    }
    apply!(notes, "notes");
    apply!(memory_mib, "memory");
    apply!(cpus, "processors");
    apply!(boot_order, "boot order");
    apply!(disks, "disks");
    apply!(com_ports, "COM ports");
    apply!(accelerator, "accelerator");
    apply!(agent, "guest agent channel");
    apply!(usb_tablet, "USB tablet");
    apply!(firmware, "firmware");
    apply!(secure_boot, "secure boot");
    apply!(tpm, "TPM");
    apply!(undo_disks, "undo disks");
    apply!(undo_action, "undo action");
    apply!(template, "template");
    apply!(start_action, "start action");
    apply!(start_delay_secs, "start delay");
    apply!(stop_action, "stop action");
    apply!(shutdown_timeout_secs, "shut-down timeout");
    if let Some(iso) = set.cdrom {
        // "" empties the drive and keeps it (the guest's hardware stays the same).
        vm.cdrom = Some(iso);
        changed.push("CD/DVD");
    }
    if let Some(m) = set.memory_min_mib {
        vm.memory_min_mib = (m > 0).then_some(m);
        changed.push("dynamic memory");
    }
    if let Some(f) = set.floppy {
        vm.floppy = (!f.is_empty()).then_some(f);
        changed.push("floppy");
    }
    if let Some(k) = set.kernel {
        vm.kernel = (!k.kernel.is_empty()).then_some(k);
        changed.push("direct kernel boot");
    }
    changed
}

impl Service {
    pub(super) fn set(&self, name: &str, set: SetVm, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (mut c, st) = self.current_locked(name)?;
        if !matches!(st.state, VmState::Off | VmState::Crashed) {
            if let Some(what) = offline_change(&set, st.state) {
                return Err(busy(name, st.state, &format!("change its {what}")));
            }
        }
        let machine = match &set.machine {
            Some(m) => Some(self.qemu.resolve_machine(m)?),
            None => None,
        };
        self.check_undo_change(name, &c, &set)?;
        if set.disks.is_some() {
            self.refuse_with_checkpoints(name, "replace its disks")?;
        }
        if let Some(on) = set.template.filter(|t| *t != c.vm.template) {
            self.set_template(&c, on)?;
        }
        let old_disks = c.vm.disks.clone();
        let mut changed = apply(&mut c.vm, set.clone());
        if set.disks.is_some() {
            super::disks::assign_slots(&mut c.vm.disks, &old_disks);
        }
        if let Some(m) = machine {
            c.vm.machine = Some(m);
            changed.push("machine type");
        }
        let old_nics = c.vm.nics.clone();
        if let Some(nics) = set.nics {
            self.check_nic_switches(&nics)?;
            c.vm.nics = self.assign_macs(name, &c.vm.nics, nics)?;
            self.check_forwards_kept(name, &old_nics, &c.vm.nics)?;
            changed.push("network adapters");
        }
        validate::config(&c.vm, &self.others(name))?;
        crate::qemu::firmware::check(&c.vm, c.vm.machine.as_deref().unwrap_or_default())?;
        self.home.save(&c)?;
        if set.firmware.is_some() || set.secure_boot.is_some() {
            // The variables store follows the firmware: made again from the right template.
            let _ = std::fs::remove_file(crate::qemu::firmware::vars_file(&self.home.vm_dir(name)));
        }
        let gone: Vec<_> = old_nics
            .into_iter()
            .filter(|o| {
                !c.vm
                    .nics
                    .iter()
                    .any(|n| n.mac == o.mac && n.switch == o.switch)
            })
            .collect();
        self.release_leases(name, &gone, user);
        self.firewall_after_change(name, user);
        self.events.log(
            Code::VmChanged,
            Some(name),
            user,
            &format!("changed: {}", changed.join(", ")),
        );
        Ok(())
    }

    /// The new adapters with their MACs: given ones checked, missing ones kept by position
    /// (an adapter keeps its MAC for the VM's life) or assigned unique on the host.
    pub(super) fn assign_macs(
        &self,
        name: &str,
        old: &[NicSpec],
        mut nics: Vec<NicSpec>,
    ) -> Result<Vec<NicSpec>, HostError> {
        for n in &mut nics {
            if let Some(m) = &n.mac {
                n.mac = Some(validate::mac(m)?);
            }
        }
        let mut taken: HashSet<String> = self
            .others(name)
            .iter()
            .flat_map(|o| o.vm.nics.iter().filter_map(|n| n.mac.clone()))
            .collect();
        taken.extend(nics.iter().filter_map(|n| n.mac.clone()));
        for (i, n) in nics.iter_mut().enumerate() {
            if n.mac.is_none() {
                let kept = old
                    .get(i)
                    .and_then(|o| o.mac.clone())
                    .filter(|m| !taken.contains(m));
                let m = kept.unwrap_or_else(|| validate::new_mac(&taken));
                taken.insert(m.clone());
                n.mac = Some(m);
            }
        }
        validate::assign_slots(&mut nics, old);
        Ok(nics)
    }

    pub(super) fn delete(
        &self,
        name: &str,
        delete_disks: bool,
        user: &str,
    ) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (c, st) = self.current_locked(name)?;
        if st.state.is_active() {
            return Err(busy(name, st.state, "delete it"));
        }
        let clones = self.linked_clones(&c);
        if !clones.is_empty() {
            return Err(HostError::conflict(format!(
                "VM '{name}' has linked clones ({}): its disks are their parents; delete the clones first",
                clones.join(", ")
            )));
        }
        if !delete_disks {
            self.refuse_with_checkpoints(name, "be deleted keeping its disks")?;
        }
        let mut removed = Vec::new();
        let dir = self.home.vm_dir(name);
        if delete_disks {
            // With checkpoints, the VM's own disk files are the root's layers (the others live
            // in its folder and go with it).
            let layers = crate::checkpoint::layers::layer_dir(&dir);
            let tree = crate::checkpoint::Tree::load(&dir)?;
            let mut files: Vec<String> = c.vm.disks.iter().map(|d| d.path.clone()).collect();
            for cp in &tree.checkpoints {
                files.extend(cp.layers.iter().cloned());
            }
            files.retain(|f| std::path::Path::new(f).parent() != Some(layers.as_path()));
            files.sort();
            files.dedup();
            for f in files {
                std::fs::remove_file(&f)
                    .map_err(|e| HostError::io(std::path::Path::new(&f), "delete", e))?;
                removed.push(f);
            }
        }
        std::fs::remove_dir_all(&dir).map_err(|e| HostError::io(&dir, "delete", e))?;
        self.release_leases(name, &c.vm.nics, user);
        self.drop_forwards_of(name, user);
        self.firewall_after_change(name, user);
        self.gc_vlan_bridges();
        let _ = std::fs::remove_dir_all(self.home.run_dir(&c.id));
        let kept = if delete_disks {
            format!("disks deleted: {}", removed.join(", "))
        } else {
            format!("{} disk(s) kept", c.vm.disks.len())
        };
        self.events.log(
            Code::VmDeleted,
            Some(name),
            user,
            &format!("deleted ({kept})"),
        );
        Ok(())
    }

    /// The accelerator a start uses for a VM configured with `setting`.
    fn accelerator(&self, name: &str, setting: Accelerator) -> Result<Accelerator, HostError> {
        match (setting, &self.kvm) {
            (Accelerator::Tcg, _) | (Accelerator::Auto, Err(_)) => Ok(Accelerator::Tcg),
            (_, Ok(())) => Ok(Accelerator::Kvm),
            (Accelerator::Kvm, Err(why)) => Err(HostError::conflict(format!(
                "VM '{name}' is set to use KVM, which can't run a guest on this host ({why}): set its accelerator to auto or tcg"
            ))),
        }
    }

    pub(super) fn start(&self, name: &str, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        // An interrupted checkpoint or merge is finished before the disks are used.
        self.checkpoint_state(name)?;
        let (c, st) = self.current_locked(name)?;
        if c.vm.template {
            return Err(HostError::conflict(format!(
                "VM '{name}' is a template: it never starts; clone it (`strata vm clone {name} NEW --linked`)"
            )));
        }
        let restore = match st.state {
            VmState::Off | VmState::Crashed => false,
            VmState::Saved => true,
            VmState::Paused => {
                return Err(HostError::conflict(format!(
                    "VM '{name}' is paused: resume it instead"
                )))
            }
            other => {
                return Err(HostError::conflict(format!(
                    "VM '{name}' is {}: it is already started",
                    other.as_str()
                )))
            }
        };
        let accel = self.accelerator(name, c.vm.accelerator)?;
        let dir = self.home.vm_dir(name);
        if restore {
            check_saved(name, &dir, accel, &self.qemu)?;
        } else {
            check_machine(name, c.vm.machine.as_deref(), &self.qemu)?;
        }
        if c.vm.nics.iter().any(|n| n.switch.is_some()) {
            self.firewall_before_start(name)?;
        }
        let mut cmd = std::process::Command::new(&self.worker[0]);
        cmd.args(&self.worker[1..])
            .arg("--home")
            .arg(self.home.root())
            .args(["--vm", name, "--accel", accel.as_str()]);
        if restore {
            cmd.arg("--restore");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("worker.log"))
            .map_err(|e| HostError::io(&dir.join("worker.log"), "open", e))?;
        cmd.stderr(log);
        self.events.log(
            Code::VmStarting,
            Some(name),
            user,
            &format!(
                "{} ({})",
                if restore { "restoring" } else { "starting" },
                accel.as_str()
            ),
        );
        // Its own process group: the worker outlives a restart of the service. Loading a large
        // saved state takes a while; a worker silent for longer is stuck.
        strata_proc::spawn_daemon(&mut cmd, "the VM's worker", Duration::from_secs(900))
            .map(drop)
            .map_err(|e| {
                // A worker that reported its failure has logged it; the others could not.
                let reported = matches!(e, strata_proc::DaemonError::Failed { .. });
                let e = worker_start_error(e).context(format_args!("cannot start VM '{name}'"));
                if !reported {
                    self.events
                        .log(Code::VmStartFailed, Some(name), user, &e.message);
                }
                e
            })
    }

    /// Sends `verb` to the VM's worker. Turning off does not wait behind a request in progress
    /// (a shut-down waiting for the guest): it takes no VM lock.
    pub(super) fn control(&self, name: &str, verb: Verb, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let guard = (verb != Verb::TurnOff).then(|| lock.lock().unwrap_or_else(|p| p.into_inner()));
        let (c, st) = if guard.is_some() {
            self.current_locked(name)?
        } else {
            self.current(name)?
        };
        if !st.state.is_active() || st.state == VmState::Starting {
            return Err(busy(name, st.state, verb.describe()));
        }
        if verb == Verb::Save {
            if let Some(why) = self.qemu.save_state_problem() {
                return Err(HostError::unsupported(format!(
                    "VM '{name}': cannot save its state: {why}"
                )));
            }
        }
        let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
        // The worker's own limits, plus a margin: a shut-down waits for the guest, a save for the
        // migration.
        let waits = match &verb {
            Verb::Shutdown { timeout_secs } => Duration::from_secs(u64::from(*timeout_secs)),
            Verb::Save => crate::qmp::MIGRATION_LIMIT,
            _ => Duration::ZERO,
        };
        let limit = waits + Duration::from_secs(600);
        worker::request(&socket, user, verb, limit)
            .map(drop)
            .map_err(|e| match e.kind {
                ErrorKind::Gone | ErrorKind::Hung => e.context(format_args!(
                    "VM '{name}': its worker did not answer (`strata vm show {name}` tells its state now)"
                )),
                _ => e,
            })
    }

    pub(super) fn discard_saved(&self, name: &str, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_, mut st) = self.current_locked(name)?;
        if st.state != VmState::Saved {
            return Err(HostError::conflict(format!(
                "VM '{name}' is {}: it has no saved state",
                st.state.as_str()
            )));
        }
        let dir = self.home.vm_dir(name);
        saved::remove(&dir);
        st.state = VmState::Off;
        status::write(&dir, &st)?;
        self.events.log(
            Code::VmTurnedOff,
            Some(name),
            user,
            "saved state discarded: the VM is off",
        );
        Ok(())
    }

    /// Applies each active VM's automatic stop action (the host is shutting down), in parallel.
    pub(super) fn stop_vms(&self, user: &str) -> StopVmsReport {
        let names: Vec<(String, StopAction, u32)> = self
            .home
            .names()
            .into_iter()
            .filter_map(|n| {
                let (c, st) = self.current(&n).ok()?;
                st.state
                    .is_active()
                    .then_some((n, c.vm.stop_action, c.vm.shutdown_timeout_secs))
            })
            .collect();
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = names
                .iter()
                .map(|(n, action, timeout)| {
                    s.spawn(move || {
                        let (verb, what) = self.stop_verb(n, *action, *timeout);
                        self.events.log(
                            Code::VmAutomaticAction,
                            Some(n),
                            user,
                            &format!("automatic stop action: {what}"),
                        );
                        let r = self.control(n, verb, user).map(|()| {
                            self.mark_stopped_by_host(n);
                            what.to_string()
                        });
                        (n.clone(), r.unwrap_or_else(|e| format!("error: {e}")))
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        StopVmsReport { results }
    }

    /// What a stop action does on this host. Saving needs QEMU 8.2: where it can't be done, the
    /// VM is shut down instead (and the event says why) rather than left to be killed.
    fn stop_verb(&self, name: &str, action: StopAction, timeout: u32) -> (Verb, &'static str) {
        let shutdown = (
            Verb::Shutdown {
                timeout_secs: timeout,
            },
            "shut down",
        );
        match action {
            StopAction::Save => match self.qemu.save_state_problem() {
                None => (Verb::Save, "saved"),
                Some(why) => {
                    self.events.log(
                        Code::VmAutomaticAction,
                        Some(name),
                        "system",
                        &format!("automatic stop action save is not possible here ({why}): shutting down instead"),
                    );
                    shutdown
                }
            },
            StopAction::Shutdown => shutdown,
            StopAction::TurnOff => (Verb::TurnOff, "turned off"),
        }
    }

    fn mark_stopped_by_host(&self, name: &str) {
        let dir = self.home.vm_dir(name);
        if let Ok(mut st) = status::read(&dir) {
            st.stopped_by_host = true;
            let _ = status::write(&dir, &st);
        }
    }

    /// Starts the VMs whose automatic start action says so, each after its delay, in the
    /// background.
    pub fn autostart(self: &Arc<Self>) {
        for name in self.home.names() {
            let Ok((c, st)) = self.current(&name) else {
                continue;
            };
            let go = match c.vm.start_action {
                StartAction::Never => false,
                StartAction::Always => !st.state.is_active(),
                StartAction::IfRunning => !st.state.is_active() && st.stopped_by_host,
            };
            if !go {
                continue;
            }
            let service = self.clone();
            let delay = c.vm.start_delay_secs;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(u64::from(delay)));
                service.events.log(
                    Code::VmAutomaticAction,
                    Some(&name),
                    "system",
                    &format!("automatic start action (after {delay} s)"),
                );
                if let Err(e) = service.execute(Command::Start(name.clone()), "system") {
                    eprintln!("strata serve: automatic start of VM '{name}': {e}");
                }
            });
        }
    }
}

/// Why the worker did not start, with the kind it gave (a worker that never said why is an
/// internal error; one that said nothing in time may be hung).
fn worker_start_error(e: strata_proc::DaemonError) -> HostError {
    use strata_proc::DaemonError;
    match e {
        DaemonError::Failed { error, kind } => {
            let kind = kind
                .and_then(|k| serde_json::from_value(serde_json::Value::String(k)).ok())
                .unwrap_or(ErrorKind::Internal);
            HostError::new(kind, error)
        }
        DaemonError::Silent { .. } => HostError::new(ErrorKind::Hung, e.to_string()),
        DaemonError::Spawn { .. } | DaemonError::Ended { .. } => {
            HostError::internal(format!("{e}: see the VM's worker.log"))
        }
    }
}

/// A VM starts on its pinned machine type, which this QEMU must have.
fn check_machine(name: &str, machine: Option<&str>, qemu: &QemuInfo) -> Result<(), HostError> {
    let Some(machine) = machine else {
        return Err(HostError::corrupt(format!(
            "VM '{name}' has no pinned machine type: restart the host service to pin it"
        )));
    };
    if qemu.offers(machine) {
        return Ok(());
    }
    Err(HostError::unsupported(format!(
        "VM '{name}' is pinned to machine type {machine}, which this host's QEMU ({}) lacks: install a QEMU that has it, or change the VM's hardware with `strata vm set {name} --machine pc` (= {})",
        qemu.version,
        qemu.default_machine()
    )))
}

/// A saved state restores only where it can be: the same machine type (which this QEMU must
/// have), accelerator and CPU model, and the disks as they were.
fn check_saved(
    name: &str,
    dir: &std::path::Path,
    accel: Accelerator,
    qemu: &QemuInfo,
) -> Result<(), HostError> {
    let saved = saved::read_meta(dir)?;
    let (image, _) = saved::saved_files(dir);
    if !image.exists() {
        return Err(HostError::corrupt(format!(
            "VM '{name}': the saved state {} is missing: discard it (`strata vm discard-saved {name}`)",
            image.display()
        )));
    }
    if !qemu.offers(&saved.machine) {
        return Err(HostError::unsupported(format!(
            "VM '{name}' was saved on machine type {} ({}), which this host's QEMU ({}) lacks: a saved state restores only on its own machine type. Restore it on a host whose QEMU has {}, or discard the saved state (`strata vm discard-saved {name}`)",
            saved.machine, saved.qemu, qemu.version, saved.machine
        )));
    }
    if let Some(why) = qemu.save_state_problem() {
        return Err(HostError::unsupported(format!(
            "VM '{name}': cannot restore its saved state: {why}"
        )));
    }
    check_saved_host(name, &saved, accel)
}

/// The saved state's accelerator, CPU and disks against this start's.
fn check_saved_host(name: &str, saved: &SavedMeta, accel: Accelerator) -> Result<(), HostError> {
    let cpu = crate::qemu::cpu_model(accel);
    let host_cpu = crate::qemu::host_cpu();
    if accel == Accelerator::Kvm && saved.host_cpu != host_cpu {
        return Err(HostError::conflict(format!(
            "VM '{name}' was saved under KVM on a '{}' CPU; this host has a '{host_cpu}': a saved state can't be restored on a different kind of host. Restore it where it was saved, or discard the saved state (`strata vm discard-saved {name}`)",
            saved.host_cpu
        )));
    }
    for d in &saved.disks {
        if worker::DiskPrint::of(&d.path).ok().as_ref() != Some(d) {
            return Err(HostError::conflict(format!(
                "VM '{name}': disk '{}' has changed (or is gone) since the VM's state was saved; resuming would show the guest a disk that no longer matches its memory. Put the disk back as it was, or discard the saved state (`strata vm discard-saved {name}`)",
                d.path
            )));
        }
    }
    if saved.accelerator != accel || saved.cpu != cpu {
        return Err(HostError::conflict(format!(
            "VM '{name}' was saved running under {} with CPU model '{}', but would start here under {} with CPU model '{cpu}': a saved state can't be restored on a different kind of host. Restore it where it was saved, set its accelerator to {}, or discard the saved state (`strata vm discard-saved {name}`)",
            saved.accelerator.as_str(),
            saved.cpu,
            accel.as_str(),
            saved.accelerator.as_str()
        )));
    }
    Ok(())
}
