//! `strata switch …`: virtual switches, through the host service's REST API.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::json;
use strata_api::{CreateSwitch, Lease, SwitchInfo, SwitchType};

use crate::client::{enc, Client};
use crate::{on_off, print_json};

#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Create a switch: external (bridging a host adapter), internal (the host has an address
    /// on it) or private (VMs only).
    Create {
        name: String,
        /// external, internal or private
        #[arg(long = "type")]
        kind: String,
        /// The host's network adapter an external switch bridges (it must carry no address)
        #[arg(long)]
        host_nic: Option<String>,
        /// The IPv4 subnet, e.g. 10.10.0.0/24 (10.10.0.1/24 also sets the host's address)
        #[arg(long)]
        subnet: Option<String>,
        /// The host's address on an internal switch (default: the subnet's first)
        #[arg(long)]
        host_address: Option<String>,
        /// Strata's DHCP server on it: on or off (default: on, off on an external switch)
        #[arg(long)]
        dhcp: Option<String>,
        /// The addresses handed out, FIRST-LAST (default: from the subnet's 17th address)
        #[arg(long)]
        dhcp_range: Option<String>,
        /// The router handed out (default: the host's address on an internal switch)
        #[arg(long)]
        gateway: Option<String>,
        /// DNS servers handed out, comma-separated
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Lease time: 1h (default), 30m, 1d …
        #[arg(long, default_value = "1h")]
        lease_time: String,
        /// NAT (Internet Connection Sharing) for an internal switch: on or off (default)
        #[arg(long, default_value = "off")]
        nat: String,
        /// The switch's own VLAN id (its NICs without one of their own are on it)
        #[arg(long)]
        vlan: Option<u16>,
        /// Free text
        #[arg(long, default_value = "")]
        notes: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a switch's DHCP, NAT and notes (type, subnet and adapter are fixed).
    Set {
        name: String,
        /// on or off
        #[arg(long)]
        dhcp: Option<String>,
        /// FIRST-LAST; "" for the default range
        #[arg(long)]
        dhcp_range: Option<String>,
        /// The router handed out; "" for the default
        #[arg(long)]
        gateway: Option<String>,
        /// DNS servers, comma-separated ("" for none)
        #[arg(long)]
        dns: Option<String>,
        /// Lease time: 1h, 30m …
        #[arg(long)]
        lease_time: Option<String>,
        /// on or off
        #[arg(long)]
        nat: Option<String>,
        #[arg(long)]
        notes: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Reserve an address for a MAC (static DHCP).
    Reserve {
        name: String,
        mac: String,
        ip: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a MAC's reservation.
    Unreserve {
        name: String,
        mac: String,
        #[arg(long)]
        json: bool,
    },
    /// NAT port forwards: add, remove, list.
    #[command(subcommand)]
    Forward(crate::switch_edit::ForwardCommand),
    /// List the switches.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a switch: its settings, bridge and connected NICs.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a switch (refused while NICs use it).
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// A switch's DHCP leases: MAC, address, VM, NIC, expiry.
    Leases {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn path(name: &str) -> String {
    format!("/v1/switches/{}", enc(name))
}

/// Runs a `strata switch` command.
pub fn run(cmd: SwitchCommand) -> Result<ExitCode> {
    let c = Client::new();
    match cmd {
        SwitchCommand::Create { .. } => create(&c, cmd)?,
        SwitchCommand::Set { .. } => crate::switch_edit::set(&c, cmd)?,
        SwitchCommand::Reserve {
            name,
            mac,
            ip,
            json,
        } => crate::switch_edit::reserve(&c, &name, &mac, &ip, json)?,
        SwitchCommand::Unreserve { name, mac, json } => {
            crate::switch_edit::unreserve(&c, &name, &mac, json)?
        }
        SwitchCommand::Forward(f) => crate::switch_edit::forward(&c, f)?,
        SwitchCommand::List { json } => list(&c, json)?,
        SwitchCommand::Show { name, json } => show(&c, &name, json)?,
        SwitchCommand::Delete { name, json } => delete(&c, &name, json)?,
        SwitchCommand::Leases { name, json } => leases(&c, &name, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A lease time such as `1h`, in seconds.
pub(crate) fn lease_secs(text: &str) -> Result<u32> {
    let lease = humantime::parse_duration(text)
        .map_err(|e| anyhow::anyhow!("--lease-time '{text}': {e}"))?;
    Ok(u32::try_from(lease.as_secs()).unwrap_or(u32::MAX))
}

fn create(c: &Client, cmd: SwitchCommand) -> Result<()> {
    let SwitchCommand::Create {
        name,
        kind,
        host_nic,
        subnet,
        host_address,
        dhcp,
        dhcp_range,
        gateway,
        dns,
        lease_time,
        nat,
        vlan,
        notes,
        json,
    } = cmd
    else {
        unreachable!("create only");
    };
    let kind = match kind.as_str() {
        "external" => SwitchType::External,
        "internal" => SwitchType::Internal,
        "private" => SwitchType::Private,
        other => bail!("switch type '{other}': use external, internal or private"),
    };
    let mut spec = CreateSwitch::new(&name, kind, subnet.as_deref());
    spec.host_nic = host_nic;
    spec.host_address = host_address;
    spec.dhcp = on_off("dhcp", dhcp.as_deref())?;
    spec.dhcp_range = dhcp_range;
    spec.gateway = gateway;
    spec.dns = dns;
    spec.lease_secs = lease_secs(&lease_time)?;
    spec.nat = on_off("nat", Some(&nat))?.unwrap_or(false);
    spec.vlan = vlan;
    spec.notes = notes;
    let sw: SwitchInfo = c.json("POST", "/v1/switches", Some(serde_json::to_value(spec)?))?;
    print_switch(&sw, json)
}

fn list(c: &Client, json: bool) -> Result<()> {
    let list: Vec<SwitchInfo> = c.json("GET", "/v1/switches", None)?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("No switches. Create one with `strata switch create NAME --type internal --subnet 10.10.0.0/24`.");
        return Ok(());
    }
    println!(
        "{:<20} {:<9} {:<18} {:<15} {:>5}",
        "NAME", "TYPE", "SUBNET/ADAPTER", "BRIDGE", "NICS"
    );
    for s in &list {
        println!(
            "{:<20} {:<9} {:<18} {:<15} {:>5}",
            s.name,
            s.kind.as_str(),
            s.subnet.as_deref().or(s.host_nic.as_deref()).unwrap_or("-"),
            s.bridge,
            s.ports.len()
        );
    }
    Ok(())
}

fn show(c: &Client, name: &str, json: bool) -> Result<()> {
    let sw: SwitchInfo = c.json("GET", &path(name), None)?;
    print_switch(&sw, json)
}

pub(crate) fn print_switch(s: &SwitchInfo, json: bool) -> Result<()> {
    if json {
        return print_json(s);
    }
    println!("Name:          {}", s.name);
    println!("Type:          {}", s.kind.as_str());
    if let Some(n) = &s.host_nic {
        println!("Host adapter:  {n}");
    }
    if let Some(n) = &s.subnet {
        println!("Subnet:        {n}");
    }
    if let Some(h) = &s.host_address {
        println!("Host address:  {h}");
    }
    println!("Bridge:        {}", s.bridge);
    match &s.dhcp_range {
        Some(r) => println!("DHCP:          on, {r}, leases of {} s", s.lease_secs),
        None => println!("DHCP:          off"),
    }
    if let Some(g) = &s.gateway {
        println!("Gateway:       {g}");
    }
    if !s.dns.is_empty() {
        println!("DNS:           {}", s.dns.join(", "));
    }
    println!("NAT:           {}", if s.nat { "on" } else { "off" });
    if let Some(v) = s.vlan {
        println!("VLAN:          {v}");
    }
    for r in &s.reservations {
        println!("Reservation:   {} {}", r.mac, r.ip);
    }
    for f in &s.forwards {
        println!("Forward:       {}", crate::switch_edit::forward_line(f));
    }
    for p in &s.ports {
        let vlan = p.vlan.map(|v| format!(", VLAN {v}")).unwrap_or_default();
        println!(
            "Port:          VM '{}' NIC {} ({}{vlan})",
            p.vm, p.nic, p.mac
        );
    }
    if !s.notes.is_empty() {
        println!("Notes:         {}", s.notes);
    }
    for w in &s.warnings {
        eprintln!("warning: switch '{}': {w}", s.name);
    }
    Ok(())
}

fn delete(c: &Client, name: &str, json: bool) -> Result<()> {
    c.text("DELETE", &path(name), None)?;
    if json {
        return print_json(&json!({ "name": name, "deleted": true }));
    }
    println!("Deleted switch '{name}'.");
    Ok(())
}

fn leases(c: &Client, name: &str, json: bool) -> Result<()> {
    let list: Vec<Lease> = c.json("GET", &format!("{}/leases", path(name)), None)?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("No leases on switch '{name}'.");
        return Ok(());
    }
    println!(
        "{:<18} {:<16} {:<20} {:>4} EXPIRES",
        "MAC", "ADDRESS", "VM", "NIC"
    );
    for l in &list {
        println!(
            "{:<18} {:<16} {:<20} {:>4} {}",
            l.mac,
            l.ip,
            l.vm.as_deref().unwrap_or("-"),
            l.nic.map_or_else(|| "-".to_string(), |n| n.to_string()),
            l.expires
        );
    }
    Ok(())
}
