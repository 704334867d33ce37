//! Export and import: a VM as a folder another host (or data folder) can import.
//!
//! An export folder holds `vm.toml` (the settings, disk paths relative to the folder), `disks/`
//! (each disk's chain flattened into one dynamic VHD), the saved state when the VM was saved
//! (`saved.state`, `saved.json`), the UEFI variables store and the TPM's state, and last
//! `manifest.json`: every file's size and SHA-256. A running VM is exported through a
//! checkpoint (its frozen layers and memory), so it keeps running; the checkpoint is deleted
//! after. Import checks the manifest first and refuses a damaged or incomplete export by the
//! file's name, before anything is made. Checkpoints are not exported (the current state is).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strata_api::{ExportVm, ImportVm, VmState};

use super::lifecycle::busy;
use super::Service;
use crate::checkpoint::layers::memory_files;
use crate::error::HostError;
use crate::events::Code;
use crate::store::VmConfig;
use crate::worker::saved;

const SCHEMA: u32 = 1;

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// Relative to the folder.
    path: String,
    size: u64,
    sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    schema: u32,
    vm: String,
    files: Vec<Entry>,
}

fn sha256(path: &Path) -> Result<(u64, String), HostError> {
    let mut f = std::fs::File::open(path).map_err(|e| HostError::io(path, "read", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| HostError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

fn copy(from: &Path, to: &Path) -> Result<(), HostError> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| HostError::io(from, &format!("copy to {}", to.display()), e))
}

/// What an export reads: the settings, each disk's top layer, the memory state if any.
struct Source {
    config: VmConfig,
    disks: Vec<String>,
    memory: Option<(PathBuf, PathBuf)>,
}

/// Every file under `dir`, relative, sorted (the manifest's order).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

impl Service {
    /// Carries out an export, import, clone or undo command; the reply is the VM concerned.
    pub(super) fn portable_command(
        &self,
        cmd: super::Command,
        user: &str,
    ) -> Result<super::Reply, HostError> {
        use super::Command;
        let name = match cmd {
            Command::Export(name, req) => self.export_vm(&name, &req, user).map(|()| name),
            Command::Import(req) => self.import_vm(&req, user),
            Command::Clone(src, req) => self.clone_vm(&src, &req, user).map(|()| req.name),
            Command::Undo(name, action) => self.undo(&name, action, user).map(|()| name),
            _ => Err(HostError::internal(
                "not an export, import, clone or undo command",
            )),
        }?;
        self.show(&name).map(|d| super::Reply::Vm(Box::new(d)))
    }

    /// `vm export VM DIR`.
    pub(super) fn export_vm(
        &self,
        name: &str,
        req: &ExportVm,
        user: &str,
    ) -> Result<(), HostError> {
        let dir = PathBuf::from(&req.dir);
        if !dir.is_absolute() {
            return Err(HostError::invalid(format!(
                "export folder '{}': give an absolute path",
                req.dir
            )));
        }
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(HostError::conflict(format!(
                "export folder '{}' is not empty",
                req.dir
            )));
        }
        let state = self.current(name)?.1.state;
        let through_checkpoint = matches!(state, VmState::Running | VmState::Paused);
        let cp_name = format!("export {}", crate::events::now());
        let source = if through_checkpoint {
            self.create_checkpoint(name, Some(cp_name.clone()), user)?;
            let lock = self.lock(name);
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (_, tree, _) = self.checkpoint_state(name)?;
            let cp = tree.find(name, &cp_name)?;
            let vm_dir = self.home.vm_dir(name);
            Source {
                config: VmConfig {
                    vm: cp.config.clone(),
                    ..self.home.load(name)?
                },
                disks: cp.layers.clone(),
                memory: cp.memory.then(|| memory_files(&vm_dir, &cp.id)),
            }
        } else {
            let lock = self.lock(name);
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (c, st) = self.current_locked(name)?;
            if !matches!(st.state, VmState::Off | VmState::Crashed | VmState::Saved) {
                return Err(busy(name, st.state, "export it"));
            }
            if super::undo::kept(&c) {
                return Err(HostError::conflict(format!(
                    "VM '{name}' has kept undo disks: commit or discard them first (`strata vm commit-undo|discard-undo {name}`)"
                )));
            }
            let memory =
                (st.state == VmState::Saved).then(|| saved::saved_files(&self.home.vm_dir(name)));
            Source {
                disks: c.vm.disks.iter().map(|d| d.path.clone()).collect(),
                config: c,
                memory,
            }
        };
        let written = self.write_export(name, &dir, &source);
        if through_checkpoint {
            let _ = self.delete_checkpoint(name, &cp_name, false, user);
        }
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.events.log(
            Code::VmChanged,
            Some(name),
            user,
            &format!(
                "exported to {}{}",
                req.dir,
                if through_checkpoint {
                    " (running: through a checkpoint)"
                } else {
                    ""
                }
            ),
        );
        Ok(())
    }

    fn write_export(&self, name: &str, dir: &Path, src: &Source) -> Result<(), HostError> {
        let disks = dir.join("disks");
        std::fs::create_dir_all(&disks).map_err(|e| HostError::io(&disks, "create", e))?;
        let mut config = src.config.clone();
        for (i, (d, layer)) in config.vm.disks.iter_mut().zip(&src.disks).enumerate() {
            let stem = Path::new(&d.path)
                .file_stem()
                .map_or("disk".into(), |s| s.to_string_lossy().to_string());
            let rel = format!("disks/{i}-{stem}.vhd");
            strata_vhd::ops::merge::merge_to(
                Path::new(layer),
                &dir.join(&rel),
                strata_vhd::ops::convert::dynamic(),
                &strata_vhd::ops::progress::Silent,
            )
            .map_err(|e| HostError::conflict(format!("disk '{layer}': {e}")))?;
            d.path = rel;
        }
        let text = toml::to_string_pretty(&config)
            .map_err(|e| HostError::internal(format!("cannot encode the settings: {e}")))?;
        crate::store::write_atomic(&dir.join("vm.toml"), text.as_bytes())?;
        if let Some((image, meta)) = &src.memory {
            copy(image, &dir.join("saved.state"))?;
            copy(meta, &dir.join("saved.json"))?;
        }
        let vm_dir = self.home.vm_dir(name);
        let vars = crate::qemu::firmware::vars_file(&vm_dir);
        if vars.exists() {
            copy(&vars, &dir.join("uefi-vars.fd"))?;
        }
        let tpm = vm_dir.join("tpm");
        if tpm.is_dir() {
            std::fs::create_dir_all(dir.join("tpm"))
                .map_err(|e| HostError::io(dir, "create", e))?;
            for f in files_under(&tpm) {
                copy(&tpm.join(&f), &dir.join("tpm").join(&f))?;
            }
        }
        let mut files = Vec::new();
        for rel in files_under(dir) {
            let (size, sha256) = sha256(&dir.join(&rel))?;
            files.push(Entry {
                path: rel,
                size,
                sha256,
            });
        }
        let m = Manifest {
            schema: SCHEMA,
            vm: name.to_string(),
            files,
        };
        let text = serde_json::to_vec_pretty(&m)
            .map_err(|e| HostError::internal(format!("cannot encode the manifest: {e}")))?;
        crate::store::write_atomic(&dir.join("manifest.json"), &text)
    }

    /// `vm import DIR`: checks the export, then makes the VM. Returns its name.
    pub(super) fn import_vm(&self, req: &ImportVm, user: &str) -> Result<String, HostError> {
        let dir = PathBuf::from(&req.dir);
        let m = verify(&dir)?;
        let text = std::fs::read_to_string(dir.join("vm.toml"))
            .map_err(|e| HostError::io(&dir.join("vm.toml"), "read", e))?;
        let exported: VmConfig = toml::from_str(&text)
            .map_err(|e| HostError::corrupt(format!("{}: {e}", dir.join("vm.toml").display())))?;
        let name = req.name.clone().unwrap_or(m.vm);
        super::validate::name(&name)?;
        let vm_dir = self.home.vm_dir(&name);
        if vm_dir.join("vm.toml").exists() {
            return Err(HostError::conflict(format!(
                "a VM named '{name}' already exists"
            )));
        }
        let fresh = !req.in_place || req.new_id;
        let mut spec = exported.vm.clone();
        spec.name.clone_from(&name);
        let made = self.import_disks(&dir, &vm_dir, &mut spec, req.in_place);
        if fresh {
            spec.nics.iter_mut().for_each(|n| n.mac = None);
        }
        let id = (!fresh).then(|| exported.id.clone());
        let created = made.and_then(|()| self.create_with_id(spec, id, user));
        if let Err(e) = created {
            if !vm_dir.join("vm.toml").exists() {
                let _ = std::fs::remove_dir_all(&vm_dir);
            }
            return Err(e);
        }
        // A saved state holds the guest's old MACs: with new ones, the VM starts afresh.
        let keep_memory = !fresh || exported.vm.nics.is_empty();
        if let Err(e) = self.import_state(&dir, &name, keep_memory) {
            // Not half made: the VM goes again (with its copied disks; in place, the export's stay).
            let _ = self.delete(&name, false, user);
            let _ = std::fs::remove_dir_all(&vm_dir);
            return Err(e);
        }
        self.events.log(
            Code::VmCreated,
            Some(&name),
            user,
            &format!(
                "imported from {}{}",
                req.dir,
                if req.in_place {
                    " (disks in place)"
                } else {
                    ""
                }
            ),
        );
        Ok(name)
    }

    /// Copies the export's disks into the VM's folder (or uses them in place) and points `spec` at them.
    fn import_disks(
        &self,
        dir: &Path,
        vm_dir: &Path,
        spec: &mut strata_api::CreateVm,
        in_place: bool,
    ) -> Result<(), HostError> {
        let disks = vm_dir.join("disks");
        if !in_place {
            std::fs::create_dir_all(&disks).map_err(|e| HostError::io(&disks, "create", e))?;
        }
        for d in &mut spec.disks {
            let rel = Path::new(&d.path);
            if rel.is_absolute() || d.path.contains("..") {
                return Err(HostError::invalid(format!(
                    "export '{}': vm.toml names disk '{}' outside the folder",
                    dir.display(),
                    d.path
                )));
            }
            let from = dir.join(rel);
            let to = if in_place {
                from.clone()
            } else {
                let to = disks.join(from.file_name().unwrap_or_default());
                copy(&from, &to)?;
                to
            };
            d.path = to.display().to_string();
        }
        Ok(())
    }

    /// The saved state, UEFI variables and TPM state of an export, into the new VM's folder.
    fn import_state(&self, dir: &Path, name: &str, memory: bool) -> Result<(), HostError> {
        let vm_dir = self.home.vm_dir(name);
        if dir.join("uefi-vars.fd").exists() {
            copy(
                &dir.join("uefi-vars.fd"),
                &crate::qemu::firmware::vars_file(&vm_dir),
            )?;
        }
        if dir.join("tpm").is_dir() {
            for f in files_under(&dir.join("tpm")) {
                let to = vm_dir.join("tpm").join(&f);
                if let Some(p) = to.parent() {
                    std::fs::create_dir_all(p).map_err(|e| HostError::io(p, "create", e))?;
                }
                copy(&dir.join("tpm").join(&f), &to)?;
            }
        }
        if !memory || !dir.join("saved.state").exists() {
            return Ok(());
        }
        let c = self.home.load(name)?;
        let paths: Vec<String> = c.vm.disks.iter().map(|d| d.path.clone()).collect();
        super::checkpoints::install_saved_state(
            &vm_dir,
            &dir.join("saved.state"),
            &dir.join("saved.json"),
            &paths,
        )
    }
}

/// Reads and checks an export's manifest: every file there with its size and SHA-256, and no
/// other file; the first problem is named.
fn verify(dir: &Path) -> Result<Manifest, HostError> {
    let damaged = |what: String| {
        HostError::invalid(format!(
            "export '{}' is damaged or incomplete: {what}",
            dir.display()
        ))
    };
    let text = std::fs::read(dir.join("manifest.json")).map_err(|_| {
        damaged("manifest.json is missing (an export is complete only once it is written)".into())
    })?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| damaged(format!("manifest.json: {e}")))?;
    if m.schema != SCHEMA {
        return Err(damaged(format!(
            "manifest.json: schema {} (this Strata reads {SCHEMA})",
            m.schema
        )));
    }
    for f in &m.files {
        if f.path.contains("..") || f.path.starts_with('/') {
            return Err(damaged(format!(
                "manifest.json names '{}' outside the folder",
                f.path
            )));
        }
        let p = dir.join(&f.path);
        if !p.is_file() {
            return Err(damaged(format!("{} is missing", f.path)));
        }
        let (size, sha) = sha256(&p)?;
        if size != f.size {
            return Err(damaged(format!(
                "{} has {size} bytes, the manifest says {}",
                f.path, f.size
            )));
        }
        if sha != f.sha256 {
            return Err(damaged(format!(
                "{}: its SHA-256 differs from the manifest's",
                f.path
            )));
        }
    }
    if !m.files.iter().any(|f| f.path == "vm.toml") {
        return Err(damaged("the manifest lists no vm.toml".into()));
    }
    if let Some(extra) = files_under(dir)
        .into_iter()
        .find(|f| f != "manifest.json" && !m.files.iter().any(|e| &e.path == f))
    {
        return Err(damaged(format!("{extra} is not in the manifest")));
    }
    Ok(m)
}
