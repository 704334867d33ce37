//! Integration services as the service offers them: copying a file into or out of a running
//! guest through its agent (the worker does the copying, chunk by chunk).

use strata_api::{CopyDirection, CopyFile, CopyReport, VmState};

use super::lifecycle::busy;
use super::Service;
use crate::error::HostError;
use crate::worker::{self, Verb};

impl Service {
    /// Copies a file into or out of running VM `name`'s guest through its agent (the copy runs
    /// in the worker; the VM's lock is not held, so a long copy blocks no other request).
    pub fn copy_file(&self, name: &str, c: &CopyFile, user: &str) -> Result<CopyReport, HostError> {
        let (cfg, st) = self.current(name)?;
        if st.state != VmState::Running {
            return Err(busy(name, st.state, "copy a file through its guest agent"));
        }
        let host = match c.direction {
            CopyDirection::ToGuest => &c.source,
            CopyDirection::FromGuest => &c.destination,
        };
        if !std::path::Path::new(host).is_absolute() {
            return Err(HostError::invalid(format!(
                "host path '{host}': the path must be absolute"
            )));
        }
        let verb = Verb::CopyFile {
            source: c.source.clone(),
            destination: c.destination.clone(),
            direction: c.direction,
        };
        let socket = crate::qemu::Sockets::new(&self.home.run_dir(&cfg.id)).control;
        worker::request(&socket, user, verb, std::time::Duration::from_secs(3600))?;
        let bytes = std::fs::metadata(host)
            .map_err(|e| HostError::io(std::path::Path::new(host), "read", e))?
            .len();
        Ok(CopyReport { bytes })
    }
}
