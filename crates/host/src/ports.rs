//! A switch-connected NIC's tap on the host: which bridge it goes on (its switch's, or the
//! bridge of its VLAN: this kernel may lack bridge VLAN filtering, so each VLAN in use is a
//! bridge of its own), whether its cable is in, and its bandwidth limit. The worker plugs taps
//! this way when QEMU has made them; the service re-plugs them when a running NIC's settings
//! change.

use strata_api::NicSpec;
use strata_net::link;

use crate::error::HostError;
use crate::service::net_error;
use crate::store::Home;

/// The bridge NIC `nic`'s tap belongs on (made when it is a VLAN's and missing); none for a NIC
/// without a switch or with its cable out.
pub(crate) fn bridge_for(home: &Home, nic: &NicSpec) -> Result<Option<String>, HostError> {
    let Some(switch) = nic.switch.as_deref().filter(|_| nic.connected) else {
        return Ok(None);
    };
    let sw = home.load_switch(switch)?;
    match nic.vlan.filter(|v| Some(*v) != sw.switch.vlan) {
        Some(v) => {
            let bridge = link::vlan_bridge_name(&sw.id, v);
            link::ensure_bridge(&bridge, None).map_err(net_error)?;
            Ok(Some(bridge))
        }
        None => Ok(Some(link::bridge_name(&sw.id))),
    }
}

/// Puts `tap` (NIC `nic`'s, made by QEMU) where its settings say: on its bridge or on none, with
/// its bandwidth limit (`had_limit`: one may be set from before, to remove; without either, `tc`
/// is not run at all).
pub(crate) fn plug(
    home: &Home,
    tap: &str,
    nic: &NicSpec,
    had_limit: bool,
) -> Result<(), HostError> {
    match bridge_for(home, nic)? {
        Some(bridge) => link::attach(tap, &bridge).map_err(net_error)?,
        None => link::detach(tap).map_err(net_error)?,
    }
    if nic.bandwidth_limit.is_none() && !had_limit {
        return Ok(());
    }
    strata_net::shape::set_bandwidth(tap, nic.bandwidth_limit).map_err(net_error)
}
