//! `strata switch …`: virtual switches, through the host service's REST API.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::json;
use strata_api::{CreateSwitch, Lease, SwitchInfo, SwitchType};

use crate::client::{enc, Client};
use crate::print_json;

#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Create a switch: internal (the host has an address on it) or private (VMs only).
    Create {
        name: String,
        /// internal or private
        #[arg(long = "type")]
        kind: String,
        /// The IPv4 subnet, e.g. 10.10.0.0/24 (10.10.0.1/24 also sets the host's address)
        #[arg(long)]
        subnet: String,
        /// The host's address on an internal switch (default: the subnet's first)
        #[arg(long)]
        host_address: Option<String>,
        /// Strata's DHCP server on it: on (default) or off
        #[arg(long, default_value = "on")]
        dhcp: String,
        /// The addresses handed out, FIRST-LAST (default: from the subnet's 17th address)
        #[arg(long)]
        dhcp_range: Option<String>,
        /// DNS servers handed out, comma-separated
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Lease time: 1h (default), 30m, 1d …
        #[arg(long, default_value = "1h")]
        lease_time: String,
        /// Free text
        #[arg(long, default_value = "")]
        notes: String,
        #[arg(long)]
        json: bool,
    },
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

fn path(name: &str) -> String {
    format!("/v1/switches/{}", enc(name))
}

/// Runs a `strata switch` command.
pub fn run(cmd: SwitchCommand) -> Result<ExitCode> {
    let c = Client::new();
    match cmd {
        SwitchCommand::Create { .. } => create(&c, cmd)?,
        SwitchCommand::List { json } => list(&c, json)?,
        SwitchCommand::Show { name, json } => show(&c, &name, json)?,
        SwitchCommand::Delete { name, json } => delete(&c, &name, json)?,
        SwitchCommand::Leases { name, json } => leases(&c, &name, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn create(c: &Client, cmd: SwitchCommand) -> Result<()> {
    let SwitchCommand::Create {
        name,
        kind,
        subnet,
        host_address,
        dhcp,
        dhcp_range,
        dns,
        lease_time,
        notes,
        json,
    } = cmd
    else {
        unreachable!("create only");
    };
    let kind = match kind.as_str() {
        "internal" => SwitchType::Internal,
        "private" => SwitchType::Private,
        "external" => bail!("switch type 'external' is not supported yet: use internal or private"),
        other => bail!("switch type '{other}': use internal or private"),
    };
    let dhcp = match dhcp.as_str() {
        "on" => true,
        "off" => false,
        other => bail!("--dhcp '{other}': use on or off"),
    };
    let lease = humantime::parse_duration(&lease_time)
        .map_err(|e| anyhow::anyhow!("--lease-time '{lease_time}': {e}"))?;
    let spec = CreateSwitch {
        name,
        kind,
        subnet,
        host_address,
        dhcp,
        dhcp_range,
        dns,
        lease_secs: u32::try_from(lease.as_secs()).unwrap_or(u32::MAX),
        notes,
    };
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
        "NAME", "TYPE", "SUBNET", "BRIDGE", "NICS"
    );
    for s in &list {
        println!(
            "{:<20} {:<9} {:<18} {:<15} {:>5}",
            s.name,
            kind_name(s.kind),
            s.subnet,
            s.bridge,
            s.ports.len()
        );
    }
    Ok(())
}

fn kind_name(k: SwitchType) -> &'static str {
    match k {
        SwitchType::Internal => "internal",
        SwitchType::Private => "private",
    }
}

fn show(c: &Client, name: &str, json: bool) -> Result<()> {
    let sw: SwitchInfo = c.json("GET", &path(name), None)?;
    print_switch(&sw, json)
}

fn print_switch(s: &SwitchInfo, json: bool) -> Result<()> {
    if json {
        return print_json(s);
    }
    println!("Name:          {}", s.name);
    println!("Type:          {}", kind_name(s.kind));
    println!("Subnet:        {}", s.subnet);
    if let Some(h) = &s.host_address {
        println!("Host address:  {h}");
    }
    println!("Bridge:        {}", s.bridge);
    match &s.dhcp_range {
        Some(r) => println!("DHCP:          on, {r}, leases of {} s", s.lease_secs),
        None => println!("DHCP:          off"),
    }
    if !s.dns.is_empty() {
        println!("DNS:           {}", s.dns.join(", "));
    }
    for p in &s.ports {
        println!("Port:          VM '{}' NIC {} ({})", p.vm, p.nic, p.mac);
    }
    if !s.notes.is_empty() {
        println!("Notes:         {}", s.notes);
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
