//! The data folder (`$STRATA_HOME`): one folder per VM holding its configuration file `vm.toml`
//! (human-readable, with a schema version), its status, saved state and logs; the event log; and
//! the Unix sockets of running VMs under `run/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_api::CreateVm;

use crate::error::HostError;

/// The configuration file's schema version this build writes and reads.
pub const SCHEMA: u32 = 1;

/// Longest path a Unix socket can have (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A VM's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Schema version ([`SCHEMA`]).
    pub schema: u32,
    /// The VM's unique id, fixed at creation.
    pub id: String,
    /// The settings; every NIC has its MAC.
    pub vm: CreateVm,
}

/// The layout of the data folder.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `root` (created if missing).
    pub fn new(root: &Path) -> Result<Self, HostError> {
        std::fs::create_dir_all(root.join("vms"))
            .and_then(|()| std::fs::create_dir_all(root.join("run")))
            .map_err(|e| HostError::io(root, "create the data folder", e))?;
        let root = std::fs::canonicalize(root).map_err(|e| HostError::io(root, "open", e))?;
        if root.as_os_str().to_string_lossy().contains(',') {
            return Err(HostError::invalid(format!(
                "{}: the data folder's path has a comma, which QEMU's option syntax cannot take in its socket and firmware paths: choose another STRATA_HOME",
                root.display()
            )));
        }
        let home = Self { root };
        let longest = home.run_dir("0123456789abcdef").join("console.sock");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(HostError::invalid(format!(
                "{}: the data folder's path is too long for the VMs' Unix sockets ({} bytes at most): choose a shorter STRATA_HOME",
                home.root.display(),
                MAX_SOCKET_PATH - (longest.as_os_str().len() - home.root.as_os_str().len())
            )));
        }
        Ok(home)
    }

    /// The data folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The event log.
    pub fn events(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }

    /// The API's Unix socket.
    pub fn api_socket(&self) -> PathBuf {
        self.root.join("api.sock")
    }

    /// A VM's folder.
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.root.join("vms").join(name)
    }

    /// A running VM's socket folder (short, for `sun_path`).
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("run").join(id.get(..16).unwrap_or(id))
    }

    /// The names of all VMs, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("vms"))
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                e.path()
                    .join("vm.toml")
                    .exists()
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
            .collect();
        names.sort();
        names
    }

    /// Reads a VM's configuration.
    pub fn load(&self, name: &str) -> Result<VmConfig, HostError> {
        let path = self.vm_dir(name).join("vm.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HostError::not_found(format!("no VM named '{name}'")))
            }
            Err(e) => return Err(HostError::io(&path, "read", e)),
        };
        let config: VmConfig = toml::from_str(&text).map_err(|e| {
            HostError::corrupt(format!(
                "{}: not a valid VM configuration: {e}",
                path.display()
            ))
        })?;
        let id_ok = config.id.len() == 32 && config.id.bytes().all(|b| b.is_ascii_hexdigit());
        if !id_ok || config.vm.name != name {
            return Err(HostError::corrupt(format!(
                "{}: the id must be 32 hex digits and the name the folder's ('{name}'): was the folder copied or renamed by hand? Give it back its name, or delete it",
                path.display()
            )));
        }
        if config.schema != SCHEMA {
            return Err(HostError::corrupt(format!(
                "{}: schema version {} is not supported by this Strata (it reads version {SCHEMA})",
                path.display(),
                config.schema
            )));
        }
        Ok(config)
    }

    /// Writes a VM's configuration (atomically: temporary file, fsync, rename).
    pub fn save(&self, config: &VmConfig) -> Result<(), HostError> {
        let dir = self.vm_dir(&config.vm.name);
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io(&dir, "create", e))?;
        let text = toml::to_string_pretty(config)
            .map_err(|e| HostError::internal(format!("cannot write the configuration: {e}")))?;
        let text = format!(
            "# Strata virtual machine '{}'. Edit with `strata vm set` while the service runs.\n{text}",
            config.vm.name
        );
        write_atomic(&dir.join("vm.toml"), text.as_bytes())
    }
}

/// Writes `path` through a temporary file in the same folder, fsynced, then renamed over it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), HostError> {
    use std::io::Write;
    // A name of its own per writer: the service and a worker may write one file at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.{seq}.partial", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        HostError::io(path, "write", e)
    })
}
