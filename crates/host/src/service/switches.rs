//! Virtual switches: create, delete, list, show, and their bridges recreated at service start.
//! A switch's kernel objects come from `strata-net` (a Linux bridge per switch, the host's
//! address on an internal one); nothing is left half-made: a failed create removes what it made.

use std::net::Ipv4Addr;

use strata_api::{CreateSwitch, SwitchInfo, SwitchPort, SwitchType};
use strata_net::link;
use strata_net::subnet::Subnet;
use strata_net::{NetError, NetErrorKind};

use super::{validate, Service};
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

/// What a switch's settings mean: its subnet and the host's address on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub subnet: Subnet,
    pub host: Option<Ipv4Addr>,
}

/// Checks a new switch against the others: a valid subnet that overlaps none of theirs, the
/// host's address (internal switches only) inside it, a DHCP range inside it, DNS addresses.
pub(crate) fn plan(spec: &CreateSwitch, others: &[SwitchConfig]) -> Result<Plan, HostError> {
    validate::object_name("switch", &spec.name)?;
    let (subnet, given) = Subnet::parse(&spec.subnet).map_err(net_error)?;
    let host = match (spec.kind, &spec.host_address, given) {
        (SwitchType::Private, Some(_), _) | (SwitchType::Private, None, Some(_)) => {
            return Err(HostError::invalid(format!(
                "switch '{}' is private: the host has no address on it (give the subnet as {subnet})",
                spec.name
            )))
        }
        (SwitchType::Private, None, None) => None,
        (SwitchType::Internal, Some(a), _) => Some(address("host address", a)?),
        (SwitchType::Internal, None, g) => Some(g.unwrap_or_else(|| subnet.nth(1))),
    };
    if let Some(h) = host.filter(|h| !subnet.contains_host(*h)) {
        return Err(HostError::invalid(format!(
            "host address {h} is not a host address of the subnet {subnet}"
        )));
    }
    for o in others {
        let Ok((theirs, _)) = Subnet::parse(&o.switch.subnet) else {
            continue;
        };
        if theirs.overlaps(&subnet) {
            return Err(HostError::conflict(format!(
                "subnet {subnet} overlaps switch '{}''s subnet {theirs}",
                o.switch.name
            )));
        }
    }
    if let Some(range) = &spec.dhcp_range {
        dhcp_range(range, &subnet)?;
    }
    for d in &spec.dns {
        address("DNS server", d)?;
    }
    if !(60..=30 * 86400).contains(&spec.lease_secs) {
        return Err(HostError::invalid(format!(
            "lease time {} s: choose 60 s to 30 days",
            spec.lease_secs
        )));
    }
    Ok(Plan { subnet, host })
}

fn address(what: &str, text: &str) -> Result<Ipv4Addr, HostError> {
    text.parse()
        .map_err(|_| HostError::invalid(format!("{what} '{text}': not an IPv4 address")))
}

/// A DHCP range `A-B` inside `subnet`.
pub(crate) fn dhcp_range(text: &str, subnet: &Subnet) -> Result<(Ipv4Addr, Ipv4Addr), HostError> {
    let bad = |why: String| HostError::invalid(format!("DHCP range '{text}': {why}"));
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| bad("expected FIRST-LAST such as 10.10.0.100-10.10.0.200".into()))?;
    let (a, b) = (
        address("DHCP range", a.trim())?,
        address("DHCP range", b.trim())?,
    );
    if !subnet.contains_host(a) || !subnet.contains_host(b) {
        return Err(bad(format!("outside the subnet {subnet}")));
    }
    if u32::from(a) > u32::from(b) {
        return Err(bad("the first address is after the last".into()));
    }
    Ok((a, b))
}

impl Service {
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
        let others: Vec<SwitchConfig> = self
            .home
            .switch_names()
            .iter()
            .filter_map(|n| self.home.load_switch(n).ok())
            .collect();
        let plan = plan(&spec, &others)?;
        let config = SwitchConfig {
            schema: crate::store::SCHEMA,
            id: uuid::Uuid::new_v4().simple().to_string(),
            switch: spec,
        };
        let bridge = link::bridge_name(&config.id);
        self.home.save_switch(&config)?;
        if let Err(e) = self.bring_up(&config, &plan) {
            let _ = link::delete(&bridge);
            let _ = self.home.remove_switch(&config.switch.name);
            return Err(e);
        }
        let s = &config.switch;
        self.events.log(
            Code::SwitchCreated,
            None,
            user,
            &format!(
                "switch '{}' created ({:?}, {}, bridge {bridge}, DHCP {})",
                s.name,
                s.kind,
                plan.subnet,
                if s.dhcp { "on" } else { "off" }
            ),
        );
        Ok(config.switch.name)
    }

    /// Makes the switch's bridge (and the host's address on it) and starts its DHCP server.
    fn bring_up(&self, config: &SwitchConfig, plan: &Plan) -> Result<(), HostError> {
        let bridge = link::bridge_name(&config.id);
        let address = plan.host.map(|h| (h, plan.subnet.prefix));
        link::ensure_bridge(&bridge, address).map_err(net_error)?;
        self.start_dhcp(config, plan)
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
        self.stop_dhcp(name);
        let bridge = link::bridge_name(&config.id);
        link::delete(&bridge).map_err(net_error)?;
        self.home.remove_switch(name)?;
        self.events.log(
            Code::SwitchDeleted,
            None,
            user,
            &format!("switch '{name}' deleted (bridge {bridge})"),
        );
        Ok(())
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
        let s = c.switch;
        Ok(SwitchInfo {
            bridge: link::bridge_name(&c.id),
            id: c.id,
            kind: s.kind,
            subnet: plan.subnet.to_string(),
            host_address: plan.host.map(|h| h.to_string()),
            dhcp: s.dhcp,
            dhcp_range: s.dhcp.then(|| self.effective_range(&s, &plan)),
            dns: s.dns,
            lease_secs: s.lease_secs,
            notes: s.notes,
            ports: self.ports_of(&s.name),
            name: s.name,
        })
    }

    /// The range handed out: the one given, else from the 17th address to the last.
    fn effective_range(&self, s: &CreateSwitch, plan: &Plan) -> String {
        match &s.dhcp_range {
            Some(r) => r.clone(),
            None => {
                let last = Ipv4Addr::from(u32::from(plan.subnet.broadcast()) - 1);
                format!("{}-{last}", plan.subnet.nth(16))
            }
        }
    }

    /// At service start: every switch's bridge is made again where it is missing (after a host
    /// reboot) and its DHCP server started.
    pub fn restore_switches(&self) {
        for name in self.home.switch_names() {
            let result = self.home.load_switch(&name).and_then(|c| {
                let plan = plan(&c.switch, &[])?;
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
    }

    /// Refuses NICs connected to switches that do not exist.
    pub(super) fn check_nic_switches(&self, nics: &[strata_api::NicSpec]) -> Result<(), HostError> {
        let names = self.home.switch_names();
        for (i, n) in nics.iter().enumerate() {
            if let Some(s) = n
                .switch
                .as_deref()
                .filter(|s| !names.iter().any(|x| x == s))
            {
                return Err(HostError::invalid(format!(
                    "NIC {i}: no switch named '{s}' (`strata switch list` shows them)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: SwitchType, subnet: &str) -> CreateSwitch {
        CreateSwitch {
            name: name.into(),
            kind,
            subnet: subnet.into(),
            host_address: None,
            dhcp: true,
            dhcp_range: None,
            dns: vec![],
            lease_secs: 3600,
            notes: String::new(),
        }
    }

    fn config(s: CreateSwitch) -> SwitchConfig {
        SwitchConfig {
            schema: crate::store::SCHEMA,
            id: "0".repeat(32),
            switch: s,
        }
    }

    #[test]
    fn an_internal_switch_gives_the_host_the_first_address_unless_told() {
        let p = plan(&spec("lan", SwitchType::Internal, "10.10.0.0/24"), &[]).unwrap();
        assert_eq!(p.host, Some(Ipv4Addr::new(10, 10, 0, 1)));
        let p = plan(&spec("lan", SwitchType::Internal, "10.10.0.5/24"), &[]).unwrap();
        assert_eq!(p.host, Some(Ipv4Addr::new(10, 10, 0, 5)));
        let mut s = spec("lan", SwitchType::Internal, "10.10.0.0/24");
        s.host_address = Some("10.10.1.1".into());
        let e = plan(&s, &[]).unwrap_err();
        assert!(
            e.message.contains("not a host address of the subnet"),
            "{e}"
        );
        let p = plan(&spec("p", SwitchType::Private, "10.20.0.0/24"), &[]).unwrap();
        assert_eq!(p.host, None);
        let e = plan(&spec("p", SwitchType::Private, "10.20.0.1/24"), &[]).unwrap_err();
        assert!(e.message.contains("private"), "{e}");
    }

    #[test]
    fn overlaps_ranges_and_settings_are_refused_by_name() {
        let others = [config(spec("a", SwitchType::Internal, "10.10.0.0/16"))];
        let e = plan(&spec("b", SwitchType::Private, "10.10.5.0/24"), &others).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("overlaps switch 'a'"), "{e}");
        let mut s = spec("c", SwitchType::Private, "10.30.0.0/24");
        s.dhcp_range = Some("10.30.0.200-10.30.1.5".into());
        assert!(plan(&s, &[])
            .unwrap_err()
            .message
            .contains("outside the subnet"));
        s.dhcp_range = Some("10.30.0.200-10.30.0.100".into());
        assert!(plan(&s, &[])
            .unwrap_err()
            .message
            .contains("after the last"));
        s.dhcp_range = None;
        s.dns = vec!["dns.example".into()];
        assert!(plan(&s, &[]).unwrap_err().message.contains("DNS server"));
        s.dns = vec![];
        s.lease_secs = 5;
        assert!(plan(&s, &[]).unwrap_err().message.contains("lease time"));
        s.lease_secs = 3600;
        s.name = "bad name".into();
        assert_eq!(plan(&s, &[]).unwrap_err().kind, ErrorKind::Invalid);
    }
}
