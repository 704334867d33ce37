//! What a switch's settings mean, checked before anything is made: its subnet, the host's address
//! on it, the router its DHCP server hands out, its reservations and port forwards, and that it
//! clashes with no other switch (overlapping subnets, the same host adapter, a host port taken).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use strata_api::{CreateSwitch, PortForward, Reservation, SwitchType};
use strata_net::subnet::Subnet;

use super::switches::net_error;
use super::validate;
use crate::error::HostError;
use crate::switch_store::SwitchConfig;

/// What a switch's settings mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The subnet (none on an external switch).
    pub subnet: Option<Subnet>,
    /// The host's address on it (internal switches).
    pub host: Option<Ipv4Addr>,
    /// The router handed out by DHCP.
    pub gateway: Option<Ipv4Addr>,
}

/// Checks a switch's settings against the other switches'.
pub(crate) fn plan(spec: &CreateSwitch, others: &[SwitchConfig]) -> Result<Plan, HostError> {
    validate::object_name("switch", &spec.name)?;
    if let Some(v) = spec.vlan {
        vlan(v)?;
    }
    let plan = match spec.kind {
        SwitchType::External => external(spec, others)?,
        SwitchType::Internal | SwitchType::Private => routed(spec, others)?,
    };
    for d in &spec.dns {
        address("DNS server", d)?;
    }
    if !(60..=30 * 86400).contains(&spec.lease_secs) {
        return Err(HostError::invalid(format!(
            "lease time {} s: choose 60 s to 30 days",
            spec.lease_secs
        )));
    }
    if let Some(subnet) = plan.subnet {
        reservations(&spec.reservations, &subnet)?;
    }
    forwards(spec, &plan, others)?;
    Ok(plan)
}

/// A VLAN id: 1 to 4094.
pub(crate) fn vlan(v: u16) -> Result<u16, HostError> {
    if (1..=4094).contains(&v) {
        Ok(v)
    } else {
        Err(HostError::invalid(format!(
            "VLAN id {v} is out of range: choose 1 to 4094"
        )))
    }
}

fn external(spec: &CreateSwitch, others: &[SwitchConfig]) -> Result<Plan, HostError> {
    let name = &spec.name;
    let nic = spec.host_nic.as_deref().ok_or_else(|| {
        HostError::invalid(format!(
            "switch '{name}' is external: give the host's network adapter it bridges (--host-nic IFACE)"
        ))
    })?;
    validate::interface_name(nic)?;
    let refused = [
        ("a subnet", spec.subnet.is_some()),
        ("a host address", spec.host_address.is_some()),
        ("Strata's DHCP server", spec.dhcp == Some(true)),
        ("a DHCP range", spec.dhcp_range.is_some()),
        ("a gateway", spec.gateway.is_some()),
        ("NAT", spec.nat),
        ("port forwards", !spec.forwards.is_empty()),
        ("reservations", !spec.reservations.is_empty()),
    ];
    if let Some((what, _)) = refused.iter().find(|(_, given)| *given) {
        return Err(HostError::invalid(format!(
            "switch '{name}' is external: it takes no {what} (the VMs are on {nic}'s LAN, whose own DHCP server and router serve them)"
        )));
    }
    if let Some(o) = others
        .iter()
        .find(|o| o.switch.host_nic.as_deref() == Some(nic))
    {
        return Err(HostError::conflict(format!(
            "host adapter {nic} already belongs to switch '{}'",
            o.switch.name
        )));
    }
    Ok(Plan {
        subnet: None,
        host: None,
        gateway: None,
    })
}

fn routed(spec: &CreateSwitch, others: &[SwitchConfig]) -> Result<Plan, HostError> {
    let name = &spec.name;
    let kind = spec.kind.as_str();
    let text = spec.subnet.as_deref().ok_or_else(|| {
        HostError::invalid(format!(
            "switch '{name}' is {kind}: give its subnet (--subnet 10.10.0.0/24)"
        ))
    })?;
    if spec.host_nic.is_some() {
        return Err(HostError::invalid(format!(
            "switch '{name}' is {kind}: only an external switch takes a host adapter"
        )));
    }
    let (subnet, given) = Subnet::parse(text).map_err(net_error)?;
    let host = match (spec.kind, &spec.host_address, given) {
        (SwitchType::Internal, Some(a), _) => Some(address("host address", a)?),
        (SwitchType::Internal, None, g) => Some(g.unwrap_or_else(|| subnet.nth(1))),
        (_, None, None) => None,
        _ => {
            return Err(HostError::invalid(format!(
                "switch '{name}' is private: the host has no address on it (give the subnet as {subnet})"
            )))
        }
    };
    if let Some(h) = host.filter(|h| !subnet.contains_host(*h)) {
        return Err(HostError::invalid(format!(
            "host address {h} is not a host address of the subnet {subnet}"
        )));
    }
    if spec.nat && spec.kind == SwitchType::Private {
        return Err(HostError::invalid(format!(
            "switch '{name}' is private: NAT needs the host's address on the switch (make it internal)"
        )));
    }
    for o in others {
        let Some(Ok((theirs, _))) = o.switch.subnet.as_deref().map(Subnet::parse) else {
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
    let gateway = match &spec.gateway {
        Some(g) => Some(in_subnet("gateway", g, &subnet)?),
        None => host,
    };
    Ok(Plan {
        subnet: Some(subnet),
        host,
        gateway,
    })
}

fn address(what: &str, text: &str) -> Result<Ipv4Addr, HostError> {
    text.parse()
        .map_err(|_| HostError::invalid(format!("{what} '{text}': not an IPv4 address")))
}

/// An address that must be a host address of `subnet`.
pub(crate) fn in_subnet(what: &str, text: &str, subnet: &Subnet) -> Result<Ipv4Addr, HostError> {
    let ip = address(what, text)?;
    if subnet.contains_host(ip) {
        Ok(ip)
    } else {
        Err(HostError::invalid(format!(
            "{what} {ip} is not a host address of the subnet {subnet}"
        )))
    }
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

/// Reservations: unicast MACs and addresses of the subnet, each at most once.
fn reservations(list: &[Reservation], subnet: &Subnet) -> Result<(), HostError> {
    let (mut macs, mut ips) = (HashSet::new(), HashSet::new());
    for r in list {
        let mac = validate::mac(&r.mac)?;
        let ip = in_subnet("reserved address", &r.ip, subnet)?;
        if !macs.insert(mac.clone()) {
            return Err(HostError::conflict(format!(
                "MAC {mac} has a reservation already"
            )));
        }
        if !ips.insert(ip) {
            return Err(HostError::conflict(format!(
                "address {ip} is reserved already"
            )));
        }
    }
    Ok(())
}

/// Port forwards: on a NAT switch, a VM or an address of the subnet, each host port (per
/// protocol) used once on the host.
fn forwards(spec: &CreateSwitch, plan: &Plan, others: &[SwitchConfig]) -> Result<(), HostError> {
    let name = &spec.name;
    if !spec.forwards.is_empty() && !spec.nat {
        return Err(HostError::invalid(format!(
            "switch '{name}' has no NAT: port forwards need it (strata switch set {name} --nat on)"
        )));
    }
    let mut taken: HashSet<(strata_api::Proto, u16)> = HashSet::new();
    for f in &spec.forwards {
        forward_target(f, plan)?;
        let key = (f.proto, f.host_port);
        let elsewhere = others.iter().filter(|o| o.switch.name != *name).find(|o| {
            o.switch
                .forwards
                .iter()
                .any(|g| (g.proto, g.host_port) == key)
        });
        if let Some(o) = elsewhere {
            return Err(HostError::conflict(format!(
                "host port {}/{} is forwarded already by switch '{}'",
                f.host_port,
                f.proto.as_str(),
                o.switch.name
            )));
        }
        if !taken.insert(key) {
            return Err(HostError::conflict(format!(
                "host port {}/{} is forwarded already",
                f.host_port,
                f.proto.as_str()
            )));
        }
    }
    Ok(())
}

fn forward_target(f: &PortForward, plan: &Plan) -> Result<(), HostError> {
    if f.host_port == 0 || f.port == 0 {
        return Err(HostError::invalid("port 0 cannot be forwarded"));
    }
    match (&f.vm, &f.address, plan.subnet) {
        (Some(vm), None, _) => validate::name(vm).map(|_| ()),
        (None, Some(a), Some(subnet)) => in_subnet("forward address", a, &subnet).map(|_| ()),
        _ => Err(HostError::invalid(
            "a port forward goes to a VM or to an address: give exactly one",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: SwitchType, subnet: &str) -> CreateSwitch {
        CreateSwitch::new(name, kind, Some(subnet))
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
        assert_eq!(p.gateway, p.host);
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
        assert_eq!((p.host, p.gateway), (None, None));
        let e = plan(&spec("p", SwitchType::Private, "10.20.0.1/24"), &[]).unwrap_err();
        assert!(e.message.contains("private"), "{e}");
    }

    #[test]
    fn overlaps_ranges_and_settings_are_refused_by_name() {
        let others = [config(spec("a", SwitchType::Internal, "10.10.0.0/16"))];
        let e = plan(&spec("b", SwitchType::Private, "10.10.5.0/24"), &others).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Conflict);
        assert!(e.message.contains("overlaps switch 'a'"), "{e}");
        let mut s = spec("c", SwitchType::Private, "10.30.0.0/24");
        let refused = |s: &CreateSwitch, what: &str| {
            let e = plan(s, &[]).unwrap_err();
            assert!(e.message.contains(what), "{what}: {e}");
        };
        s.dhcp_range = Some("10.30.0.200-10.30.1.5".into());
        refused(&s, "outside the subnet");
        s.dhcp_range = Some("10.30.0.200-10.30.0.100".into());
        refused(&s, "after the last");
        s.dhcp_range = None;
        s.dns = vec!["dns.example".into()];
        refused(&s, "DNS server");
        s.dns = vec![];
        s.lease_secs = 5;
        refused(&s, "lease time");
        s.lease_secs = 3600;
        s.vlan = Some(4095);
        refused(&s, "VLAN id 4095 is out of range");
        s.vlan = None;
        s.nat = true;
        refused(&s, "NAT needs the host's address");
        s.nat = false;
        s.gateway = Some("10.31.0.1".into());
        refused(&s, "gateway 10.31.0.1 is not a host address");
        s.gateway = None;
        s.name = "bad name".into();
        assert_eq!(
            plan(&s, &[]).unwrap_err().kind,
            crate::error::ErrorKind::Invalid
        );
    }

    #[test]
    fn external_switches_take_a_host_adapter_and_nothing_routed() {
        let mut s = CreateSwitch::new("lan", SwitchType::External, None);
        assert!(plan(&s, &[]).unwrap_err().message.contains("--host-nic"));
        s.host_nic = Some("eth1".into());
        assert_eq!(plan(&s, &[]).unwrap().subnet, None);
        let mut other = s.clone();
        other.name = "lan2".into();
        let e = plan(&other, &[config(s.clone())]).unwrap_err();
        assert!(
            e.message.contains("eth1 already belongs to switch 'lan'"),
            "{e}"
        );
        s.nat = true;
        assert!(plan(&s, &[]).unwrap_err().message.contains("no NAT"));
        s.nat = false;
        s.host_nic = Some("eth1; rm".into());
        assert!(plan(&s, &[]).is_err());
    }

    #[test]
    fn reservations_and_forwards_are_checked() {
        let mut s = spec("n", SwitchType::Internal, "10.40.0.0/24");
        s.reservations = vec![Reservation {
            mac: "02:53:54:00:00:01".into(),
            ip: "10.40.1.5".into(),
        }];
        assert!(plan(&s, &[])
            .unwrap_err()
            .message
            .contains("not a host address"));
        s.reservations[0].ip = "10.40.0.5".into();
        s.reservations.push(s.reservations[0].clone());
        assert!(plan(&s, &[])
            .unwrap_err()
            .message
            .contains("has a reservation"));
        s.reservations.pop();
        let fwd = PortForward {
            proto: strata_api::Proto::Tcp,
            host_port: 8080,
            vm: Some("web".into()),
            nic: 0,
            address: None,
            port: 80,
        };
        s.forwards = vec![fwd.clone()];
        assert!(plan(&s, &[]).unwrap_err().message.contains("no NAT"));
        s.nat = true;
        plan(&s, &[]).unwrap();
        let mut other = spec("m", SwitchType::Internal, "10.41.0.0/24");
        other.nat = true;
        other.forwards = vec![fwd];
        let e = plan(&other, &[config(s)]).unwrap_err();
        assert!(
            e.message
                .contains("8080/tcp is forwarded already by switch 'n'"),
            "{e}"
        );
    }
}
