//! A checkpoint of a running (or paused) VM, in the worker: file systems frozen through the
//! guest agent when one answers, the guest paused, its memory and device state written, each
//! disk switched to its new layer between NBD requests (QEMU is not involved: it keeps its
//! connections), the guest resumed, the file systems thawed. The pause lasts the memory write;
//! the switch's cost follows the disks' metadata, not their size.

use std::time::Instant;

use strata_api::VmState;

use super::Shared;
use crate::error::HostError;
use crate::events::Code;

/// Takes the checkpoint: `switches` are (active layer, new layer) per disk; `memory` the state
/// file to write (none: disks only).
pub(super) fn take(
    shared: &Shared,
    user: &str,
    switches: &[(String, String)],
    memory: Option<&str>,
) -> Result<VmState, HostError> {
    let state = shared.state();
    let running = state == VmState::Running;
    let frozen =
        running && shared.agent.is_some() && super::agent::freeze(shared, user, true).is_ok();
    let paused_at = Instant::now();
    if running {
        if let Err(e) = shared.qmp.pause() {
            if frozen {
                let _ = super::agent::freeze(shared, user, false);
            }
            return Err(e);
        }
    }
    let result = memory
        .map_or(Ok(()), |m| save_memory(shared, m))
        .inspect(|()| {
            // The migration left QEMU's block nodes inactive; `cont` below re-activates them,
            // but a paused VM stays paused: activate them now (QEMU 10's blockdev-set-active).
            if memory.is_some() && !running {
                let _ = shared.qmp.execute(
                    "blockdev-set-active",
                    Some(serde_json::json!({ "active": true })),
                );
            }
        })
        .and_then(|()| {
            let switch_at = Instant::now();
            shared.disks.switch(switches)?;
            Ok(switch_at.elapsed())
        });
    if running {
        if let Err(e) = shared.qmp.resume() {
            shared.log(
                Code::VmRequestFailed,
                user,
                &format!("the guest could not be resumed after a checkpoint: {e}"),
            );
        }
    }
    let pause_ms = paused_at.elapsed().as_millis();
    if frozen {
        let _ = super::agent::freeze(shared, user, false);
    }
    let switch = result?;
    let consistency = if frozen {
        "file systems frozen through the guest agent"
    } else {
        "crash-consistent: no guest agent froze the file systems"
    };
    shared.log(
        Code::VmChanged,
        user,
        &format!(
            "checkpoint taken ({consistency}); disks switched in {} µs, guest paused {pause_ms} ms",
            switch.as_micros()
        ),
    );
    Ok(state)
}

/// Writes the guest's memory and device state to `path` (the guest is paused), then its
/// metadata beside it (`.json`), fsynced, each through a temporary name.
fn save_memory(shared: &Shared, path: &str) -> Result<(), HostError> {
    let image = std::path::Path::new(path);
    let tmp = image.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    shared.qmp.migrate_to_file(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| HostError::io(&tmp, "flush", e))?;
    std::fs::rename(&tmp, image).map_err(|e| HostError::io(image, "create", e))?;
    let meta = super::control::saved_meta(shared);
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| {
        HostError::internal(format!("cannot encode the saved state's metadata: {e}"))
    })?;
    crate::store::write_atomic(&image.with_extension("json"), &text)
}
