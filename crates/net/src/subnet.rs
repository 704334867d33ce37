//! IPv4 subnets as switches use them: `10.10.0.0/24`, or `10.10.0.1/24` (an address with its
//! prefix: that subnet, and that address for the host).

use std::net::Ipv4Addr;

use crate::error::{NetError, NetErrorKind};

/// An IPv4 subnet: its network address and prefix length (8 to 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N`; returns the subnet and, when host bits were set, that address.
    pub fn parse(text: &str) -> Result<(Self, Option<Ipv4Addr>), NetError> {
        let bad =
            |why: &str| NetError::new(NetErrorKind::Invalid, &format!("subnet '{text}'"), why);
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX such as 10.10.0.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix must be 8 to 30"));
        }
        let subnet = Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        };
        let host = (subnet.network != addr).then_some(addr);
        if let Some(h) = host {
            if h == subnet.broadcast() {
                return Err(bad("the address is the subnet's broadcast address"));
            }
        }
        Ok((subnet, host))
    }

    /// The netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(offset))
    }

    /// Whether `ip` is a host address of the subnet (not its network or broadcast address).
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
            && ip != self.network
            && ip != self.broadcast()
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.network) & mask(p) == u32::from(other.network) & mask(p)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_with_or_without_a_host_address() {
        let (s, h) = Subnet::parse("10.10.0.0/24").unwrap();
        assert_eq!((s.to_string(), h), ("10.10.0.0/24".to_string(), None));
        let (s, h) = Subnet::parse("10.10.0.1/24").unwrap();
        assert_eq!(s.network, Ipv4Addr::new(10, 10, 0, 0));
        assert_eq!(h, Some(Ipv4Addr::new(10, 10, 0, 1)));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 10, 0, 255));
        assert_eq!(s.nth(16), Ipv4Addr::new(10, 10, 0, 16));
        for bad in [
            "10.10.0.0",
            "10.10.0.0/33",
            "10.10.0.0/4",
            "x/24",
            "10.10.0.255/24",
        ] {
            assert_eq!(
                Subnet::parse(bad).unwrap_err().kind,
                NetErrorKind::Invalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn overlap_and_membership() {
        let a = Subnet::parse("10.10.0.0/24").unwrap().0;
        let b = Subnet::parse("10.10.0.128/25").unwrap().0;
        let c = Subnet::parse("10.10.1.0/24").unwrap().0;
        let d = Subnet::parse("10.0.0.0/8").unwrap().0;
        assert!(a.overlaps(&b) && b.overlaps(&a) && d.overlaps(&c));
        assert!(!a.overlaps(&c));
        assert!(a.contains_host(Ipv4Addr::new(10, 10, 0, 1)));
        assert!(!a.contains_host(Ipv4Addr::new(10, 10, 0, 0)));
        assert!(!a.contains_host(Ipv4Addr::new(10, 10, 0, 255)));
        assert!(!a.contains_host(Ipv4Addr::new(10, 10, 1, 1)));
    }
}
