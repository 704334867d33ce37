//! QEMU: which binary, what it offers (version, machine types, features), whether KVM can run a
//! guest here ([`kvm`]), and the command line for a VM ([`args`]).

mod args;
pub mod disks;
pub mod firmware;
mod kvm;

use std::path::PathBuf;
use std::process::Command;

use strata_api::{Accelerator, HostFeature};

use crate::error::{ErrorKind, HostError};

pub use args::{args, Launch, Sockets, MAX_NICS};
pub(crate) use args::{nic_model, NIC_PCI_BASE};
pub use disks::{MAX_IDE, MAX_SCSI, MAX_VIRTIO};
pub use kvm::probe_kvm;

/// The QEMU binary: `$STRATA_QEMU`, else `qemu-system-x86_64` from `PATH`.
pub fn binary() -> PathBuf {
    std::env::var_os("STRATA_QEMU")
        .map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from)
}

/// The oldest QEMU that can save a VM's state: the `file:` migration transport came in 8.2.
pub const SAVE_STATE_SINCE: Version = Version(8, 2, 0);

/// A QEMU version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What this host's QEMU offers, probed once when the service starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuInfo {
    /// Its version line (`QEMU emulator version 10.0.2 (Debian …)`).
    pub line: String,
    /// Its version number.
    pub version: Version,
    /// Its versioned i440FX machine types, newest first (numbered ones such as `pc-i440fx-10.0`
    /// first, then distribution ones such as `pc-i440fx-noble` or `pc-i440fx-rhel7.6.0`).
    pub machines: Vec<String>,
    /// What `pc` means to it (the type a new VM is pinned to).
    pub default: String,
    /// Its versioned Q35 machine types, newest first (`pc-q35-10.0` …).
    pub q35: Vec<String>,
    /// What `q35` means to it.
    pub q35_default: Option<String>,
}

impl QemuInfo {
    /// Runs QEMU to learn its version and machine types.
    pub fn probe() -> Result<Self, HostError> {
        let line = version()?;
        let version = parse_version(&line).ok_or_else(|| {
            HostError::unsupported(format!(
                "{}: cannot read QEMU's version from {line:?}",
                binary().display()
            ))
        })?;
        let help = run(&["-machine", "help"])?;
        let (machines, default) = parse_machines(&help);
        let (q35, q35_default) = parse_family(&help, "pc-q35-", "q35");
        let Some(default) = default else {
            return Err(HostError::unsupported(format!(
                "{} offers no i440FX machine type (pc-i440fx-*): Strata's VMs need one",
                binary().display()
            )));
        };
        Ok(Self {
            line,
            version,
            machines,
            default,
            q35,
            q35_default,
        })
    }

    /// The machine type a new VM is pinned to: the newest i440FX.
    pub fn default_machine(&self) -> &str {
        &self.default
    }

    /// The versioned machine type for what a user asked (`pc`, `i440fx` or a versioned name), or
    /// why this QEMU can't give it.
    pub fn resolve_machine(&self, asked: &str) -> Result<String, HostError> {
        if asked == "pc" || asked == "i440fx" {
            return Ok(self.default_machine().to_string());
        }
        if let (Some(q), "q35") = (&self.q35_default, asked) {
            return Ok(q.clone());
        }
        if self.offers(asked) {
            return Ok(asked.to_string());
        }
        let kind =
            if asked.starts_with("pc-i440fx-") || asked.starts_with("pc-q35-") || asked == "q35" {
                ErrorKind::Unsupported
            } else {
                ErrorKind::Invalid
            };
        Err(HostError::new(
            kind,
            format!(
                "machine type '{asked}' is not one this host's QEMU ({}) offers for Strata's VMs: use pc (= {}), q35 or one of {}",
                self.version,
                self.default_machine(),
                self.all_machines().join(", ")
            ),
        ))
    }

    /// Whether this QEMU offers the versioned machine type `machine` (i440FX or Q35).
    pub fn offers(&self, machine: &str) -> bool {
        self.machines.iter().chain(&self.q35).any(|m| m == machine)
    }

    /// Every versioned machine type a VM may use: the i440FX ones, then the Q35 ones.
    pub fn all_machines(&self) -> Vec<String> {
        self.machines.iter().chain(&self.q35).cloned().collect()
    }

    /// Why this QEMU can't save a VM's state, if it can't.
    pub fn save_state_problem(&self) -> Option<String> {
        (self.version < SAVE_STATE_SINCE).then(|| {
            format!(
                "saving a VM's state needs QEMU {SAVE_STATE_SINCE} or newer (its file: migration transport); this host has QEMU {}: install QEMU from bookworm-backports (scripts/install-deps.sh)",
                self.version
            )
        })
    }

    /// The host's features for `host info`.
    pub fn features(&self, kvm: &Result<(), String>) -> Vec<HostFeature> {
        let feature = |name: &str, problem: Option<String>| HostFeature {
            name: name.to_string(),
            available: problem.is_none(),
            problem,
        };
        vec![
            feature("kvm", kvm.clone().err()),
            feature("save-state", self.save_state_problem()),
        ]
    }
}

/// QEMU's version line, or why it can't be run.
pub fn version() -> Result<String, HostError> {
    Ok(run(&["--version"])?
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// Runs QEMU with `args` and returns what it printed.
fn run(args: &[&str]) -> Result<String, HostError> {
    let out = Command::new(binary()).args(args).output().map_err(|e| {
        HostError::unsupported(format!(
            "{}: cannot run: {e} (install qemu-system-x86)",
            binary().display()
        ))
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The version number in QEMU's version line (`QEMU emulator version 10.0.2 (Debian …)`).
fn parse_version(line: &str) -> Option<Version> {
    let rest = line.split("version ").nth(1)?;
    let number = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = number.split('.').map(str::parse::<u32>);
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let micro = parts.next().and_then(Result::ok).unwrap_or(0);
    Some(Version(major, minor, micro))
}

/// The versioned i440FX machine types in `-machine help`'s output, newest first (numbered, then
/// the others by name), and the one `pc` is an alias of (else the newest numbered one).
fn parse_machines(help: &str) -> (Vec<String>, Option<String>) {
    parse_family(help, "pc-i440fx-", "pc")
}

/// The versioned machine types of a family (`prefix`: `pc-i440fx-`, `pc-q35-`), newest first,
/// and the one `alias_name` is an alias of (else the newest numbered one).
fn parse_family(help: &str, prefix: &str, alias_name: &str) -> (Vec<String>, Option<String>) {
    let mut numbered: Vec<(Version, String)> = Vec::new();
    let mut named: Vec<String> = Vec::new();
    let mut alias = None;
    for line in help.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name == alias_name {
            alias = line
                .split("(alias of ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .map(str::to_string);
        }
        let Some(suffix) = name.strip_prefix(prefix) else {
            continue;
        };
        match parse_version(&format!("version {suffix}")) {
            Some(v) if suffix.chars().all(|c| c.is_ascii_digit() || c == '.') => {
                numbered.push((v, name.to_string()));
            }
            _ => named.push(name.to_string()),
        }
    }
    numbered.sort_by_key(|m| std::cmp::Reverse(m.0));
    named.sort();
    let machines: Vec<String> = numbered.into_iter().map(|(_, n)| n).chain(named).collect();
    let default = alias
        .filter(|a| machines.contains(a))
        .or_else(|| machines.first().cloned());
    (machines, default)
}

/// The CPU model used with an accelerator (recorded in saved states).
pub fn cpu_model(accel: Accelerator) -> &'static str {
    match accel {
        Accelerator::Kvm => "host",
        _ => "max",
    }
}

/// The host CPU's model name (`/proc/cpuinfo`): a KVM guest's state (CPU model `host`) restores
/// only on the same kind of CPU.
pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "Supported machines are:
microvm              microvm (i386)
pc-i440fx-9.2        Standard PC (i440FX + PIIX, 1996)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-10.0)
pc-i440fx-10.0       Standard PC (i440FX + PIIX, 1996) (default)
pc-i440fx-2.12       Standard PC (i440FX + PIIX, 1996) (deprecated)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-10.0)
pc-q35-10.0          Standard PC (Q35 + ICH9, 2009)
";

    fn info(version: Version) -> QemuInfo {
        let (machines, default) = parse_machines(HELP);
        let (q35, q35_default) = parse_family(HELP, "pc-q35-", "q35");
        QemuInfo {
            line: String::new(),
            version,
            machines,
            default: default.unwrap(),
            q35,
            q35_default,
        }
    }

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some(Version(10, 0, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)"),
            Some(Version(7, 2, 19))
        );
        assert_eq!(
            parse_version("QEMU emulator version 9.1"),
            Some(Version(9, 1, 0))
        );
        assert_eq!(parse_version("qemu"), None);
        assert_eq!(parse_version("QEMU emulator version x"), None);
    }

    #[test]
    fn machine_types_are_the_versioned_i440fx_ones_newest_first() {
        let (machines, default) = parse_machines(HELP);
        assert_eq!(
            machines,
            ["pc-i440fx-10.0", "pc-i440fx-9.2", "pc-i440fx-2.12"]
        );
        assert_eq!(default.as_deref(), Some("pc-i440fx-10.0"));
        // Ubuntu's and RHEL's QEMU name their own types, and `pc` may point at one.
        let ubuntu = "pc                   Ubuntu 24.04 PC (alias of pc-i440fx-noble)
pc-i440fx-noble      Ubuntu 24.04 PC (i440FX + PIIX, 1996) (default)
pc-i440fx-8.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-rhel7.6.0  RHEL 7.6.0 PC (i440FX + PIIX, 1996)
";
        let (machines, default) = parse_machines(ubuntu);
        assert_eq!(
            machines,
            ["pc-i440fx-8.2", "pc-i440fx-noble", "pc-i440fx-rhel7.6.0"]
        );
        assert_eq!(default.as_deref(), Some("pc-i440fx-noble"));
        assert_eq!(
            parse_machines("q35  x (alias of pc-q35-10.0)\n"),
            (vec![], None)
        );
    }

    #[test]
    fn a_machine_is_resolved_pinned_or_refused_with_the_reason() {
        let q = info(Version(10, 0, 2));
        assert_eq!(q.resolve_machine("pc").unwrap(), "pc-i440fx-10.0");
        assert_eq!(q.resolve_machine("pc-i440fx-9.2").unwrap(), "pc-i440fx-9.2");
        let e = q.resolve_machine("pc-i440fx-11.0").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("'pc-i440fx-11.0'"), "{e}");
        assert!(e.message.contains("pc-i440fx-9.2"), "{e}");
        assert_eq!(q.resolve_machine("q35").unwrap(), "pc-q35-10.0");
        assert_eq!(q.resolve_machine("pc-q35-10.0").unwrap(), "pc-q35-10.0");
        let e = q.resolve_machine("pc-q35-99.0").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let e = q.resolve_machine("isapc").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
    }

    #[test]
    fn saving_needs_qemu_8_2() {
        assert!(info(Version(10, 0, 2)).save_state_problem().is_none());
        assert!(info(Version(8, 2, 0)).save_state_problem().is_none());
        let p = info(Version(7, 2, 19)).save_state_problem().unwrap();
        assert!(p.contains("8.2.0") && p.contains("7.2.19"), "{p}");
        let f = info(Version(7, 2, 0)).features(&Ok(()));
        assert!(f[0].available && f[0].name == "kvm");
        assert!(!f[1].available && f[1].name == "save-state");
    }
}
