//! The built-in DHCPv4 server of one switch: Strata's own pool, leases, reservations and
//! persistence; message encoding with dhcproto.
//!
//! - [`Config`]: the settings (subnet, range, server identifier, gateway, DNS, lease time,
//!   reservations), validated by [`Server::open`];
//! - [`Server`]: the state of one switch's server. [`Server::handle`] answers one packet (pure:
//!   the time is a parameter, no socket); [`Server::release_mac`], [`Server::set_owner`],
//!   [`Server::leases`], [`Server::reserve`] are the host service's calls;
//! - [`Server::run`]: the blocking loop on the switch's bridge (UDP port 67), for a thread of its
//!   own, sharing the server through a `Mutex` with the host service's calls.
//!
//! Clients are known by their MAC (the `chaddr` field): the host knows NICs by MAC, so a client
//! identifier option is not used. Relayed requests (`giaddr` set) are ignored: the server answers
//! only on its own switch. Every change to the leases is saved to the lease file before
//! [`Server::handle`] returns.

mod config;
#[doc(hidden)]
pub mod fuzz;
mod mac;
mod packet;
mod pool;
mod socket;
mod store;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use config::{
    AddressRange, Config, Reservation, DEFAULT_LEASE_SECS, LEASE_SECS_LIMITS, MAX_DNS,
    RESERVED_AT_START,
};
pub use mac::Mac;
pub use packet::Reply;
pub use pool::{OFFER_HOLD_SECS, QUARANTINE_SECS};
pub use socket::{bind, interrupt};

use crate::error::{NetError, NetErrorKind};
use config::Rules;
use pool::{Lease, Pool};
use store::{LeaseFile, StoredLease};

/// What happened to a lease (for the host's events and logs), taken with
/// [`Server::take_events`] or passed to [`Server::run`]'s callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A client got a lease on an address it did not hold (not sent for a renewal).
    Granted {
        /// The client.
        mac: Mac,
        /// Its address.
        ip: Ipv4Addr,
    },
    /// A client released its lease.
    Released {
        /// The client.
        mac: Mac,
        /// The address it gave back.
        ip: Ipv4Addr,
    },
    /// A client declined an address (someone else answers on it); it is quarantined.
    Declined {
        /// The client.
        mac: Mac,
        /// The address, out of the pool for [`QUARANTINE_SECS`].
        ip: Ipv4Addr,
    },
    /// No address was free for a client.
    Exhausted {
        /// The client left without an offer.
        mac: Mac,
    },
    /// The lease file could not be written (the leases stay in memory; the next change tries
    /// again).
    SaveFailed(NetError),
}

/// A lease as the host shows it (`strata switch leases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    /// The client's MAC.
    pub mac: Mac,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The host name the client gave, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// When the lease ends, in seconds since the Unix epoch.
    pub expires_unix: u64,
    /// When the lease ends, RFC 3339 (UTC).
    pub expires: String,
    /// The label the host set with [`Server::set_owner`] ("vm/nic0").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether the address is the MAC's reservation.
    pub reserved: bool,
}

/// One switch's DHCP server.
#[derive(Debug)]
pub struct Server {
    config: Config,
    rules: Rules,
    pool: Pool,
    owners: BTreeMap<Mac, String>,
    file: Option<PathBuf>,
    events: Vec<LeaseEvent>,
}

/// Seconds since the Unix epoch (0 before it).
fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Server {
    /// The server for `config`, its leases kept in `lease_file` (read now if it exists: expired
    /// leases, and leases the settings no longer allow, are dropped). A damaged file is an error
    /// naming it.
    pub fn open(config: Config, lease_file: &Path, now: SystemTime) -> Result<Self, NetError> {
        let mut server = Self::build(config, Some(lease_file.to_path_buf()))?;
        let file = store::load(lease_file)?;
        let now = unix(now);
        for l in file.leases {
            let lease = Lease {
                ip: l.ip,
                expires: l.expires,
                bound: true,
                hostname: l.hostname,
            };
            server.pool.restore(&server.rules, l.mac, lease, now);
        }
        server.owners = file.owners;
        Ok(server)
    }

    /// A server that saves nothing (tests, fuzzing).
    pub fn in_memory(config: Config) -> Result<Self, NetError> {
        Self::build(config, None)
    }

    fn build(config: Config, file: Option<PathBuf>) -> Result<Self, NetError> {
        let rules = config.rules()?;
        Ok(Self {
            config,
            rules,
            pool: Pool::default(),
            owners: BTreeMap::new(),
            file,
            events: Vec::new(),
        })
    }

    /// The settings in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the settings (`strata switch set`); leases they no longer allow end now (their
    /// clients get a NAK at renewal and ask again).
    pub fn reconfigure(&mut self, config: Config) -> Result<(), NetError> {
        let rules = config.rules()?;
        self.pool.retain_allowed(&rules);
        self.config = config;
        self.rules = rules;
        self.persist();
        Ok(())
    }

    /// Reserves `ip` for `mac` (`strata switch reserve`). Refused while another MAC holds a live
    /// lease on it (naming that MAC): release that one first.
    pub fn reserve(&mut self, mac: Mac, ip: Ipv4Addr, now: SystemTime) -> Result<(), NetError> {
        let now = unix(now);
        let holder = self
            .pool
            .bound(now)
            .find(|(m, l)| *m != mac && l.ip == ip)
            .map(|(m, _)| m);
        if let Some(other) = holder {
            return Err(NetError::new(
                NetErrorKind::Conflict,
                &format!("reservation {mac} {ip}"),
                format!("{other} holds a lease on {ip}: release it first"),
            ));
        }
        let mut config = self.config.clone();
        config.reservations.retain(|r| r.mac != mac);
        config.reservations.push(Reservation { mac, ip });
        self.reconfigure(config)
    }

    /// Removes `mac`'s reservation; returns whether it had one. A lease on that address ends now
    /// if the address is outside the range (the client gets a NAK at renewal and asks again),
    /// and is kept otherwise.
    pub fn unreserve(&mut self, mac: Mac) -> Result<bool, NetError> {
        let mut config = self.config.clone();
        let before = config.reservations.len();
        config.reservations.retain(|r| r.mac != mac);
        if config.reservations.len() == before {
            return Ok(false);
        }
        self.reconfigure(config)?;
        Ok(true)
    }

    /// Frees `mac`'s lease at once, whatever its state (its VM or NIC is deleted), and forgets its
    /// owner's label; returns the address it held. The address can go to another MAC at once.
    pub fn release_mac(&mut self, mac: Mac) -> Option<Ipv4Addr> {
        let lease = self.pool.remove(mac);
        let owner = self.owners.remove(&mac);
        if lease.is_some() || owner.is_some() {
            self.persist();
        }
        lease.filter(|l| l.bound).map(|l| l.ip)
    }

    /// Labels `mac` with its owner ("vm/nic0"), shown by [`Server::leases`]; `None` removes the
    /// label. The label is kept whether or not the MAC has a lease.
    pub fn set_owner(&mut self, mac: Mac, label: Option<&str>) {
        let changed = match label {
            Some(l) => self.owners.insert(mac, l.to_string()).as_deref() != Some(l),
            None => self.owners.remove(&mac).is_some(),
        };
        if changed {
            self.persist();
        }
    }

    /// The live leases, in MAC order.
    pub fn leases(&self, now: SystemTime) -> Vec<LeaseInfo> {
        self.pool
            .bound(unix(now))
            .map(|(mac, l)| LeaseInfo {
                mac,
                ip: l.ip,
                hostname: l.hostname.clone(),
                expires_unix: l.expires,
                expires: rfc3339(l.expires),
                owner: self.owners.get(&mac).cloned(),
                reserved: self.rules.by_mac.get(&mac) == Some(&l.ip),
            })
            .collect()
    }

    /// The events since the last call.
    pub fn take_events(&mut self) -> Vec<LeaseEvent> {
        std::mem::take(&mut self.events)
    }

    /// Saves the bound leases and the owners (nothing for an in-memory server); a failure becomes
    /// a [`LeaseEvent::SaveFailed`].
    fn persist(&mut self) {
        let Some(path) = &self.file else { return };
        let file = LeaseFile {
            version: 1,
            leases: self
                .pool
                .records()
                .filter(|(_, l)| l.bound)
                .map(|(mac, l)| StoredLease {
                    mac,
                    ip: l.ip,
                    expires: l.expires,
                    hostname: l.hostname.clone(),
                })
                .collect(),
            owners: self.owners.clone(),
        };
        if let Err(e) = store::save(path, &file) {
            self.events.push(LeaseEvent::SaveFailed(e));
        }
    }
}

fn rfc3339(unix_secs: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
    humantime::format_rfc3339_seconds(t).to_string()
}
