//! Strata's firewall rules, computed from the switches' and VMs' settings and applied as one
//! nft transaction (`strata_net::firewall`) whenever they change: NAT and port forwards per
//! switch, MAC-spoofing protection and DHCP/router guards per NIC. Rules follow the settings, not
//! the VMs' state: a NIC's guard exists before its tap does, so no frame passes unguarded.
//!
//! A port forward to a VM goes to its NIC's reserved address (`forward add` reserves one), so it
//! never follows a lease that moved.

use std::net::Ipv4Addr;

use strata_api::{ForwardInfo, PortForward};
use strata_net::firewall::{self, Forward, PortRules, Proto, Ruleset, SwitchRules};
use strata_net::subnet::Subnet;

use super::switches::net_error;
use super::Service;
use crate::error::HostError;
use crate::events::Code;
use crate::switch_store::SwitchConfig;

/// A NIC's tap on the host (named after its slot, or its index for NICs made before slots).
pub(crate) fn tap_of(vm_id: &str, index: usize, nic: &strata_api::NicSpec) -> String {
    strata_net::link::tap_name(vm_id, nic.slot.map_or(index, usize::from))
}

/// A MAC `xx:xx:xx:xx:xx:xx` as bytes.
fn mac_bytes(text: &str) -> Option<[u8; 6]> {
    text.parse::<strata_net::dhcp::Mac>().ok().map(|m| m.0)
}

impl Service {
    /// Makes Strata's nft tables match the settings (turning on IPv4 forwarding when a switch
    /// has NAT, and saying so).
    pub(super) fn refresh_firewall(&self) -> Result<(), HostError> {
        // Held from reading the settings to applying them: two refreshes never apply an older
        // snapshot over a newer one.
        let mut applied = self.firewall.lock().unwrap_or_else(|p| p.into_inner());
        let configs = self.switch_configs();
        let mut rules = Ruleset::default();
        for c in &configs {
            let Some(Ok((subnet, _))) = c.switch.subnet.as_deref().map(Subnet::parse) else {
                continue;
            };
            if !c.switch.nat {
                continue;
            }
            let forwards = c
                .switch
                .forwards
                .iter()
                .filter_map(|f| {
                    let to = self.forward_target(c, f).ok()?;
                    Some(Forward {
                        proto: match f.proto {
                            strata_api::Proto::Tcp => Proto::Tcp,
                            strata_api::Proto::Udp => Proto::Udp,
                        },
                        host_port: f.host_port,
                        to,
                        to_port: f.port,
                    })
                })
                .collect();
            rules.switches.push(SwitchRules {
                bridge: strata_net::link::bridge_name(&c.id),
                subnet,
                nat: true,
                forwards,
            });
        }
        rules.ports = self.port_rules();
        if !rules.switches.is_empty() && firewall::enable_ip_forwarding().map_err(net_error)? {
            self.events.log(
                Code::IpForwardingEnabled,
                None,
                "system",
                "IPv4 forwarding turned on (net.ipv4.ip_forward = 1): switches with NAT route through the host",
            );
        }
        // Unchanged rules are not sent again (a switch without NAT adds none): one nft process
        // per change, not per request. The service's start applies them whatever was applied.
        let script = firewall::script(&rules).map_err(net_error)?;
        if applied.as_deref() == Some(script.as_str()) {
            return Ok(());
        }
        *applied = None;
        firewall::apply(&rules).map_err(net_error)?;
        *applied = Some(script);
        Ok(())
    }

    /// Forgets what was applied, so the next refresh applies the rules whatever nft holds
    /// (another firewall may have flushed them).
    pub(super) fn forget_firewall(&self) {
        *self.firewall.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Before a VM starts: its guards are in place whatever happened to nft meanwhile, or it
    /// does not start.
    pub(super) fn firewall_before_start(&self, vm: &str) -> Result<(), HostError> {
        self.forget_firewall();
        self.refresh_firewall().map_err(|e| {
            e.context(format_args!(
                "VM '{vm}' cannot start without its network adapters' firewall rules"
            ))
        })
    }

    /// Every switch-connected NIC's guards.
    fn port_rules(&self) -> Vec<PortRules> {
        let mut ports = Vec::new();
        for name in self.home.names() {
            let Ok(c) = self.home.load(&name) else {
                continue;
            };
            for (i, n) in c.vm.nics.iter().enumerate() {
                let (Some(_), Some(mac)) = (&n.switch, n.mac.as_deref().and_then(mac_bytes)) else {
                    continue;
                };
                ports.push(PortRules {
                    tap: tap_of(&c.id, i, n),
                    mac,
                    mac_spoofing: n.mac_spoofing,
                    dhcp_guard: n.dhcp_guard,
                    router_guard: n.router_guard,
                    upload_limit: n.bandwidth_limit,
                });
            }
        }
        ports
    }

    /// Where a forward goes now: its fixed address, or the reserved address of its VM's NIC.
    pub(super) fn forward_target(
        &self,
        c: &SwitchConfig,
        f: &PortForward,
    ) -> Result<Ipv4Addr, String> {
        if let Some(a) = &f.address {
            return a.parse().map_err(|_| format!("'{a}' is not an address"));
        }
        let vm = f.vm.as_deref().unwrap_or_default();
        let config = self
            .home
            .load(vm)
            .map_err(|_| format!("VM '{vm}' does not exist"))?;
        let nic = config
            .vm
            .nics
            .get(f.nic)
            .ok_or_else(|| format!("VM '{vm}' has no NIC {}", f.nic))?;
        if nic.switch.as_deref() != Some(c.switch.name.as_str()) {
            return Err(format!(
                "VM '{vm}' NIC {} is not on switch '{}'",
                f.nic, c.switch.name
            ));
        }
        let mac = nic.mac.clone().unwrap_or_default();
        let r = c
            .switch
            .reservations
            .iter()
            .find(|r| r.mac == mac)
            .ok_or_else(|| format!("VM '{vm}' NIC {} ({mac}) has no reserved address", f.nic))?;
        r.ip.parse()
            .map_err(|_| format!("'{}' is not an address", r.ip))
    }

    /// The switch's forwards with the address each goes to now.
    pub(super) fn forward_infos(&self, c: &SwitchConfig) -> Vec<ForwardInfo> {
        c.switch
            .forwards
            .iter()
            .map(|f| match self.forward_target(c, f) {
                Ok(ip) => ForwardInfo {
                    forward: f.clone(),
                    to: Some(format!("{ip}:{}", f.port)),
                    problem: None,
                },
                Err(why) => ForwardInfo {
                    forward: f.clone(),
                    to: None,
                    problem: Some(why),
                },
            })
            .collect()
    }

    /// What on the host would break switch `c`: other tables' drop-policy forward chains (for
    /// a NAT switch, or any switch when bridged traffic goes through the IP firewall).
    pub(super) fn firewall_warnings(&self, c: &SwitchConfig) -> Vec<String> {
        let bridged_filtered =
            std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
                .is_ok_and(|v| v.trim() == "1");
        if !c.switch.nat && !bridged_filtered {
            return Vec::new();
        }
        let traffic = if c.switch.nat {
            "the switch's NAT traffic"
        } else {
            "the switch's bridged traffic (bridge-nf-call-iptables is 1)"
        };
        match firewall::foreign_forward_drops() {
            Ok(chains) => chains
                .iter()
                .map(|ch| {
                    format!(
                        "table {} {}, chain {} has policy {} on the forward hook: it will drop {traffic} unless it accepts it (add an accept rule for the switch's subnet there)",
                        ch.family, ch.table, ch.chain, ch.policy
                    )
                })
                .collect(),
            Err(e) => vec![format!("the host's firewall could not be read: {e}")],
        }
    }

    /// Logs switch `c`'s warnings (after create or set).
    pub(super) fn warn_firewall(&self, c: &SwitchConfig, user: &str) {
        for w in self.firewall_warnings(c) {
            self.events.log(
                Code::SwitchWarning,
                None,
                user,
                &format!("switch '{}': {w}", c.switch.name),
            );
        }
    }
}
