//! The files of checkpoints: new layers (differencing VHDs in `vms/NAME/checkpoints/`), the
//! merges that deleting checkpoints leaves to do, and the sweep that removes what nothing
//! references.
//!
//! # Merges
//! A hidden checkpoint H (deleted, see `tree.rs`) whose layers carry exactly one child K (a
//! checkpoint's layers, or Now's) is folded away: K's layers are merged into H's
//! (`strata_vhd::ops::merge::merge_into_parent`, which keeps the chain reading the same bytes at
//! every instant and deletes K's file last), K's own children are pointed at H's files, and K
//! takes H's files and place. A journal (`merge.journal`) is written first and removed last, so a
//! merge cut short by SIGKILL or power loss is finished by [`recover`] before the VM's files are
//! used again: every step is idempotent (a merge whose child is gone is done; re-pointing a
//! child is a rewrite of its header).
//!
//! A merge touches files a running worker holds (H's and K's layers when they are in the
//! running VM's chain); those merges wait until the VM is off.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_vhd::ops::progress::Progress;

use super::tree::Tree;
use crate::error::{ErrorKind, HostError};
use crate::store::VmConfig;

/// The folder of a VM's layers and checkpoint memory states.
pub fn layer_dir(vm_dir: &Path) -> PathBuf {
    vm_dir.join("checkpoints")
}

/// A checkpoint's memory state and its metadata (a `SavedMeta`).
pub fn memory_files(vm_dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    let d = layer_dir(vm_dir);
    (d.join(format!("{id}.state")), d.join(format!("{id}.json")))
}

/// A new layer's path for a disk whose active layer is `disk`: the base name without earlier
/// layers' suffixes, a random one, `.avhd`.
pub fn new_layer_path(vm_dir: &Path, disk: &str) -> PathBuf {
    let stem = Path::new(disk)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "disk".into());
    let mut base = stem.as_str();
    while let Some((b, suffix)) = base.rsplit_once('-') {
        if suffix.len() == 8 && suffix.bytes().all(|c| c.is_ascii_hexdigit()) {
            base = b;
        } else {
            break;
        }
    }
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    layer_dir(vm_dir).join(format!("{base}-{tag}.avhd"))
}

fn vhd_error(e: strata_vhd::VhdError) -> HostError {
    let kind = match &*e.kind {
        strata_vhd::ErrorKind::Locked { .. } => ErrorKind::Conflict,
        strata_vhd::ErrorKind::Io(_) => ErrorKind::Io,
        _ => ErrorKind::Corrupt,
    };
    HostError::new(kind, e.to_string())
}

/// Makes a new layer over each of `disks` (a VM that is off); on failure none is left.
pub fn make_children(vm_dir: &Path, disks: &[String]) -> Result<Vec<String>, HostError> {
    let dir = layer_dir(vm_dir);
    std::fs::create_dir_all(&dir).map_err(|e| HostError::io(&dir, "create", e))?;
    let mut made: Vec<String> = Vec::new();
    for d in disks {
        let child = new_layer_path(vm_dir, d);
        if let Err(e) = strata_vhd::create_differencing(&child, Path::new(d)) {
            for m in &made {
                let _ = std::fs::remove_file(m);
            }
            return Err(vhd_error(e));
        }
        made.push(child.display().to_string());
    }
    Ok(made)
}

/// Whether `path` is a layer Strata made (inside the VM's layer folder): only those are ever
/// deleted; a VM's own disks never are.
fn is_layer(vm_dir: &Path, path: &str) -> bool {
    Path::new(path).parent() == Some(layer_dir(vm_dir).as_path())
}

/// Every file of `path`'s chain: itself and its parents, canonical.
pub fn chain_of(path: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut at = std::fs::canonicalize(path).ok();
    while let Some(p) = at {
        if out.contains(&p) {
            break;
        }
        let next = strata_vhd::Disk::open(&p, strata_vhd::OpenOptions::alone())
            .ok()
            .and_then(|d| d.locate_parent().ok())
            .and_then(|(pp, _)| std::fs::canonicalize(pp).ok());
        out.push(p);
        at = next;
    }
    out
}

/// Deletes the layers and memory states in the layer folder that nothing needs: not the VM's
/// disks, not a checkpoint's layers or memory, and not a parent of any of those (a layer in
/// the middle of a chain is needed even when nothing names it). Does nothing while a merge or
/// a running checkpoint is in progress, or when a referenced file is missing (a moved data
/// folder: deleting then would be guessing). Returns what it deleted.
pub fn sweep(vm_dir: &Path, config: &VmConfig, tree: &Tree) -> Vec<String> {
    let dir = layer_dir(vm_dir);
    if dir.join("merge.journal").exists() || dir.join("pending.json").exists() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut named: Vec<String> = config.vm.disks.iter().map(|d| d.path.clone()).collect();
    for c in &tree.checkpoints {
        named.extend(c.layers.iter().cloned());
    }
    if named.iter().any(|f| !Path::new(f).exists()) {
        return Vec::new();
    }
    let mut used: Vec<PathBuf> = named.iter().flat_map(|f| chain_of(f)).collect();
    for c in tree.checkpoints.iter().filter(|c| c.memory) {
        let (s, m) = memory_files(vm_dir, &c.id);
        used.extend(
            [s, m]
                .into_iter()
                .filter_map(|f| std::fs::canonicalize(f).ok()),
        );
    }
    let mut gone = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let ours = [".avhd", ".state", ".json", ".partial"]
            .iter()
            .any(|x| p.display().to_string().ends_with(x));
        let needed = std::fs::canonicalize(&p).is_ok_and(|c| used.contains(&c));
        if ours && !needed && std::fs::remove_file(&p).is_ok() {
            gone.push(p.display().to_string());
        }
    }
    gone
}

/// One merge in progress, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// The hidden checkpoint whose layers receive the data.
    pub hidden: String,
    /// The checkpoint whose layers are merged in; none: Now's.
    pub child: Option<String>,
    /// Per disk: (the child's layer, the hidden checkpoint's layer).
    pub pairs: Vec<(String, String)>,
    /// Files whose parent was a child layer, with their new parent.
    pub repoint: Vec<(String, String)>,
}

fn journal_path(vm_dir: &Path) -> PathBuf {
    layer_dir(vm_dir).join("merge.journal")
}

/// The journaled merge, if one was cut short.
pub fn pending_journal(vm_dir: &Path) -> Option<Journal> {
    let text = std::fs::read(journal_path(vm_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Runs a journaled merge to its end (again, from wherever it stopped) and applies it to the
/// settings and the tree (saved by the caller). The journal goes last.
fn run(
    j: &Journal,
    config: &mut VmConfig,
    tree: &mut Tree,
    progress: &dyn Progress,
) -> Result<(), HostError> {
    for (child, _) in &j.pairs {
        if Path::new(child).exists() {
            strata_vhd::ops::merge::merge_into_parent(Path::new(child), progress)
                .map_err(vhd_error)?;
        }
    }
    for (file, parent) in &j.repoint {
        strata_vhd::ops::set_parent::set_parent(Path::new(file), Path::new(parent), true)
            .map_err(vhd_error)?;
    }
    let Some(hidden) = tree.get(&j.hidden) else {
        return Ok(()); // the settings and the tree were saved already
    };
    let hidden_parent = hidden.parent.clone();
    // Each merged layer's place goes to the file it was merged into.
    let moved = |path: &mut String| {
        if let Some((_, into)) = j.pairs.iter().find(|(c, _)| c == path) {
            path.clone_from(into);
        }
    };
    match &j.child {
        None => {
            config.vm.disks.iter_mut().for_each(|d| moved(&mut d.path));
            tree.current.clone_from(&hidden_parent);
        }
        Some(k) => {
            if let Some(c) = tree.checkpoints.iter_mut().find(|c| &c.id == k) {
                c.layers.iter_mut().for_each(moved);
                c.config.disks.iter_mut().for_each(|d| moved(&mut d.path));
                c.parent.clone_from(&hidden_parent);
            }
        }
    }
    tree.checkpoints.retain(|c| c.id != j.hidden);
    Ok(())
}

/// What `collapse` may touch: false for a file a running worker holds.
pub type Free<'a> = &'a dyn Fn(&str) -> bool;

/// Folds away hidden checkpoints whose layers carry one child (or none), as far as the files
/// allow; `save` persists the settings and tree after each step. Returns what is left waiting
/// (a running VM holds its files).
pub fn collapse(
    vm_dir: &Path,
    config: &mut VmConfig,
    tree: &mut Tree,
    free: Free<'_>,
    save: &dyn Fn(&VmConfig, &Tree) -> Result<(), HostError>,
) -> Result<Vec<Journal>, HostError> {
    let mut waiting = Vec::new();
    loop {
        let Some(step) = next_step(config, tree, free, &mut waiting) else {
            return Ok(waiting);
        };
        match step {
            Step::Drop(id) => {
                if let Some(h) = tree.get(&id) {
                    for l in h.layers.iter().filter(|l| is_layer(vm_dir, l)) {
                        let _ = std::fs::remove_file(l);
                    }
                }
                let (s, m) = memory_files(vm_dir, &id);
                let _ = std::fs::remove_file(s);
                let _ = std::fs::remove_file(m);
                tree.checkpoints.retain(|c| c.id != id);
                save(config, tree)?;
            }
            Step::Merge(j) => {
                let text = serde_json::to_vec_pretty(&j).map_err(|e| {
                    HostError::internal(format!("cannot encode a merge journal: {e}"))
                })?;
                crate::store::write_atomic(&journal_path(vm_dir), &text)?;
                run(&j, config, tree, &strata_vhd::ops::progress::Silent)?;
                save(config, tree)?;
                let _ = std::fs::remove_file(journal_path(vm_dir));
            }
        }
    }
}

enum Step {
    /// A hidden checkpoint nothing hangs under: its layers and memory go.
    Drop(String),
    /// A hidden checkpoint with one child: merge.
    Merge(Journal),
}

/// The next thing `collapse` can do; merges that must wait are added to `waiting`.
fn next_step(
    config: &VmConfig,
    tree: &Tree,
    free: Free<'_>,
    waiting: &mut Vec<Journal>,
) -> Option<Step> {
    for h in tree.checkpoints.iter().filter(|c| c.hidden) {
        let kids = tree.children(&h.id);
        let now_here = tree.current.as_deref() == Some(&h.id);
        match (kids.len(), now_here) {
            (0, false) => return Some(Step::Drop(h.id.clone())),
            (1, false) | (0, true) => {
                let child = kids.first().cloned();
                let child_layers: Vec<String> = match &child {
                    Some(k) => tree.get(k)?.layers.clone(),
                    None => config.vm.disks.iter().map(|d| d.path.clone()).collect(),
                };
                let grandchildren = below(tree, config, child.as_deref());
                // Paired by the files' own parent links, not by position: disks may have been
                // added or removed between checkpoints.
                let all_layers = child_layers.clone();
                let pairs: Vec<(String, String)> = child_layers
                    .into_iter()
                    .filter_map(|c| {
                        let p = parent_of(&c)?;
                        let h = h.layers.iter().find(|h| same_file(h, &p))?;
                        Some((c, h.clone()))
                    })
                    .collect();
                let unpaired_child = all_layers
                    .iter()
                    .any(|l| !pairs.iter().any(|(c, _)| c == l) && is_differencing(l));
                if pairs.is_empty() || unpaired_child {
                    // A layer whose parent link cannot be read or does not lead to the hidden
                    // checkpoint's: merging would orphan it. Left as it is (the files read the
                    // same); nothing is deleted.
                    continue;
                }
                let repoint: Vec<(String, String)> = grandchildren
                    .iter()
                    .flatten()
                    .filter_map(|g| {
                        let p = parent_of(g)?;
                        let (_, h) = pairs.iter().find(|(c, _)| same_file(c, &p))?;
                        Some((g.clone(), h.clone()))
                    })
                    .collect();
                let j = Journal {
                    hidden: h.id.clone(),
                    child,
                    pairs,
                    repoint,
                };
                let all_free = j
                    .pairs
                    .iter()
                    .flat_map(|(a, b)| [a, b])
                    .chain(j.repoint.iter().map(|(f, _)| f))
                    .all(|f| free(f));
                if all_free {
                    return Some(Step::Merge(j));
                }
                waiting.push(j);
            }
            _ => {}
        }
    }
    None
}

/// The merges the tree waits for, as shown: (the child's first layer, the hidden checkpoint's
/// first layer, whether a journaled merge of it is in progress).
pub fn pending(vm_dir: &Path, config: &VmConfig, tree: &Tree) -> Vec<strata_api::PendingMerge> {
    let journal = pending_journal(vm_dir);
    tree.checkpoints
        .iter()
        .filter(|h| h.hidden)
        .filter_map(|h| {
            let kids = tree.children(&h.id);
            let now_here = tree.current.as_deref() == Some(&h.id);
            let layer = match (kids.len(), now_here) {
                (1, false) => tree.get(&kids[0])?.layers.first()?.clone(),
                (0, true) => config.vm.disks.first()?.path.clone(),
                _ => return None,
            };
            let merging = journal.as_ref().is_some_and(|j| j.hidden == h.id);
            Some(strata_api::PendingMerge {
                layer,
                into: h.layers.first()?.clone(),
                state: if merging { "merging" } else { "waiting" }.into(),
            })
        })
        .collect()
}

/// The parent file of differencing disk `file` (canonical), from its own locators.
fn parent_of(file: &str) -> Option<PathBuf> {
    let d = strata_vhd::Disk::open(Path::new(file), strata_vhd::OpenOptions::alone()).ok()?;
    let (p, _) = d.locate_parent().ok()?;
    std::fs::canonicalize(p).ok()
}

/// Whether `file` is a differencing disk (or cannot be read: then treated as one, to be safe).
fn is_differencing(file: &str) -> bool {
    strata_vhd::Disk::open(Path::new(file), strata_vhd::OpenOptions::alone()).map_or(true, |d| {
        d.disk_type() == strata_vhd::DiskType::Differencing
    })
}

/// Whether `a` names the file at canonical path `b`.
fn same_file(a: &str, b: &Path) -> bool {
    std::fs::canonicalize(a).ok().as_deref() == Some(b)
}

/// The layer sets whose parent files are `child`'s layers: its child checkpoints' and Now's
/// when Now hangs under it. (For `child` = None, Now itself: nothing hangs under Now.)
fn below(tree: &Tree, config: &VmConfig, child: Option<&str>) -> Vec<Vec<String>> {
    let Some(k) = child else {
        return Vec::new();
    };
    let mut out: Vec<Vec<String>> = tree
        .children(k)
        .iter()
        .filter_map(|g| tree.get(g).map(|c| c.layers.clone()))
        .collect();
    if tree.current.as_deref() == Some(k) {
        out.push(config.vm.disks.iter().map(|d| d.path.clone()).collect());
    }
    out
}

/// Finishes a merge cut short (its journal is there): before anything else uses the VM's
/// files. Returns whether there was one.
pub fn recover(
    vm_dir: &Path,
    config: &mut VmConfig,
    tree: &mut Tree,
    save: &dyn Fn(&VmConfig, &Tree) -> Result<(), HostError>,
) -> Result<bool, HostError> {
    let Some(j) = pending_journal(vm_dir) else {
        return Ok(false);
    };
    run(&j, config, tree, &strata_vhd::ops::progress::Silent)?;
    save(config, tree)?;
    let _ = std::fs::remove_file(journal_path(vm_dir));
    Ok(true)
}
