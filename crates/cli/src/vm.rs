//! `strata vm …`, `strata events`, `strata host …`: clients of the host service's REST API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use strata_api::{
    BootDevice, ComKind, ComPort, CreateVm, DiskBus, DiskSpec, Event, HostInfo, KernelBoot,
    NicModel, NicSpec, SetVm, StopVmsReport, VmDetails, VmSummary,
};

use crate::client::{enc, Client};
use crate::size::parse_size;
use crate::{on_off, print_json};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Define a new VM.
    Create {
        name: String,
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        json: bool,
    },
    /// List the VMs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Copy a file into or out of a running guest, through its agent (Hyper-V's Copy-VMFile).
    CopyFile {
        name: String,
        /// The file read (on the host with --to-guest, in the guest with --from-guest)
        source: String,
        /// The file written
        destination: String,
        /// From the host into the guest (the default)
        #[arg(long, conflicts_with = "from_guest")]
        to_guest: bool,
        /// From the guest to the host
        #[arg(long)]
        from_guest: bool,
        #[arg(long)]
        json: bool,
    },
    /// The CD/DVD drive: insert an ISO or eject it (also while the VM runs).
    #[command(subcommand)]
    Media(MediaCommand),
    /// Dynamic memory: give a running guest this much (between --memory-min and --memory).
    Memory {
        name: String,
        /// 384M, 1G …
        size: String,
        #[arg(long)]
        json: bool,
    },
    /// Freeze a running guest's file systems through its agent (thaw with `vm thaw`).
    Freeze(Target),
    /// Thaw a guest's frozen file systems.
    Thaw(Target),
    /// A VM's network adapters: add, remove, change (also while it runs).
    #[command(subcommand)]
    Nic(crate::nic::NicCommand),
    /// A VM's disks: add, remove (also while it runs).
    #[command(subcommand)]
    Disk(crate::vm_disk::DiskCommand),
    /// Show a VM's settings and state.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a VM's settings (hardware only while it is off).
    Set {
        name: String,
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        json: bool,
    },
    /// Start a VM (a saved VM resumes from its saved state).
    Start(Target),
    /// Shut a VM down (ACPI power button), turning it off after the timeout.
    Shutdown {
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for the guest (default: the VM's setting)
        #[arg(long)]
        timeout: Option<u32>,
        /// This time's undo action for a VM with undo disks: keep, commit or discard
        #[arg(long)]
        undo: Option<String>,
    },
    /// Turn a VM off (like pulling the plug; the disks stay consistent). Also: turn-off.
    #[command(alias = "turn-off")]
    Stop {
        #[command(flatten)]
        target: Target,
        /// This time's undo action for a VM with undo disks: keep, commit or discard
        #[arg(long)]
        undo: Option<String>,
    },
    /// A new VM with this one's settings and new MACs: full copies of its disks, or with
    /// --linked differencing disks over a template's.
    Clone {
        source: String,
        name: String,
        /// Differencing disks over the source's (the source must be a template)
        #[arg(long)]
        linked: bool,
        #[arg(long)]
        json: bool,
    },
    /// Export a VM to a folder (off, saved, or running: through a checkpoint, without stopping
    /// it): settings, disks (chains flattened), saved state, firmware state, a manifest.
    Export {
        name: String,
        dir: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Import a VM from an export folder (checked against its manifest first): its disks are
    /// copied into the VM's folder (new id and MACs), or used in place (--in-place).
    Import {
        dir: std::path::PathBuf,
        /// The VM's name (default: the exported VM's)
        #[arg(long)]
        name: Option<String>,
        /// Use the export's disks where they are (keeps the id and MACs unless --new-id)
        #[arg(long)]
        in_place: bool,
        /// A new id and new MACs
        #[arg(long)]
        new_id: bool,
        #[arg(long)]
        json: bool,
    },
    /// Merge a VM's kept undo disks into its disks (the VM off).
    CommitUndo(Target),
    /// Throw a VM's kept undo disks away (the VM off).
    DiscardUndo(Target),
    /// Reset a VM.
    Reset(Target),
    /// Pause a VM.
    Pause(Target),
    /// Resume a paused VM.
    Resume(Target),
    /// Save a VM's state to its folder; `start` resumes it.
    Save(Target),
    /// Drop a saved VM's saved state (the VM becomes off).
    DiscardSaved(Target),
    /// Delete a VM (its disks are kept unless --delete-disks).
    Delete {
        name: String,
        #[arg(long)]
        delete_disks: bool,
        #[arg(long)]
        json: bool,
    },
    /// Attach to a VM's serial console (COM1); Ctrl-] detaches. --log prints what it has shown.
    Console {
        name: String,
        #[arg(long)]
        log: bool,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct Settings {
    /// Memory: 512M, 2G … (a plain number is MiB); with dynamic memory, the most the guest gets
    #[arg(long, alias = "memory-max")]
    memory: Option<String>,
    /// Dynamic memory (virtio-balloon): the least the guest keeps ("0" turns it off)
    #[arg(long)]
    memory_min: Option<String>,
    /// Virtual processors
    #[arg(long)]
    cpus: Option<u32>,
    /// A disk, PATH[:ide|:virtio|:scsi] (virtio by default); repeat for more. With `set`, replaces the list.
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// An ISO image in the CD/DVD drive ("" empties it)
    #[arg(long)]
    cdrom: Option<String>,
    /// A network adapter: virtio or e1000, optionally :SWITCH (else the user-mode network) and
    /// =MAC; repeat for more
    #[arg(long = "nic")]
    nics: Vec<String>,
    /// Kernel for direct kernel boot ("" removes direct kernel boot)
    #[arg(long)]
    kernel: Option<String>,
    /// Initrd for direct kernel boot
    #[arg(long, requires = "kernel")]
    initrd: Option<String>,
    /// Kernel command line
    #[arg(long, requires = "kernel")]
    cmdline: Option<String>,
    /// COM1 connected to file:PATH or socket:PATH (instead of the recorded console)
    #[arg(long)]
    com1: Option<String>,
    /// COM2 connected to file:PATH or socket:PATH
    #[arg(long)]
    com2: Option<String>,
    /// Boot order, e.g. disk,cdrom,network
    #[arg(long, value_delimiter = ',')]
    boot: Option<Vec<String>>,
    /// auto (default), kvm or tcg
    #[arg(long)]
    accelerator: Option<String>,
    /// Machine type: pc (this host's newest, the default) or a versioned one such as pc-i440fx-9.2;
    /// pinned when the VM is created
    #[arg(long)]
    machine: Option<String>,
    /// Free text
    #[arg(long)]
    notes: Option<String>,
    /// Automatic start action: never, always, if-running
    #[arg(long)]
    start_action: Option<String>,
    /// Seconds before the automatic start
    #[arg(long)]
    start_delay: Option<u32>,
    /// Automatic stop action: save, shutdown, turn-off
    #[arg(long)]
    stop_action: Option<String>,
    /// Seconds a shut-down waits for the guest before turning it off
    #[arg(long)]
    shutdown_timeout: Option<u32>,
    /// The guest agent's channel (integration services): on or off
    #[arg(long)]
    agent: Option<String>,
    /// Firmware: bios (default) or uefi
    #[arg(long)]
    firmware: Option<String>,
    /// UEFI secure boot (with --firmware uefi --machine q35): on or off
    #[arg(long)]
    secure_boot: Option<String>,
    /// A TPM 2.0 (swtpm), its state in the VM's folder: on or off
    #[arg(long)]
    tpm: Option<String>,
    /// Undo disks (every disk writes into DISK.vud until committed or discarded): on or off
    #[arg(long)]
    undo_disks: Option<String>,
    /// What turning the VM off does with its undo disks: keep (default), commit or discard
    #[arg(long)]
    undo_action: Option<String>,
    /// A template (never starts; its disks become read-only parents of linked clones): on or off
    #[arg(long)]
    template: Option<String>,
    /// A floppy image (raw, .img/.vfd) in drive A: ("" empties it)
    #[arg(long)]
    floppy: Option<String>,
    /// A USB tablet for an accurate VNC pointer: on or off
    #[arg(long)]
    usb_tablet: Option<String>,
}

/// A path from the caller's working directory, made absolute for the service.
pub(crate) fn absolute(p: &str) -> Result<String> {
    let path = Path::new(p);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    Ok(abs.display().to_string())
}

fn enum_value<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T> {
    serde_json::from_value(Value::String(v.to_string()))
        .with_context(|| format!("invalid {what} '{v}'"))
}

fn com(port: u8, spec: &str) -> Result<ComPort> {
    let (kind, path) = match spec.split_once(':') {
        Some(("file", p)) => (ComKind::File, p),
        Some(("socket", p)) => (ComKind::Socket, p),
        _ => bail!("COM{port} '{spec}': expected file:PATH or socket:PATH"),
    };
    Ok(ComPort {
        port,
        kind,
        path: absolute(path)?,
    })
}

/// An optional enumerated value (accelerator, start or stop action) from its text.
fn enum_opt<T: serde::de::DeserializeOwned>(what: &str, v: Option<&str>) -> Result<Option<T>> {
    v.map(|v| enum_value(what, v)).transpose()
}

/// A `--disk PATH[:ide|:virtio|:scsi]` (virtio by default).
pub(crate) fn disk_spec(d: &str) -> Result<DiskSpec> {
    let (path, bus) = match d.rsplit_once(':') {
        Some((p, "ide")) => (p, DiskBus::Ide),
        Some((p, "virtio")) => (p, DiskBus::Virtio),
        Some((p, "scsi")) => (p, DiskBus::Scsi),
        _ => (d, DiskBus::Virtio),
    };
    Ok(DiskSpec {
        path: absolute(path)?,
        bus,
        slot: None,
    })
}

/// A `--nic MODEL[:SWITCH][=MAC]`.
pub(crate) fn nic_spec(n: &str) -> Result<NicSpec> {
    let (model, mac) = match n.split_once('=') {
        Some((m, mac)) => (m, Some(mac.to_string())),
        None => (n, None),
    };
    let (model, switch) = match model.split_once(':') {
        Some((m, s)) if !s.is_empty() => (m, Some(s.to_string())),
        Some((_, _)) => bail!("NIC '{n}': the switch's name is empty"),
        None => (model, None),
    };
    let mut spec = NicSpec::new(switch.as_deref());
    spec.model = enum_value::<NicModel>("network adapter model", model)?;
    spec.mac = mac;
    Ok(spec)
}

/// A repeated option's values, each parsed; `None` when it was not given (nothing to change).
fn each<T>(values: &[String], parse: impl Fn(&str) -> Result<T>) -> Result<Option<Vec<T>>> {
    if values.is_empty() {
        return Ok(None);
    }
    values
        .iter()
        .map(|v| parse(v))
        .collect::<Result<_>>()
        .map(Some)
}

impl Settings {
    /// The settings given, as a `SetVm` (which `create` also starts from).
    fn to_set(&self) -> Result<SetVm> {
        // Parsed in this order, so that the first error reported stays the same.
        let memory_min_mib = match self.memory_min.as_deref() {
            Some("0") => Some(0),
            m => m.map(memory_mib).transpose()?,
        };
        let memory_mib = self.memory.as_deref().map(memory_mib).transpose()?;
        let disks = each(&self.disks, disk_spec)?;
        let nics = each(&self.nics, nic_spec)?;
        let com_ports = self.com_ports()?;
        Ok(SetVm {
            notes: self.notes.clone(),
            memory_mib,
            memory_min_mib,
            cpus: self.cpus,
            boot_order: self.boot_order()?,
            disks,
            cdrom: self.cdrom()?,
            nics,
            com_ports,
            accelerator: enum_opt("accelerator", self.accelerator.as_deref())?,
            start_action: enum_opt("start action", self.start_action.as_deref())?,
            start_delay_secs: self.start_delay,
            stop_action: enum_opt("stop action", self.stop_action.as_deref())?,
            shutdown_timeout_secs: self.shutdown_timeout,
            machine: self.machine.clone(),
            kernel: self.kernel()?,
            agent: on_off("agent", self.agent.as_deref())?,
            firmware: enum_opt("firmware", self.firmware.as_deref())?,
            secure_boot: on_off("secure-boot", self.secure_boot.as_deref())?,
            tpm: on_off("tpm", self.tpm.as_deref())?,
            undo_disks: on_off("undo-disks", self.undo_disks.as_deref())?,
            undo_action: enum_opt("undo action", self.undo_action.as_deref())?,
            template: on_off("template", self.template.as_deref())?,
            floppy: match self.floppy.as_deref() {
                None => None,
                Some("") => Some(String::new()),
                Some(f) => Some(absolute(f)?),
            },
            usb_tablet: on_off("usb-tablet", self.usb_tablet.as_deref())?,
        })
    }

    /// `--boot`, each device checked.
    fn boot_order(&self) -> Result<Option<Vec<BootDevice>>> {
        self.boot
            .as_ref()
            .map(|b| {
                b.iter()
                    .map(|x| enum_value("boot device", x))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()
    }

    /// `--cdrom`: an absolute path, or `""` (empties the drive).
    fn cdrom(&self) -> Result<Option<String>> {
        self.cdrom
            .as_deref()
            .map(|c| {
                if c.is_empty() {
                    Ok(String::new())
                } else {
                    absolute(c)
                }
            })
            .transpose()
    }

    /// `--com1` and `--com2`; `None` when neither was given.
    fn com_ports(&self) -> Result<Option<Vec<ComPort>>> {
        if self.com1.is_none() && self.com2.is_none() {
            return Ok(None);
        }
        let mut com_ports = Vec::new();
        if let Some(c) = &self.com1 {
            com_ports.push(com(1, c)?);
        }
        if let Some(c) = &self.com2 {
            com_ports.push(com(2, c)?);
        }
        Ok(Some(com_ports))
    }

    /// Direct kernel boot as given; `--kernel ""` gives an empty path (removes it, for `set`).
    fn kernel(&self) -> Result<Option<KernelBoot>> {
        if self.kernel.as_deref() == Some("") {
            return Ok(Some(KernelBoot {
                kernel: String::new(),
                initrd: None,
                cmdline: String::new(),
            }));
        }
        self.kernel
            .as_deref()
            .map(|k| {
                Ok(KernelBoot {
                    kernel: absolute(k)?,
                    initrd: self.initrd.as_deref().map(absolute).transpose()?,
                    cmdline: self.cmdline.clone().unwrap_or_default(),
                })
            })
            .transpose()
    }

    fn to_create(&self, name: &str) -> Result<CreateVm> {
        let s = self.to_set()?;
        let mut vm = CreateVm::named(name);
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = s.$f { vm.$f = v; } )* };
        }
        take!(
            notes,
            memory_mib,
            cpus,
            boot_order,
            disks,
            nics,
            com_ports,
            accelerator,
            start_action,
            start_delay_secs,
            stop_action,
            shutdown_timeout_secs,
            agent,
            firmware,
            secure_boot,
            tpm,
            undo_disks,
            undo_action,
            template
        );
        vm.cdrom = s.cdrom.filter(|c| !c.is_empty());
        vm.floppy = s.floppy.filter(|f| !f.is_empty());
        vm.memory_min_mib = s.memory_min_mib.filter(|m| *m > 0);
        vm.usb_tablet = s.usb_tablet.unwrap_or(false);
        vm.kernel = s.kernel.filter(|k| !k.kernel.is_empty());
        vm.machine = s.machine;
        Ok(vm)
    }
}

/// Memory: a plain number is MiB; otherwise a size that is a whole number of MiB.
fn memory_mib(text: &str) -> Result<u32> {
    let bytes = if text.chars().all(|c| c.is_ascii_digit()) {
        text.parse::<u64>().context("memory")? << 20
    } else {
        parse_size(text).map_err(anyhow::Error::msg)?
    };
    if bytes % (1 << 20) != 0 {
        bail!("memory '{text}': must be a whole number of MiB");
    }
    u32::try_from(bytes >> 20).map_err(|_| anyhow::anyhow!("memory '{text}' is too large"))
}

fn print_vm(vm: &VmDetails, json: bool) -> Result<()> {
    if json {
        return print_json(vm);
    }
    crate::vm_text::show(vm);
    Ok(())
}

/// Runs `strata vm …`.
pub fn run(cmd: VmCommand) -> Result<ExitCode> {
    let c = Client::new();
    match cmd {
        VmCommand::Create {
            name,
            settings,
            json,
        } => create(&c, &name, &settings, json)?,
        VmCommand::List { json } => list(&c, json)?,
        VmCommand::Show { name, json } => show(&c, &name, json)?,
        VmCommand::Nic(cmd) => crate::nic::run(&c, cmd)?,
        VmCommand::Disk(cmd) => crate::vm_disk::run(&c, cmd)?,
        VmCommand::CopyFile {
            name,
            source,
            destination,
            to_guest: _,
            from_guest,
            json,
        } => copy_file(&c, &name, &source, &destination, from_guest, json)?,
        VmCommand::Freeze(t) => action(&c, &t, "freeze", None)?,
        VmCommand::Media(m) => media(&c, m)?,
        VmCommand::Memory { name, size, json } => {
            let body = json!({ "target_mib": memory_mib(&size)? });
            let t = Target { name, json };
            let vm: VmDetails =
                c.json("POST", &format!("{}/memory", vm_path(&t.name)), Some(body))?;
            if t.json {
                return print_json(&vm).map(|()| ExitCode::SUCCESS);
            }
            println!("VM '{}': memory target set.", vm.name);
        }
        VmCommand::Thaw(t) => action(&c, &t, "thaw", None)?,
        VmCommand::Set {
            name,
            settings,
            json,
        } => set(&c, &name, &settings, json)?,
        VmCommand::Start(t) => action(&c, &t, "start", None)?,
        VmCommand::Shutdown {
            target,
            timeout,
            undo,
        } => shutdown(&c, &target, timeout, undo.as_deref())?,
        VmCommand::Stop { target, undo } => {
            let undo = enum_opt::<strata_api::UndoAction>("undo action", undo.as_deref())?;
            action(&c, &target, "stop", undo.map(|u| json!({ "undo": u })))?
        }
        VmCommand::Clone {
            source,
            name,
            linked,
            json,
        } => {
            let body = serde_json::to_value(strata_api::CloneVm { name, linked })?;
            let path = format!("{}/clone", vm_path(&source));
            print_vm(&c.json("POST", &path, Some(body))?, json)?
        }
        VmCommand::Export { name, dir, json } => {
            let body = serde_json::to_value(strata_api::ExportVm {
                dir: absolute(&dir.display().to_string())?,
            })?;
            let path = format!("{}/export", vm_path(&name));
            print_vm(&c.json("POST", &path, Some(body))?, json)?
        }
        VmCommand::Import {
            dir,
            name,
            in_place,
            new_id,
            json,
        } => {
            let body = serde_json::to_value(strata_api::ImportVm {
                dir: absolute(&dir.display().to_string())?,
                name,
                in_place,
                new_id,
            })?;
            print_vm(&c.json("POST", "/v1/vms/import", Some(body))?, json)?
        }
        VmCommand::CommitUndo(t) => action(&c, &t, "commit-undo", None)?,
        VmCommand::DiscardUndo(t) => action(&c, &t, "discard-undo", None)?,
        VmCommand::Reset(t) => action(&c, &t, "reset", None)?,
        VmCommand::Pause(t) => action(&c, &t, "pause", None)?,
        VmCommand::Resume(t) => action(&c, &t, "resume", None)?,
        VmCommand::Save(t) => action(&c, &t, "save", None)?,
        VmCommand::DiscardSaved(t) => action(&c, &t, "discard-saved", None)?,
        VmCommand::Delete {
            name,
            delete_disks,
            json,
        } => delete(&c, &name, delete_disks, json)?,
        VmCommand::Console { name, log } => console(&c, &name, log)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `strata vm media …`.
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Insert an ISO in the CD/DVD drive (replacing what is there).
    Insert {
        name: String,
        iso: String,
        #[arg(long)]
        json: bool,
    },
    /// Eject the CD/DVD drive's medium.
    Eject(Target),
}

fn media(c: &Client, m: MediaCommand) -> Result<()> {
    let (name, iso, json) = match m {
        MediaCommand::Insert { name, iso, json } => (name, Some(absolute(&iso)?), json),
        MediaCommand::Eject(t) => (t.name, None, t.json),
    };
    let body = json!({ "iso": iso });
    let vm: VmDetails = c.json("POST", &format!("{}/media", vm_path(&name)), Some(body))?;
    if json {
        return print_json(&vm);
    }
    match &vm.cdrom {
        Some(iso) => println!("VM '{}': {iso} in the CD/DVD drive.", vm.name),
        None => println!("VM '{}': CD/DVD drive empty.", vm.name),
    }
    Ok(())
}

/// `strata vm copy-file`.
fn copy_file(
    c: &Client,
    name: &str,
    source: &str,
    dest: &str,
    from_guest: bool,
    json: bool,
) -> Result<()> {
    let (source, destination, direction) = if from_guest {
        (
            source.to_string(),
            absolute(dest)?,
            strata_api::CopyDirection::FromGuest,
        )
    } else {
        (
            absolute(source)?,
            dest.to_string(),
            strata_api::CopyDirection::ToGuest,
        )
    };
    let body = serde_json::to_value(strata_api::CopyFile {
        source,
        destination,
        direction,
    })?;
    let r: strata_api::CopyReport =
        c.json("POST", &format!("{}/copy-file", vm_path(name)), Some(body))?;
    if json {
        return print_json(&r);
    }
    println!("Copied {} bytes.", r.bytes);
    Ok(())
}

/// A VM's path in the API.
fn vm_path(name: &str) -> String {
    format!("/v1/vms/{}", enc(name))
}

/// `strata vm create`.
fn create(c: &Client, name: &str, settings: &Settings, json: bool) -> Result<()> {
    let body = serde_json::to_value(settings.to_create(name)?)?;
    let vm: VmDetails = c.json("POST", "/v1/vms", Some(body))?;
    if !json {
        println!("Created VM '{}'.", vm.name);
    }
    print_vm(&vm, json)
}

/// `strata vm list`.
fn list(c: &Client, json: bool) -> Result<()> {
    let list: Vec<VmSummary> = c.json("GET", "/v1/vms", None)?;
    if json {
        return print_json(&list);
    }
    crate::vm_text::list(&list);
    Ok(())
}

/// `strata vm show`.
fn show(c: &Client, name: &str, json: bool) -> Result<()> {
    print_vm(&c.json("GET", &vm_path(name), None)?, json)
}

/// `strata vm set`.
fn set(c: &Client, name: &str, settings: &Settings, json: bool) -> Result<()> {
    let body = serde_json::to_value(settings.to_set()?)?;
    print_vm(&c.json("PATCH", &vm_path(name), Some(body))?, json)
}

/// `strata vm shutdown`: waits `timeout` seconds for the guest, else the VM's own setting.
fn shutdown(c: &Client, target: &Target, timeout: Option<u32>, undo: Option<&str>) -> Result<()> {
    let req = strata_api::ShutdownRequest {
        timeout_secs: timeout,
        undo: enum_opt("undo action", undo)?,
    };
    let body = (req != strata_api::ShutdownRequest::default())
        .then(|| serde_json::to_value(req))
        .transpose()?;
    action(c, target, "shutdown", body)
}

/// `strata vm delete`: the disks are kept unless `delete_disks`.
fn delete(c: &Client, name: &str, delete_disks: bool, json: bool) -> Result<()> {
    c.text(
        "DELETE",
        &format!("{}?delete_disks={delete_disks}", vm_path(name)),
        None,
    )?;
    if json {
        return print_json(
            &json!({ "name": name, "deleted": true, "disks_deleted": delete_disks }),
        );
    }
    println!(
        "Deleted VM '{name}'{}.",
        if delete_disks {
            " and its disks"
        } else {
            " (its disks are kept)"
        }
    );
    Ok(())
}

/// `strata vm console`: attach to the running VM's console, or with `log` print what it showed.
fn console(c: &Client, name: &str, log: bool) -> Result<()> {
    if log {
        print!(
            "{}",
            c.text("GET", &format!("{}/console", vm_path(name)), None)?
        );
        return Ok(());
    }
    let vm: VmDetails = c.json("GET", &vm_path(name), None)?;
    let Some(socket) = vm.console_socket else {
        bail!(
            "VM '{name}' is {}: its console is available while it runs",
            vm.state.as_str()
        );
    };
    crate::console::attach(Path::new(&socket), name)
}

fn action(c: &Client, t: &Target, what: &str, body: Option<Value>) -> Result<()> {
    let vm: VmDetails = c.json("POST", &format!("/v1/vms/{}/{what}", enc(&t.name)), body)?;
    if t.json {
        return print_json(&vm);
    }
    println!("VM '{}' is {}.", vm.name, vm.state.as_str());
    Ok(())
}

/// `strata events`.
pub fn events(vm: Option<String>, since: Option<String>, json: bool) -> Result<ExitCode> {
    let mut q = Vec::new();
    if let Some(v) = vm {
        q.push(format!("vm={}", enc(&v)));
    }
    if let Some(s) = since {
        // "10m" means ten minutes ago; anything else is passed as a time.
        let t = match humantime::parse_duration(&s) {
            Ok(d) => humantime::format_rfc3339(std::time::SystemTime::now() - d).to_string(),
            Err(_) => s,
        };
        q.push(format!("since={}", enc(&t)));
    }
    let list: Vec<Event> =
        Client::new().json("GET", &format!("/v1/events?{}", q.join("&")), None)?;
    if json {
        print_json(&list)?;
    } else {
        crate::vm_text::events(&list);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// What the host offers: QEMU, accelerator, data folder.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// The host is shutting down: apply each running VM's automatic stop action.
    StopVms {
        #[arg(long)]
        json: bool,
    },
}

/// `strata host …`.
pub fn host(cmd: HostCommand) -> Result<ExitCode> {
    let c = Client::new();
    match cmd {
        HostCommand::Info { json } => {
            let info: HostInfo = c.json("GET", "/v1/host", None)?;
            if json {
                print_json(&info)?;
            } else {
                crate::vm_text::host(&info);
            }
        }
        HostCommand::StopVms { json } => {
            let r: StopVmsReport = c.json("POST", "/v1/host/stop-vms", None)?;
            if json {
                print_json(&r)?;
            } else {
                for (vm, what) in &r.results {
                    println!("{vm}: {what}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
