//! The bodies of the virtual-network routes: switches, their DHCP leases and reservations, NAT
//! port forwards, and a VM's network adapter settings.

use serde::{Deserialize, Serialize};

/// A virtual switch's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchType {
    /// VMs on the host's LAN: a bridge enslaving one of the host's network adapters.
    External,
    /// VMs and the host (which has an address on it): the loopback-adapter setup, built in.
    Internal,
    /// VMs only; the host has no address on it.
    Private,
}

impl SwitchType {
    /// The name used on the command line and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::External => "external",
            Self::Internal => "internal",
            Self::Private => "private",
        }
    }
}

/// `POST /v1/switches`: a new virtual switch (also the switch's stored settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSwitch {
    /// Unique on the host: letters, digits, `-`, `_`, `.`; 1 to 64 characters.
    pub name: String,
    /// External, internal or private.
    #[serde(rename = "type")]
    pub kind: SwitchType,
    /// The IPv4 subnet, e.g. `10.10.0.0/24` (`10.10.0.1/24` also sets the host's address).
    /// Required for internal and private switches; an external switch has its LAN's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The host's network adapter an external switch enslaves (e.g. `eth1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_nic: Option<String>,
    /// The host's address on an internal switch (default: the subnet's first address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<String>,
    /// Whether Strata's DHCP server answers on it (default: on, off on an external switch,
    /// whose LAN has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    /// The addresses handed out, `A-B` (default: from the 17th address of the subnet, the first
    /// 16 reserved as Virtual Server did, to the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_range: Option<String>,
    /// The router handed out (default: the host's address on an internal switch; none on a
    /// private one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers handed out.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Lease time in seconds (default 3600).
    #[serde(default = "default_lease")]
    pub lease_secs: u32,
    /// NAT (Internet Connection Sharing): the switch's subnet masqueraded out of the host's
    /// other interfaces; internal switches only.
    #[serde(default)]
    pub nat: bool,
    /// The switch's own VLAN id (1 to 4094): its NICs without a VLAN of their own are on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Free text.
    #[serde(default)]
    pub notes: String,
    /// Static DHCP addresses by MAC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
    /// NAT port forwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<PortForward>,
}

fn default_lease() -> u32 {
    3600
}

impl CreateSwitch {
    /// A switch of `kind` on `subnet` with every other setting at its default.
    pub fn new(name: &str, kind: SwitchType, subnet: Option<&str>) -> Self {
        Self {
            name: name.to_string(),
            kind,
            subnet: subnet.map(str::to_string),
            host_nic: None,
            host_address: None,
            dhcp: None,
            dhcp_range: None,
            gateway: None,
            dns: Vec::new(),
            lease_secs: default_lease(),
            nat: false,
            vlan: None,
            notes: String::new(),
            reservations: Vec::new(),
            forwards: Vec::new(),
        }
    }

    /// Whether Strata's DHCP server answers on it.
    pub fn dhcp_on(&self) -> bool {
        self.dhcp.unwrap_or(self.kind != SwitchType::External)
    }
}

/// `PATCH /v1/switches/{name}`: the settings to change; absent fields stay as they are. The
/// type, subnet, host adapter and host address are fixed at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSwitch {
    /// DHCP on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    /// The range, `A-B`; empty: the default range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_range: Option<String>,
    /// The router handed out; empty: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers (the whole list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
    /// Lease time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u32>,
    /// NAT on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<bool>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A static DHCP address: `POST /v1/switches/{name}/reservations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    /// The NIC's MAC, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// Its address, in the switch's subnet.
    pub ip: String,
}

/// A transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A NAT port forward: `POST /v1/switches/{name}/forwards`. Connections to `host_port` on any of
/// the host's addresses (from outside the switch) go to `port` of a VM's NIC (whose address is
/// then reserved, so it never moves) or of a fixed address on the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    /// TCP or UDP.
    pub proto: Proto,
    /// The host's port, unique per protocol on the host.
    pub host_port: u16,
    /// The VM (exactly one of `vm` and `address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The VM's NIC, by index (default 0).
    #[serde(default)]
    pub nic: usize,
    /// A fixed address on the switch instead of a VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The guest's port.
    pub port: u16,
}

/// A port forward as shown, with the address it goes to now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardInfo {
    /// The forward as configured.
    #[serde(flatten)]
    pub forward: PortForward,
    /// The guest address connections go to (none: not known yet, see `problem`).
    pub to: Option<String>,
    /// Why it does not forward now, when it does not.
    pub problem: Option<String>,
}

/// A NIC connected to a switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchPort {
    /// The VM.
    pub vm: String,
    /// The NIC's index in the VM.
    pub nic: usize,
    /// Its MAC address.
    pub mac: String,
    /// Its VLAN id (none: the switch's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// `GET /v1/switches/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchInfo {
    /// The name.
    pub name: String,
    /// External, internal or private.
    #[serde(rename = "type")]
    pub kind: SwitchType,
    /// The switch's unique id (never changes).
    pub id: String,
    /// Its Linux bridge.
    pub bridge: String,
    /// The host's network adapter on it (external switches).
    pub host_nic: Option<String>,
    /// The IPv4 subnet (none on an external switch).
    pub subnet: Option<String>,
    /// The host's address on it (internal switches).
    pub host_address: Option<String>,
    /// Whether Strata's DHCP server answers on it.
    pub dhcp: bool,
    /// The addresses handed out.
    pub dhcp_range: Option<String>,
    /// The router handed out.
    pub gateway: Option<String>,
    /// DNS servers handed out.
    pub dns: Vec<String>,
    /// Lease time in seconds.
    pub lease_secs: u32,
    /// Whether NAT is on.
    pub nat: bool,
    /// The switch's own VLAN id.
    pub vlan: Option<u16>,
    /// Free text.
    pub notes: String,
    /// Static DHCP addresses.
    pub reservations: Vec<Reservation>,
    /// NAT port forwards.
    pub forwards: Vec<ForwardInfo>,
    /// The NICs connected to it.
    pub ports: Vec<SwitchPort>,
    /// What on the host would break it (another firewall's drop-policy forward chain …).
    pub warnings: Vec<String>,
}

/// A DHCP lease, in `GET /v1/switches/{name}/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The client's MAC address.
    pub mac: String,
    /// The address leased.
    pub ip: String,
    /// The VM whose NIC has that MAC, if one does.
    pub vm: Option<String>,
    /// That NIC's index.
    pub nic: Option<usize>,
    /// When the lease ends (RFC 3339).
    pub expires: String,
}

/// `PATCH /v1/vms/{name}/nics/{nic}`: a network adapter's settings to change (also while the VM
/// runs); absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNic {
    /// Connect to this switch; empty: disconnect (the adapter stays, its cable unplugged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// Allow the guest to send from other MACs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_spoofing: Option<bool>,
    /// Drop DHCP server replies the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_guard: Option<bool>,
    /// Drop router advertisements and redirects the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_guard: Option<bool>,
    /// VLAN id; 0: none (the switch's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Bandwidth limit in bits per second, each direction; 0: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
}
