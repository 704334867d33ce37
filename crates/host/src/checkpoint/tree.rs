//! The checkpoint tree of one VM (`vms/NAME/checkpoints.json`, written atomically).
//!
//! Each checkpoint keeps, per disk, the layer that was active when it was taken (frozen from
//! then on: only its children are written) and the VM's settings then. "Now" (the layers the VM
//! writes) hangs under `current`. A checkpoint's layer has the layer of its parent checkpoint as
//! its parent file, so the files form the same tree as the checkpoints.
//!
//! A deleted checkpoint whose layers still carry more than one child stays as a hidden node
//! (not listed) until one of its branches goes; then its layers are merged away (`layers.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_api::{CheckpointInfo, CreateVm};

use crate::error::HostError;

/// The most checkpoints a VM keeps (listed ones; hidden nodes are not counted).
pub const MAX_CHECKPOINTS: usize = 64;

/// The file's schema.
const SCHEMA: u32 = 1;

/// One checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The checkpoint it was taken under.
    pub parent: Option<String>,
    /// When (RFC 3339).
    pub created: String,
    /// The frozen layer of each disk (in the order of `config.disks`).
    pub layers: Vec<String>,
    /// The VM's settings when it was taken (its disks are `layers`).
    pub config: CreateVm,
    /// Whether its memory and device state were kept (`<id>.state` beside the layers).
    pub memory: bool,
    /// Deleted, but its layers still carry more than one child.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// A VM's checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// The file's schema.
    pub schema: u32,
    /// Every checkpoint, hidden ones included, parents before children.
    pub checkpoints: Vec<Checkpoint>,
    /// The checkpoint "Now" hangs under (none: no checkpoint, or Now is under the root's
    /// parent, which does not exist).
    pub current: Option<String>,
}

impl Tree {
    /// The tree file of VM folder `dir` (an empty tree when there is none).
    pub fn load(dir: &Path) -> Result<Self, HostError> {
        let path = dir.join("checkpoints.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let t: Tree = serde_json::from_slice(&bytes)
                    .map_err(|e| HostError::corrupt(format!("{}: {e}", path.display())))?;
                if t.schema != SCHEMA {
                    return Err(HostError::corrupt(format!(
                        "{}: schema {} (this Strata reads {SCHEMA})",
                        path.display(),
                        t.schema
                    )));
                }
                Ok(t)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                schema: SCHEMA,
                ..Self::default()
            }),
            Err(e) => Err(HostError::io(&path, "read", e)),
        }
    }

    /// Writes the tree atomically (an empty tree removes the file).
    pub fn save(&self, dir: &Path) -> Result<(), HostError> {
        let path = dir.join("checkpoints.json");
        if self.checkpoints.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(HostError::io(&path, "delete", e))
                }
                _ => Ok(()),
            };
        }
        let text = serde_json::to_vec_pretty(&Tree {
            schema: SCHEMA,
            ..self.clone()
        })
        .map_err(|e| HostError::internal(format!("cannot encode the checkpoint tree: {e}")))?;
        crate::store::write_atomic(&path, &text)
    }

    /// The listed checkpoints (hidden ones left out).
    pub fn visible(&self) -> impl Iterator<Item = &Checkpoint> {
        self.checkpoints.iter().filter(|c| !c.hidden)
    }

    /// A listed checkpoint by id or name; the error names the VM and what was asked.
    pub fn find(&self, vm: &str, key: &str) -> Result<&Checkpoint, HostError> {
        self.visible()
            .find(|c| c.id == key)
            .or_else(|| self.visible().find(|c| c.name == key))
            .ok_or_else(|| {
                HostError::not_found(format!(
                    "VM '{vm}' has no checkpoint '{key}' (`strata checkpoint list {vm}`)"
                ))
            })
    }

    /// A checkpoint (hidden or not) by id.
    pub fn get(&self, id: &str) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.id == id)
    }

    /// The ids of `id`'s children.
    pub fn children(&self, id: &str) -> Vec<String> {
        self.checkpoints
            .iter()
            .filter(|c| c.parent.as_deref() == Some(id))
            .map(|c| c.id.clone())
            .collect()
    }

    /// `id` and every checkpoint under it, children after their parents.
    pub fn subtree(&self, id: &str) -> Vec<String> {
        let mut out = vec![id.to_string()];
        let mut i = 0;
        while i < out.len() {
            let kids = self.children(&out[i]);
            out.extend(kids);
            i += 1;
        }
        out
    }

    /// Refuses a name that is empty, too long, or taken by another listed checkpoint.
    pub fn check_name(&self, vm: &str, name: &str, except: Option<&str>) -> Result<(), HostError> {
        if name.trim().is_empty()
            || name.chars().count() > 100
            || name.chars().any(char::is_control)
        {
            return Err(HostError::invalid(format!(
                "checkpoint name '{name}': use 1 to 100 printable characters"
            )));
        }
        if self
            .visible()
            .any(|c| c.name == name && Some(c.id.as_str()) != except)
        {
            return Err(HostError::conflict(format!(
                "VM '{vm}' already has a checkpoint named '{name}'"
            )));
        }
        Ok(())
    }

    /// The listing: parents before children, the one `revert` applies marked current.
    pub fn list(&self) -> Vec<CheckpointInfo> {
        let current = self.current_visible().map(|c| c.id.clone());
        self.visible()
            .map(|c| CheckpointInfo {
                id: c.id.clone(),
                name: c.name.clone(),
                parent: self.visible_parent(c),
                created: c.created.clone(),
                has_memory: c.memory,
                current: current.as_deref() == Some(&c.id),
            })
            .collect()
    }

    /// The nearest listed checkpoint above `c` (hidden ones are skipped).
    fn visible_parent(&self, c: &Checkpoint) -> Option<String> {
        let mut at = c.parent.clone();
        while let Some(a) = at {
            match self.get(&a) {
                Some(p) if !p.hidden => return Some(a),
                Some(p) => at = p.parent.clone(),
                None => return None,
            }
        }
        None
    }

    /// The nearest listed checkpoint at or above `current` (what `revert` applies).
    pub fn current_visible(&self) -> Option<&Checkpoint> {
        let mut at = self.current.clone();
        while let Some(a) = at {
            let c = self.get(&a)?;
            if !c.hidden {
                return Some(c);
            }
            at = c.parent.clone();
        }
        None
    }
}

/// The default name: "VM - (YYYY-MM-DD - HH:MM:SS)" (UTC), as Hyper-V names them.
pub fn default_name(vm: &str, now: &str) -> String {
    // `now` is RFC 3339: 2026-12-03T16:10:00Z.
    let date = now.get(..10).unwrap_or(now);
    let time = now.get(11..19).unwrap_or("");
    format!("{vm} - ({date} - {time})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(id: &str, parent: Option<&str>, hidden: bool) -> Checkpoint {
        Checkpoint {
            id: id.into(),
            name: format!("n-{id}"),
            parent: parent.map(Into::into),
            created: "2026-12-03T16:10:00Z".into(),
            layers: Vec::new(),
            config: CreateVm::named("v"),
            memory: false,
            hidden,
        }
    }

    #[test]
    fn hidden_nodes_are_skipped_in_listings_and_revert() {
        let t = Tree {
            schema: SCHEMA,
            checkpoints: vec![
                cp("a", None, false),
                cp("b", Some("a"), true),
                cp("c", Some("b"), false),
                cp("d", Some("b"), false),
            ],
            current: Some("b".into()),
        };
        let l = t.list();
        assert_eq!(l.len(), 3);
        assert_eq!(l[1].parent.as_deref(), Some("a"), "c shows under a");
        assert_eq!(t.current_visible().unwrap().id, "a");
        assert_eq!(t.subtree("b"), ["b", "c", "d"]);
        assert!(t.find("v", "n-b").is_err(), "hidden: not found");
        assert_eq!(t.find("v", "n-c").unwrap().id, "c");
        assert!(t.check_name("v", "n-c", None).is_err());
        assert!(t.check_name("v", "n-c", Some("c")).is_ok());
        assert!(t.check_name("v", "", None).is_err());
        assert_eq!(
            default_name("web", "2026-12-03T16:10:05Z"),
            "web - (2026-12-03 - 16:10:05)"
        );
    }
}
