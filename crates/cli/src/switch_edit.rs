//! `strata switch set|reserve|unreserve|forward …`: changing a switch through the REST API.

use anyhow::{bail, Result};
use clap::Subcommand;
use strata_api::{ForwardInfo, PortForward, Proto, Reservation, SetSwitch, SwitchInfo};

use crate::client::{enc, Client};
use crate::on_off;
use crate::print_json;
use crate::switch::{lease_secs, path, print_switch, SwitchCommand};

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Forward a host port to a VM's port (the VM's NIC gets a reserved address) or to an address.
    Add {
        name: String,
        /// tcp or udp
        #[arg(long)]
        proto: String,
        /// The host's port
        #[arg(long)]
        host_port: u16,
        /// VM[:NIC]:PORT, or ADDRESS:PORT
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a port forward.
    Remove {
        name: String,
        /// tcp or udp
        #[arg(long)]
        proto: String,
        #[arg(long)]
        host_port: u16,
        #[arg(long)]
        json: bool,
    },
    /// List a switch's port forwards.
    List {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn proto(text: &str) -> Result<Proto> {
    match text {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => bail!("--proto '{other}': use tcp or udp"),
    }
}

/// `--to VM[:NIC]:PORT` or `ADDRESS:PORT` into a forward.
fn target(to: &str, proto: Proto, host_port: u16) -> Result<PortForward> {
    let (head, port) = to
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--to '{to}': expected VM[:NIC]:PORT or ADDRESS:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--to '{to}': '{port}' is not a port"))?;
    let mut f = PortForward {
        proto,
        host_port,
        vm: None,
        nic: 0,
        address: None,
        port,
    };
    if head.parse::<std::net::Ipv4Addr>().is_ok() {
        f.address = Some(head.to_string());
        return Ok(f);
    }
    match head.split_once(':') {
        Some((vm, nic)) => {
            f.vm = Some(vm.to_string());
            f.nic = nic
                .parse()
                .map_err(|_| anyhow::anyhow!("--to '{to}': NIC '{nic}' is not an index"))?;
        }
        None => f.vm = Some(head.to_string()),
    }
    Ok(f)
}

/// One forward, for people.
pub(crate) fn forward_line(f: &ForwardInfo) -> String {
    let p = &f.forward;
    let dest = match (&p.vm, &p.address) {
        (Some(vm), _) => format!("VM '{vm}' NIC {} port {}", p.nic, p.port),
        (None, Some(a)) => format!("{a}:{}", p.port),
        _ => "?".into(),
    };
    let now = match (&f.to, &f.problem) {
        (Some(to), _) => format!(" ({to})"),
        (None, Some(why)) => format!(" (not forwarding: {why})"),
        _ => String::new(),
    };
    format!("{}/{} -> {dest}{now}", p.host_port, p.proto.as_str())
}

fn send(
    c: &Client,
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
    json: bool,
) -> Result<()> {
    let sw: SwitchInfo = c.json(method, url, body)?;
    print_switch(&sw, json)
}

/// `strata switch set`.
pub fn set(c: &Client, cmd: SwitchCommand) -> Result<()> {
    let SwitchCommand::Set {
        name,
        dhcp,
        dhcp_range,
        gateway,
        dns,
        lease_time,
        nat,
        notes,
        json,
    } = cmd
    else {
        unreachable!("set only");
    };
    let set = SetSwitch {
        dhcp: on_off("dhcp", dhcp.as_deref())?,
        dhcp_range,
        gateway,
        dns: dns.map(|d| {
            d.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        }),
        lease_secs: lease_time.as_deref().map(lease_secs).transpose()?,
        nat: on_off("nat", nat.as_deref())?,
        notes,
    };
    send(
        c,
        "PATCH",
        &path(&name),
        Some(serde_json::to_value(set)?),
        json,
    )
}

/// `strata switch reserve`.
pub fn reserve(c: &Client, name: &str, mac: &str, ip: &str, json: bool) -> Result<()> {
    let r = Reservation {
        mac: mac.to_string(),
        ip: ip.to_string(),
    };
    let url = format!("{}/reservations", path(name));
    send(c, "POST", &url, Some(serde_json::to_value(r)?), json)
}

/// `strata switch unreserve`.
pub fn unreserve(c: &Client, name: &str, mac: &str, json: bool) -> Result<()> {
    let url = format!("{}/reservations/{}", path(name), enc(mac));
    send(c, "DELETE", &url, None, json)
}

/// `strata switch forward …`.
pub fn forward(c: &Client, cmd: ForwardCommand) -> Result<()> {
    match cmd {
        ForwardCommand::Add {
            name,
            proto: p,
            host_port,
            to,
            json,
        } => {
            let f = target(&to, proto(&p)?, host_port)?;
            let url = format!("{}/forwards", path(&name));
            send(c, "POST", &url, Some(serde_json::to_value(f)?), json)
        }
        ForwardCommand::Remove {
            name,
            proto: p,
            host_port,
            json,
        } => {
            let url = format!(
                "{}/forwards/{}/{host_port}",
                path(&name),
                proto(&p)?.as_str()
            );
            send(c, "DELETE", &url, None, json)
        }
        ForwardCommand::List { name, json } => {
            let sw: SwitchInfo = c.json("GET", &path(&name), None)?;
            if json {
                return print_json(&sw.forwards);
            }
            if sw.forwards.is_empty() {
                println!("Switch '{name}' forwards no ports.");
            }
            for f in &sw.forwards {
                println!("{}", forward_line(f));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_targets_name_a_vm_or_an_address() {
        let f = target("web:1:80", Proto::Tcp, 8080).unwrap();
        assert_eq!((f.vm.as_deref(), f.nic, f.port), (Some("web"), 1, 80));
        let f = target("web:80", Proto::Tcp, 8080).unwrap();
        assert_eq!((f.vm.as_deref(), f.nic), (Some("web"), 0));
        let f = target("10.0.0.5:22", Proto::Udp, 2222).unwrap();
        assert_eq!(f.address.as_deref(), Some("10.0.0.5"));
        assert!(target("web", Proto::Tcp, 1).is_err());
        assert!(target("web:x:80", Proto::Tcp, 1).is_err());
    }
}
