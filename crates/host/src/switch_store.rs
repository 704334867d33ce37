//! Virtual switches in the data folder: `switches/NAME.toml` (a switch's settings, with its id
//! and a schema version, written atomically) and `switches/NAME.leases.json` (its DHCP leases,
//! written by its DHCP server). The host service recreates each switch's bridge from these at
//! start, so switches survive a host reboot.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_api::CreateSwitch;

use crate::error::HostError;
use crate::store::{write_atomic, Home, SCHEMA};

/// A switch's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Schema version ([`SCHEMA`]).
    pub schema: u32,
    /// The switch's unique id, fixed at creation (its bridge's name derives from it).
    pub id: String,
    /// The settings.
    pub switch: CreateSwitch,
}

impl Home {
    /// The switches' folder.
    pub fn switches_dir(&self) -> PathBuf {
        self.root().join("switches")
    }

    fn switch_file(&self, name: &str) -> PathBuf {
        self.switches_dir().join(format!("{name}.toml"))
    }

    /// Where switch `name`'s DHCP leases are kept.
    pub fn leases_file(&self, name: &str) -> PathBuf {
        self.switches_dir().join(format!("{name}.leases.json"))
    }

    /// The names of all switches, sorted.
    pub fn switch_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.switches_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".toml").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    /// Reads a switch's file.
    pub fn load_switch(&self, name: &str) -> Result<SwitchConfig, HostError> {
        let path = self.switch_file(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HostError::not_found(format!("no switch named '{name}'")))
            }
            Err(e) => return Err(HostError::io(&path, "read", e)),
        };
        let config: SwitchConfig = toml::from_str(&text).map_err(|e| {
            HostError::corrupt(format!("{}: not a valid switch file: {e}", path.display()))
        })?;
        if config.switch.name != name || config.schema != SCHEMA {
            return Err(HostError::corrupt(format!(
                "{}: the name must be the file's ('{name}') and the schema {SCHEMA}",
                path.display()
            )));
        }
        Ok(config)
    }

    /// Writes a switch's file atomically.
    pub fn save_switch(&self, config: &SwitchConfig) -> Result<(), HostError> {
        let dir = self.switches_dir();
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io(&dir, "create", e))?;
        let text = toml::to_string_pretty(config)
            .map_err(|e| HostError::internal(format!("cannot write the switch: {e}")))?;
        let text = format!(
            "# Strata virtual switch '{}'. Change it with `strata switch` while the service runs.\n{text}",
            config.switch.name
        );
        write_atomic(&self.switch_file(&config.switch.name), text.as_bytes())
    }

    /// Removes a switch's files.
    pub fn remove_switch(&self, name: &str) -> Result<(), HostError> {
        let path = self.switch_file(name);
        std::fs::remove_file(&path).map_err(|e| HostError::io(&path, "delete", e))?;
        let _ = std::fs::remove_file(self.leases_file(name));
        Ok(())
    }
}
