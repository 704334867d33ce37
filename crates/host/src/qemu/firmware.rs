//! A VM's firmware and TPM: BIOS (SeaBIOS, QEMU's default) or UEFI from Debian's OVMF, with a
//! per-VM copy of the variables store in the VM's folder (`uefi-vars.fd`, so boot entries and
//! secure-boot keys travel with the VM); secure boot (OVMF's secure-boot build, SMM on a Q35
//! machine, the Microsoft keys enrolled); a TPM 2.0 from swtpm, its state in the VM's folder
//! (`tpm/`), started by the worker before QEMU and ending with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_api::{CreateVm, Firmware};

use super::Sockets;
use crate::error::{ErrorKind, HostError};

/// Where Debian's `ovmf` package puts its images; `STRATA_OVMF_DIR` names another folder (other
/// distributions keep them elsewhere, e.g. `/usr/share/edk2/ovmf`).
pub const OVMF_DIR: &str = "/usr/share/OVMF";

fn ovmf_dir() -> PathBuf {
    std::env::var_os("STRATA_OVMF_DIR").map_or_else(|| PathBuf::from(OVMF_DIR), PathBuf::from)
}

/// An OVMF build: its code image and the template of its variables store.
#[derive(Debug, Clone)]
pub struct Ovmf {
    /// The firmware (read-only flash).
    pub code: PathBuf,
    /// The variables store a new VM starts from.
    pub vars: PathBuf,
}

/// The OVMF build for a VM: with secure boot, the SMM build and a store with the Microsoft keys.
pub fn ovmf(secure_boot: bool) -> Result<Ovmf, HostError> {
    let (code, vars) = if secure_boot {
        ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")
    } else {
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")
    };
    let dir = ovmf_dir();
    let o = Ovmf {
        code: dir.join(code),
        vars: dir.join(vars),
    };
    for f in [&o.code, &o.vars] {
        if !f.exists() {
            return Err(HostError::unsupported(format!(
                "UEFI needs {}, which this host lacks: install Debian's ovmf package (apt-get install ovmf)",
                f.display()
            )));
        }
    }
    Ok(o)
}

/// The swtpm binary (`/usr/bin/swtpm`, or `STRATA_SWTPM`), or why a TPM cannot be given.
pub fn swtpm() -> Result<PathBuf, HostError> {
    let path = std::env::var_os("STRATA_SWTPM")
        .map_or_else(|| PathBuf::from("/usr/bin/swtpm"), PathBuf::from);
    if path.exists() {
        Ok(path)
    } else {
        Err(HostError::unsupported(format!(
            "a TPM needs swtpm ({}), which this host lacks: install Debian's swtpm package (apt-get install swtpm)",
            path.display()
        )))
    }
}

/// Checks what the VM's firmware settings need: UEFI for secure boot and a TPM's measured boot
/// is not required (a BIOS VM may have a TPM), a Q35 machine for secure boot (its SMM), and the
/// host's OVMF and swtpm.
pub fn check(vm: &CreateVm, machine: &str) -> Result<(), HostError> {
    if vm.secure_boot && vm.firmware != Firmware::Uefi {
        return Err(HostError::invalid(format!(
            "VM '{}': secure boot needs UEFI firmware (--firmware uefi)",
            vm.name
        )));
    }
    if vm.secure_boot && !machine.starts_with("pc-q35-") {
        return Err(HostError::invalid(format!(
            "VM '{}': secure boot needs a Q35 machine (--machine q35): OVMF keeps its keys safe with SMM, which i440FX lacks",
            vm.name
        )));
    }
    if vm.firmware == Firmware::Uefi {
        ovmf(vm.secure_boot)?;
    }
    if vm.tpm {
        swtpm()?;
    }
    Ok(())
}

/// The VM's UEFI variables store (in its folder).
pub fn vars_file(dir: &Path) -> PathBuf {
    dir.join("uefi-vars.fd")
}

/// QEMU's arguments for the firmware: none for BIOS; for UEFI the two flash devices (the VM's
/// variables store made from the template the first time).
pub fn args(vm: &CreateVm, dir: &Path) -> Result<Vec<String>, HostError> {
    if vm.firmware != Firmware::Uefi {
        return Ok(Vec::new());
    }
    let o = ovmf(vm.secure_boot)?;
    let vars = vars_file(dir);
    if !vars.exists() {
        let tmp = dir.join("uefi-vars.fd.tmp");
        std::fs::copy(&o.vars, &tmp).map_err(|e| HostError::io(&o.vars, "copy", e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| HostError::io(&tmp, "sync", e))?;
        std::fs::rename(&tmp, &vars).map_err(|e| HostError::io(&vars, "create", e))?;
    }
    let mut a = vec![
        "-drive".to_string(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            o.code.display()
        ),
        "-drive".to_string(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ];
    if vm.secure_boot {
        a.extend([
            "-global".to_string(),
            "driver=cfi.pflash01,property=secure,value=on".to_string(),
        ]);
    }
    Ok(a)
}

/// QEMU's arguments for the TPM (a TIS device on swtpm's control socket).
pub fn tpm_args(vm: &CreateVm, sockets: &Sockets) -> Vec<String> {
    if !vm.tpm {
        return Vec::new();
    }
    vec![
        "-chardev".into(),
        format!("socket,id=chrtpm,path={}", sockets.tpm.display()),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=chrtpm".into(),
        "-device".into(),
        "tpm-tis,tpmdev=tpm0".into(),
    ]
}

/// A running swtpm; killed when dropped (it also ends by itself when QEMU disconnects).
pub struct Swtpm(Child);

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts swtpm for a VM: its state in `dir/tpm`, its control socket where QEMU looks for it;
/// returns once the socket is there.
pub fn start_swtpm(dir: &Path, sockets: &Sockets) -> Result<Swtpm, HostError> {
    let state = dir.join("tpm");
    std::fs::create_dir_all(&state).map_err(|e| HostError::io(&state, "create", e))?;
    let mut cmd = Command::new(swtpm()?);
    // Ends with its worker even before QEMU has connected (`--terminate` needs a connection).
    strata_proc::die_with_parent(&mut cmd);
    let child = cmd
        .arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sockets.tpm.display()))
        .arg("--terminate")
        .arg("--log")
        .arg(format!("file={}", dir.join("swtpm.log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| HostError::new(ErrorKind::Io, format!("cannot start swtpm: {e}")))?;
    let mut tpm = Swtpm(child);
    let start = Instant::now();
    while !sockets.tpm.exists() {
        if let Ok(Some(status)) = tpm.0.try_wait() {
            return Err(HostError::new(
                ErrorKind::Io,
                format!(
                    "swtpm ended at once ({status}): see {}",
                    dir.join("swtpm.log").display()
                ),
            ));
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(HostError::new(
                ErrorKind::Hung,
                "swtpm did not open its socket within 10 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(tpm)
}
