//! A running VM's devices changed through QMP: the CD/DVD drive's medium (insert, eject) and
//! dynamic memory (the virtio-balloon's target, and a thread that records what the guest has).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Shared;
use crate::error::HostError;
use crate::events::Code;

/// How often the balloon's actual size is read.
const BALLOON_EVERY: Duration = Duration::from_secs(2);

/// Inserts `iso` in the CD/DVD drive (replacing what is there), or ejects it.
pub(super) fn change_media(
    shared: &Shared,
    user: &str,
    iso: Option<&str>,
) -> Result<(), HostError> {
    if !shared.qmp.has_device("cd0")? {
        return Err(HostError::conflict(format!(
            "VM '{}' has no CD/DVD drive while it runs: give it one while it is off (`strata vm set {} --cdrom ISO`)",
            shared.name, shared.name
        )));
    }
    match iso {
        Some(path) => {
            let args = json!({
                "id": "cd0", "filename": path, "format": "raw", "read-only-mode": "read-only",
            });
            shared.qmp.execute("blockdev-change-medium", Some(args))?;
            shared.log(Code::VmChanged, user, &format!("CD/DVD: {path} inserted"));
        }
        None => {
            shared
                .qmp
                .execute("eject", Some(json!({ "id": "cd0", "force": true })))?;
            shared.log(Code::VmChanged, user, "CD/DVD ejected");
        }
    }
    Ok(())
}

/// Sets the balloon's target: the guest gives memory back down to `target_mib`, or gets it.
pub(super) fn balloon(shared: &Shared, user: &str, target_mib: u32) -> Result<(), HostError> {
    if !shared.qmp.has_device("balloon0")? {
        return Err(HostError::unsupported(format!(
            "VM '{}' has no dynamic memory: set --memory-min while it is off",
            shared.name
        )));
    }
    let bytes = u64::from(target_mib) << 20;
    shared
        .qmp
        .execute("balloon", Some(json!({ "value": bytes })))?;
    shared.set_memory_target((target_mib, user != "system"));
    shared.log(
        Code::VmChanged,
        user,
        &format!("dynamic memory: target {target_mib} MiB"),
    );
    Ok(())
}

/// The balloon device's QOM path.
const BALLOON_PATH: &str = "/machine/peripheral/balloon0";

/// What the guest reports available (`stat-available-memory` of the balloon's statistics, -1
/// until its driver has sent some), in MiB; none when the last report is older than three
/// polling intervals (a guest rebooting, a driver gone): the policy must not act on it.
fn guest_available(shared: &Shared) -> Option<u32> {
    let args = json!({ "path": BALLOON_PATH, "property": "guest-stats" });
    let v = shared.qmp.execute("qom-get", Some(args)).ok()?;
    let updated = v.get("last-update")?.as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.saturating_sub(updated) > 3 * BALLOON_EVERY.as_secs() {
        return None;
    }
    let bytes = v.get("stats")?.get("stat-available-memory")?.as_i64()?;
    u64::try_from(bytes)
        .ok()
        .map(|b| u32::try_from(b >> 20).unwrap_or(u32::MAX))
}

/// Records what the guest has now (`query-balloon`) and what it reports available (its balloon
/// driver's statistics, which QEMU is asked to poll) in the status, every few seconds, for a VM
/// with dynamic memory.
pub(super) fn watch_balloon(shared: Arc<Shared>, dynamic: bool) {
    if !dynamic {
        return;
    }
    let every = json!({
        "path": BALLOON_PATH, "property": "guest-stats-polling-interval",
        "value": BALLOON_EVERY.as_secs(),
    });
    if let Err(e) = shared.qmp.execute("qom-set", Some(every)) {
        eprintln!("strata worker: the guest's memory statistics are not polled: {e}");
    }
    std::thread::spawn(move || {
        while !shared.has_ended() {
            if let Ok(v) = shared.qmp.execute("query-balloon", None) {
                let actual = v.get("actual").and_then(Value::as_u64).unwrap_or(0);
                let mib = u32::try_from(actual >> 20).unwrap_or(u32::MAX);
                shared.set_memory_seen(Some(mib), guest_available(&shared));
            }
            std::thread::sleep(BALLOON_EVERY);
        }
    });
}
