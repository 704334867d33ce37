//! The API's bodies. Sizes are in MiB, durations in seconds, times in RFC 3339 (UTC).

use serde::{Deserialize, Serialize};

/// A VM's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Not running, no saved state.
    Off,
    /// The worker is starting QEMU (or restoring a saved state).
    Starting,
    /// The guest runs.
    Running,
    /// The guest's CPUs are stopped; memory is kept.
    Paused,
    /// The memory is being written to the saved-state file.
    Saving,
    /// Not running; the next start resumes from the saved state.
    Saved,
    /// A shut-down or turn-off is in progress.
    Stopping,
    /// QEMU or the worker died unexpectedly. The VM can be started again.
    Crashed,
}

impl VmState {
    /// Whether a worker process is (or should be) alive in this state.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Paused | Self::Saving | Self::Stopping
        )
    }

    /// The lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Saving => "saving",
            Self::Saved => "saved",
            Self::Stopping => "stopping",
            Self::Crashed => "crashed",
        }
    }
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// KVM when the host's probe says it can run a guest, TCG otherwise.
    #[default]
    Auto,
    /// Hardware virtualization; starting fails where KVM can't run a guest.
    Kvm,
    /// QEMU's software emulation: slow, works everywhere.
    Tcg,
}

impl Accelerator {
    /// The lowercase name, as in JSON and on QEMU's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The controller a disk is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// Emulated IDE (as Virtual Server's): any guest can boot from it.
    Ide,
    /// virtio-blk (synthetic, as Hyper-V's VMBus storage): fast, needs a virtio driver.
    #[default]
    Virtio,
    /// A SCSI disk on the VM's virtio-scsi controller (Virtual Server's SCSI adapter: 7 disks).
    Scsi,
}

/// A network adapter's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// virtio-net (synthetic).
    #[default]
    Virtio,
    /// Intel e1000 (emulated, legacy guests).
    E1000,
}

/// A VM's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS (generation 1).
    #[default]
    Bios,
    /// UEFI from OVMF (generation 2), with a per-VM variables store.
    Uefi,
}

/// A boot device class, in the order tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    /// The first hard disk.
    Disk,
    /// The CD/DVD drive.
    Cdrom,
    /// PXE from the first network adapter.
    Network,
}

/// What the service does with a VM when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartAction {
    /// Nothing.
    #[default]
    Never,
    /// Start it (after the delay).
    Always,
    /// Start it if it was running when the VMs were last stopped by `stop-vms` (host shutdown).
    IfRunning,
}

/// What `stop-vms` (the host shutting down) does with a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopAction {
    /// Save its state.
    #[default]
    Save,
    /// Shut the guest down (ACPI), turning it off after the timeout.
    Shutdown,
    /// Turn it off at once.
    TurnOff,
}

/// What happens to a VM's undo disks when it is turned off or shut down (Virtual Server's undo
/// disks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UndoAction {
    /// Keep them: the next start goes on writing into them.
    #[default]
    Keep,
    /// Merge their changes into the disks.
    Commit,
    /// Throw their changes away.
    Discard,
}

impl UndoAction {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Commit => "commit",
            Self::Discard => "discard",
        }
    }
}

/// What a COM port is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComKind {
    /// Output appended to a file.
    File,
    /// A Unix socket QEMU listens on.
    Socket,
}

/// A virtual hard disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Absolute path of the VHD file (any kind: fixed, dynamic, differencing).
    pub path: String,
    /// The controller.
    #[serde(default)]
    pub bus: DiskBus,
    /// Its place on the controller, assigned by the service: the PCI slot of a virtio disk
    /// (0x08 + slot on i440FX), the target of a SCSI disk, the order of an IDE disk. It names the
    /// disk's devices in QEMU, so a disk added while the VM runs is where a restore expects it.
    /// Disks of VMs made before slots have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
}

/// A network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// The model.
    #[serde(default)]
    pub model: NicModel,
    /// The MAC address; assigned by the service (unique on the host) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The virtual switch it is connected to; none: QEMU's user-mode network, restricted to
    /// the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// Connected to its switch (false: the cable is unplugged; the adapter stays).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub connected: bool,
    /// Allow the guest to send from other MACs (default: off, spoofed frames are dropped).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mac_spoofing: bool,
    /// Drop DHCP server replies the guest sends (default: off).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dhcp_guard: bool,
    /// Drop router advertisements and redirects the guest sends (default: off).
    #[serde(default, skip_serializing_if = "is_false")]
    pub router_guard: bool,
    /// VLAN id, 1 to 4094 (none: the switch's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Bandwidth limit in bits per second, each direction (none: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    /// The adapter's slot, 0 to 7 (its PCI slot is 0x18 + slot); assigned by the service and kept for
    /// the VM's life, so a hot-added adapter is where a restore expects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
}

impl NicSpec {
    /// A virtio adapter on `switch` (none: user-mode), every other setting at its default.
    pub fn new(switch: Option<&str>) -> Self {
        Self {
            model: NicModel::Virtio,
            mac: None,
            switch: switch.map(str::to_string),
            connected: true,
            mac_spoofing: false,
            dhcp_guard: false,
            router_guard: false,
            vlan: None,
            bandwidth_limit: None,
            slot: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A COM port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComPort {
    /// 1 or 2. COM1 is the console (recorded, `vm console`) unless connected here.
    pub port: u8,
    /// File or socket.
    pub kind: ComKind,
    /// Absolute path.
    pub path: String,
}

/// Direct kernel boot, for appliances and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelBoot {
    /// Absolute path of the kernel image.
    pub kernel: String,
    /// Absolute path of the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The kernel command line.
    #[serde(default)]
    pub cmdline: String,
}

/// `POST /v1/vms`: a new VM. Everything but the name has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// Unique on the host: letters, digits, `-`, `_`, `.`; 1 to 64 characters.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub notes: String,
    /// Memory in MiB (default 512): with dynamic memory, the most the guest gets.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Dynamic memory (virtio-balloon): the least the guest keeps, in MiB; none: fixed memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_min_mib: Option<u32>,
    /// Virtual processors (default 1).
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Boot order (default disk, cdrom, network).
    #[serde(default = "default_boot")]
    pub boot_order: Vec<BootDevice>,
    /// Disks, in controller order.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// An ISO file in the CD/DVD drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<String>,
    /// A floppy image (raw 1.44 MB, Virtual Server's `.vfd`) in drive A: (i440FX machines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floppy: Option<String>,
    /// A USB tablet, so a VNC pointer lands where it is shown.
    #[serde(default, skip_serializing_if = "is_false")]
    pub usb_tablet: bool,
    /// Network adapters.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// COM ports connected to files or sockets.
    #[serde(default)]
    pub com_ports: Vec<ComPort>,
    /// Direct kernel boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelBoot>,
    /// The guest agent's channel (virtio-serial `org.qemu.guest_agent.0`): shut-down through
    /// the agent, heartbeat, time sync, guest information, file copy, file-system freeze.
    #[serde(default, skip_serializing_if = "is_false")]
    pub agent: bool,
    /// BIOS (default) or UEFI.
    #[serde(default)]
    pub firmware: Firmware,
    /// UEFI secure boot (OVMF's secure-boot build with the Microsoft keys; needs a Q35 machine).
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure_boot: bool,
    /// A TPM 2.0 (swtpm), its state kept in the VM's folder.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tpm: bool,
    /// Undo disks: every disk writes into `DISK.vud` beside it while the disk stays untouched,
    /// until the undo action commits or discards them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub undo_disks: bool,
    /// What turning the VM off or shutting it down does with its undo disks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub undo_action: UndoAction,
    /// A template: it never starts; its disk files are read-only, parents of linked clones.
    #[serde(default, skip_serializing_if = "is_false")]
    pub template: bool,
    /// KVM, TCG or auto (default).
    #[serde(default)]
    pub accelerator: Accelerator,
    /// The versioned machine type, e.g. `pc-i440fx-10.0`. The service pins it when the VM is
    /// created (absent or `pc`: this host's newest i440FX type) and every start and restore uses
    /// it, so a QEMU upgrade never changes a VM's hardware; only `vm set --machine` changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Automatic start action.
    #[serde(default)]
    pub start_action: StartAction,
    /// Seconds to wait before the automatic start.
    #[serde(default)]
    pub start_delay_secs: u32,
    /// Automatic stop action.
    #[serde(default)]
    pub stop_action: StopAction,
    /// Seconds a shut-down waits for the guest before turning it off (default 60).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u32,
}

fn default_memory() -> u32 {
    512
}
fn default_cpus() -> u32 {
    1
}
fn default_boot() -> Vec<BootDevice> {
    vec![BootDevice::Disk, BootDevice::Cdrom, BootDevice::Network]
}
fn default_shutdown_timeout() -> u32 {
    60
}

impl CreateVm {
    /// A VM with every default.
    pub fn named(name: &str) -> Self {
        serde_json::from_value(serde_json::json!({ "name": name })).expect("defaults")
    }
}

/// `PATCH /v1/vms/{name}`: the settings to change; absent fields stay as they are. While the VM is
/// running, paused or saved only `notes`, the actions and the timeouts may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVm {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// Dynamic memory's minimum in MiB; 0 turns dynamic memory off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_min_mib: Option<u32>,
    /// Virtual processors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Boot order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<Vec<BootDevice>>,
    /// Disks (the whole list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<DiskSpec>>,
    /// The ISO in the CD/DVD drive; an empty string empties the drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<String>,
    /// The floppy image; an empty string empties the drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floppy: Option<String>,
    /// A USB tablet on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb_tablet: Option<bool>,
    /// Network adapters (the whole list; existing MACs are kept by position when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<Vec<NicSpec>>,
    /// COM ports (the whole list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub com_ports: Option<Vec<ComPort>>,
    /// Accelerator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<Accelerator>,
    /// The guest agent's channel on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<bool>,
    /// BIOS or UEFI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// Secure boot on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// A TPM on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<bool>,
    /// Undo disks on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_disks: Option<bool>,
    /// The undo action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_action: Option<UndoAction>,
    /// A template or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<bool>,
    /// The versioned machine type (`pc` pins this host's newest i440FX type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Direct kernel boot (the whole setting); an empty `kernel` path removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelBoot>,
    /// Automatic start action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_action: Option<StartAction>,
    /// Seconds before the automatic start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_delay_secs: Option<u32>,
    /// Automatic stop action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_action: Option<StopAction>,
    /// Shut-down timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout_secs: Option<u32>,
}

/// One VM in `GET /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    /// The name.
    pub name: String,
    /// The state.
    pub state: VmState,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Virtual processors.
    pub cpus: u32,
    /// Whether its guest agent answers.
    pub heartbeat: crate::Heartbeat,
}

/// A VM's disk as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// The VHD file.
    pub path: String,
    /// The controller.
    pub bus: DiskBus,
}

/// A VM's network adapter as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// The model.
    pub model: NicModel,
    /// The MAC address, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// The virtual switch it is connected to (none: user-mode network).
    pub switch: Option<String>,
    /// Connected to its switch.
    pub connected: bool,
    /// Whether the guest may send from other MACs.
    pub mac_spoofing: bool,
    /// Whether DHCP server replies from the guest are dropped.
    pub dhcp_guard: bool,
    /// Whether router advertisements from the guest are dropped.
    pub router_guard: bool,
    /// VLAN id.
    pub vlan: Option<u16>,
    /// Bandwidth limit in bits per second.
    pub bandwidth_limit: Option<u64>,
    /// The host's tap device of a switch-connected adapter.
    pub tap: Option<String>,
}

/// `GET /v1/vms/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDetails {
    /// The name.
    pub name: String,
    /// The state.
    pub state: VmState,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Dynamic memory's minimum in MiB.
    pub memory_min_mib: Option<u32>,
    /// What the guest has now (dynamic memory, while it runs), in MiB.
    pub memory_current_mib: Option<u32>,
    /// What the guest reports available of it (dynamic memory, while it runs and its balloon
    /// driver sends statistics), in MiB: its `MemAvailable`.
    pub memory_available_mib: Option<u32>,
    /// Virtual processors.
    pub cpus: u32,
    /// The VM's unique id (never changes).
    pub id: String,
    /// Free text.
    pub notes: String,
    /// Boot order.
    pub boot_order: Vec<BootDevice>,
    /// Disks.
    pub disks: Vec<DiskInfo>,
    /// The ISO in the CD/DVD drive.
    pub cdrom: Option<String>,
    /// The floppy image in drive A:.
    pub floppy: Option<String>,
    /// Whether it has a USB tablet.
    pub usb_tablet: bool,
    /// Network adapters.
    pub nics: Vec<NicInfo>,
    /// Whether it has the guest agent's channel.
    pub agent: bool,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// Whether UEFI secure boot is on.
    pub secure_boot: bool,
    /// Whether it has a TPM.
    pub tpm: bool,
    /// Whether its disks write into undo disks.
    pub undo_disks: bool,
    /// What turning it off does with them.
    pub undo_action: UndoAction,
    /// Whether undo disks are kept (they hold changes not committed or discarded yet).
    pub undo_kept: bool,
    /// Whether it is a template.
    pub template: bool,
    /// Whether its guest agent answers.
    pub heartbeat: crate::Heartbeat,
    /// What the guest agent last reported (while the VM is active).
    pub guest: Option<crate::GuestInfo>,
    /// How many checkpoints it has (`GET /v1/vms/{name}/checkpoints` lists them).
    pub checkpoints: u32,
    /// Merges its checkpoint deletions left to do.
    pub pending_merges: Vec<crate::PendingMerge>,
    /// COM ports connected to files or sockets.
    pub com_ports: Vec<ComPort>,
    /// Direct kernel boot.
    pub kernel: Option<KernelBoot>,
    /// The accelerator in use while active (`kvm` or `tcg`); otherwise the configured one.
    pub accelerator: Accelerator,
    /// The configured accelerator.
    pub accelerator_setting: Accelerator,
    /// The pinned, versioned machine type (`pc-i440fx-10.0`).
    pub machine: String,
    /// Automatic start action.
    pub start_action: StartAction,
    /// Seconds before the automatic start.
    pub start_delay_secs: u32,
    /// Automatic stop action.
    pub stop_action: StopAction,
    /// Shut-down timeout in seconds.
    pub shutdown_timeout_secs: u32,
    /// The worker process's pid while active.
    pub pid: Option<u32>,
    /// QEMU's pid while active.
    pub qemu_pid: Option<u32>,
    /// The Unix socket `strata vm console` attaches to, while active.
    pub console_socket: Option<String>,
    /// The VM's folder.
    pub folder: String,
    /// When the VM last started (RFC 3339), while active.
    pub started_at: Option<String>,
    /// Why the VM last stopped or crashed, if it did not stop normally.
    pub last_error: Option<String>,
}

/// `POST /v1/vms/{name}/shutdown` (optional body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    /// Seconds to wait for the guest before turning it off (default: the VM's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// This time's undo action (default: the VM's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoAction>,
}

/// `POST /v1/vms/{name}/export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportVm {
    /// The folder to write (absolute, on the host; missing or empty).
    pub dir: String,
}

/// `POST /v1/vms/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportVm {
    /// The export folder (absolute, on the host).
    pub dir: String,
    /// The VM's name (default: the exported VM's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Use the export's disk files where they are instead of copying them into the VM's folder
    /// (the VM keeps its id and MACs unless `new_id`).
    #[serde(default)]
    pub in_place: bool,
    /// A new id and new MACs (always so for a copy).
    #[serde(default)]
    pub new_id: bool,
}

/// `POST /v1/vms/{name}/clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneVm {
    /// The new VM's name.
    pub name: String,
    /// Differencing disks over the source's (which must be a template) instead of full copies.
    #[serde(default)]
    pub linked: bool,
}

/// `POST /v1/vms/{name}/stop` (optional body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnOffRequest {
    /// This time's undo action (default: the VM's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoAction>,
}

/// `DELETE /v1/vms/{name}` query: `?delete_disks=true` also deletes the VM's disk files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Also delete the disk files.
    #[serde(default)]
    pub delete_disks: bool,
}

/// `GET /v1/events` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only this VM's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// An entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 (UTC, milliseconds).
    pub time: String,
    /// Stable numeric code (see `docs/EVENTS.md`).
    pub code: u32,
    /// Stable name, e.g. `vm-started`.
    pub name: String,
    /// `info`, `warning` or `error`.
    pub level: String,
    /// The VM, if the event concerns one.
    pub vm: Option<String>,
    /// Who caused it: a user name, `guest`, or `system`.
    pub user: String,
    /// What happened, for people.
    pub message: String,
}

/// `GET /v1/host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Strata's version.
    pub version: String,
    /// The data folder.
    pub home: String,
    /// What `auto` means on this host: `kvm` or `tcg`.
    pub accelerator: Accelerator,
    /// Why KVM is not used, when it is not.
    pub kvm_problem: Option<String>,
    /// The QEMU binary and its version.
    pub qemu: String,
    /// QEMU's version number, e.g. `10.0.2`.
    pub qemu_version: String,
    /// The machine type a new VM is pinned to (this QEMU's newest i440FX type).
    pub default_machine: String,
    /// The versioned machine types this QEMU offers that a VM may use, newest first.
    pub machines: Vec<String>,
    /// What this host's QEMU and kernel allow.
    pub features: Vec<HostFeature>,
    /// How many VMs are defined.
    pub vms: usize,
}

/// A capability of the host, and why it is missing when it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFeature {
    /// Stable name: `kvm`, `save-state`.
    pub name: String,
    /// Whether VMs can use it here.
    pub available: bool,
    /// Why not, and what would give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `POST /v1/host/stop-vms` reply: what was done to each VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopVmsReport {
    /// (VM, action taken or error).
    pub results: Vec<(String, String)>,
}

/// What went wrong: the stable `kind` of every error reply, and the HTTP status it comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No such VM (404).
    NotFound,
    /// The request is invalid (400).
    Invalid,
    /// The VM's state does not allow the request (409).
    Conflict,
    /// This host (its QEMU, its kernel) lacks what the request needs (409).
    Unsupported,
    /// QEMU refused a command (409): its own reason is in the message.
    Refused,
    /// QEMU or the VM's worker did not answer in time (504): it may be hung.
    Hung,
    /// The VM's worker or QEMU is gone: its socket vanished or closed (503).
    Gone,
    /// A file of the data folder is damaged (500).
    Corrupt,
    /// An I/O call on the host failed (500).
    Io,
    /// Anything else (500).
    Internal,
}

impl ErrorKind {
    /// The stable name used in API error bodies (`not-found`, `conflict` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::Invalid => "invalid",
            Self::Conflict => "conflict",
            Self::Unsupported => "unsupported",
            Self::Refused => "refused",
            Self::Hung => "hung",
            Self::Gone => "gone",
            Self::Corrupt => "corrupt",
            Self::Io => "io",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status the REST API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::Invalid => 400,
            Self::Conflict | Self::Unsupported | Self::Refused => 409,
            Self::Hung => 504,
            Self::Gone => 503,
            Self::Corrupt | Self::Io | Self::Internal => 500,
        }
    }
}

/// Every error reply's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong and what to do, for people.
    pub error: String,
    /// What went wrong, matchable.
    pub kind: ErrorKind,
}
