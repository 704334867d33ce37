//! Network adapters of a running VM, through QMP: hot-add (the backend, its tap on the bridge,
//! then the device at its fixed PCI slot), hot-remove (the guest must let the device go before
//! its backend is deleted), and the virtual cable (`set_link`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::protocol::Verb;
use crate::error::{ErrorKind, HostError};
use crate::qmp::Qmp;

/// How long a guest gets to let a removed adapter go (ACPI hot-plug).
const RELEASE_LIMIT: Duration = Duration::from_secs(30);

/// Carries out a NIC verb.
pub(super) fn execute(qmp: &Qmp, verb: &Verb) -> Result<(), HostError> {
    match verb {
        Verb::NicAdd {
            slot,
            model,
            mac,
            tap,
            bridge,
            up,
        } => {
            add(
                qmp,
                *slot,
                crate::qemu::nic_model(*model),
                mac,
                tap.as_deref(),
                bridge.as_deref(),
            )?;
            if !*up {
                let args = json!({ "name": format!("nic{slot}"), "up": false });
                qmp.execute("set_link", Some(args))?;
            }
            Ok(())
        }
        Verb::NicRemove { slot } => remove(qmp, *slot),
        Verb::NicLink { slot, up } => qmp
            .execute(
                "set_link",
                Some(json!({ "name": format!("nic{slot}"), "up": up })),
            )
            .map(drop),
        _ => Err(HostError::internal("not a network adapter request")),
    }
}

fn add(
    qmp: &Qmp,
    slot: u8,
    model: &str,
    mac: &str,
    tap: Option<&str>,
    bridge: Option<&str>,
) -> Result<(), HostError> {
    let netdev = format!("net{slot}");
    let backend = match tap {
        Some(t) => {
            json!({ "id": netdev, "type": "tap", "ifname": t, "script": "no", "downscript": "no" })
        }
        None => json!({ "id": netdev, "type": "user", "restrict": true }),
    };
    qmp.execute("netdev_add", Some(backend))?;
    let undo = |e: HostError| {
        let _ = qmp.execute("netdev_del", Some(json!({ "id": netdev })));
        e
    };
    if let (Some(t), Some(b)) = (tap, bridge) {
        strata_net::link::attach(t, b).map_err(|e| undo(crate::service::net_error(e)))?;
    }
    let addr = format!("{:#x}", crate::qemu::NIC_PCI_BASE + usize::from(slot));
    let device = json!({
        "driver": model, "id": format!("nic{slot}"), "netdev": netdev, "mac": mac, "addr": addr,
    });
    qmp.execute("device_add", Some(device))
        .map(drop)
        .map_err(undo)
}

fn remove(qmp: &Qmp, slot: u8) -> Result<(), HostError> {
    let id = format!("nic{slot}");
    if qmp.has_device(&id)? {
        qmp.execute("device_del", Some(json!({ "id": id })))?;
        let start = Instant::now();
        while qmp.has_device(&id)? {
            if start.elapsed() > RELEASE_LIMIT {
                return Err(HostError::new(
                    ErrorKind::Hung,
                    format!(
                        "the guest did not let network adapter {id} go within {} s (does it handle ACPI hot-plug?): it stays in the VM and in its settings; QEMU removes it if the guest lets it go later (try again then), or when the VM is turned off",
                        RELEASE_LIMIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    qmp.execute("netdev_del", Some(json!({ "id": format!("net{slot}") })))
        .map(drop)
}
