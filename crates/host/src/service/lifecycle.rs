//! Changing, deleting, starting and controlling VMs; the automatic start and stop actions.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use strata_api::{Accelerator, SetVm, StartAction, StopAction, StopVmsReport, VmState};

use super::{validate, Command, Service};
use crate::error::HostError;
use crate::events::Code;
use crate::status;
use crate::worker::{self, ControlRequest, SavedMeta};

/// What to tell a user who asks for something the VM's state forbids.
fn busy(name: &str, state: VmState, what: &str) -> HostError {
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
    HostError::Conflict(format!(
        "VM '{name}' is {}: cannot {what} ({advice})",
        state.as_str()
    ))
}

impl Service {
    pub(super) fn set(&self, name: &str, set: SetVm, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (mut c, st) = self.current_locked(name)?;
        let offline = [
            ("memory", set.memory_mib.is_some()),
            ("processors", set.cpus.is_some()),
            ("boot order", set.boot_order.is_some()),
            ("disks", set.disks.is_some()),
            ("CD/DVD", set.cdrom.is_some()),
            ("network adapters", set.nics.is_some()),
            ("COM ports", set.com_ports.is_some()),
            // A saved VM may change accelerator: the saved state's own check decides at start.
            (
                "accelerator",
                set.accelerator.is_some() && st.state != VmState::Saved,
            ),
        ];
        if !matches!(st.state, VmState::Off | VmState::Crashed) {
            if let Some((what, _)) = offline.iter().find(|(_, changed)| *changed) {
                return Err(busy(name, st.state, &format!("change its {what}")));
            }
        }
        let vm = &mut c.vm;
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
        apply!(start_action, "start action");
        apply!(start_delay_secs, "start delay");
        apply!(stop_action, "stop action");
        apply!(shutdown_timeout_secs, "shut-down timeout");
        if let Some(iso) = set.cdrom {
            vm.cdrom = (!iso.is_empty()).then_some(iso);
            changed.push("CD/DVD");
        }
        if let Some(mut nics) = set.nics {
            for n in &mut nics {
                if let Some(m) = &n.mac {
                    n.mac = Some(validate::mac(m)?);
                }
            }
            let others = self.others(name);
            let mut taken: HashSet<String> = others
                .iter()
                .flat_map(|o| o.vm.nics.iter().filter_map(|n| n.mac.clone()))
                .collect();
            taken.extend(nics.iter().filter_map(|n| n.mac.clone()));
            for (i, n) in nics.iter_mut().enumerate() {
                if n.mac.is_none() {
                    // An adapter keeps its MAC address for the VM's life.
                    let old = vm
                        .nics
                        .get(i)
                        .and_then(|o| o.mac.clone())
                        .filter(|m| !taken.contains(m));
                    let m = old.unwrap_or_else(|| validate::new_mac(&taken));
                    taken.insert(m.clone());
                    n.mac = Some(m);
                }
            }
            vm.nics = nics;
            changed.push("network adapters");
        }
        validate::config(vm, &self.others(name))?;
        self.home.save(&c)?;
        self.events.log(
            Code::VmChanged,
            Some(name),
            user,
            &format!("changed: {}", changed.join(", ")),
        );
        Ok(())
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
        let mut removed = Vec::new();
        if delete_disks {
            for d in &c.vm.disks {
                std::fs::remove_file(&d.path)
                    .map_err(|e| HostError::io(std::path::Path::new(&d.path), "delete", e))?;
                removed.push(d.path.clone());
            }
        }
        let dir = self.home.vm_dir(name);
        std::fs::remove_dir_all(&dir).map_err(|e| HostError::io(&dir, "delete", e))?;
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
            (Accelerator::Kvm, Err(why)) => Err(HostError::Conflict(format!(
                "VM '{name}' is set to use KVM, which can't run a guest on this host ({why}): set its accelerator to auto or tcg"
            ))),
        }
    }

    pub(super) fn start(&self, name: &str, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (c, st) = self.current_locked(name)?;
        let restore = match st.state {
            VmState::Off | VmState::Crashed => false,
            VmState::Saved => true,
            VmState::Paused => {
                return Err(HostError::Conflict(format!(
                    "VM '{name}' is paused: resume it instead"
                )))
            }
            other => {
                return Err(HostError::Conflict(format!(
                    "VM '{name}' is {}: it is already started",
                    other.as_str()
                )))
            }
        };
        let accel = self.accelerator(name, c.vm.accelerator)?;
        let dir = self.home.vm_dir(name);
        if restore {
            check_saved(name, &dir, accel)?;
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
        // Its own process group: the worker outlives a restart of the service.
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
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
        let mut child = cmd.spawn().map_err(|e| {
            let why = format!("cannot start the VM's worker: {e}");
            self.events.log(Code::VmStartFailed, Some(name), user, &why);
            HostError::Internal(why)
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        let worker_pid = child.id();
        // Reap the worker whenever it ends (a restarted service is not its parent any more).
        std::thread::spawn(move || child.wait());
        // Loading a large saved state takes a while; a worker silent for longer is stuck.
        let line = rx
            .recv_timeout(Duration::from_secs(900))
            .unwrap_or_else(|_| {
                status::kill(worker_pid);
                "error: the worker did not report within 15 minutes and was killed".to_string()
            });
        match line.trim() {
            "ready" => Ok(()),
            other => {
                let why = other
                    .strip_prefix("error: ")
                    .unwrap_or("the worker ended without a word: see worker.log");
                Err(HostError::Conflict(format!(
                    "cannot start VM '{name}': {why}"
                )))
            }
        }
    }

    pub(super) fn control(
        &self,
        name: &str,
        op: &str,
        timeout: Option<u32>,
        user: &str,
    ) -> Result<(), HostError> {
        let lock = self.lock(name);
        // Turning off must not wait behind a shut-down in progress.
        let _g = if op == "stop" {
            None
        } else {
            Some(lock.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let (c, st) = if _g.is_some() {
            self.current_locked(name)?
        } else {
            self.current(name)?
        };
        let verb = match op {
            "stop" => "turn it off",
            "shutdown" => "shut it down",
            "save" => "save its state",
            other => other,
        };
        if !st.state.is_active() || st.state == VmState::Starting {
            return Err(busy(name, st.state, verb));
        }
        let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
        let timeout = timeout.unwrap_or(c.vm.shutdown_timeout_secs);
        let req = ControlRequest {
            op: op.to_string(),
            user: user.to_string(),
            timeout_secs: timeout,
        };
        let limit = Duration::from_secs(u64::from(timeout) + 600);
        let reply = worker::request(&socket, &req, limit).map_err(|e| {
            HostError::Conflict(format!(
                "VM '{name}': its worker did not answer ({e}); `strata vm show {name}` tells its state now"
            ))
        })?;
        match reply.error {
            None => Ok(()),
            Some(e) => Err(HostError::Conflict(e)),
        }
    }

    pub(super) fn discard_saved(&self, name: &str, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_, mut st) = self.current_locked(name)?;
        if st.state != VmState::Saved {
            return Err(HostError::Conflict(format!(
                "VM '{name}' is {}: it has no saved state",
                st.state.as_str()
            )));
        }
        let dir = self.home.vm_dir(name);
        let (image, meta) = worker::saved_files(&dir);
        let _ = std::fs::remove_file(image);
        let _ = std::fs::remove_file(meta);
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
        let names: Vec<(String, StopAction)> = self
            .home
            .names()
            .into_iter()
            .filter_map(|n| {
                let (c, st) = self.current(&n).ok()?;
                st.state.is_active().then_some((n, c.vm.stop_action))
            })
            .collect();
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = names
                .iter()
                .map(|(n, action)| {
                    s.spawn(move || {
                        let (op, what) = match action {
                            StopAction::Save => ("save", "saved"),
                            StopAction::Shutdown => ("shutdown", "shut down"),
                            StopAction::TurnOff => ("stop", "turned off"),
                        };
                        self.events.log(
                            Code::VmAutomaticAction,
                            Some(n),
                            user,
                            &format!("automatic stop action: {what}"),
                        );
                        let r = self.control(n, op, None, user).map(|()| {
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

/// A saved state restores only where it was made: same accelerator and CPU model.
fn check_saved(name: &str, dir: &std::path::Path, accel: Accelerator) -> Result<(), HostError> {
    let (image, meta) = worker::saved_files(dir);
    let text = std::fs::read(&meta)
        .map_err(|e| HostError::io(&meta, "read the saved state's description", e))?;
    let saved: SavedMeta = serde_json::from_slice(&text)
        .map_err(|e| HostError::Corrupt(format!("{}: {e}", meta.display())))?;
    if !image.exists() {
        return Err(HostError::Corrupt(format!(
            "VM '{name}': the saved state {} is missing: discard it (`strata vm discard-saved {name}`)",
            image.display()
        )));
    }
    let cpu = crate::qemu::cpu_model(accel);
    let host_cpu = crate::qemu::host_cpu();
    if accel == Accelerator::Kvm && saved.host_cpu != host_cpu {
        return Err(HostError::Conflict(format!(
            "VM '{name}' was saved under KVM on a '{}' CPU; this host has a '{host_cpu}': a saved state can't be restored on a different kind of host. Restore it where it was saved, or discard the saved state (`strata vm discard-saved {name}`)",
            saved.host_cpu
        )));
    }
    for d in &saved.disks {
        if worker::DiskPrint::of(&d.path).ok().as_ref() != Some(d) {
            return Err(HostError::Conflict(format!(
                "VM '{name}': disk '{}' has changed (or is gone) since the VM's state was saved; resuming would show the guest a disk that no longer matches its memory. Put the disk back as it was, or discard the saved state (`strata vm discard-saved {name}`)",
                d.path
            )));
        }
    }
    if saved.accelerator != accel || saved.cpu != cpu {
        return Err(HostError::Conflict(format!(
            "VM '{name}' was saved running under {} with CPU model '{}', but would start here under {} with CPU model '{cpu}': a saved state can't be restored on a different kind of host. Restore it where it was saved, set its accelerator to {}, or discard the saved state (`strata vm discard-saved {name}`)",
            saved.accelerator.as_str(),
            saved.cpu,
            accel.as_str(),
            saved.accelerator.as_str()
        )));
    }
    Ok(())
}
