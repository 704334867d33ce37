//! The DHCP servers of the switches that enable them: one thread per switch, in the host
//! service (which owns the host's state; clients retry across a service restart). Leases live in
//! `switches/NAME.leases.json` and survive restarts; a VM's leases are released the moment it is
//! deleted, so no lease outlives its VM.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use strata_api::Lease;
use strata_net::dhcp::{self, AddressRange, Config, LeaseEvent, Mac, Reservation, Server};

use super::switch_plan::{dhcp_range, Plan};
use super::switches::net_error;
use super::Service;
use crate::error::HostError;
use crate::events::{Code, EventLog};
use crate::switch_store::SwitchConfig;

/// A running DHCP server.
pub(super) struct Running {
    server: Arc<Mutex<Server>>,
    stop: Arc<AtomicBool>,
    /// A clone of the thread's socket, to wake it when it must stop.
    waker: Option<std::net::UdpSocket>,
    thread: Option<JoinHandle<()>>,
}

/// The running servers, by switch name.
pub(super) type Servers = Mutex<HashMap<String, Running>>;

/// The server's settings from the switch's.
fn server_config(c: &SwitchConfig, plan: &Plan) -> Result<Config, HostError> {
    let s = &c.switch;
    let subnet = plan.subnet.ok_or_else(|| {
        HostError::invalid(format!(
            "switch '{}' has no subnet: Strata's DHCP server cannot serve it",
            s.name
        ))
    })?;
    let mut cfg = Config::new(subnet, plan.host.unwrap_or_else(|| subnet.nth(1)));
    if let Some(r) = &s.dhcp_range {
        let (first, last) = dhcp_range(r, &subnet)?;
        cfg.range = Some(AddressRange { first, last });
    }
    cfg.gateway = plan.gateway;
    cfg.dns = s
        .dns
        .iter()
        .filter_map(|d| d.parse::<Ipv4Addr>().ok())
        .collect();
    cfg.lease_secs = s.lease_secs;
    cfg.reservations = s
        .reservations
        .iter()
        .filter_map(|r| {
            Some(Reservation {
                mac: r.mac.parse().ok()?,
                ip: r.ip.parse().ok()?,
            })
        })
        .collect();
    cfg.validate().map_err(net_error)?;
    Ok(cfg)
}

/// Logs what a switch's DHCP server reports.
fn log_lease_event(
    events: &EventLog,
    switch: &str,
    e: LeaseEvent,
    owner: impl Fn(Mac) -> Option<String>,
) {
    match e {
        LeaseEvent::Granted { mac, ip } => {
            let who = owner(mac).map(|o| format!(" ({o})")).unwrap_or_default();
            events.log(
                Code::LeaseGranted,
                None,
                "system",
                &format!("switch '{switch}': {ip} leased to {mac}{who}"),
            );
        }
        LeaseEvent::SaveFailed(err) => events.log(
            Code::LeasesNotSaved,
            None,
            "system",
            &format!("switch '{switch}': {err}"),
        ),
        _ => {}
    }
}

impl Service {
    /// Starts switch `config`'s DHCP server, if it has one: the socket is bound here, so a
    /// failure fails the caller (nothing runs half-started).
    pub(super) fn start_dhcp(&self, config: &SwitchConfig, plan: &Plan) -> Result<(), HostError> {
        let name = config.switch.name.clone();
        self.stop_dhcp(&name);
        if !config.switch.dhcp_on() {
            return Ok(());
        }
        let cfg = server_config(config, plan)?;
        let mut server = Server::open(cfg, &self.home.leases_file(&name), SystemTime::now())
            .map_err(net_error)?;
        for p in self.ports_of(&name) {
            if let Ok(mac) = p.mac.parse::<Mac>() {
                server.set_owner(mac, Some(&format!("{}/nic{}", p.vm, p.nic)));
            }
        }
        let bridge = strata_net::link::bridge_name(&config.id);
        let socket = dhcp::bind(&bridge).map_err(net_error)?;
        let waker = socket.try_clone().ok();
        let server = Arc::new(Mutex::new(server));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, events) = (server.clone(), stop.clone(), self.events.clone());
        let owners = server.clone();
        let thread = std::thread::spawn(move || {
            let log = |e: LeaseEvent| {
                // The server's lock is not held while events are handed out.
                let owner = |mac: Mac| {
                    let s = owners.lock().unwrap_or_else(|p| p.into_inner());
                    s.leases(SystemTime::now())
                        .into_iter()
                        .find(|l| l.mac == mac)
                        .and_then(|l| l.owner)
                };
                log_lease_event(&events, &name, e, owner);
            };
            if let Err(e) = Server::serve(&s, &socket, &st, log) {
                eprintln!("strata serve: DHCP on switch '{name}': {e}");
            }
        });
        self.dhcp.lock().unwrap_or_else(|p| p.into_inner()).insert(
            config.switch.name.clone(),
            Running {
                server,
                stop,
                waker,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    /// Stops switch `name`'s DHCP server, if it runs.
    pub(super) fn stop_dhcp(&self, name: &str) {
        let running = self
            .dhcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(mut r) = running {
            r.stop.store(true, Ordering::SeqCst);
            if let Some(w) = &r.waker {
                dhcp::interrupt(w);
            }
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Gives switch `config`'s DHCP server its new settings: in place when it runs and stays
    /// on (leases the settings no longer allow end), else started or stopped.
    pub(super) fn apply_dhcp(&self, config: &SwitchConfig, plan: &Plan) -> Result<(), HostError> {
        let name = &config.switch.name;
        if config.switch.dhcp_on() {
            let servers = self.dhcp.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = servers.get(name) {
                let cfg = server_config(config, plan)?;
                return r
                    .server
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .reconfigure(cfg)
                    .map_err(net_error);
            }
        }
        self.start_dhcp(config, plan)
    }

    /// The live lease of `mac` on switch `name`, if any.
    pub(super) fn lease_of(&self, name: &str, mac: &str) -> Option<Ipv4Addr> {
        let mac: Mac = mac.parse().ok()?;
        let servers = self.dhcp.lock().unwrap_or_else(|p| p.into_inner());
        let server = servers
            .get(name)?
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let leases = server.leases(SystemTime::now());
        leases.into_iter().find(|l| l.mac == mac).map(|l| l.ip)
    }

    /// The addresses leased on switch `name` now.
    pub(super) fn leased_addresses(&self, name: &str) -> Vec<(String, Ipv4Addr)> {
        let servers = self.dhcp.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = servers.get(name) else {
            return Vec::new();
        };
        let server = r.server.lock().unwrap_or_else(|p| p.into_inner());
        let leases = server.leases(SystemTime::now());
        leases
            .into_iter()
            .map(|l| (l.mac.to_string(), l.ip))
            .collect()
    }

    /// Labels `mac`'s lease on switch `name` with its VM and NIC (`None`: forget the label).
    pub(super) fn set_lease_owner(&self, name: &str, mac: &str, label: Option<&str>) {
        let Ok(mac) = mac.parse::<Mac>() else { return };
        let servers = self.dhcp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = servers.get(name) {
            r.server
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_owner(mac, label);
        }
    }

    /// Switch `name`'s DHCP leases, with the VM and NIC of each MAC.
    pub fn leases(&self, name: &str) -> Result<Vec<Lease>, HostError> {
        self.home.load_switch(name)?;
        let ports = self.ports_of(name);
        let servers = self.dhcp.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = servers.get(name) else {
            return Ok(Vec::new());
        };
        let list = r
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .leases(SystemTime::now());
        Ok(list
            .into_iter()
            .map(|l| {
                let mac = l.mac.to_string();
                let port = ports.iter().find(|p| p.mac == mac);
                Lease {
                    ip: l.ip.to_string(),
                    vm: port.map(|p| p.vm.clone()),
                    nic: port.map(|p| p.nic),
                    expires: l.expires,
                    mac,
                }
            })
            .collect())
    }

    /// Releases the leases of `nics` (a VM being deleted) at once.
    pub(super) fn release_leases(&self, vm: &str, nics: &[strata_api::NicSpec], user: &str) {
        let servers = self.dhcp.lock().unwrap_or_else(|p| p.into_inner());
        for n in nics {
            let (Some(switch), Some(mac)) = (&n.switch, &n.mac) else {
                continue;
            };
            let (Some(r), Ok(mac)) = (servers.get(switch), mac.parse::<Mac>()) else {
                continue;
            };
            let released = r
                .server
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release_mac(mac);
            if let Some(ip) = released {
                self.events.log(
                    Code::LeaseReleased,
                    Some(vm),
                    user,
                    &format!("switch '{switch}': lease of {ip} ({mac}) released"),
                );
            }
        }
    }
}
