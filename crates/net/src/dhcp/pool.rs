//! The address pool and its leases: pure logic, no sockets, no files, no clock (every call is
//! given `now`, in seconds since the Unix epoch).
//!
//! A MAC has at most one record: an offer (held [`OFFER_HOLD_SECS`]), a bound lease, or an
//! expired or released one, kept (up to [`RECALL_SECS`]) so that the MAC gets its previous address
//! back while no one else took it. An expired record holds nothing: its address is free for
//! anyone. A declined address is kept out of the pool for [`QUARANTINE_SECS`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::config::Rules;
use super::mac::Mac;

/// How long an offered address is held for the client it was offered to.
pub const OFFER_HOLD_SECS: u64 = 60;

/// How long a declined address (in use by someone else on the wire) stays out of the pool.
pub const QUARANTINE_SECS: u64 = 600;

/// How long an expired or released record is remembered, for the MAC to get its address back.
pub const RECALL_SECS: u64 = 24 * 3600;

/// One MAC's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Its address.
    pub ip: Ipv4Addr,
    /// When it ends (seconds since the epoch); at or before `now` it holds nothing.
    pub expires: u64,
    /// Acknowledged (a lease) rather than only offered.
    pub bound: bool,
    /// The host name the client gave, if any.
    pub hostname: Option<String>,
}

impl Lease {
    fn live(&self, now: u64) -> bool {
        self.expires > now
    }
}

/// Why a REQUEST is refused (the text goes in the NAK's message option).
pub(crate) type Refusal = &'static str;

/// The leases of one switch.
///
/// Invariant (kept by [`Pool::assign`] and [`Pool::remove`], the only writers of the two maps):
/// `holders` is the inverse of `leases`: `holders[ip] == mac` exactly when `leases[mac].ip == ip`,
/// so one address has at most one record, live or not.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pool {
    leases: BTreeMap<Mac, Lease>,
    holders: BTreeMap<Ipv4Addr, Mac>,
    quarantine: BTreeMap<Ipv4Addr, u64>,
}

impl Pool {
    /// Whether `mac` may take `ip` now: the settings allow it, it is not quarantined, and no
    /// other MAC's live record holds it.
    pub fn free_for(&self, rules: &Rules, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        rules.allows(mac, ip)
            && self.quarantine.get(&ip).is_none_or(|&until| until <= now)
            && self.holders.get(&ip).is_none_or(|&holder| {
                holder == mac || self.leases.get(&holder).is_none_or(|l| !l.live(now))
            })
    }

    /// The address to offer `mac`: its reservation (and nothing else), else its previous
    /// address, else the one it asks for, else the first free address of the range.
    fn choose(
        &self,
        rules: &Rules,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some(&ip) = rules.by_mac.get(&mac) {
            return self.free_for(rules, mac, ip, now).then_some(ip);
        }
        let previous = self.leases.get(&mac).map(|l| l.ip);
        previous
            .into_iter()
            .chain(requested)
            .find(|&ip| self.free_for(rules, mac, ip, now))
            .or_else(|| rules.range().find(|&ip| self.free_for(rules, mac, ip, now)))
    }

    /// DISCOVER: the address offered to `mac`, held for it a short while. A live lease stays a
    /// lease (an offer never shortens it).
    pub fn offer(
        &mut self,
        rules: &Rules,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let ip = self.choose(rules, mac, requested, now)?;
        let current = self.leases.get(&mac);
        if current.is_some_and(|l| l.ip == ip && l.bound && l.live(now)) {
            return Some(ip);
        }
        let hostname = current.and_then(|l| l.hostname.clone());
        self.assign(mac, ip, now + OFFER_HOLD_SECS, false, hostname);
        Some(ip)
    }

    /// REQUEST for `ip`: binds it to `mac` for the lease time, or says why not. With
    /// `must_be_offered` (a client selecting our offer, or renewing) `ip` must be the address of
    /// `mac`'s record. Returns whether the MAC had no live lease on that address before.
    pub fn request(
        &mut self,
        rules: &Rules,
        mac: Mac,
        ip: Ipv4Addr,
        must_be_offered: bool,
        hostname: Option<String>,
        now: u64,
    ) -> Result<bool, Refusal> {
        let current = self.leases.get(&mac);
        if must_be_offered && current.map(|l| l.ip) != Some(ip) {
            return Err("that address was not offered to this client");
        }
        if !rules.subnet.contains_host(ip) {
            return Err("that address is not on this network");
        }
        if !self.free_for(rules, mac, ip, now) {
            return Err("that address is not available to this client");
        }
        let new = !current.is_some_and(|l| l.ip == ip && l.bound && l.live(now));
        let hostname = hostname.or_else(|| current.and_then(|l| l.hostname.clone()));
        let expires = now + u64::from(rules.lease_secs);
        self.assign(mac, ip, expires, true, hostname);
        Ok(new)
    }

    /// The client chose another server: its offer (not a lease) is dropped.
    pub fn forget_offer(&mut self, mac: Mac) {
        if self.leases.get(&mac).is_some_and(|l| !l.bound) {
            self.remove(mac);
        }
    }

    /// RELEASE of `ip` by `mac`: the lease ends now (the record stays, for the MAC to get the
    /// address back later). Returns whether a live lease ended.
    pub fn release(&mut self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        match self.leases.get_mut(&mac) {
            Some(l) if l.ip == ip && l.bound && l.live(now) => {
                l.expires = now;
                l.bound = false;
                true
            }
            _ => false,
        }
    }

    /// DECLINE of `ip` by `mac` (someone else uses it): the record goes and the address is
    /// quarantined. Returns whether `mac` held it.
    pub fn decline(&mut self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        if self.leases.get(&mac).is_none_or(|l| l.ip != ip) {
            return false;
        }
        self.remove(mac);
        self.quarantine.insert(ip, now + QUARANTINE_SECS);
        true
    }

    /// Forgets `mac` entirely (its VM or NIC is gone); returns the address of its live lease.
    pub fn remove(&mut self, mac: Mac) -> Option<Lease> {
        let lease = self.leases.remove(&mac)?;
        self.holders.remove(&lease.ip);
        Some(lease)
    }

    /// Gives `ip` to `mac`, dropping `mac`'s previous record and the dead record of whoever held
    /// `ip` before (the caller checked [`Pool::free_for`]).
    fn assign(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        expires: u64,
        bound: bool,
        hostname: Option<String>,
    ) {
        if let Some(old) = self.leases.get(&mac) {
            if old.ip != ip {
                self.holders.remove(&old.ip);
            }
        }
        if let Some(previous) = self.holders.insert(ip, mac) {
            if previous != mac {
                self.leases.remove(&previous);
            }
        }
        let lease = Lease {
            ip,
            expires,
            bound,
            hostname,
        };
        self.leases.insert(mac, lease);
    }

    /// Takes back a lease read from disk if it still fits the settings and clashes with nothing;
    /// returns whether it was taken.
    pub fn restore(&mut self, rules: &Rules, mac: Mac, lease: Lease, now: u64) -> bool {
        let fits = lease.bound
            && lease.live(now)
            && !self.leases.contains_key(&mac)
            && self.free_for(rules, mac, lease.ip, now);
        if fits {
            self.assign(mac, lease.ip, lease.expires, true, lease.hostname);
        }
        fits
    }

    /// Drops what no longer matters: ended quarantines and records dead for [`RECALL_SECS`].
    pub fn prune(&mut self, now: u64) {
        self.quarantine.retain(|_, until| *until > now);
        let old: Vec<Mac> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires.saturating_add(RECALL_SECS) <= now)
            .map(|(m, _)| *m)
            .collect();
        for mac in old {
            self.remove(mac);
        }
    }

    /// Drops the records (live or not) the settings no longer allow.
    pub fn retain_allowed(&mut self, rules: &Rules) {
        let gone: Vec<Mac> = self
            .leases
            .iter()
            .filter(|(m, l)| !rules.allows(**m, l.ip))
            .map(|(m, _)| *m)
            .collect();
        for mac in gone {
            self.remove(mac);
        }
    }

    /// Every record, live or not, by MAC.
    pub fn records(&self) -> impl Iterator<Item = (Mac, &Lease)> {
        self.leases.iter().map(|(m, l)| (*m, l))
    }

    /// `mac`'s record, live or not.
    pub fn get(&self, mac: Mac) -> Option<&Lease> {
        self.leases.get(&mac)
    }

    /// The live bound leases, by MAC.
    pub fn bound(&self, now: u64) -> impl Iterator<Item = (Mac, &Lease)> {
        self.leases
            .iter()
            .filter(move |(_, l)| l.bound && l.live(now))
            .map(|(m, l)| (*m, l))
    }

    /// Checks the invariants (tests and fuzzing): the maps are inverse, and every live record
    /// is allowed by the settings. Returns the first violation found.
    pub fn verify(&self, rules: &Rules, now: u64) -> Result<(), String> {
        if self.leases.len() != self.holders.len() {
            return Err(format!(
                "{} records but {} holders",
                self.leases.len(),
                self.holders.len()
            ));
        }
        for (ip, mac) in &self.holders {
            if self.leases.get(mac).map(|l| l.ip) != Some(*ip) {
                return Err(format!(
                    "{ip} is held by {mac}, whose record says otherwise"
                ));
            }
        }
        for (mac, l) in &self.leases {
            if l.live(now) && !rules.allows(*mac, l.ip) {
                return Err(format!("{mac} holds {} against the settings", l.ip));
            }
        }
        Ok(())
    }

    #[cfg(test)]
    #[track_caller]
    pub fn check(&self, rules: &Rules, now: u64) {
        if let Err(e) = self.verify(rules, now) {
            panic!("{e}: {self:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::config::{AddressRange, Config, Reservation};
    use crate::subnet::Subnet;

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 20, 0, d)
    }

    fn mac(n: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, n])
    }

    fn rules(f: impl FnOnce(&mut Config)) -> Rules {
        let mut c = Config::new(Subnet::parse("10.20.0.0/24").unwrap().0, ip(1));
        f(&mut c);
        c.rules().unwrap()
    }

    fn lease(p: &mut Pool, r: &Rules, m: Mac, now: u64) -> Ipv4Addr {
        let ip = p.offer(r, m, None, now).unwrap();
        p.request(r, m, ip, true, None, now).unwrap();
        p.check(r, now);
        ip
    }

    #[test]
    fn addresses_go_out_in_order_from_the_start_of_the_range() {
        let r = rules(|_| {});
        let mut p = Pool::default();
        assert_eq!(lease(&mut p, &r, mac(1), 0), ip(16));
        assert_eq!(lease(&mut p, &r, mac(2), 0), ip(17));
        assert_eq!(p.offer(&r, mac(3), None, 0), Some(ip(18)));
        // The offer is held: the next client gets the one after.
        assert_eq!(p.offer(&r, mac(4), None, 1), Some(ip(19)));
        // Past the hold, the offered address is free again.
        assert_eq!(p.offer(&r, mac(5), None, OFFER_HOLD_SECS + 2), Some(ip(18)));
        // The server's and the gateway's addresses are skipped when inside the range.
        let r = rules(|c| {
            c.range = Some(AddressRange {
                first: ip(1),
                last: ip(4),
            });
            c.gateway = Some(ip(2));
        });
        let mut p = Pool::default();
        assert_eq!(lease(&mut p, &r, mac(1), 0), ip(3));
        assert_eq!(lease(&mut p, &r, mac(2), 0), ip(4));
        assert_eq!(p.offer(&r, mac(3), None, 0), None, "the pool is exhausted");
    }

    #[test]
    fn a_mac_keeps_its_address_and_an_expired_one_is_reused() {
        let r = rules(|c| c.lease_secs = 100);
        let mut p = Pool::default();
        assert_eq!(lease(&mut p, &r, mac(1), 0), ip(16));
        assert_eq!(lease(&mut p, &r, mac(2), 0), ip(17));
        // Expired, but no one took it: mac 1 gets it back.
        assert_eq!(p.offer(&r, mac(1), None, 500), Some(ip(16)));
        assert_eq!(
            p.offer(&r, mac(3), None, 500),
            Some(ip(17)),
            "mac 2's lease ran out"
        );
        assert_eq!(p.get(mac(2)), None, "its record went with its address");
        p.check(&r, 500);
        // A requested address is honoured when free.
        assert_eq!(p.offer(&r, mac(4), Some(ip(40)), 500), Some(ip(40)));
        assert_eq!(p.offer(&r, mac(5), Some(ip(40)), 500), Some(ip(18)));
    }

    #[test]
    fn reservations_go_only_to_their_mac() {
        let r = rules(|c| {
            c.reservations = vec![
                Reservation {
                    mac: mac(9),
                    ip: ip(16),
                },
                Reservation {
                    mac: mac(8),
                    ip: ip(5),
                },
            ];
        });
        let mut p = Pool::default();
        assert_eq!(lease(&mut p, &r, mac(1), 0), ip(17), ".16 is reserved");
        assert_eq!(lease(&mut p, &r, mac(9), 0), ip(16));
        assert_eq!(lease(&mut p, &r, mac(8), 0), ip(5), "outside the range");
        assert_eq!(p.offer(&r, mac(8), Some(ip(30)), 0), Some(ip(5)));
        assert!(p.request(&r, mac(1), ip(5), false, None, 0).is_err());
        assert!(p.request(&r, mac(8), ip(30), false, None, 0).is_err());
        // Even released, a reserved address goes to no one else.
        assert!(p.release(mac(8), ip(5), 1));
        assert!(p.request(&r, mac(2), ip(5), false, None, 2).is_err());
    }

    #[test]
    fn renew_release_decline_and_removal() {
        let r = rules(|c| c.lease_secs = 100);
        let mut p = Pool::default();
        let a = lease(&mut p, &r, mac(1), 0);
        assert_eq!(
            p.request(&r, mac(1), a, true, None, 80),
            Ok(false),
            "renewed"
        );
        assert_eq!(p.get(mac(1)).unwrap().expires, 180);
        assert_eq!(
            p.offer(&r, mac(2), None, 150),
            Some(ip(17)),
            "still held at 150"
        );
        // Release: free for others at once, and mac 1 gets it back later if still free.
        assert!(p.release(mac(1), a, 160));
        assert!(!p.release(mac(1), a, 160), "twice");
        assert_eq!(p.bound(160).count(), 0);
        assert_eq!(p.offer(&r, mac(1), None, 161), Some(a));
        // Decline: the address is quarantined (.16 and .17 are held by the two offers).
        let b = lease(&mut p, &r, mac(3), 200);
        assert_eq!(b, ip(18));
        assert!(!p.decline(mac(3), ip(99), 200), "not its address");
        assert!(p.decline(mac(3), b, 200));
        assert_eq!(p.offer(&r, mac(4), Some(b), 201), Some(ip(19)));
        let later = 200 + QUARANTINE_SECS + 1;
        assert_eq!(p.offer(&r, mac(5), Some(b), later), Some(b));
        // Removal (the NIC is deleted): the address is free at once.
        assert_eq!(p.remove(mac(1)).map(|l| l.ip), Some(a));
        assert_eq!(p.offer(&r, mac(6), None, 900), Some(a));
        p.check(&r, 900);
    }

    #[test]
    fn requests_are_refused_for_what_was_not_offered_or_is_taken() {
        let r = rules(|_| {});
        let mut p = Pool::default();
        let a = lease(&mut p, &r, mac(1), 0);
        assert!(p.request(&r, mac(2), a, false, None, 0).is_err(), "taken");
        assert!(
            p.request(&r, mac(2), ip(20), true, None, 0).is_err(),
            "not offered"
        );
        let off_net = Ipv4Addr::new(192, 168, 0, 20);
        assert!(p.request(&r, mac(2), off_net, false, None, 0).is_err());
        assert!(
            p.request(&r, mac(2), ip(3), false, None, 0).is_err(),
            "outside the range"
        );
        assert_eq!(
            p.request(&r, mac(2), ip(20), false, None, 0),
            Ok(true),
            "init-reboot"
        );
        p.offer(&r, mac(3), None, 0);
        p.forget_offer(mac(3));
        assert_eq!(p.get(mac(3)), None);
        p.forget_offer(mac(1));
        assert!(p.get(mac(1)).is_some(), "a lease is not an offer");
    }

    #[test]
    fn prune_forgets_old_records_and_restore_refuses_clashes() {
        let r = rules(|c| c.lease_secs = 100);
        let mut p = Pool::default();
        lease(&mut p, &r, mac(1), 0);
        p.prune(100 + RECALL_SECS);
        assert_eq!(p.get(mac(1)), None);
        let l = |ip, expires| Lease {
            ip,
            expires,
            bound: true,
            hostname: None,
        };
        let mut p = Pool::default();
        assert!(p.restore(&r, mac(1), l(ip(16), 50), 0));
        assert!(!p.restore(&r, mac(2), l(ip(16), 50), 0), "the same address");
        assert!(!p.restore(&r, mac(3), l(ip(17), 0), 0), "expired");
        assert!(!p.restore(&r, mac(4), l(ip(3), 50), 0), "outside the range");
        p.check(&r, 0);
    }
}
