//! The host service's core: every management request arrives as a [`Command`] (from the REST API,
//! the automatic start and stop actions, …) and is carried out by [`Service::execute`] under the
//! VM's lock. Reads reconcile each VM's recorded status with what really runs, so no VM stays in a
//! transitional state after its worker died.

mod checkpoints;
mod clone;
mod command;
mod dhcp;
mod disks;
mod export;
mod firewall;
mod guest;
mod lifecycle;
mod memory;
mod nics;
mod switch_edit;
mod switch_plan;
mod switches;
mod undo;

pub use command::Command;
pub use undo::{apply as undo_apply, done as undo_done};
mod validate;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use strata_api::{
    Accelerator, CreateVm, DiskInfo, Event, HostInfo, NicInfo, StopVmsReport, SwitchInfo,
    VmDetails, VmState, VmSummary,
};

use crate::error::{ErrorKind, HostError};
use crate::events::{Code, EventLog};
use crate::qemu::QemuInfo;
use crate::status::{self, Status};
use crate::store::{Home, VmConfig, SCHEMA};
use crate::worker::Verb;

pub(crate) use switches::net_error;
pub use validate::{MAX_SECS, MEMORY_MIB};

/// What is true of a VM recorded as active once its worker is found dead: saved when a complete
/// saved state exists (its metadata is written last) and was being made or not yet loaded;
/// crashed otherwise. It was running when it stopped, so the "if running" start action brings it
/// back.
fn after_worker_death(mut st: Status, saved_state_complete: bool) -> Status {
    let was = st.state;
    let worker = st.worker.map_or(0, |w| w.0);
    if saved_state_complete && (was == VmState::Saving || st.restoring) {
        st.state = VmState::Saved;
    } else {
        st.state = VmState::Crashed;
        st.last_error = Some(format!(
            "its worker (pid {worker}) ended while the VM was {}",
            was.as_str()
        ));
    }
    st.worker = None;
    st.qemu = None;
    st.restoring = false;
    st.stopped_by_host = true;
    st.heartbeat = strata_api::Heartbeat::None;
    st.memory_current_mib = None;
    st.memory_available_mib = None;
    st.memory_target = None;
    st
}

/// What a command produced.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The VM after the command.
    Vm(Box<VmDetails>),
    /// The VM was deleted.
    Deleted,
    /// `StopVms`' report.
    Stopped(StopVmsReport),
    /// The switch created.
    Switch(Box<SwitchInfo>),
    /// A VM's checkpoints after the command.
    Checkpoints(Vec<strata_api::CheckpointInfo>),
}

/// The host service.
pub struct Service {
    home: Home,
    events: EventLog,
    kvm: Result<(), String>,
    qemu: QemuInfo,
    worker: Vec<OsString>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    define: Mutex<()>,
    dhcp: dhcp::Servers,
    /// The nft script last applied (see `refresh_firewall`).
    firewall: Mutex<Option<String>>,
}

impl Service {
    /// The service for the data folder `home`; `worker` is the command that runs a worker
    /// (`strata worker`), to which `--home`, `--vm`, `--accel` and `--restore` are added.
    pub fn new(home: &Path, worker: Vec<OsString>) -> Result<Self, HostError> {
        let home = Home::new(home)?;
        let events = EventLog::new(&home.events());
        let qemu = QemuInfo::probe()?;
        let kvm = match std::env::var("STRATA_ACCEL").as_deref() {
            Ok("tcg") => Err("STRATA_ACCEL=tcg".to_string()),
            _ => crate::qemu::probe_kvm(&home.root().join("run")),
        };
        Ok(Self {
            home,
            events,
            kvm,
            qemu,
            worker,
            locks: Mutex::default(),
            define: Mutex::default(),
            dhcp: Mutex::default(),
            firewall: Mutex::default(),
        })
    }

    /// The data folder's layout.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    fn lock(&self, name: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Carries out `cmd` on behalf of `user`. A refused or failed request on an existing VM is
    /// logged too.
    pub fn execute(&self, cmd: Command, user: &str) -> Result<Reply, HostError> {
        let (what, target) = (cmd.label(), cmd.target().map(str::to_string));
        let result = self.run(cmd, user);
        if let (Err(e), Some(name)) = (&result, target) {
            if e.kind != ErrorKind::NotFound && self.home.vm_dir(&name).join("vm.toml").exists() {
                self.events.log(
                    Code::VmRequestFailed,
                    Some(&name),
                    user,
                    &format!("{what}: {e}"),
                );
            }
        }
        result
    }

    fn run(&self, cmd: Command, user: &str) -> Result<Reply, HostError> {
        let vm = |name: &str| self.show(name).map(|d| Reply::Vm(Box::new(d)));
        match cmd {
            Command::Create(spec) => self.create(spec, user).and_then(|n| vm(&n)),
            Command::Set(name, set) => self.set(&name, set, user).and_then(|()| vm(&name)),
            Command::Delete { name, delete_disks } => self
                .delete(&name, delete_disks, user)
                .map(|()| Reply::Deleted),
            Command::Start(name) => self.start(&name, user).and_then(|()| vm(&name)),
            Command::Shutdown(name, t, undo) => {
                let timeout_secs = match t {
                    Some(t) => t,
                    None => self.current(&name)?.0.vm.shutdown_timeout_secs,
                };
                self.undo_once(&name, undo, user)?;
                self.control(&name, Verb::Shutdown { timeout_secs }, user)
                    .and_then(|()| vm(&name))
            }
            Command::TurnOff(name, undo) => {
                self.undo_once(&name, undo, user)?;
                self.control(&name, Verb::TurnOff, user)
                    .and_then(|()| vm(&name))
            }
            c @ (Command::Export(..)
            | Command::Import(_)
            | Command::Clone(..)
            | Command::Undo(..)) => self.portable_command(c, user),
            Command::Reset(name) => self
                .control(&name, Verb::Reset, user)
                .and_then(|()| vm(&name)),
            Command::Pause(name) => self
                .control(&name, Verb::Pause, user)
                .and_then(|()| vm(&name)),
            Command::Resume(name) => self
                .control(&name, Verb::Resume, user)
                .and_then(|()| vm(&name)),
            Command::Save(name) => self
                .control(&name, Verb::Save, user)
                .and_then(|()| vm(&name)),
            Command::DiscardSaved(name) => self.discard_saved(&name, user).and_then(|()| vm(&name)),
            Command::StopVms => Ok(Reply::Stopped(self.stop_vms(user))),
            c @ (Command::CreateSwitch(_)
            | Command::DeleteSwitch(_)
            | Command::SetSwitch(..)
            | Command::Reserve(..)
            | Command::Unreserve(..)
            | Command::AddForward(..)
            | Command::RemoveForward(..)) => self.switch_command(c, user),
            Command::AddNic(name, spec) => self.add_nic(&name, spec, user).and_then(|()| vm(&name)),
            Command::SetNic(name, nic, set) => self
                .set_nic(&name, &nic, set, user)
                .and_then(|()| vm(&name)),
            Command::RemoveNic(name, nic) => {
                self.remove_nic(&name, &nic, user).and_then(|()| vm(&name))
            }
            c @ (Command::Checkpoints(_)
            | Command::CreateCheckpoint(..)
            | Command::ApplyCheckpoint(..)
            | Command::RenameCheckpoint(..)
            | Command::DeleteCheckpoint(..)) => self.checkpoint_command(c, user),
            Command::AddDisk(name, d) => self.add_disk(&name, d, user).and_then(|()| vm(&name)),
            Command::RemoveDisk(name, d) => {
                self.remove_disk(&name, &d, user).and_then(|()| vm(&name))
            }
            Command::ChangeMedia(name, m) => {
                self.change_media(&name, m, user).and_then(|()| vm(&name))
            }
            Command::SetMemory(name, t) => self.set_memory(&name, t, user).and_then(|()| vm(&name)),
            Command::Freeze(name) => self
                .control(&name, Verb::Freeze, user)
                .and_then(|()| vm(&name)),
            Command::Thaw(name) => self
                .control(&name, Verb::Thaw, user)
                .and_then(|()| vm(&name)),
        }
    }

    /// The VM's configuration and reconciled status, for a caller that does not hold the VM's
    /// lock (a stale status is reconciled under it).
    fn current(&self, name: &str) -> Result<(VmConfig, Status), HostError> {
        let (config, st) = self.read(name)?;
        if st.state.is_active() && !st.worker_alive() {
            let lock = self.lock(name);
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            return self.current_locked(name);
        }
        Ok((config, st))
    }

    /// The same, for a caller that holds the VM's lock.
    fn current_locked(&self, name: &str) -> Result<(VmConfig, Status), HostError> {
        let (config, mut st) = self.read(name)?;
        if st.state.is_active() && !st.worker_alive() {
            st = self.reconcile(name, st)?;
        }
        Ok((config, st))
    }

    fn read(&self, name: &str) -> Result<(VmConfig, Status), HostError> {
        validate::name(name).map_err(|_| HostError::not_found(format!("no VM named '{name}'")))?;
        let config = self.home.load(name)?;
        let dir = self.home.vm_dir(name);
        // An unreadable status (a torn write on a full disk …) must not make the VM vanish.
        let st = status::read(&dir).unwrap_or_else(|e| Status {
            state: VmState::Crashed,
            last_error: Some(format!("{e}: assumed crashed")),
            ..Status::off()
        });
        Ok((config, st))
    }

    /// A VM is recorded as active but its worker is gone: end any orphaned QEMU and record what
    /// is true now (saved when a complete saved state exists, crashed otherwise).
    fn reconcile(&self, name: &str, st: Status) -> Result<Status, HostError> {
        let dir = self.home.vm_dir(name);
        if let Some((pid, _)) = st.qemu.filter(|_| st.qemu_alive()) {
            strata_proc::kill(pid);
        }
        let (image, meta) = crate::worker::saved_files(&dir);
        let was = st.state;
        let worker = st.worker.map_or(0, |w| w.0);
        let st = after_worker_death(st, image.exists() && meta.exists());
        status::write(&dir, &st)?;
        self.events.log(
            Code::VmReconciled,
            Some(name),
            "system",
            &format!(
                "recorded as {} but its worker (pid {worker}) is gone: now {}",
                was.as_str(),
                st.state.as_str()
            ),
        );
        Ok(st)
    }

    /// Reconciles every VM and logs the ones found running (at service start); pins the machine
    /// type of VMs made before Strata pinned it.
    pub fn reconcile_all(&self) {
        for name in self.home.names() {
            let lock = self.lock(&name);
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = self.pin_machine(&name) {
                eprintln!("strata serve: VM '{name}': {e}");
            }
            match self.current_locked(&name) {
                Ok((_, st)) if st.state.is_active() => self.events.log(
                    Code::VmReattached,
                    Some(&name),
                    "system",
                    &format!(
                        "found {} (worker pid {})",
                        st.state.as_str(),
                        st.worker.map_or(0, |w| w.0)
                    ),
                ),
                Ok(_) => {}
                Err(e) => eprintln!("strata serve: VM '{name}': {e}"),
            }
        }
    }

    /// A VM made before machine types were pinned gets the machine type it runs on: a saved
    /// state's (when this QEMU has it, so its next cold start keeps the hardware it was saved
    /// with), else this host's default, as if created now.
    fn pin_machine(&self, name: &str) -> Result<(), HostError> {
        let mut c = self.home.load(name)?;
        if c.vm.machine.is_some() {
            return Ok(());
        }
        let saved = crate::worker::saved::read_meta(&self.home.vm_dir(name))
            .ok()
            .map(|m| m.machine)
            .filter(|m| self.qemu.machines.contains(m));
        let machine = saved.unwrap_or_else(|| self.qemu.default_machine().to_string());
        c.vm.machine = Some(machine.clone());
        self.home.save(&c)?;
        self.events.log(
            Code::VmChanged,
            Some(name),
            "system",
            &format!("machine type pinned to {machine} (the VM predates pinning)"),
        );
        Ok(())
    }

    /// All VMs.
    pub fn list(&self) -> Vec<VmSummary> {
        self.home
            .names()
            .iter()
            .filter_map(|n| self.show(n).ok())
            .map(|d| VmSummary {
                name: d.name,
                state: d.state,
                memory_mib: d.memory_mib,
                cpus: d.cpus,
                heartbeat: d.heartbeat,
            })
            .collect()
    }

    /// One VM.
    pub fn show(&self, name: &str) -> Result<VmDetails, HostError> {
        let (c, st) = self.current(name)?;
        let (checkpoints, pending_merges) = self.checkpoint_summary(name, &c);
        let undo_kept = undo::kept(&c);
        let vm = c.vm;
        let active = st.state.is_active();
        let sockets = crate::qemu::Sockets::new(&self.home.run_dir(&c.id));
        let guest = active
            .then(|| crate::worker::read_guest_info(&self.home.vm_dir(&vm.name)))
            .flatten();
        let nics = vm
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| NicInfo {
                model: n.model,
                mac: n.mac.clone().unwrap_or_default(),
                switch: n.switch.clone(),
                connected: n.connected,
                mac_spoofing: n.mac_spoofing,
                dhcp_guard: n.dhcp_guard,
                router_guard: n.router_guard,
                vlan: n.vlan,
                bandwidth_limit: n.bandwidth_limit,
                tap: n.switch.as_ref().map(|_| firewall::tap_of(&c.id, i, n)),
            })
            .collect();
        Ok(VmDetails {
            name: vm.name,
            state: st.state,
            memory_mib: vm.memory_mib,
            memory_min_mib: vm.memory_min_mib,
            memory_current_mib: st.memory_current_mib.filter(|_| active),
            memory_available_mib: st.memory_available_mib.filter(|_| active),
            cpus: vm.cpus,
            id: c.id,
            notes: vm.notes,
            boot_order: vm.boot_order,
            disks: vm
                .disks
                .iter()
                .map(|d| DiskInfo {
                    path: d.path.clone(),
                    bus: d.bus,
                })
                .collect(),
            cdrom: vm.cdrom.filter(|c| !c.is_empty()),
            floppy: vm.floppy,
            usb_tablet: vm.usb_tablet,
            nics,
            agent: vm.agent,
            firmware: vm.firmware,
            secure_boot: vm.secure_boot,
            tpm: vm.tpm,
            undo_disks: vm.undo_disks,
            undo_action: vm.undo_action,
            undo_kept,
            template: vm.template,
            heartbeat: if active {
                st.heartbeat
            } else {
                strata_api::Heartbeat::None
            },
            guest,
            checkpoints,
            pending_merges,
            console_socket: (active && vm.com_ports.iter().all(|p| p.port != 1))
                .then(|| sockets.console.display().to_string()),
            com_ports: vm.com_ports,
            kernel: vm.kernel,
            accelerator: st.accelerator.filter(|_| active).unwrap_or(vm.accelerator),
            accelerator_setting: vm.accelerator,
            machine: vm.machine.unwrap_or_else(|| "(not pinned)".to_string()),
            start_action: vm.start_action,
            start_delay_secs: vm.start_delay_secs,
            stop_action: vm.stop_action,
            shutdown_timeout_secs: vm.shutdown_timeout_secs,
            pid: st.worker.filter(|_| active).map(|w| w.0),
            qemu_pid: st.qemu.filter(|_| active).map(|q| q.0),
            folder: self.home.vm_dir(name).display().to_string(),
            started_at: st.started_at.filter(|_| active),
            last_error: st.last_error,
        })
    }

    /// What the host offers.
    pub fn host_info(&self) -> HostInfo {
        HostInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            home: self.home.root().display().to_string(),
            accelerator: if self.kvm.is_ok() {
                Accelerator::Kvm
            } else {
                Accelerator::Tcg
            },
            kvm_problem: self.kvm.clone().err(),
            qemu: self.qemu.line.clone(),
            qemu_version: self.qemu.version.to_string(),
            default_machine: self.qemu.default_machine().to_string(),
            machines: self.qemu.all_machines(),
            features: self.qemu.features(&self.kvm),
            vms: self.home.names().len(),
        }
    }

    /// The event log, filtered.
    pub fn event_log(
        &self,
        vm: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<Event>, HostError> {
        let since = since
            .map(|s| {
                humantime::parse_rfc3339_weak(s).map_err(|e| {
                    HostError::invalid(format!(
                        "since '{s}': not a time such as 2026-11-22T10:00:00Z ({e})"
                    ))
                })
            })
            .transpose()?;
        Ok(self.events.read(vm, since))
    }

    /// What the VM's console has shown (the last 1 MiB at most).
    pub fn console_log(&self, name: &str) -> Result<String, HostError> {
        let (c, _) = self.current(name)?;
        if c.vm.com_ports.iter().any(|p| p.port == 1) {
            return Err(HostError::conflict(format!(
                "VM '{name}': COM1 is connected to '{}', not recorded as the console",
                c.vm.com_ports
                    .iter()
                    .find(|p| p.port == 1)
                    .map(|p| p.path.as_str())
                    .unwrap_or_default()
            )));
        }
        let path = self.home.vm_dir(name).join("console.log");
        // The previous file first: right after a rotation the current one is nearly empty.
        let mut data = std::fs::read(path.with_extension("log.1")).unwrap_or_default();
        data.extend(std::fs::read(&path).unwrap_or_default());
        let start = data.len().saturating_sub(1 << 20);
        Ok(String::from_utf8_lossy(&data[start..]).into_owned())
    }

    fn create(&self, spec: CreateVm, user: &str) -> Result<String, HostError> {
        self.create_with_id(spec, None, user)
    }

    /// Creates a VM; its id is `id` (an imported VM's, kept) or a new one.
    fn create_with_id(
        &self,
        mut spec: CreateVm,
        id: Option<String>,
        user: &str,
    ) -> Result<String, HostError> {
        let _g = self.define.lock().unwrap_or_else(|p| p.into_inner());
        validate::name(&spec.name)?;
        if self.home.vm_dir(&spec.name).join("vm.toml").exists() {
            return Err(HostError::conflict(format!(
                "a VM named '{}' already exists",
                spec.name
            )));
        }
        let others = self.others(&spec.name);
        let mut taken: HashSet<String> = others
            .iter()
            .flat_map(|o| o.vm.nics.iter().filter_map(|n| n.mac.clone()))
            .collect();
        for n in &mut spec.nics {
            match &n.mac {
                Some(m) => n.mac = Some(validate::mac(m)?),
                None => {
                    let m = validate::new_mac(&taken);
                    taken.insert(m.clone());
                    n.mac = Some(m);
                }
            }
        }
        spec.machine = Some(
            self.qemu
                .resolve_machine(spec.machine.as_deref().unwrap_or("pc"))?,
        );
        validate::assign_slots(&mut spec.nics, &[]);
        disks::assign_slots(&mut spec.disks, &[]);
        self.check_nic_switches(&spec.nics)?;
        validate::config(&spec, &others)?;
        crate::qemu::firmware::check(&spec, spec.machine.as_deref().unwrap_or_default())?;
        let config = VmConfig {
            schema: SCHEMA,
            id: id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            vm: spec,
        };
        self.home.save(&config)?;
        status::write(&self.home.vm_dir(&config.vm.name), &Status::off())?;
        self.firewall_after_change(&config.vm.name, user);
        self.events.log(
            Code::VmCreated,
            Some(&config.vm.name),
            user,
            &format!(
                "created ({} MiB, {} CPU, {} disk(s), machine {})",
                config.vm.memory_mib,
                config.vm.cpus,
                config.vm.disks.len(),
                config.vm.machine.as_deref().unwrap_or_default()
            ),
        );
        Ok(config.vm.name)
    }

    /// Every other VM's configuration.
    fn others(&self, name: &str) -> Vec<VmConfig> {
        self.home
            .names()
            .iter()
            .filter(|n| *n != name)
            .filter_map(|n| self.home.load(n).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(state: VmState, restoring: bool) -> Status {
        Status {
            state,
            worker: Some((4242, 1)),
            qemu: Some((4243, 2)),
            restoring,
            ..Status::off()
        }
    }

    #[test]
    fn a_dead_worker_leaves_saved_only_with_a_complete_saved_state() {
        let st = after_worker_death(active(VmState::Saving, false), true);
        assert_eq!(st.state, VmState::Saved);
        assert_eq!((st.worker, st.qemu, st.last_error), (None, None, None));
        // Died while loading the saved state: it is still valid.
        let st = after_worker_death(active(VmState::Starting, true), true);
        assert_eq!(st.state, VmState::Saved);
        assert!(!st.restoring);
        // Died while saving, before the metadata was written: no saved state.
        let st = after_worker_death(active(VmState::Saving, false), false);
        assert_eq!(st.state, VmState::Crashed);
        // A running VM's leftover saved files are stale.
        let st = after_worker_death(active(VmState::Running, false), true);
        assert_eq!(st.state, VmState::Crashed);
        assert_eq!(
            st.last_error.as_deref(),
            Some("its worker (pid 4242) ended while the VM was running")
        );
        assert!(
            st.stopped_by_host,
            "the if-running start action brings it back"
        );
    }

    #[test]
    fn commands_name_their_target_and_label() {
        let c = Command::Shutdown("web".into(), None, None);
        assert_eq!((c.label(), c.target()), ("Shutdown", Some("web")));
        assert_eq!(Command::StopVms.target(), None);
        let c = Command::Delete {
            name: "db".into(),
            delete_disks: true,
        };
        assert_eq!((c.label(), c.target()), ("Delete", Some("db")));
    }
}
