//! Integration services and a running VM's devices as the service offers them: copying a file
//! into or out of a guest through its agent (the worker does the copying, chunk by chunk), the
//! CD/DVD drive's medium, dynamic memory's target.

use strata_api::{ChangeMedia, CopyDirection, CopyFile, CopyReport, VmState};

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

impl Service {
    /// Inserts an ISO in VM `name`'s CD/DVD drive, or ejects it: through the worker while the
    /// VM runs (then saved, so the next start has it), in the settings alone while it is off.
    pub(super) fn change_media(
        &self,
        name: &str,
        media: ChangeMedia,
        user: &str,
    ) -> Result<(), HostError> {
        let lock = self.lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _d = self.define.lock().unwrap_or_else(|p| p.into_inner());
        let (mut c, st) = self.current_locked(name)?;
        // Ejecting keeps the drive (empty): the VM's hardware stays what its saved state has.
        c.vm.cdrom = Some(media.iso.clone().unwrap_or_default());
        super::validate::config(&c.vm, &self.others(name))?;
        match st.state {
            VmState::Running | VmState::Paused => {
                let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
                let verb = Verb::MediaChange {
                    iso: media.iso.clone(),
                };
                worker::request(&socket, user, verb, std::time::Duration::from_secs(60))?;
            }
            VmState::Off | VmState::Crashed => {}
            s => return Err(busy(name, s, "change its CD/DVD")),
        }
        self.home.save(&c)
    }

    /// Sets running VM `name`'s dynamic-memory target (between its minimum and its memory).
    pub(super) fn set_memory(
        &self,
        name: &str,
        target_mib: u32,
        user: &str,
    ) -> Result<(), HostError> {
        let (c, st) = self.current(name)?;
        let Some(min) = c.vm.memory_min_mib else {
            return Err(HostError::unsupported(format!(
                "VM '{name}' has no dynamic memory: set --memory-min while it is off"
            )));
        };
        let max = c.vm.memory_mib;
        if !(min..=max).contains(&target_mib) {
            return Err(HostError::invalid(format!(
                "VM '{name}': a memory target of {target_mib} MiB is outside its dynamic memory, {min} to {max} MiB"
            )));
        }
        if !matches!(st.state, VmState::Running | VmState::Paused) {
            return Err(busy(name, st.state, "change its memory"));
        }
        let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
        worker::request(
            &socket,
            user,
            Verb::Balloon { target_mib },
            std::time::Duration::from_secs(60),
        )
        .map(drop)
    }
}
