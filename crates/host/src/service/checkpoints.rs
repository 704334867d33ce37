//! `strata checkpoint …`: a VM's checkpoints, their tree and their files (`crate::checkpoint`).
//!
//! Order of writes, so that a crash at any point loses nothing: new layers first, then the VM's
//! settings (which name the layers the VM writes), then the tree; files nothing references any
//! more go last, and [`sweep`](crate::checkpoint::layers::sweep) removes what a crash left. For
//! a running VM the service records the request (`checkpoints/pending.json`) before the worker
//! switches the disks, so a service that dies in between still finds the layers the VM writes.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_api::{CheckpointInfo, PendingMerge, VmState};

use super::lifecycle::busy;
use super::{Command, Reply, Service};
use crate::checkpoint::layers::{self, memory_files};
use crate::checkpoint::{Checkpoint, Tree, MAX_CHECKPOINTS};
use crate::error::HostError;
use crate::events::Code;
use crate::status::{self, Status};
use crate::store::VmConfig;
use crate::worker::{self, saved, Verb};

/// A running VM's checkpoint between the request to its worker and the tree.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending {
    checkpoint: Checkpoint,
    /// The new layer of each disk.
    children: Vec<String>,
}

fn pending_path(dir: &Path) -> std::path::PathBuf {
    layers::layer_dir(dir).join("pending.json")
}

impl Service {
    /// The VM's settings and tree, with whatever an interrupted operation left finished first
    /// (a running checkpoint's switch, a merge) and unreferenced files swept. Call under the
    /// VM's lock.
    pub(super) fn checkpoint_state(
        &self,
        name: &str,
    ) -> Result<(VmConfig, Tree, Status), HostError> {
        self.checkpoint_state_with(name, false)
    }

    /// As [`Self::checkpoint_state`]; `settle` finishes a running checkpoint's record even
    /// while the VM runs (its worker has answered). Otherwise a record younger than the
    /// worker's time limit on a running VM is left alone: the worker may still be switching.
    fn checkpoint_state_with(
        &self,
        name: &str,
        settle: bool,
    ) -> Result<(VmConfig, Tree, Status), HostError> {
        let (mut c, st) = self.current_locked(name)?;
        let dir = self.home.vm_dir(name);
        let mut tree = Tree::load(&dir)?;
        let pending = pending_path(&dir);
        let young = std::fs::metadata(&pending)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < crate::qmp::MIGRATION_LIMIT + Duration::from_secs(120));
        let in_flight = st.state.is_active() && young && !settle;
        if let (Ok(text), false) = (std::fs::read(&pending), in_flight) {
            if let Ok(p) = serde_json::from_slice::<Pending>(&text) {
                self.finish_pending(&dir, &mut c, &mut tree, p)?;
            }
            let _ = std::fs::remove_file(&pending);
        }
        let save = |c: &VmConfig, t: &Tree| self.home.save(c).and_then(|()| t.save(&dir));
        if layers::recover(&dir, &mut c, &mut tree, &save)? {
            self.events.log(
                Code::MergeFinished,
                Some(name),
                "system",
                "an interrupted merge was finished",
            );
        }
        layers::sweep(&dir, &c, &tree);
        Ok((c, tree, st))
    }

    /// Applies a running checkpoint's outcome: each disk whose new layer exists writes there;
    /// the checkpoint is recorded when every disk switched.
    fn finish_pending(
        &self,
        dir: &Path,
        c: &mut VmConfig,
        tree: &mut Tree,
        p: Pending,
    ) -> Result<(), HostError> {
        let mut all = true;
        for d in &mut c.vm.disks {
            // Matched by the layer it had, not by position.
            let child = (p.checkpoint.layers.iter())
                .position(|l| *l == d.path)
                .and_then(|i| p.children.get(i));
            match child {
                Some(child) if Path::new(child).exists() => d.path.clone_from(child),
                _ => all = false,
            }
        }
        self.home.save(c)?;
        if all && tree.get(&p.checkpoint.id).is_none() {
            tree.current = Some(p.checkpoint.id.clone());
            tree.checkpoints.push(p.checkpoint);
            tree.save(dir)?;
        }
        Ok(())
    }

    /// Carries out a checkpoint command; the reply is the VM's checkpoints afterwards.
    pub(super) fn checkpoint_command(&self, cmd: Command, user: &str) -> Result<Reply, HostError> {
        let name = match cmd {
            Command::Checkpoints(name) => name,
            Command::CreateCheckpoint(name, cp) => {
                self.create_checkpoint(&name, cp, user)?;
                name
            }
            Command::ApplyCheckpoint(name, cp, force) => {
                self.apply_checkpoint(&name, cp.as_deref(), force, user)?;
                name
            }
            Command::RenameCheckpoint(name, cp, new) => {
                self.rename_checkpoint(&name, &cp, &new, user)?;
                name
            }
            Command::DeleteCheckpoint(name, cp, subtree) => {
                self.delete_checkpoint(&name, &cp, subtree, user)?;
                name
            }
            _ => return Err(HostError::internal("not a checkpoint command")),
        };
        self.checkpoints(&name).map(Reply::Checkpoints)
    }

    /// How many checkpoints VM `name` has and the merges it waits for (for `vm show`).
    pub(super) fn checkpoint_summary(&self, name: &str, c: &VmConfig) -> (u32, Vec<PendingMerge>) {
        let dir = self.home.vm_dir(name);
        let tree = Tree::load(&dir).unwrap_or_default();
        let count = u32::try_from(tree.visible().count()).unwrap_or(u32::MAX);
        (count, layers::pending(&dir, c, &tree))
    }

    pub(super) fn checkpoints(&self, name: &str) -> Result<Vec<CheckpointInfo>, HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.checkpoint_state(name)?.1.list())
    }

    pub(super) fn create_checkpoint(
        &self,
        name: &str,
        cp_name: Option<String>,
        user: &str,
    ) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (mut c, mut tree, st) = self.checkpoint_state(name)?;
        if c.vm.undo_disks {
            return Err(HostError::conflict(format!(
                "VM '{name}' has undo disks: undo disks and checkpoints do not mix; turn them off first (`strata vm set {name} --undo-disks off`)"
            )));
        }
        if c.vm.template {
            return Err(HostError::conflict(format!(
                "VM '{name}' is a template: its disks are its linked clones' parents and never change; clone it instead"
            )));
        }
        if tree.visible().count() >= MAX_CHECKPOINTS {
            return Err(HostError::conflict(format!(
                "VM '{name}' has {MAX_CHECKPOINTS} checkpoints, the most it keeps: delete some first"
            )));
        }
        let now = crate::events::now();
        let cp_name = cp_name.unwrap_or_else(|| crate::checkpoint::tree::default_name(name, &now));
        tree.check_name(name, &cp_name, None)?;
        let dir = self.home.vm_dir(name);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let old: Vec<String> = c.vm.disks.iter().map(|d| d.path.clone()).collect();
        let mut cp = Checkpoint {
            id: id.clone(),
            name: cp_name.clone(),
            parent: tree.current.clone(),
            created: now,
            layers: old.clone(),
            config: c.vm.clone(),
            memory: false,
            hidden: false,
        };
        match st.state {
            VmState::Off | VmState::Crashed => {
                let children = layers::make_children(&dir, &old)?;
                set_paths(&mut c, &children);
                self.home.save(&c)?;
            }
            VmState::Saved => {
                let children = layers::make_children(&dir, &old)?;
                copy_saved(&dir, &id)?;
                cp.memory = true;
                set_paths(&mut c, &children);
                self.home.save(&c)?;
            }
            VmState::Running | VmState::Paused => {
                cp.memory = self.qemu.save_state_problem().is_none();
                let taken = self.checkpoint_running(&dir, &c, &cp, user);
                // The tree and settings are written by the pending record's finish (also
                // after a failure: the disks that switched keep their new layer).
                self.checkpoint_state_with(name, true)?;
                taken?;
                return self.log_created(name, &cp_name, cp.memory, user);
            }
            s => return Err(busy(name, s, "take a checkpoint")),
        }
        tree.current = Some(id);
        tree.checkpoints.push(cp);
        tree.save(&dir)?;
        self.log_created(name, &cp_name, st.state == VmState::Saved, user)
    }

    fn log_created(&self, name: &str, cp: &str, memory: bool, user: &str) -> Result<(), HostError> {
        let what = if memory {
            "with its memory"
        } else {
            "disks only"
        };
        self.events.log(
            Code::CheckpointCreated,
            Some(name),
            user,
            &format!("checkpoint '{cp}' taken ({what})"),
        );
        Ok(())
    }

    /// Asks the worker to switch every disk to a new layer (and write the memory), recording the
    /// request first.
    fn checkpoint_running(
        &self,
        dir: &Path,
        c: &VmConfig,
        cp: &Checkpoint,
        user: &str,
    ) -> Result<(), HostError> {
        let ldir = layers::layer_dir(dir);
        std::fs::create_dir_all(&ldir).map_err(|e| HostError::io(&ldir, "create", e))?;
        let children: Vec<String> = cp
            .layers
            .iter()
            .map(|l| layers::new_layer_path(dir, l).display().to_string())
            .collect();
        let pending = Pending {
            checkpoint: cp.clone(),
            children: children.clone(),
        };
        let text = serde_json::to_vec_pretty(&pending)
            .map_err(|e| HostError::internal(format!("cannot encode a checkpoint: {e}")))?;
        crate::store::write_atomic(&pending_path(dir), &text)?;
        let memory = cp
            .memory
            .then(|| memory_files(dir, &cp.id).0.display().to_string());
        let verb = Verb::Checkpoint {
            switches: cp.layers.iter().cloned().zip(children).collect(),
            memory,
        };
        let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
        let limit = crate::qmp::MIGRATION_LIMIT + Duration::from_secs(60);
        let result = worker::request(&socket, user, verb, limit).map(drop);
        if let Err(e) = &result {
            // The disks that switched keep their new layer (the pending record's finish sees
            // which); the checkpoint is recorded only if every disk switched.
            self.events.log(
                Code::VmRequestFailed,
                Some(&c.vm.name),
                user,
                &format!("checkpoint '{}' failed: {e}", cp.name),
            );
        }
        result
    }

    pub(super) fn rename_checkpoint(
        &self,
        name: &str,
        key: &str,
        new_name: &str,
        user: &str,
    ) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_, mut tree, _) = self.checkpoint_state(name)?;
        let id = tree.find(name, key)?.id.clone();
        tree.check_name(name, new_name, Some(&id))?;
        let cp = tree
            .checkpoints
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| HostError::internal("a checkpoint vanished"))?;
        let old = std::mem::replace(&mut cp.name, new_name.to_string());
        tree.save(&self.home.vm_dir(name))?;
        self.events.log(
            Code::CheckpointRenamed,
            Some(name),
            user,
            &format!("checkpoint '{old}' renamed '{new_name}'"),
        );
        Ok(())
    }

    /// Applies checkpoint `key` (none: the one Now hangs under, `revert`): the VM's settings
    /// become the checkpoint's, each disk a new layer over the checkpoint's, the current state
    /// is discarded; with memory the VM is left saved, else off.
    pub(super) fn apply_checkpoint(
        &self,
        name: &str,
        key: Option<&str>,
        force: bool,
        user: &str,
    ) -> Result<(), HostError> {
        let state = self.current(name)?.1.state;
        if matches!(state, VmState::Running | VmState::Paused) {
            if !force {
                return Err(HostError::conflict(format!(
                    "VM '{name}' is {}: applying a checkpoint turns it off and discards its current state: take a checkpoint first if you need it, then apply with --force",
                    state.as_str()
                )));
            }
            self.control(name, Verb::TurnOff, user)?;
        }
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (mut c, mut tree, st) = self.checkpoint_state(name)?;
        if !matches!(st.state, VmState::Off | VmState::Crashed | VmState::Saved) {
            return Err(busy(name, st.state, "apply a checkpoint"));
        }
        let cp = match key {
            Some(k) => tree.find(name, k)?.clone(),
            None => tree.current_visible().cloned().ok_or_else(|| {
                HostError::not_found(format!("VM '{name}' has no checkpoint to revert to"))
            })?,
        };
        let dir = self.home.vm_dir(name);
        let children = layers::make_children(&dir, &cp.layers)?;
        let before = c.vm.clone();
        c.vm = cp.config.clone();
        c.vm.name = before.name.clone();
        set_paths(&mut c, &children);
        saved::remove(&dir);
        self.home.save(&c)?;
        tree.current = Some(cp.id.clone());
        tree.save(&dir)?;
        // Now's old layers are referenced by nothing any more.
        layers::sweep(&dir, &c, &tree);
        if cp.memory {
            let (image, meta) = memory_files(&dir, &cp.id);
            install_saved_state(&dir, &image, &meta, &children)?;
        } else {
            let mut st = st;
            st.state = VmState::Off;
            status::write(&dir, &st)?;
        }
        if before.nics != c.vm.nics {
            self.firewall_after_change(name, user);
        }
        self.events.log(
            Code::CheckpointApplied,
            Some(name),
            user,
            &format!(
                "checkpoint '{}' applied: the VM is {}",
                cp.name,
                if cp.memory {
                    "saved, ready to resume there"
                } else {
                    "off"
                }
            ),
        );
        Ok(())
    }

    /// Deletes checkpoint `key` (and with `subtree` every one under it). The VM keeps its
    /// state; the layers are merged into their neighbours when nothing holds them (at once
    /// for a VM that is off, else when it is).
    pub(super) fn delete_checkpoint(
        &self,
        name: &str,
        key: &str,
        subtree: bool,
        user: &str,
    ) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_, mut tree, _) = self.checkpoint_state(name)?;
        let cp = tree.find(name, key)?.clone();
        let ids = if subtree {
            tree.subtree(&cp.id)
        } else {
            vec![cp.id.clone()]
        };
        for c in tree.checkpoints.iter_mut().filter(|c| ids.contains(&c.id)) {
            c.hidden = true;
        }
        tree.save(&self.home.vm_dir(name))?;
        let n = ids.len();
        self.events.log(
            Code::CheckpointDeleted,
            Some(name),
            user,
            &format!(
                "checkpoint '{}' deleted{}",
                cp.name,
                if subtree {
                    format!(" with its subtree ({n})")
                } else {
                    String::new()
                }
            ),
        );
        self.merge_locked(name, true);
        Ok(())
    }

    /// Starts the thread that runs waiting merges once their VM lets go of the files (every
    /// 5 s; a VM being worked on is skipped until the next pass).
    pub fn watch_merges(self: &std::sync::Arc<Self>) {
        let svc = std::sync::Arc::clone(self);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            for name in svc.home.names() {
                let dir = svc.home.vm_dir(&name);
                let waiting =
                    Tree::load(&dir).is_ok_and(|t| t.checkpoints.iter().any(|c| c.hidden));
                if !waiting {
                    continue;
                }
                let lock = svc.lock(&name);
                let Ok(_g) = lock.try_lock() else {
                    continue;
                };
                svc.merge_locked(&name, false);
            }
        });
    }

    /// Runs the merges a VM's deletions left, as far as its state allows (call under the VM's
    /// lock). Failures are logged; the chain reads as before and the next pass tries again.
    pub(super) fn merge_locked(&self, name: &str, announce: bool) {
        let Ok((mut c, mut tree, st)) = self.checkpoint_state(name) else {
            return;
        };
        if !tree.checkpoints.iter().any(|c| c.hidden) {
            return;
        }
        let dir = self.home.vm_dir(name);
        let held = held_files(&c, &tree, st.state);
        let free = |f: &str| !held.iter().any(|h| h == f);
        let save = |c: &VmConfig, t: &Tree| self.home.save(c).and_then(|()| t.save(&dir));
        let before = tree.checkpoints.len();
        match layers::collapse(&dir, &mut c, &mut tree, &free, &save) {
            Ok(waiting) => {
                let done = before - tree.checkpoints.len();
                if done > 0 {
                    self.events.log(
                        Code::MergeFinished,
                        Some(name),
                        "system",
                        &format!("{done} deleted checkpoint layer(s) merged away"),
                    );
                }
                if let Some(j) = waiting.first().filter(|_| announce) {
                    let first = j.pairs.first().map(|p| p.0.clone()).unwrap_or_default();
                    self.events.log(
                        Code::MergeStarted,
                        Some(name),
                        "system",
                        &format!("{} merge(s) wait until the VM is off (its worker holds the files), first: {first}", waiting.len()),
                    );
                }
            }
            Err(e) => self.events.log(
                Code::MergeFailed,
                Some(name),
                "system",
                &format!(
                    "a checkpoint merge failed (the disks read as before; it is tried again): {e}"
                ),
            ),
        }
    }
}

/// The files a VM's state holds: a running VM's whole chain (Now's layers and those of the
/// checkpoints above it); a saved VM's Now layers (its saved state names them); nothing when
/// it is off.
fn held_files(c: &VmConfig, tree: &Tree, state: VmState) -> Vec<String> {
    let now: Vec<String> = c.vm.disks.iter().map(|d| d.path.clone()).collect();
    match state {
        VmState::Off | VmState::Crashed => Vec::new(),
        VmState::Saved => now,
        _ => {
            let mut held = now;
            let mut at = tree.current.clone();
            while let Some(id) = at {
                let Some(cp) = tree.get(&id) else { break };
                held.extend(cp.layers.iter().cloned());
                at = cp.parent.clone();
            }
            held
        }
    }
}

/// Points the VM's disks at `paths` (one per disk, in order).
fn set_paths(c: &mut VmConfig, paths: &[String]) {
    for (d, p) in c.vm.disks.iter_mut().zip(paths) {
        d.path.clone_from(p);
    }
}

/// Copies a saved VM's memory state to checkpoint `id`'s.
fn copy_saved(dir: &Path, id: &str) -> Result<(), HostError> {
    let (image, meta) = saved::saved_files(dir);
    let (to_image, to_meta) = memory_files(dir, id);
    for (from, to) in [(&image, &to_image), (&meta, &to_meta)] {
        let tmp = to.with_extension("partial");
        std::fs::copy(from, &tmp).map_err(|e| HostError::io(from, "copy", e))?;
        std::fs::rename(&tmp, to).map_err(|e| HostError::io(to, "create", e))?;
    }
    Ok(())
}

/// Makes a memory state (`image` + its metadata `meta`, from a checkpoint or an export) the
/// saved state of the VM in `dir`, with the prints of its disks `disks`, and records the VM as
/// saved.
pub(super) fn install_saved_state(
    dir: &Path,
    image: &Path,
    meta: &Path,
    disks: &[String],
) -> Result<(), HostError> {
    let (to_image, to_meta) = saved::saved_files(dir);
    let tmp = to_image.with_extension("partial");
    std::fs::copy(image, &tmp).map_err(|e| HostError::io(image, "copy", e))?;
    std::fs::rename(&tmp, &to_image).map_err(|e| HostError::io(&to_image, "create", e))?;
    let text = std::fs::read(meta).map_err(|e| HostError::io(meta, "read", e))?;
    let mut m: worker::SavedMeta = serde_json::from_slice(&text)
        .map_err(|e| HostError::corrupt(format!("{}: {e}", meta.display())))?;
    m.disks = disks
        .iter()
        .filter_map(|p| worker::DiskPrint::of(p).ok())
        .collect();
    let text = serde_json::to_vec_pretty(&m)
        .map_err(|e| HostError::internal(format!("cannot encode a saved state: {e}")))?;
    crate::store::write_atomic(&to_meta, &text)?;
    let mut st = status::read(dir).unwrap_or_else(|_| Status::off());
    st.state = VmState::Saved;
    status::write(dir, &st)
}
