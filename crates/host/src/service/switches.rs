//! Virtual switches: create, delete, list, show, and their bridges recreated at service start.
//! A switch's kernel objects come from `strata-net` (a Linux bridge per switch and per VLAN in
//! use, the host's address on an internal one, the host adapter an external one enslaves);
//! nothing is left half-made: a failed create removes what it made.

use std::net::Ipv4Addr;

use strata_api::{CreateSwitch, SwitchInfo, SwitchPort, SwitchType};
use strata_net::link;
use strata_net::{NetError, NetErrorKind};

use super::switch_plan::{plan, Plan};
use super::Service;
use crate::error::{ErrorKind, HostError};
use crate::events::Code;
use crate::switch_store::SwitchConfig;

/// A `strata-net` error as the host's.
pub(crate) fn net_error(e: NetError) -> HostError {
    let kind = match e.kind {
        NetErrorKind::Invalid => ErrorKind::Invalid,
        NetErrorKind::Conflict => ErrorKind::Conflict,
        NetErrorKind::NotFound => ErrorKind::NotFound,
        NetErrorKind::Corrupt => ErrorKind::Corrupt,
        NetErrorKind::Io => ErrorKind::Io,
        NetErrorKind::Kernel => ErrorKind::Internal,
    };
    HostError::new(kind, e.to_string())
}

/// An external switch's host adapter: it must exist, be on no other bridge, and carry no IPv4
/// address (enslaving it would take that address from the host; Strata never moves a host's
/// addresses or routes behind its back).
fn check_host_nic(nic: &str, bridge: &str) -> Result<(), HostError> {
    let Some(state) = link::port_state(nic).map_err(net_error)? else {
        return Err(HostError::not_found(format!(
            "host network adapter '{nic}' does not exist (`ip link` lists them)"
        )));
    };
    if let Some(other) = state.controller.filter(|c| c != bridge) {
        return Err(HostError::conflict(format!(
            "host network adapter '{nic}' already belongs to bridge {other}"
        )));
    }
    if !state.ipv4.is_empty() {
        return Err(HostError::conflict(format!(
            "host network adapter '{nic}' has the host's address {}: bridging it would take that address away; use an adapter dedicated to VMs, or move the address off it first",
            state.ipv4.join(", ")
        )));
    }
    Ok(())
}

impl Service {
    /// Every switch's settings (a damaged file is skipped: `switch show` names it).
    pub(super) fn switch_configs(&self) -> Vec<SwitchConfig> {
        self.home
            .switch_names()
            .iter()
            .filter_map(|n| self.home.load_switch(n).ok())
            .collect()
    }

    pub(super) fn create_switch(
        &self,
        spec: CreateSwitch,
        user: &str,
    ) -> Result<String, HostError> {
        let _g = self.define.lock().unwrap_or_else(|p| p.into_inner());
        if self.home.switch_names().contains(&spec.name) {
            return Err(HostError::conflict(format!(
                "a switch named '{}' already exists",
                spec.name
            )));
        }
        let plan = plan(&spec, &self.switch_configs())?;
        let mut spec = spec;
        if spec.forwards.iter().any(|f| f.vm.is_some()) {
            return Err(HostError::invalid(format!(
                "switch '{}': forwards to a VM are added once the switch exists (`strata switch forward add`), which reserves the VM's address",
                spec.name
            )));
        }
        for r in &mut spec.reservations {
            r.mac = super::validate::mac(&r.mac)?;
        }
        let config = SwitchConfig {
            schema: crate::store::SCHEMA,
            id: uuid::Uuid::new_v4().simple().to_string(),
            switch: spec,
        };
        let bridge = link::bridge_name(&config.id);
        if let Some(nic) = &config.switch.host_nic {
            check_host_nic(nic, &bridge)?;
        }
        self.home.save_switch(&config)?;
        let made = self
            .bring_up(&config, &plan)
            .and_then(|()| self.refresh_firewall());
        if let Err(e) = made {
            self.stop_dhcp(&config.switch.name);
            self.tear_down(&config);
            let _ = self.home.remove_switch(&config.switch.name);
            let _ = self.refresh_firewall();
            return Err(e);
        }
        let s = &config.switch;
        let what = match (s.kind, &s.host_nic, plan.subnet) {
            (_, Some(nic), _) => format!("external, bridging {nic}"),
            (kind, _, Some(subnet)) => format!(
                "{}, {subnet}, DHCP {}, NAT {}",
                kind.as_str(),
                on_off(s.dhcp_on()),
                on_off(s.nat)
            ),
            (kind, None, None) => kind.as_str().to_string(),
        };
        self.events.log(
            Code::SwitchCreated,
            None,
            user,
            &format!("switch '{}' created ({what}, bridge {bridge})", s.name),
        );
        self.warn_firewall(&config, user);
        Ok(config.switch.name)
    }

    /// Makes the switch's bridge (the host's address on it, or its host adapter enslaved) and
    /// starts its DHCP server. (Its firewall rules are the caller's: one refresh covers every
    /// switch.)
    pub(super) fn bring_up(&self, config: &SwitchConfig, plan: &Plan) -> Result<(), HostError> {
        let bridge = link::bridge_name(&config.id);
        let address = plan.host.zip(plan.subnet.map(|s| s.prefix));
        link::ensure_bridge(&bridge, address).map_err(net_error)?;
        if let Some(nic) = &config.switch.host_nic {
            check_host_nic(nic, &bridge)?;
            link::attach(nic, &bridge).map_err(net_error)?;
        }
        self.start_dhcp(config, plan)
    }

    /// Removes the switch's kernel objects: its host adapter freed, its VLAN bridges and its
    /// bridge deleted. Errors are reported, the rest still removed.
    fn tear_down(&self, config: &SwitchConfig) -> Vec<String> {
        let mut problems = Vec::new();
        let bridge = link::bridge_name(&config.id);
        if let Some(nic) = &config.switch.host_nic {
            if let Err(e) = link::detach(nic) {
                problems.push(e.to_string());
            }
        }
        let vlans = link::vlan_bridges(&config.id).unwrap_or_default();
        for b in vlans.iter().chain(std::iter::once(&bridge)) {
            if let Err(e) = link::delete(b) {
                problems.push(e.to_string());
            }
        }
        problems
    }

    pub(super) fn delete_switch(&self, name: &str, user: &str) -> Result<(), HostError> {
        let _g = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.home.load_switch(name)?;
        let ports = self.ports_of(name);
        if !ports.is_empty() {
            let users: Vec<String> = ports
                .iter()
                .map(|p| format!("VM '{}' NIC {}", p.vm, p.nic))
                .collect();
            return Err(HostError::conflict(format!(
                "switch '{name}' is in use by {}: connect those adapters elsewhere first",
                users.join(", ")
            )));
        }
        self.home.remove_switch(name)?;
        self.stop_dhcp(name);
        let mut problems = self.tear_down(&config);
        if let Err(e) = self.refresh_firewall() {
            problems.push(e.to_string());
        }
        let bridge = link::bridge_name(&config.id);
        self.events.log(
            Code::SwitchDeleted,
            None,
            user,
            &format!("switch '{name}' deleted (bridge {bridge})"),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(HostError::new(
                ErrorKind::Internal,
                format!(
                    "switch '{name}' deleted, but the kernel refused some of its cleanup: {}",
                    problems.join("; ")
                ),
            ))
        }
    }

    /// The NICs connected to switch `name`.
    pub(super) fn ports_of(&self, name: &str) -> Vec<SwitchPort> {
        self.home
            .names()
            .iter()
            .filter_map(|n| self.home.load(n).ok())
            .flat_map(|c| {
                c.vm.nics
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.switch.as_deref() == Some(name))
                    .map(|(i, n)| SwitchPort {
                        vm: c.vm.name.clone(),
                        nic: i,
                        mac: n.mac.clone().unwrap_or_default(),
                        vlan: n.vlan,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// All switches.
    pub fn switches(&self) -> Vec<SwitchInfo> {
        self.home
            .switch_names()
            .iter()
            .filter_map(|n| self.switch(n).ok())
            .collect()
    }

    /// One switch.
    pub fn switch(&self, name: &str) -> Result<SwitchInfo, HostError> {
        let c = self.home.load_switch(name)?;
        let plan = plan(&c.switch, &[])?;
        let warnings = self.firewall_warnings(&c);
        let forwards = self.forward_infos(&c);
        let s = c.switch;
        Ok(SwitchInfo {
            bridge: link::bridge_name(&c.id),
            id: c.id,
            kind: s.kind,
            host_nic: s.host_nic.clone(),
            subnet: plan.subnet.map(|s| s.to_string()),
            host_address: plan.host.map(|h| h.to_string()),
            dhcp: s.dhcp_on(),
            dhcp_range: s.dhcp_on().then(|| effective_range(&s, &plan)).flatten(),
            gateway: plan.gateway.map(|g| g.to_string()),
            dns: s.dns,
            lease_secs: s.lease_secs,
            nat: s.nat,
            vlan: s.vlan,
            notes: s.notes,
            reservations: s.reservations,
            forwards,
            ports: self.ports_of(&s.name),
            name: s.name,
            warnings,
        })
    }

    /// At service start: every switch's bridge is made again where it is missing (after a host
    /// reboot), its firewall rules restored and its DHCP server started.
    pub fn restore_switches(&self) {
        self.forget_firewall();
        for c in self.switch_configs() {
            let name = c.switch.name.clone();
            let result = plan(&c.switch, &[]).and_then(|plan| {
                let bridge = link::bridge_name(&c.id);
                let missing = !link::exists(&bridge).map_err(net_error)?;
                self.bring_up(&c, &plan)?;
                Ok((bridge, missing))
            });
            match result {
                Ok((bridge, true)) => self.events.log(
                    Code::SwitchRestored,
                    None,
                    "system",
                    &format!("switch '{name}': bridge {bridge} made again"),
                ),
                Ok(_) => {}
                Err(e) => self.events.log(
                    Code::SwitchRestored,
                    None,
                    "system",
                    &format!("switch '{name}' could not be restored: {e}"),
                ),
            }
        }
        if let Err(e) = self.refresh_firewall() {
            self.events.log(
                Code::SwitchRestored,
                None,
                "system",
                &format!("Strata's firewall rules could not be restored: {e}"),
            );
        }
        self.replug_taps();
    }

    /// Puts the taps of running VMs back on their bridges (a bridge made again by
    /// [`Service::restore_switches`] starts without ports), so their traffic flows on.
    fn replug_taps(&self) {
        for name in self.home.names() {
            let Ok(c) = self.home.load(&name) else {
                continue;
            };
            for (i, n) in c.vm.nics.iter().enumerate() {
                let tap = super::firewall::tap_of(&c.id, i, n);
                if n.switch.is_none() || !link::exists(&tap).unwrap_or(false) {
                    continue;
                }
                if let Err(e) = crate::ports::plug(&self.home, &tap, n, false) {
                    self.events.log(
                        Code::SwitchRestored,
                        Some(&name),
                        "system",
                        &format!("NIC {i}'s tap {tap} could not be put back on its switch: {e}"),
                    );
                }
            }
        }
    }

    /// Refuses NICs connected to switches that do not exist, and VLANs an external switch cannot
    /// carry.
    pub(super) fn check_nic_switches(&self, nics: &[strata_api::NicSpec]) -> Result<(), HostError> {
        for (i, n) in nics.iter().enumerate() {
            if let Some(v) = n.vlan {
                super::switch_plan::vlan(v)?;
            }
            let Some(s) = n.switch.as_deref() else {
                continue;
            };
            let config = self.home.load_switch(s).map_err(|_| {
                HostError::invalid(format!(
                    "NIC {i}: no switch named '{s}' (`strata switch list` shows them)"
                ))
            })?;
            let sw = &config.switch;
            if sw.kind == SwitchType::External && n.vlan.is_some() && n.vlan != sw.vlan {
                return Err(HostError::unsupported(format!(
                    "NIC {i}: switch '{s}' is external and this host cannot tag VLAN {} onto its LAN (no 802.1Q): use the switch's own VLAN or an internal or private switch",
                    n.vlan.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The range handed out: the one given, else from the 17th address to the last.
fn effective_range(s: &CreateSwitch, plan: &Plan) -> Option<String> {
    if let Some(r) = &s.dhcp_range {
        return Some(r.clone());
    }
    let subnet = plan.subnet?;
    let last = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
    Some(format!("{}-{last}", subnet.nth(16)))
}
