//! A switch's DHCP settings ([`Config`], serde, unknown fields refused) and their validation into
//! the rules the pool follows ([`Rules`]).
//!
//! Without a range, the pool runs from the 17th address of the subnet (offsets 0 to 15 are
//! reserved, as Virtual Server did: 10.20.0.16 is the first lease of 10.20.0.0/24) to the last
//! address before the broadcast address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::mac::Mac;
use crate::error::{NetError, NetErrorKind};
use crate::subnet::Subnet;

/// How many addresses at the start of the subnet the default range leaves out.
pub const RESERVED_AT_START: u32 = 16;

/// The default lease time: one hour.
pub const DEFAULT_LEASE_SECS: u32 = 3600;

/// The shortest lease time accepted (a minute), and the longest (a year).
pub const LEASE_SECS_LIMITS: (u32, u32) = (60, 365 * 24 * 3600);

/// At most this many DNS servers are handed out.
pub const MAX_DNS: usize = 8;

/// The DHCP settings of one switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The subnet's network address (host bits zero).
    pub network: Ipv4Addr,
    /// The subnet's prefix length, 8 to 30.
    pub prefix: u8,
    /// The addresses handed out; `None`: the default range (see the module's documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<AddressRange>,
    /// The server identifier: the host's address on the switch, or for a private switch (no
    /// host address) a synthetic address of the subnet chosen by the caller.
    pub server_id: Ipv4Addr,
    /// The router handed out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The DNS servers handed out, in order (at most [`MAX_DNS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// The lease time in seconds; renewal (T1) is at half of it, rebinding (T2) at 7/8.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    /// Static addresses by MAC: never given to another MAC, inside or outside the range (but in
    /// the subnet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
}

/// An inclusive range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRange {
    /// The first address handed out.
    pub first: Ipv4Addr,
    /// The last address handed out.
    pub last: Ipv4Addr,
}

/// A static address for one MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    /// The NIC's MAC.
    pub mac: Mac,
    /// Its address.
    pub ip: Ipv4Addr,
}

fn default_lease_secs() -> u32 {
    DEFAULT_LEASE_SECS
}

impl Config {
    /// The settings for `subnet` with server identifier `server_id` and every other setting at
    /// its default (default range, no gateway, no DNS, one hour, no reservations).
    pub fn new(subnet: Subnet, server_id: Ipv4Addr) -> Self {
        Self {
            network: subnet.network,
            prefix: subnet.prefix,
            range: None,
            server_id,
            gateway: None,
            dns: Vec::new(),
            lease_secs: DEFAULT_LEASE_SECS,
            reservations: Vec::new(),
        }
    }

    /// The subnet (as given: [`Config::validate`] checks it).
    pub fn subnet(&self) -> Subnet {
        Subnet {
            network: self.network,
            prefix: self.prefix,
        }
    }

    /// Renewal time (T1): half the lease time.
    pub fn renew_secs(&self) -> u32 {
        self.lease_secs / 2
    }

    /// Rebinding time (T2): 7/8 of the lease time.
    pub fn rebind_secs(&self) -> u32 {
        // 7/8 of a u32 fits in a u32.
        u32::try_from(u64::from(self.lease_secs) * 7 / 8).unwrap_or(u32::MAX)
    }

    /// The range in effect: the one given, or the default one.
    pub fn effective_range(&self) -> Result<AddressRange, NetError> {
        if let Some(r) = self.range {
            return Ok(r);
        }
        let subnet = self.subnet();
        let first = subnet.nth(RESERVED_AT_START);
        let last = Ipv4Addr::from(u32::from(subnet.broadcast()).saturating_sub(1));
        if !subnet.contains_host(first) || first > last {
            return Err(invalid(
                "range",
                &format!("(default) for {subnet}"),
                "the first 16 addresses are reserved and the subnet has no more: give a range",
            ));
        }
        Ok(AddressRange { first, last })
    }

    /// Checks every setting; the error names the setting and its value.
    pub fn validate(&self) -> Result<(), NetError> {
        self.rules().map(|_| ())
    }

    /// The validated settings (the only way to build [`Rules`]).
    pub(crate) fn rules(&self) -> Result<Rules, NetError> {
        let subnet = self.check_subnet()?;
        let range = self.effective_range()?;
        for (name, ip) in [("range.first", range.first), ("range.last", range.last)] {
            if !subnet.contains_host(ip) {
                return Err(invalid(name, &ip.to_string(), &outside(subnet)));
            }
        }
        if range.first > range.last {
            return Err(invalid(
                "range",
                &format!("{}-{}", range.first, range.last),
                "the first address is after the last",
            ));
        }
        if !subnet.contains_host(self.server_id) {
            return Err(invalid(
                "server_id",
                &self.server_id.to_string(),
                &outside(subnet),
            ));
        }
        if let Some(g) = self.gateway {
            if !subnet.contains_host(g) {
                return Err(invalid("gateway", &g.to_string(), &outside(subnet)));
            }
        }
        self.check_dns()?;
        let (min, max) = LEASE_SECS_LIMITS;
        if !(min..=max).contains(&self.lease_secs) {
            return Err(invalid(
                "lease_secs",
                &self.lease_secs.to_string(),
                &format!("must be {min} to {max} seconds"),
            ));
        }
        let (by_mac, by_ip) = self.check_reservations(subnet)?;
        Ok(Rules {
            subnet,
            first: u32::from(range.first),
            last: u32::from(range.last),
            server_id: self.server_id,
            gateway: self.gateway,
            lease_secs: self.lease_secs,
            by_mac,
            by_ip,
        })
    }

    fn check_subnet(&self) -> Result<Subnet, NetError> {
        if !(8..=30).contains(&self.prefix) {
            return Err(invalid(
                "prefix",
                &self.prefix.to_string(),
                "must be 8 to 30",
            ));
        }
        let (subnet, host) = Subnet::parse(&format!("{}/{}", self.network, self.prefix))
            .map_err(|e| invalid("network", &self.network.to_string(), &e.message))?;
        if host.is_some() {
            return Err(invalid(
                "network",
                &self.network.to_string(),
                &format!(
                    "has host bits set for /{}: the network address is {}",
                    self.prefix, subnet.network
                ),
            ));
        }
        Ok(subnet)
    }

    fn check_dns(&self) -> Result<(), NetError> {
        if self.dns.len() > MAX_DNS {
            return Err(invalid(
                "dns",
                &format!("{} servers", self.dns.len()),
                &format!("at most {MAX_DNS} are handed out"),
            ));
        }
        for d in &self.dns {
            if d.is_unspecified() || d.is_broadcast() || d.is_multicast() {
                return Err(invalid("dns", &d.to_string(), "not a unicast address"));
            }
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn check_reservations(
        &self,
        subnet: Subnet,
    ) -> Result<(BTreeMap<Mac, Ipv4Addr>, BTreeMap<Ipv4Addr, Mac>), NetError> {
        let mut by_mac = BTreeMap::new();
        let mut by_ip = BTreeMap::new();
        for r in &self.reservations {
            let what = format!("{} {}", r.mac, r.ip);
            if !r.mac.is_unicast() {
                return Err(invalid("reservations", &what, "not a NIC's (unicast) MAC"));
            }
            if !subnet.contains_host(r.ip) {
                return Err(invalid("reservations", &what, &outside(subnet)));
            }
            if r.ip == self.server_id || Some(r.ip) == self.gateway {
                return Err(invalid(
                    "reservations",
                    &what,
                    "the address is the server's or the gateway's",
                ));
            }
            if by_mac.insert(r.mac, r.ip).is_some() {
                return Err(invalid("reservations", &what, "the MAC is reserved twice"));
            }
            if let Some(other) = by_ip.insert(r.ip, r.mac) {
                return Err(invalid(
                    "reservations",
                    &what,
                    &format!("the address is reserved for {other} already"),
                ));
            }
        }
        Ok((by_mac, by_ip))
    }
}

fn invalid(setting: &str, value: &str, why: &str) -> NetError {
    NetError::new(
        NetErrorKind::Invalid,
        &format!("DHCP setting {setting} '{value}'"),
        why,
    )
}

fn outside(subnet: Subnet) -> String {
    format!("not a host address of the subnet {subnet}")
}

/// Validated settings, as the pool uses them. Built only by [`Config::rules`], so every
/// address in it is a host address of the subnet and `first <= last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    pub subnet: Subnet,
    pub first: u32,
    pub last: u32,
    pub server_id: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub lease_secs: u32,
    pub by_mac: BTreeMap<Mac, Ipv4Addr>,
    pub by_ip: BTreeMap<Ipv4Addr, Mac>,
}

impl Rules {
    /// Whether `mac` may hold `ip` as far as the settings go (not counting other leases): its
    /// reservation if it has one (and nothing else), otherwise an address of the range that is
    /// neither reserved for another MAC nor the server's or the gateway's.
    pub fn allows(&self, mac: Mac, ip: Ipv4Addr) -> bool {
        match self.by_mac.get(&mac) {
            Some(&reserved) => reserved == ip,
            None => {
                (self.first..=self.last).contains(&u32::from(ip))
                    && ip != self.server_id
                    && Some(ip) != self.gateway
                    && !self.by_ip.contains_key(&ip)
            }
        }
    }

    /// The range's addresses, in order.
    pub fn range(&self) -> impl Iterator<Item = Ipv4Addr> {
        (self.first..=self.last).map(Ipv4Addr::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let subnet = Subnet::parse("10.20.0.0/24").unwrap().0;
        Config::new(subnet, Ipv4Addr::new(10, 20, 0, 1))
    }

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 20, 0, d)
    }

    #[track_caller]
    fn refused(c: &Config, setting: &str, value: &str) {
        let e = c.validate().unwrap_err();
        assert_eq!(e.kind, NetErrorKind::Invalid, "{e}");
        let shown = e.to_string();
        assert!(shown.contains(setting) && shown.contains(value), "{shown}");
    }

    #[test]
    fn the_default_range_leaves_out_the_first_16_addresses() {
        let c = base();
        let r = c.effective_range().unwrap();
        assert_eq!((r.first, r.last), (ip(16), ip(254)));
        let rules = c.rules().unwrap();
        assert_eq!(rules.range().next(), Some(ip(16)));
        assert_eq!(rules.range().count(), 239);
        assert_eq!(
            (c.lease_secs, c.renew_secs(), c.rebind_secs()),
            (3600, 1800, 3150)
        );
        let mut small = base();
        small.prefix = 28;
        refused(&small, "range", "10.20.0.0/28");
        small.prefix = 27;
        let r = small.effective_range().unwrap();
        assert_eq!((r.first, r.last), (ip(16), ip(30)));
    }

    #[test]
    fn bad_settings_are_refused_naming_the_setting_and_the_value() {
        let mut c = base();
        c.prefix = 31;
        refused(&c, "prefix", "31");
        c.prefix = 7;
        refused(&c, "prefix", "7");
        let mut c = base();
        c.network = ip(5);
        refused(&c, "network", "10.20.0.5");
        let mut c = base();
        c.range = Some(AddressRange {
            first: ip(100),
            last: Ipv4Addr::new(10, 20, 1, 5),
        });
        refused(&c, "range.last", "10.20.1.5");
        c.range = Some(AddressRange {
            first: ip(0),
            last: ip(5),
        });
        refused(&c, "range.first", "10.20.0.0");
        c.range = Some(AddressRange {
            first: ip(100),
            last: ip(255),
        });
        refused(&c, "range.last", "10.20.0.255");
        c.range = Some(AddressRange {
            first: ip(100),
            last: ip(50),
        });
        refused(&c, "range", "10.20.0.100-10.20.0.50");
        let mut c = base();
        c.server_id = Ipv4Addr::new(10, 21, 0, 1);
        refused(&c, "server_id", "10.21.0.1");
        let mut c = base();
        c.gateway = Some(Ipv4Addr::new(192, 168, 1, 1));
        refused(&c, "gateway", "192.168.1.1");
        let mut c = base();
        c.dns = vec![Ipv4Addr::BROADCAST];
        refused(&c, "dns", "255.255.255.255");
        c.dns = vec![Ipv4Addr::new(1, 1, 1, 1); 9];
        refused(&c, "dns", "9 servers");
        let mut c = base();
        c.lease_secs = 10;
        refused(&c, "lease_secs", "10");
        let mac: Mac = "52:54:00:00:00:01".parse().unwrap();
        let mut c = base();
        c.reservations = vec![Reservation {
            mac,
            ip: Ipv4Addr::new(10, 30, 0, 1),
        }];
        refused(&c, "reservations", "10.30.0.1");
        c.reservations = vec![Reservation { mac, ip: ip(1) }];
        refused(&c, "reservations", "10.20.0.1");
        c.reservations = vec![
            Reservation { mac, ip: ip(5) },
            Reservation { mac, ip: ip(6) },
        ];
        refused(&c, "reservations", "52:54:00:00:00:01");
        let other: Mac = "52:54:00:00:00:02".parse().unwrap();
        c.reservations = vec![
            Reservation { mac, ip: ip(5) },
            Reservation {
                mac: other,
                ip: ip(5),
            },
        ];
        refused(&c, "reservations", "10.20.0.5");
        c.reservations = vec![Reservation {
            mac: Mac([0xff; 6]),
            ip: ip(5),
        }];
        refused(&c, "reservations", "ff:ff:ff:ff:ff:ff");
    }

    #[test]
    fn settings_read_from_json_refuse_unknown_fields() {
        let c: Config = serde_json::from_str(
            r#"{"network":"10.20.0.0","prefix":24,"server_id":"10.20.0.1",
                "dns":["1.1.1.1"],"reservations":[{"mac":"52:54:00:00:00:01","ip":"10.20.0.5"}]}"#,
        )
        .unwrap();
        assert_eq!(c.lease_secs, 3600);
        assert_eq!(c.reservations.len(), 1);
        let back: Config = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let e = serde_json::from_str::<Config>(
            r#"{"network":"10.20.0.0","prefix":24,"server_id":"10.20.0.1","rnage":null}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("rnage"), "{e}");
    }

    #[test]
    fn reservations_may_lie_outside_the_range_and_are_kept_from_others() {
        let mut c = base();
        let a: Mac = "52:54:00:00:00:01".parse().unwrap();
        let b: Mac = "52:54:00:00:00:02".parse().unwrap();
        c.gateway = Some(ip(17));
        c.reservations = vec![
            Reservation { mac: a, ip: ip(5) },
            Reservation { mac: b, ip: ip(16) },
        ];
        let r = c.rules().unwrap();
        assert!(r.allows(a, ip(5)) && !r.allows(a, ip(18)));
        assert!(!r.allows(b, ip(5)) && r.allows(b, ip(16)));
        let x: Mac = "52:54:00:00:00:03".parse().unwrap();
        assert!(!r.allows(x, ip(16)) && !r.allows(x, ip(17)) && r.allows(x, ip(18)));
        assert!(!r.allows(x, ip(1)) && !r.allows(x, ip(5)));
    }
}
