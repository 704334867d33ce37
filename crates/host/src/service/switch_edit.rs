//! Changing a switch: its settings (`switch set`), static DHCP reservations and NAT port
//! forwards. Each change is planned against the other switches first, saved, then applied to the
//! DHCP server and the firewall; when applying fails, the old settings come back.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use strata_api::{CreateSwitch, PortForward, Proto, Reservation, SetSwitch};

use super::switch_plan::{plan, Plan};
use super::{validate, Service};
use crate::error::HostError;
use crate::events::Code;
use crate::switch_store::SwitchConfig;

/// Applies `set` to `s`; returns what changed.
fn apply_set(s: &mut CreateSwitch, set: SetSwitch) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if let Some(d) = set.dhcp {
        s.dhcp = Some(d);
        changed.push("DHCP");
    }
    if let Some(r) = set.dhcp_range {
        s.dhcp_range = Some(r).filter(|r| !r.is_empty());
        changed.push("DHCP range");
    }
    if let Some(g) = set.gateway {
        s.gateway = Some(g).filter(|g| !g.is_empty());
        changed.push("gateway");
    }
    if let Some(d) = set.dns {
        s.dns = d;
        changed.push("DNS servers");
    }
    if let Some(l) = set.lease_secs {
        s.lease_secs = l;
        changed.push("lease time");
    }
    if let Some(n) = set.nat {
        s.nat = n;
        changed.push("NAT");
    }
    if let Some(n) = set.notes {
        s.notes = n;
        changed.push("notes");
    }
    changed
}

impl Service {
    /// Carries out a switch command; the reply is the switch afterwards (none when deleted).
    pub(super) fn switch_command(
        &self,
        cmd: super::Command,
        user: &str,
    ) -> Result<super::Reply, HostError> {
        use super::Command;
        let name = match cmd {
            Command::CreateSwitch(spec) => self.create_switch(spec, user)?,
            Command::DeleteSwitch(name) => {
                self.delete_switch(&name, user)?;
                return Ok(super::Reply::Deleted);
            }
            Command::SetSwitch(name, set) => self.set_switch(&name, set, user).map(|()| name)?,
            Command::Reserve(name, r) => self.reserve(&name, r, user).map(|()| name)?,
            Command::Unreserve(name, mac) => self.unreserve(&name, &mac, user).map(|()| name)?,
            Command::AddForward(name, f) => self.add_forward(&name, f, user).map(|()| name)?,
            Command::RemoveForward(name, proto, port) => self
                .remove_forward(&name, proto, port, user)
                .map(|()| name)?,
            _ => return Err(HostError::internal("not a switch command")),
        };
        self.switch(&name)
            .map(|s| super::Reply::Switch(Box::new(s)))
    }

    /// Changes switch `name` with `edit` (which says what it did, or refuses), then applies the
    /// result; on failure the old settings are saved and applied again.
    fn edit_switch(
        &self,
        name: &str,
        user: &str,
        edit: impl FnOnce(&Self, &mut SwitchConfig) -> Result<String, HostError>,
    ) -> Result<(), HostError> {
        let _g = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.home.load_switch(name)?;
        let mut new = old.clone();
        let what = edit(self, &mut new)?;
        let others: Vec<SwitchConfig> = self
            .switch_configs()
            .into_iter()
            .filter(|o| o.switch.name != name)
            .collect();
        let p = plan(&new.switch, &others)?;
        self.home.save_switch(&new)?;
        if let Err(e) = self.apply_switch(&new, &p) {
            self.home.save_switch(&old)?;
            if let Ok(p) = plan(&old.switch, &[]) {
                let _ = self.apply_switch(&old, &p);
            }
            return Err(e);
        }
        self.events.log(
            Code::SwitchChanged,
            None,
            user,
            &format!("switch '{name}': {what}"),
        );
        self.warn_firewall(&new, user);
        Ok(())
    }

    fn apply_switch(&self, c: &SwitchConfig, p: &Plan) -> Result<(), HostError> {
        self.apply_dhcp(c, p)?;
        self.refresh_firewall()
    }

    pub(super) fn set_switch(
        &self,
        name: &str,
        set: SetSwitch,
        user: &str,
    ) -> Result<(), HostError> {
        self.edit_switch(name, user, |_, c| {
            let changed = apply_set(&mut c.switch, set);
            if changed.is_empty() {
                return Err(HostError::invalid("nothing to change: give a setting"));
            }
            Ok(format!("changed {}", changed.join(", ")))
        })
    }

    pub(super) fn reserve(&self, name: &str, r: Reservation, user: &str) -> Result<(), HostError> {
        let mac = validate::mac(&r.mac)?;
        let ip: Ipv4Addr =
            r.ip.parse()
                .map_err(|_| HostError::invalid(format!("'{}' is not an IPv4 address", r.ip)))?;
        if let Some((holder, _)) = self
            .leased_addresses(name)
            .into_iter()
            .find(|(m, a)| *a == ip && *m != mac)
        {
            return Err(HostError::conflict(format!(
                "{ip} is leased to {holder}: release it first (delete that NIC, or wait for the lease to end)"
            )));
        }
        self.edit_switch(name, user, |_, c| {
            let s = &mut c.switch;
            if let Some(o) = s
                .reservations
                .iter()
                .find(|x| x.ip == ip.to_string() && x.mac != mac)
            {
                return Err(HostError::conflict(format!(
                    "{ip} is reserved for {} already",
                    o.mac
                )));
            }
            s.reservations.retain(|x| x.mac != mac);
            s.reservations.push(Reservation {
                mac: mac.clone(),
                ip: ip.to_string(),
            });
            Ok(format!("{ip} reserved for {mac}"))
        })
    }

    pub(super) fn unreserve(&self, name: &str, mac: &str, user: &str) -> Result<(), HostError> {
        let mac = validate::mac(mac)?;
        self.edit_switch(name, user, |svc, c| {
            let uses = |f: &&PortForward| {
                let vm = f.vm.as_deref().and_then(|v| svc.home.load(v).ok());
                vm.and_then(|v| v.vm.nics.get(f.nic).and_then(|n| n.mac.clone()))
                    .is_some_and(|m| m == mac)
            };
            if let Some(f) = c.switch.forwards.iter().find(uses) {
                return Err(HostError::conflict(format!(
                    "port forward {}/{} goes to {mac}'s reserved address: remove it first",
                    f.host_port,
                    f.proto.as_str()
                )));
            }
            let s = &mut c.switch;
            let before = s.reservations.len();
            s.reservations.retain(|x| x.mac != mac);
            if s.reservations.len() == before {
                return Err(HostError::not_found(format!(
                    "switch '{}' has no reservation for {mac}",
                    s.name
                )));
            }
            Ok(format!("reservation of {mac} removed"))
        })
    }

    pub(super) fn add_forward(
        &self,
        name: &str,
        f: PortForward,
        user: &str,
    ) -> Result<(), HostError> {
        self.edit_switch(name, user, |svc, c| {
            if let Some(vm) = &f.vm {
                svc.reserve_for_forward(c, vm, f.nic)?;
            }
            let what = format!(
                "port forward {}/{} to {}:{} added",
                f.host_port,
                f.proto.as_str(),
                f.vm.clone().or(f.address.clone()).unwrap_or_default(),
                f.port
            );
            c.switch.forwards.push(f);
            Ok(what)
        })
    }

    pub(super) fn remove_forward(
        &self,
        name: &str,
        proto: Proto,
        host_port: u16,
        user: &str,
    ) -> Result<(), HostError> {
        self.edit_switch(name, user, |_, c| {
            let s = &mut c.switch;
            let before = s.forwards.len();
            s.forwards
                .retain(|f| (f.proto, f.host_port) != (proto, host_port));
            if s.forwards.len() == before {
                return Err(HostError::not_found(format!(
                    "switch '{}' forwards no host port {host_port}/{}",
                    s.name,
                    proto.as_str()
                )));
            }
            Ok(format!(
                "port forward {host_port}/{} removed",
                proto.as_str()
            ))
        })
    }

    /// Removes the port forwards to VM `vm` (being deleted) from every switch; their host ports
    /// are free again. (The reservations they made stay, with the switch.)
    pub(super) fn drop_forwards_of(&self, vm: &str, user: &str) {
        let _g = self.define.lock().unwrap_or_else(|p| p.into_inner());
        for mut c in self.switch_configs() {
            let before = c.switch.forwards.len();
            c.switch.forwards.retain(|f| f.vm.as_deref() != Some(vm));
            let gone = before - c.switch.forwards.len();
            if gone == 0 {
                continue;
            }
            let name = c.switch.name.clone();
            match self.home.save_switch(&c) {
                Ok(()) => self.events.log(
                    Code::SwitchChanged,
                    None,
                    user,
                    &format!(
                        "switch '{name}': {gone} port forward(s) to deleted VM '{vm}' removed"
                    ),
                ),
                Err(e) => self.events.log(
                    Code::SwitchWarning,
                    None,
                    user,
                    &format!(
                        "switch '{name}': forwards to deleted VM '{vm}' could not be removed: {e}"
                    ),
                ),
            }
        }
    }

    /// A forward to VM `vm`'s NIC `nic` needs that NIC's address fixed: its reservation, or a
    /// new one (its current lease's address, else the first free address of the range).
    fn reserve_for_forward(
        &self,
        c: &mut SwitchConfig,
        vm: &str,
        nic: usize,
    ) -> Result<(), HostError> {
        let sw = c.switch.name.clone();
        let config = self.home.load(vm)?;
        let n = config
            .vm
            .nics
            .get(nic)
            .ok_or_else(|| HostError::invalid(format!("VM '{vm}' has no NIC {nic}")))?;
        if n.switch.as_deref() != Some(sw.as_str()) {
            return Err(HostError::invalid(format!(
                "VM '{vm}' NIC {nic} is not connected to switch '{sw}'"
            )));
        }
        let mac = n.mac.clone().unwrap_or_default();
        if c.switch.reservations.iter().any(|r| r.mac == mac) {
            return Ok(());
        }
        let ip = match self.lease_of(&sw, &mac) {
            Some(ip) => ip,
            None => self.free_address(c)?,
        };
        c.switch.reservations.push(Reservation {
            mac,
            ip: ip.to_string(),
        });
        Ok(())
    }

    /// The first address of the switch's DHCP range neither reserved nor leased.
    fn free_address(&self, c: &SwitchConfig) -> Result<Ipv4Addr, HostError> {
        let p = plan(&c.switch, &[])?;
        let info_range = self.switch(&c.switch.name)?.dhcp_range;
        let Some((first, last)) = info_range
            .as_deref()
            .zip(p.subnet)
            .and_then(|(r, s)| super::switch_plan::dhcp_range(r, &s).ok())
        else {
            return Err(HostError::invalid(format!(
                "switch '{}' has no DHCP range to reserve an address from: forward to --to ADDRESS:PORT instead",
                c.switch.name
            )));
        };
        let mut taken: HashSet<Ipv4Addr> = self
            .leased_addresses(&c.switch.name)
            .into_iter()
            .map(|(_, ip)| ip)
            .collect();
        taken.extend(
            c.switch
                .reservations
                .iter()
                .filter_map(|r| r.ip.parse::<Ipv4Addr>().ok()),
        );
        (u32::from(first)..=u32::from(last))
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| {
                HostError::conflict(format!(
                    "switch '{}': every address of its DHCP range is taken",
                    c.switch.name
                ))
            })
    }
}
