//! The lease file: the bound leases and the owners' labels of one switch, as JSON, written
//! atomically (a temporary file in the same folder, fsync, rename, fsync of the folder) after
//! every change, so a crash leaves the old file or the new one, never half of one.
//!
//! Offers and quarantined addresses are not saved: they last a minute or ten.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::mac::Mac;
use crate::error::{NetError, NetErrorKind};

/// The version written in the file; another one is refused.
const VERSION: u32 = 1;

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseFile {
    /// Always [`VERSION`].
    pub version: u32,
    /// The bound leases.
    pub leases: Vec<StoredLease>,
    /// The labels the host gave MACs ("vm/nic0"), with or without a lease.
    #[serde(default)]
    pub owners: BTreeMap<Mac, String>,
}

/// One bound lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredLease {
    /// The client's MAC.
    pub mac: Mac,
    /// Its address.
    pub ip: Ipv4Addr,
    /// When the lease ends, in seconds since the Unix epoch.
    pub expires: u64,
    /// The host name the client gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> NetError {
    NetError::new(
        NetErrorKind::Io,
        &format!("lease file {}", path.display()),
        format!("{what}: {e}"),
    )
}

/// Reads the file; a missing file is an empty table, a damaged one an error naming it.
pub(crate) fn load(path: &Path) -> Result<LeaseFile, NetError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LeaseFile {
                version: VERSION,
                ..LeaseFile::default()
            })
        }
        Err(e) => return Err(io_error(path, "cannot read it", &e)),
    };
    let damaged = |why: String| {
        NetError::new(
            NetErrorKind::Corrupt,
            &format!("lease file {}", path.display()),
            format!("damaged: {why}"),
        )
    };
    let file: LeaseFile = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if file.version != VERSION {
        return Err(damaged(format!(
            "version {} (this Strata reads version {VERSION})",
            file.version
        )));
    }
    Ok(file)
}

/// Writes the file atomically: temporary file, fsync, rename over the old one, fsync the folder.
pub(crate) fn save(path: &Path, file: &LeaseFile) -> Result<(), NetError> {
    let json = serde_json::to_vec_pretty(file)
        .map_err(|e| NetError::new(NetErrorKind::Io, "lease file", e.to_string()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io_error(
            path,
            "no file name",
            &std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, "cannot write it", &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        assert!(load(&path).unwrap().leases.is_empty());
        let mac: Mac = "52:54:00:00:00:01".parse().unwrap();
        let file = LeaseFile {
            version: VERSION,
            leases: vec![StoredLease {
                mac,
                ip: Ipv4Addr::new(10, 20, 0, 16),
                expires: 1_700_000_000,
                hostname: Some("guest".into()),
            }],
            owners: [(mac, "vm/nic0".to_string())].into(),
        };
        save(&path, &file).unwrap();
        assert_eq!(load(&path).unwrap(), file);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        for bad in [
            &b"{\"version\":1,\"leases\":[{\"mac\":\"zz\"}]}"[..],
            b"\xff\x00",
            b"{\"version\":7,\"leases\":[]}",
            b"",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = load(&path).unwrap_err();
            assert_eq!(e.kind, NetErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains("leases.json"), "{e}");
        }
    }

    #[test]
    fn a_write_into_a_missing_folder_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/leases.json");
        let e = save(&path, &LeaseFile::default()).unwrap_err();
        assert_eq!(e.kind, NetErrorKind::Io);
        assert!(e.to_string().contains("no/such/leases.json"), "{e}");
    }
}
