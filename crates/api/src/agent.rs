//! The bodies of the integration services (Hyper-V's, here through qemu-guest-agent) and of a
//! running VM's devices: the
//! heartbeat, what the guest says about itself, copying files in and out of it; media change and
//! dynamic memory.

use serde::{Deserialize, Serialize};

/// Whether the VM's guest agent answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Heartbeat {
    /// No agent channel, the VM is not running, or no agent has answered yet.
    #[default]
    None,
    /// The agent answered its last ping.
    Ok,
    /// The agent answered before and stopped answering.
    Lost,
}

/// What the guest agent reports about the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// The OS's name (`Debian GNU/Linux`, `Microsoft Windows Server 2022 …`).
    pub os_name: Option<String>,
    /// Its version.
    pub os_version: Option<String>,
    /// The kernel's release.
    pub kernel: Option<String>,
    /// The guest's host name.
    pub hostname: Option<String>,
    /// Its network interfaces and their addresses.
    pub interfaces: Vec<GuestInterface>,
    /// When the agent reported this (RFC 3339).
    pub reported: String,
}

/// A network interface in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInterface {
    /// The guest's name for it (`eth0`).
    pub name: String,
    /// Its MAC address (matches a NIC's).
    pub mac: Option<String>,
    /// Its IP addresses with prefix (`10.0.0.5/24`).
    pub addresses: Vec<String>,
}

/// Which way a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyDirection {
    /// From the host into the guest.
    ToGuest,
    /// From the guest to the host.
    FromGuest,
}

/// `POST /v1/vms/{name}/copy-file` (Hyper-V's Copy-VMFile), through the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyFile {
    /// The file to read: an absolute path on the host (to the guest) or in the guest.
    pub source: String,
    /// The file to write (created or replaced): in the guest, or an absolute path on the host.
    pub destination: String,
    /// Which way.
    pub direction: CopyDirection,
}

/// `POST /v1/vms/{name}/copy-file`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyReport {
    /// Bytes copied.
    pub bytes: u64,
}

/// The most a copy-file may move.
pub const COPY_LIMIT: u64 = 256 << 20;

/// `POST /v1/vms/{name}/media`: the CD/DVD drive's medium, changed while the VM runs too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeMedia {
    /// The ISO to insert (absolute path); none ejects.
    #[serde(default)]
    pub iso: Option<String>,
}

/// `POST /v1/vms/{name}/memory`: dynamic memory's target for a running VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryTarget {
    /// MiB, between the VM's minimum and its memory.
    pub target_mib: u32,
}
