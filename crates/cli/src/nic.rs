//! `strata vm nic add|remove|set`: a VM's network adapters one at a time, also while it runs.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use strata_api::{SetNic, VmDetails};

use crate::client::{enc, Client};
use crate::{on_off, print_json};

#[derive(Debug, Subcommand)]
pub enum NicCommand {
    /// Add a network adapter (hot-added when the VM runs).
    Add {
        vm: String,
        /// MODEL[:SWITCH][=MAC]: virtio or e1000, on a switch (none: the user-mode network)
        nic: String,
        #[command(flatten)]
        settings: NicSettings,
        #[arg(long)]
        json: bool,
    },
    /// Remove a network adapter, by index or MAC (hot-removed when the VM runs).
    Remove {
        vm: String,
        /// The adapter's index (`strata vm show`) or MAC
        nic: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a network adapter, by index or MAC (also while the VM runs).
    Set {
        vm: String,
        /// The adapter's index (`strata vm show`) or MAC
        nic: String,
        /// Connect it to this switch
        #[arg(long, conflicts_with = "disconnect")]
        connect: Option<String>,
        /// Unplug its cable (it stays in the VM)
        #[arg(long)]
        disconnect: bool,
        #[command(flatten)]
        settings: NicSettings,
        #[arg(long)]
        json: bool,
    },
}

/// The settings of `nic add` and `nic set`.
#[derive(Debug, Args)]
pub struct NicSettings {
    /// Allow the guest to send from other MACs: on or off (default off: spoofed frames dropped)
    #[arg(long)]
    mac_spoofing: Option<String>,
    /// Drop DHCP server replies from the guest: on or off
    #[arg(long)]
    dhcp_guard: Option<String>,
    /// Drop router advertisements from the guest: on or off
    #[arg(long)]
    router_guard: Option<String>,
    /// VLAN id, 1 to 4094 (0: none)
    #[arg(long)]
    vlan: Option<u16>,
    /// Bandwidth limit per direction, bits per second: 100M, 1G, 500K (0: none)
    #[arg(long)]
    bandwidth_limit: Option<String>,
}

/// A rate such as `100M` (decimal, bits per second).
fn rate(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1_000,
                'M' => 1_000_000,
                'G' => 1_000_000_000,
                _ => bail!(
                    "--bandwidth-limit '{text}': use a number of bits per second with K, M or G"
                ),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        anyhow::anyhow!("--bandwidth-limit '{text}': expected a number such as 100M")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("--bandwidth-limit '{text}' is too large"))
}

impl NicSettings {
    fn to_set(&self) -> Result<SetNic> {
        Ok(SetNic {
            switch: None,
            mac_spoofing: on_off("mac-spoofing", self.mac_spoofing.as_deref())?,
            dhcp_guard: on_off("dhcp-guard", self.dhcp_guard.as_deref())?,
            router_guard: on_off("router-guard", self.router_guard.as_deref())?,
            vlan: self.vlan,
            bandwidth_limit: self.bandwidth_limit.as_deref().map(rate).transpose()?,
        })
    }
}

fn nics_path(vm: &str) -> String {
    format!("/v1/vms/{}/nics", enc(vm))
}

/// Runs `strata vm nic …`.
pub fn run(c: &Client, cmd: NicCommand) -> Result<()> {
    let (vm, json) = match cmd {
        NicCommand::Add {
            vm,
            nic,
            settings,
            json,
        } => {
            let mut spec = crate::vm::nic_spec(&nic)?;
            let s = settings.to_set()?;
            spec.mac_spoofing = s.mac_spoofing.unwrap_or(false);
            spec.dhcp_guard = s.dhcp_guard.unwrap_or(false);
            spec.router_guard = s.router_guard.unwrap_or(false);
            spec.vlan = s.vlan.filter(|v| *v != 0);
            spec.bandwidth_limit = s.bandwidth_limit.filter(|b| *b != 0);
            let body = serde_json::to_value(spec)?;
            let d: VmDetails = c.json("POST", &nics_path(&vm), Some(body))?;
            (d, json)
        }
        NicCommand::Remove { vm, nic, json } => {
            let d: VmDetails =
                c.json("DELETE", &format!("{}/{}", nics_path(&vm), enc(&nic)), None)?;
            (d, json)
        }
        NicCommand::Set {
            vm,
            nic,
            connect,
            disconnect,
            settings,
            json,
        } => {
            let mut set = settings.to_set()?;
            set.switch = match (connect, disconnect) {
                (Some(s), _) => Some(s),
                (None, true) => Some(String::new()),
                (None, false) => None,
            };
            let body = serde_json::to_value(set)?;
            let path = format!("{}/{}", nics_path(&vm), enc(&nic));
            let d: VmDetails = c.json("PATCH", &path, Some(body))?;
            (d, json)
        }
    };
    if json {
        return print_json(&vm.nics);
    }
    crate::vm_text::nics(&vm);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_decimal_bits_per_second() {
        assert_eq!(super::rate("100M").unwrap(), 100_000_000);
        assert_eq!(super::rate("1g").unwrap(), 1_000_000_000);
        assert_eq!(super::rate("8000").unwrap(), 8000);
        assert!(super::rate("10X").is_err());
        assert!(super::rate("M").is_err());
    }
}
