//! Templates and clones: `strata vm set VM --template on` makes a VM a template (it never starts;
//! its disk files become read-only, parents for linked clones); `strata vm clone SRC NEW` makes a
//! new VM with SRC's settings, new MACs and its own disks in its folder: full copies (each chain
//! flattened into one dynamic VHD), or with `--linked` differencing disks over a template's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_api::{CloneVm, VmState};

use super::lifecycle::busy;
use super::{validate, Service};
use crate::error::HostError;
use crate::events::Code;
use crate::store::VmConfig;

/// Makes a disk file read-only (a template's) or writable again.
fn set_writable(path: &str, writable: bool) -> Result<(), HostError> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|e| HostError::io(p, "read", e))?;
    let mut perm = meta.permissions();
    let mode = if writable {
        perm.mode() | 0o200
    } else {
        perm.mode() & !0o222
    };
    perm.set_mode(mode);
    std::fs::set_permissions(p, perm).map_err(|e| HostError::io(p, "change the mode of", e))
}

/// Disk file names for a new VM's folder: the source's names, made unique.
fn clone_names(c: &VmConfig) -> Vec<String> {
    let mut used = Vec::new();
    c.vm.disks
        .iter()
        .map(|d| {
            let stem = Path::new(&d.path)
                .file_stem()
                .map_or("disk".into(), |s| s.to_string_lossy().to_string());
            let mut name = format!("{stem}.vhd");
            let mut n = 1;
            while used.contains(&name) {
                name = format!("{stem}-{n}.vhd");
                n += 1;
            }
            used.push(name.clone());
            name
        })
        .collect()
}

impl Service {
    /// The VMs whose disks have one of `c`'s disks in their chain (linked clones of it).
    pub(super) fn linked_clones(&self, c: &VmConfig) -> Vec<String> {
        let mine: Vec<PathBuf> =
            c.vm.disks
                .iter()
                .filter_map(|d| std::fs::canonicalize(&d.path).ok())
                .collect();
        self.others(&c.vm.name)
            .into_iter()
            .filter(|o| {
                o.vm.disks.iter().any(|d| {
                    crate::checkpoint::layers::chain_of(&d.path)
                        .iter()
                        .skip(1)
                        .any(|f| mine.contains(f))
                })
            })
            .map(|o| o.vm.name)
            .collect()
    }

    /// Turns a VM into a template or back; called by `set` with the VM off.
    pub(super) fn set_template(&self, c: &VmConfig, on: bool) -> Result<(), HostError> {
        let name = &c.vm.name;
        if !on {
            let clones = self.linked_clones(c);
            if !clones.is_empty() {
                return Err(HostError::conflict(format!(
                    "template '{name}' has linked clones ({}): its disks are their parents and must not change; delete the clones first",
                    clones.join(", ")
                )));
            }
        } else if !crate::checkpoint::Tree::load(&self.home.vm_dir(name))?
            .checkpoints
            .is_empty()
        {
            return Err(HostError::conflict(format!(
                "VM '{name}' has checkpoints: delete them before making it a template"
            )));
        }
        for d in &c.vm.disks {
            set_writable(&d.path, !on)?;
        }
        Ok(())
    }

    /// `vm clone SRC NEW [--linked]`.
    pub(super) fn clone_vm(&self, src: &str, req: &CloneVm, user: &str) -> Result<(), HostError> {
        validate::name(&req.name)?;
        let (c, st) = self.current(src)?;
        if !matches!(st.state, VmState::Off | VmState::Crashed) && !c.vm.template {
            return Err(busy(src, st.state, "clone it (turn it off first)"));
        }
        if super::undo::kept(&c) {
            return Err(HostError::conflict(format!(
                "VM '{src}' has kept undo disks: commit or discard them first (`strata vm commit-undo|discard-undo {src}`)"
            )));
        }
        if req.linked && !c.vm.template {
            return Err(HostError::conflict(format!(
                "VM '{src}' is not a template: a linked clone's disks are children of its source's, which must never change; make it one first (`strata vm set {src} --template on`), or clone it in full"
            )));
        }
        let dir = self.home.vm_dir(&req.name);
        if dir.join("vm.toml").exists() {
            return Err(HostError::conflict(format!(
                "a VM named '{}' already exists",
                req.name
            )));
        }
        let disks_dir = dir.join("disks");
        std::fs::create_dir_all(&disks_dir).map_err(|e| HostError::io(&disks_dir, "create", e))?;
        let made = self.clone_disks(&c, &disks_dir, req.linked);
        let result = made.and_then(|paths| {
            let mut spec = c.vm.clone();
            spec.name.clone_from(&req.name);
            spec.template = false;
            for (d, p) in spec.disks.iter_mut().zip(paths) {
                d.path = p;
            }
            for n in &mut spec.nics {
                n.mac = None;
            }
            self.create(spec, user)
        });
        if let Err(e) = result {
            if !dir.join("vm.toml").exists() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
        let vars = crate::qemu::firmware::vars_file(&self.home.vm_dir(src));
        if vars.exists() {
            let _ = std::fs::copy(&vars, crate::qemu::firmware::vars_file(&dir));
        }
        self.events.log(
            Code::VmCreated,
            Some(&req.name),
            user,
            &format!(
                "cloned from '{src}' ({})",
                if req.linked {
                    "linked: differencing disks over the template's"
                } else {
                    "full copies of its disks"
                }
            ),
        );
        Ok(())
    }

    /// The new VM's disks in `dir`: children of the source's, or flattened copies.
    fn clone_disks(
        &self,
        c: &VmConfig,
        dir: &Path,
        linked: bool,
    ) -> Result<Vec<String>, HostError> {
        let names = clone_names(c);
        let mut out = Vec::new();
        for (d, name) in c.vm.disks.iter().zip(names) {
            let to = dir.join(name);
            let r = if linked {
                strata_vhd::create_differencing(&to, Path::new(&d.path))
            } else {
                strata_vhd::ops::merge::merge_to(
                    Path::new(&d.path),
                    &to,
                    strata_vhd::ops::convert::dynamic(),
                    &strata_vhd::ops::progress::Silent,
                )
            };
            r.map_err(|e| HostError::conflict(format!("disk '{}': {e}", d.path)))?;
            out.push(to.display().to_string());
        }
        Ok(out)
    }
}
