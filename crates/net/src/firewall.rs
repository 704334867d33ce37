//! Strata's own nftables tables, and nothing else: `table ip strata` (a switch's NAT and port
//! forwards) and `table bridge strata` (a NIC's guards against MAC spoofing, rogue DHCP servers
//! and rogue IPv6 routers). The host service computes the whole desired state ([`Ruleset`]) and
//! calls [`apply`] whenever it changes; other tables (firewalld's, Docker's, ufw's, the admin's)
//! are never edited, only read by [`foreign_forward_drops`] to warn about them.
//!
//! ## What is generated
//!
//! ```text
//! table ip strata {
//!   chain prerouting  { type nat hook prerouting priority dstnat; ...
//!     iifname != "BRIDGE" fib daddr type local tcp dport HOST_PORT dnat to TO:TO_PORT }
//!   chain postrouting { type nat hook postrouting priority srcnat; ...
//!     ip saddr SUBNET ip daddr != SUBNET oifname != "BRIDGE" masquerade }
//! }
//! table bridge strata {
//!   chain ports   { iifname "TAP" ether saddr != MAC drop; ... }   # the guards of every port
//!   chain forward { type filter hook forward priority filter; jump ports }  # tap to tap/uplink
//!   chain input   { type filter hook input priority filter; jump ports }    # tap to the host
//! }
//! ```
//!
//! The guards are needed on both bridge hooks: a frame from a tap to another port of the bridge
//! goes through `forward`, one to the host's own address on the bridge (its DHCP server, its
//! router advertisements listener, its ARP cache) through `input`. Strata adds no accepting
//! `forward` chain to its `ip` table: an accept in one base chain does not spare a packet from
//! the others, so it would change nothing; instead a foreign base chain on hook `forward` whose
//! policy is drop is reported ([`foreign_forward_drops`]) so the admin can open it.
//!
//! Connections the host itself makes to its own forwarded ports are not redirected (there is no
//! `output` hook rule): port forwards are for traffic arriving from other machines.
//!
//! ## Atomicity
//!
//! [`apply`] sends one script to `nft -f -`, which runs it as one transaction: each table is
//! added (a no-op when it exists), deleted, and defined anew. Either the whole new state is in
//! place or, when the kernel refuses anything, the old one is untouched.
//!
//! ## Why nft's script language and not the `nftables` crate
//!
//! The script is produced from typed values only (addresses, ports, MACs as numbers; interface
//! names checked to `[A-Za-z0-9-_.]`, at most 15 bytes, before anything runs), so nothing can be
//! injected, and it is short enough to read in an error. The `nftables` crate (JSON schema) would
//! add a dependency tree and a far wordier, less reviewable description of the same few rules,
//! and still run the same `nft` binary. Reading (the foreign chains) uses `nft -j` and
//! serde_json, which this crate already has.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::command::{check_ifname, run};
use crate::error::{NetError, NetErrorKind};
use crate::subnet::Subnet;

/// The name of Strata's tables (in families `ip` and `bridge`).
pub const TABLE: &str = "strata";

/// The whole firewall state Strata wants: one entry per switch and per guarded NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The switches with NAT or port forwards.
    pub switches: Vec<SwitchRules>,
    /// The NICs (taps) and their guards.
    pub ports: Vec<PortRules>,
}

/// What one switch needs of the `ip` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchRules {
    /// The switch's bridge.
    pub bridge: String,
    /// The switch's subnet.
    pub subnet: Subnet,
    /// Whether traffic from the subnet leaving through another interface is masqueraded.
    pub nat: bool,
    /// Ports of the host forwarded to guests on this switch.
    pub forwards: Vec<Forward>,
}

/// A transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A port forward: packets to `host_port` of any of the host's own addresses, arriving from
/// anywhere but the switch's bridge, go to `to:to_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// TCP or UDP.
    pub proto: Proto,
    /// The port on the host.
    pub host_port: u16,
    /// The guest's address (in the switch's subnet).
    pub to: Ipv4Addr,
    /// The port on the guest.
    pub to_port: u16,
}

/// The guards of one NIC, applied to frames entering the bridge from its tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// The NIC's tap.
    pub tap: String,
    /// The NIC's MAC address.
    pub mac: [u8; 6],
    /// Whether the guest may send from other MAC addresses (`false`: frames and ARP packets
    /// whose sender is not `mac` are dropped).
    pub mac_spoofing: bool,
    /// Drop DHCP server replies (UDP source port 67, and 547 for DHCPv6) from the guest.
    pub dhcp_guard: bool,
    /// Drop ICMPv6 router advertisements and redirects from the guest.
    pub router_guard: bool,
    /// What the guest may send, in bits per second (beyond it, frames are dropped); `None`:
    /// unlimited. (What it receives is shaped on the tap: [`crate::shape`].)
    pub upload_limit: Option<u64>,
}

impl Ruleset {
    /// Whether nothing is asked of the firewall.
    pub fn is_empty(&self) -> bool {
        self.switches.is_empty() && self.ports.is_empty()
    }
}

/// Atomically replaces Strata's tables with exactly this ruleset, in one `nft` transaction (all
/// or nothing). An empty ruleset removes Strata's tables. The ruleset is checked first (interface
/// names, ports, duplicates): a refused one changes nothing.
pub fn apply(r: &Ruleset) -> Result<(), NetError> {
    let script = script(r)?;
    run("nft", &["-f", "-"], Some(&script), "firewall").map(drop)
}

/// Removes Strata's tables; missing ones are fine.
pub fn remove_all() -> Result<(), NetError> {
    apply(&Ruleset::default())
}

/// The nft script that makes Strata's tables exactly `r` (checked first).
pub fn script(r: &Ruleset) -> Result<String, NetError> {
    check(r)?;
    let mut s = String::new();
    // Adding first makes the delete safe when the table is missing (nft 1.0.6 has no `destroy`).
    for family in ["ip", "bridge"] {
        let _ = writeln!(
            s,
            "add table {family} {TABLE}\ndelete table {family} {TABLE}"
        );
    }
    ip_table(&mut s, &r.switches);
    bridge_table(&mut s, &r.ports);
    Ok(s)
}

/// Refuses what nft must never see: bad interface names, ports 0, forwards to addresses outside
/// their switch, duplicates (a bridge, a tap, a protocol's host port given twice).
fn check(r: &Ruleset) -> Result<(), NetError> {
    let mut bridges = HashSet::new();
    let mut host_ports = HashSet::new();
    for sw in &r.switches {
        check_ifname(&sw.bridge)?;
        if !bridges.insert(sw.bridge.as_str()) {
            return Err(NetError::new(
                NetErrorKind::Conflict,
                &sw.bridge,
                "the switch's bridge is given twice",
            ));
        }
        for f in &sw.forwards {
            let object = format!("port forward {} {}", f.proto.nft(), f.host_port);
            if f.host_port == 0 || f.to_port == 0 {
                return Err(NetError::new(
                    NetErrorKind::Invalid,
                    &object,
                    "port 0 cannot be forwarded",
                ));
            }
            if !sw.subnet.contains_host(f.to) {
                return Err(NetError::new(
                    NetErrorKind::Invalid,
                    &object,
                    format!(
                        "{} is not a host address of the switch's subnet {} ({})",
                        f.to, sw.subnet, sw.bridge
                    ),
                ));
            }
            if !host_ports.insert((f.proto, f.host_port)) {
                return Err(NetError::new(
                    NetErrorKind::Conflict,
                    &object,
                    format!(
                        "host port {} ({}) is forwarded twice",
                        f.host_port,
                        f.proto.nft()
                    ),
                ));
            }
        }
    }
    let mut taps = HashSet::new();
    for p in &r.ports {
        check_ifname(&p.tap)?;
        if !taps.insert(p.tap.as_str()) {
            return Err(NetError::new(
                NetErrorKind::Conflict,
                &p.tap,
                "the tap's rules are given twice",
            ));
        }
    }
    Ok(())
}

fn ip_table(s: &mut String, switches: &[SwitchRules]) {
    let mut pre = String::new();
    let mut post = String::new();
    for sw in switches {
        let (b, net) = (&sw.bridge, sw.subnet);
        if sw.nat {
            let _ = writeln!(
                post,
                "    ip saddr {net} ip daddr != {net} oifname != \"{b}\" masquerade"
            );
        }
        for f in &sw.forwards {
            let _ = writeln!(
                pre,
                "    iifname != \"{b}\" fib daddr type local {} dport {} dnat to {}:{}",
                f.proto.nft(),
                f.host_port,
                f.to,
                f.to_port
            );
        }
    }
    if pre.is_empty() && post.is_empty() {
        return;
    }
    let _ = write!(
        s,
        "table ip {TABLE} {{\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n\
         {pre}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
         {post}  }}\n}}\n"
    );
}

fn bridge_table(s: &mut String, ports: &[PortRules]) {
    let mut rules = String::new();
    for p in ports {
        let t = &p.tap;
        if !p.mac_spoofing {
            let m = mac(p.mac);
            let _ = writeln!(rules, "    iifname \"{t}\" ether saddr != {m} drop");
            let _ = writeln!(
                rules,
                "    iifname \"{t}\" ether type arp arp saddr ether != {m} drop"
            );
        }
        if p.dhcp_guard {
            let _ = writeln!(rules, "    iifname \"{t}\" ether type ip udp sport 67 drop");
            let _ = writeln!(
                rules,
                "    iifname \"{t}\" ether type ip6 udp sport 547 drop"
            );
        }
        if let Some(bits) = p.upload_limit {
            // nft counts bytes; 20 ms of traffic (at least ten full frames) may burst.
            let bytes = (bits / 8).max(1);
            let burst = (bytes / 50).max(15_140);
            let _ = writeln!(
                rules,
                "    iifname \"{t}\" limit rate over {bytes} bytes/second burst {burst} bytes drop"
            );
        }
        if p.router_guard {
            let _ = writeln!(
                rules,
                "    iifname \"{t}\" icmpv6 type {{ nd-router-advert, nd-redirect }} drop"
            );
        }
    }
    if rules.is_empty() {
        return;
    }
    let base = |hook: &str| {
        format!(
            "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n    \
             jump ports\n  }}\n"
        )
    };
    let _ = write!(
        s,
        "table bridge {TABLE} {{\n  chain ports {{\n{rules}  }}\n{}{}}}\n",
        base("forward"),
        base("input")
    );
}

fn mac(m: [u8; 6]) -> String {
    let parts: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// A base chain of another table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChain {
    /// Its table's family (`ip`, `ip6`, `inet`, `bridge`).
    pub family: String,
    /// Its table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// Its policy.
    pub policy: String,
}

/// The base chains of OTHER tables on hook `forward` whose policy is drop (firewalld, Docker and
/// ufw install these): unless they accept a switch's traffic themselves, they silently drop what
/// it forwards, whatever Strata's tables say. The host service warns naming table and chain.
/// (Chains whose policy is accept but whose rules drop are not detected.)
pub fn foreign_forward_drops() -> Result<Vec<ForeignChain>, NetError> {
    let out = run("nft", &["-j", "list", "chains"], None, "firewall")?;
    parse_forward_drops(&out)
}

fn parse_forward_drops(json: &str) -> Result<Vec<ForeignChain>, NetError> {
    let corrupt = |why: String| NetError::new(NetErrorKind::Kernel, "nft -j list chains", why);
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| corrupt(format!("unreadable output: {e}")))?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or_else(|| corrupt("no \"nftables\" array in the output".into()))?;
    let text = |c: &serde_json::Value, key: &str| {
        c.get(key)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut found = Vec::new();
    for chain in items.iter().filter_map(|i| i.get("chain")) {
        let family = text(chain, "family");
        let table = text(chain, "table");
        let ours = table == TABLE && (family == "ip" || family == "bridge");
        if ours || text(chain, "hook") != "forward" || text(chain, "policy") != "drop" {
            continue;
        }
        found.push(ForeignChain {
            family,
            table,
            chain: text(chain, "name"),
            policy: text(chain, "policy"),
        });
    }
    Ok(found)
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding in the calling thread's network namespace
/// (`/proc/sys/net/ipv4/ip_forward`); returns true when it was off, so the caller can say it
/// turned it on.
pub fn enable_ip_forwarding() -> Result<bool, NetError> {
    let io = |e: std::io::Error| NetError::new(NetErrorKind::Io, IP_FORWARD, e.to_string());
    let now = std::fs::read_to_string(IP_FORWARD).map_err(io)?;
    if now.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "1\n").map_err(io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(bridge: &str, subnet: &str, forwards: Vec<Forward>) -> SwitchRules {
        SwitchRules {
            bridge: bridge.into(),
            subnet: Subnet::parse(subnet).unwrap().0,
            nat: true,
            forwards,
        }
    }

    fn fwd(proto: Proto, host_port: u16, to: [u8; 4], to_port: u16) -> Forward {
        Forward {
            proto,
            host_port,
            to: to.into(),
            to_port,
        }
    }

    #[test]
    fn the_script_replaces_both_tables_with_the_rules() {
        let r = Ruleset {
            switches: vec![switch(
                "stb-a",
                "10.1.0.0/24",
                vec![fwd(Proto::Tcp, 8080, [10, 1, 0, 5], 80)],
            )],
            ports: vec![PortRules {
                tap: "stt-a-0".into(),
                mac: [0x52, 0x54, 0, 0xab, 0xcd, 0xef],
                mac_spoofing: false,
                dhcp_guard: true,
                router_guard: true,
                upload_limit: None,
            }],
        };
        let s = script(&r).unwrap();
        assert!(s.starts_with(
            "add table ip strata\ndelete table ip strata\n\
             add table bridge strata\ndelete table bridge strata\n"
        ));
        for line in [
            "ip saddr 10.1.0.0/24 ip daddr != 10.1.0.0/24 oifname != \"stb-a\" masquerade",
            "iifname != \"stb-a\" fib daddr type local tcp dport 8080 dnat to 10.1.0.5:80",
            "iifname \"stt-a-0\" ether saddr != 52:54:00:ab:cd:ef drop",
            "iifname \"stt-a-0\" ether type ip udp sport 67 drop",
            "iifname \"stt-a-0\" ether type ip6 udp sport 547 drop",
            "iifname \"stt-a-0\" icmpv6 type { nd-router-advert, nd-redirect } drop",
            "type filter hook forward priority filter",
            "type filter hook input priority filter",
        ] {
            assert!(s.contains(line), "{line} missing from\n{s}");
        }
    }

    #[test]
    fn an_empty_ruleset_only_deletes() {
        let s = script(&Ruleset::default()).unwrap();
        assert!(!s.contains('{'), "{s}");
        let quiet = Ruleset {
            switches: vec![SwitchRules {
                nat: false,
                ..switch("stb-a", "10.1.0.0/24", vec![])
            }],
            ports: vec![PortRules {
                tap: "stt-a-0".into(),
                mac: [0; 6],
                mac_spoofing: true,
                dhcp_guard: false,
                router_guard: false,
                upload_limit: None,
            }],
        };
        assert_eq!(script(&quiet).unwrap(), s);
    }

    #[test]
    fn duplicates_bad_names_and_stray_targets_are_refused() {
        let dup = Ruleset {
            switches: vec![
                switch(
                    "stb-a",
                    "10.1.0.0/24",
                    vec![fwd(Proto::Tcp, 22, [10, 1, 0, 5], 22)],
                ),
                switch(
                    "stb-b",
                    "10.2.0.0/24",
                    vec![fwd(Proto::Tcp, 22, [10, 2, 0, 5], 22)],
                ),
            ],
            ports: vec![],
        };
        let e = script(&dup).unwrap_err();
        assert_eq!(e.kind, NetErrorKind::Conflict);
        assert!(e.to_string().contains("22"), "{e}");
        // The same number in the other protocol is another port.
        let mut ok = dup.clone();
        ok.switches[1].forwards[0].proto = Proto::Udp;
        script(&ok).unwrap();
        let mut stray = ok.clone();
        stray.switches[1].forwards[0].to = Ipv4Addr::new(10, 1, 0, 5);
        assert_eq!(script(&stray).unwrap_err().kind, NetErrorKind::Invalid);
        let mut zero = ok.clone();
        zero.switches[0].forwards[0].host_port = 0;
        assert_eq!(script(&zero).unwrap_err().kind, NetErrorKind::Invalid);
        let mut bad = ok.clone();
        bad.switches[0].bridge = "br\" accept".into();
        assert_eq!(script(&bad).unwrap_err().kind, NetErrorKind::Invalid);
        let mut twice = ok;
        twice.switches[1].bridge = "stb-a".into();
        assert_eq!(script(&twice).unwrap_err().kind, NetErrorKind::Conflict);
    }

    #[test]
    fn forward_drop_chains_of_other_tables_are_found() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "filter", "handle": 1}},
          {"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 1,
            "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
          {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 2,
            "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
          {"chain": {"family": "ip", "table": "other", "name": "in", "handle": 3,
            "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
          {"chain": {"family": "bridge", "table": "strata", "name": "forward", "handle": 4,
            "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
          {"chain": {"family": "ip", "table": "x", "name": "regular", "handle": 5}}]}"#;
        let found = parse_forward_drops(json).unwrap();
        assert_eq!(
            found,
            vec![ForeignChain {
                family: "inet".into(),
                table: "filter".into(),
                chain: "forward".into(),
                policy: "drop".into(),
            }]
        );
        assert!(parse_forward_drops("not json").is_err());
    }
}
