//! A VM's network adapters one at a time (`strata vm nic add|remove|set`), also while it runs:
//! the adapter's settings are saved and its firewall rules applied first (a guard exists before
//! its tap does), then the worker adds or removes the device through QMP; a failure puts the old
//! settings back. A removed adapter's lease is released at once.

use strata_api::{NicSpec, SetNic, VmState};

use super::firewall::tap_of;
use super::lifecycle::busy;
use super::{switch_plan, validate, Service};
use crate::error::HostError;
use crate::events::Code;
use crate::store::VmConfig;
use crate::worker::{self, Verb};

/// What a change may do in each state: hot (through the worker) or cold (settings only).
fn mode(name: &str, state: VmState, what: &str) -> Result<bool, HostError> {
    match state {
        VmState::Off | VmState::Crashed => Ok(false),
        VmState::Running | VmState::Paused => Ok(true),
        s => Err(busy(name, s, what)),
    }
}

/// Finds an adapter by index (`0`) or MAC.
fn find(c: &VmConfig, nic: &str) -> Result<usize, HostError> {
    let by_index = nic.parse::<usize>().ok().filter(|i| *i < c.vm.nics.len());
    let by_mac = || {
        let mac = validate::mac(nic).ok()?;
        c.vm.nics
            .iter()
            .position(|n| n.mac.as_deref() == Some(&mac))
    };
    by_index.or_else(by_mac).ok_or_else(|| {
        HostError::not_found(format!(
            "VM '{}' has no network adapter '{nic}' (give its index or MAC: `strata vm show {}`)",
            c.vm.name, c.vm.name
        ))
    })
}

impl Service {
    /// Deletes the VLAN bridges no adapter is plugged into any more (a running VM's tap keeps
    /// its bridge; a stopped VM's is made again when it starts).
    pub(super) fn gc_vlan_bridges(&self) {
        for c in self.switch_configs() {
            for b in strata_net::link::vlan_bridges(&c.id).unwrap_or_default() {
                if strata_net::link::port_count(&b).is_ok_and(|n| n == 0) {
                    let _ = strata_net::link::delete(&b);
                }
            }
        }
    }

    /// Rebuilds the firewall after a VM's adapters changed; a failure is logged (the VM's
    /// settings are saved; the next change or restart applies them again).
    pub(super) fn firewall_after_change(&self, vm: &str, user: &str) {
        if let Err(e) = self.refresh_firewall() {
            self.events.log(
                Code::VmRequestFailed,
                Some(vm),
                user,
                &format!("Strata's firewall rules could not be applied: {e}"),
            );
        }
    }

    /// Sends `verb` to VM `c`'s worker (a device change: two minutes at most).
    pub(super) fn request(&self, c: &VmConfig, user: &str, verb: Verb) -> Result<(), HostError> {
        let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
        worker::request(&socket, user, verb, std::time::Duration::from_secs(120)).map(drop)
    }

    /// Saves `new` (then lets the host-wide `define` lock go: the worker's part may take a
    /// while), applies the firewall, then runs `hot` (when the VM runs); on failure the old
    /// configuration comes back.
    fn change_nics(
        &self,
        define: std::sync::MutexGuard<'_, ()>,
        old: &VmConfig,
        new: &VmConfig,
        user: &str,
        hot: Option<&dyn Fn() -> Result<(), HostError>>,
    ) -> Result<(), HostError> {
        validate::config(&new.vm, &self.others(&new.vm.name))?;
        self.home.save(new)?;
        drop(define);
        let applied = self
            .refresh_firewall()
            .and_then(|()| hot.map_or(Ok(()), |f| f()));
        if let Err(e) = applied {
            self.home.save(old)?;
            self.firewall_after_change(&old.vm.name, user);
            self.gc_vlan_bridges();
            return Err(e);
        }
        self.gc_vlan_bridges();
        Ok(())
    }

    pub(super) fn add_nic(&self, name: &str, spec: NicSpec, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (old, st) = self.current_locked(name)?;
        let hot = mode(name, st.state, "add a network adapter")?;
        let mut new = old.clone();
        let mut nics = old.vm.nics.clone();
        nics.push(spec);
        self.check_nic_switches(&nics)?;
        new.vm.nics = self.assign_macs(name, &old.vm.nics, nics)?;
        let index = new.vm.nics.len() - 1;
        let n = new.vm.nics[index].clone();
        let slot = n.slot.ok_or_else(|| {
            HostError::conflict(format!("VM '{name}' has no free network adapter slot"))
        })?;
        let tap = n.switch.as_ref().map(|_| tap_of(&new.id, index, &n));
        if hot
            && old
                .vm
                .machine
                .as_deref()
                .is_some_and(|m| m.starts_with("pc-q35-"))
        {
            return Err(HostError::unsupported(format!(
                "VM '{name}' is a Q35 machine, whose root bus takes no hot-plugged adapters: add it while the VM is off"
            )));
        }
        let add = || -> Result<(), HostError> {
            let bridge = crate::ports::bridge_for(&self.home, &n)?;
            let verb = Verb::NicAdd {
                slot,
                model: n.model,
                mac: n.mac.clone().unwrap_or_default(),
                tap: tap.clone(),
                bridge,
                up: n.connected,
            };
            self.request(&new, user, verb)?;
            let limited = tap.as_ref().map_or(Ok(()), |t| {
                strata_net::shape::set_bandwidth(t, n.bandwidth_limit).map_err(super::net_error)
            });
            if let Err(e) = limited {
                // The device is in the guest: take it out again, or it outlives its settings.
                let _ = self.request(&new, user, Verb::NicRemove { slot });
                return Err(e);
            }
            Ok(())
        };
        self.change_nics(d, &old, &new, user, hot.then_some(&add as _))?;
        if let (Some(sw), Some(mac)) = (&n.switch, &n.mac) {
            self.set_lease_owner(sw, mac, Some(&format!("{name}/nic{index}")));
        }
        let on = n
            .switch
            .as_deref()
            .map_or("the user-mode network".into(), |s| format!("switch '{s}'"));
        self.events.log(
            Code::NicConnected,
            Some(name),
            user,
            &format!(
                "network adapter {index} ({}) added{} on {on}",
                n.mac.as_deref().unwrap_or_default(),
                if hot { " while running" } else { "" }
            ),
        );
        Ok(())
    }

    pub(super) fn remove_nic(&self, name: &str, nic: &str, user: &str) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (old, st) = self.current_locked(name)?;
        if st.state == VmState::Paused {
            return Err(busy(
                name,
                st.state,
                "remove a network adapter (the guest must let it go)",
            ));
        }
        let hot = mode(name, st.state, "remove a network adapter")?;
        let index = find(&old, nic)?;
        self.check_no_forward(name, index, false)?;
        let mut new = old.clone();
        let n = new.vm.nics.remove(index);
        let slot = device_number(index, &n);
        let remove = || self.request(&old, user, Verb::NicRemove { slot });
        self.change_nics(d, &old, &new, user, hot.then_some(&remove as _))?;
        self.release_leases(name, std::slice::from_ref(&n), user);
        self.events.log(
            Code::NicDisconnected,
            Some(name),
            user,
            &format!(
                "network adapter {index} ({}) removed{}",
                n.mac.as_deref().unwrap_or_default(),
                if hot { " while running" } else { "" }
            ),
        );
        Ok(())
    }

    /// Refuses a new list of adapters that would leave a port forward to VM `vm` pointing at
    /// another adapter than its own (forwards name adapters by index).
    pub(super) fn check_forwards_kept(
        &self,
        vm: &str,
        old: &[NicSpec],
        new: &[NicSpec],
    ) -> Result<(), HostError> {
        let same = |i: usize| {
            let (o, n) = (old.get(i), new.get(i));
            o.zip(n)
                .is_some_and(|(o, n)| o.mac == n.mac && o.switch == n.switch)
        };
        for c in self.switch_configs() {
            if let Some(f) = c
                .switch
                .forwards
                .iter()
                .find(|f| f.vm.as_deref() == Some(vm) && !same(f.nic))
            {
                return Err(HostError::conflict(format!(
                    "switch '{}' forwards host port {}/{} to VM '{vm}' NIC {}: that adapter would change; remove the forward first",
                    c.switch.name,
                    f.host_port,
                    f.proto.as_str(),
                    f.nic
                )));
            }
        }
        Ok(())
    }

    /// Refuses to remove (or, `exact`, to move) adapter `index` while a port forward goes to it
    /// (or, removing, to one after it: forwards name adapters by index).
    pub(super) fn check_no_forward(
        &self,
        vm: &str,
        index: usize,
        exact: bool,
    ) -> Result<(), HostError> {
        for c in self.switch_configs() {
            if let Some(f) = c.switch.forwards.iter().find(|f| {
                f.vm.as_deref() == Some(vm) && (f.nic == index || (!exact && f.nic > index))
            }) {
                return Err(HostError::conflict(format!(
                    "switch '{}' forwards host port {}/{} to VM '{vm}' NIC {}: remove that forward first",
                    c.switch.name,
                    f.host_port,
                    f.proto.as_str(),
                    f.nic
                )));
            }
        }
        Ok(())
    }

    pub(super) fn set_nic(
        &self,
        name: &str,
        nic: &str,
        set: SetNic,
        user: &str,
    ) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (old, st) = self.current_locked(name)?;
        let hot = mode(name, st.state, "change a network adapter")?;
        let index = find(&old, nic)?;
        let mut new = old.clone();
        let before = old.vm.nics[index].clone();
        let (after, what) = apply_set(&before, set)?;
        if hot && before.switch.is_some() != after.switch.is_some() {
            return Err(HostError::unsupported(format!(
                "VM '{name}' NIC {index}: moving between the user-mode network and a switch needs the VM off (or add a new adapter)"
            )));
        }
        new.vm.nics[index] = after.clone();
        self.check_nic_switches(&new.vm.nics)?;
        if before.switch != after.switch {
            self.check_no_forward(name, index, true)?;
        }
        let tap = tap_of(&old.id, index, &after);
        let dev = device_number(index, &after);
        let plugged = |n: &NicSpec, had_limit: bool| -> Result<(), HostError> {
            if n.switch.is_some() {
                crate::ports::plug(&self.home, &tap, n, had_limit)?;
            }
            Ok(())
        };
        let replug = || -> Result<(), HostError> {
            let mut result = plugged(&after, before.bandwidth_limit.is_some());
            if result.is_ok() && before.connected != after.connected {
                let up = after.connected;
                result = self.request(&old, user, Verb::NicLink { slot: dev, up });
            }
            if result.is_err() {
                // Put the tap back as the old settings say.
                let _ = plugged(&before, true);
            }
            result
        };
        self.change_nics(d, &old, &new, user, hot.then_some(&replug as _))?;
        if before.switch != after.switch {
            self.release_leases(name, std::slice::from_ref(&before), user);
        }
        let code = match (
            before.connected && before.switch.is_some(),
            after.connected && after.switch.is_some(),
        ) {
            (false, true) => Code::NicConnected,
            (true, false) => Code::NicDisconnected,
            _ if before.switch != after.switch => Code::NicConnected,
            _ => Code::NicChanged,
        };
        self.events.log(
            code,
            Some(name),
            user,
            &format!("network adapter {index}: {what}"),
        );
        Ok(())
    }
}

/// The number in the adapter's QEMU ids (`nic<N>`, `net<N>`): its slot, or its index for
/// adapters made before slots.
fn device_number(index: usize, n: &NicSpec) -> u8 {
    n.slot
        .unwrap_or_else(|| u8::try_from(index).unwrap_or(u8::MAX))
}

/// Applies `set` to adapter `n`; returns the new adapter and what changed.
fn apply_set(n: &NicSpec, set: SetNic) -> Result<(NicSpec, String), HostError> {
    let mut a = n.clone();
    let mut changed = Vec::new();
    match set.switch.as_deref() {
        Some("") => {
            a.connected = false;
            changed.push("disconnected".to_string());
        }
        Some(s) => {
            a.switch = Some(s.to_string());
            a.connected = true;
            changed.push(format!("connected to switch '{s}'"));
        }
        None => {}
    }
    if let Some(v) = set.mac_spoofing {
        a.mac_spoofing = v;
        changed.push(format!(
            "MAC spoofing {}",
            if v { "allowed" } else { "blocked" }
        ));
    }
    if let Some(v) = set.dhcp_guard {
        a.dhcp_guard = v;
        changed.push(format!("DHCP guard {}", if v { "on" } else { "off" }));
    }
    if let Some(v) = set.router_guard {
        a.router_guard = v;
        changed.push(format!("router guard {}", if v { "on" } else { "off" }));
    }
    if let Some(v) = set.vlan {
        a.vlan = match v {
            0 => None,
            v => Some(switch_plan::vlan(v)?),
        };
        changed.push(format!(
            "VLAN {}",
            a.vlan.map_or("none".into(), |v| v.to_string())
        ));
    }
    if let Some(b) = set.bandwidth_limit {
        a.bandwidth_limit = (b > 0).then_some(b);
        changed.push(format!(
            "bandwidth limit {}",
            a.bandwidth_limit
                .map_or("none".into(), |b| format!("{b} bit/s"))
        ));
    }
    if changed.is_empty() {
        return Err(HostError::invalid("nothing to change: give a setting"));
    }
    Ok((a, changed.join(", ")))
}
