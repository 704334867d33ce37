//! Dynamic memory's policy, run by the host service every few seconds: when the host is short
//! of memory (less than `STRATA_MEMORY_LOW` percent available, 10 by default), each running VM
//! with dynamic memory gives back a quarter of its range, down to its minimum; when the host
//! has room again (twice that), VMs get memory back the same way, up to their memory. A target
//! set by hand (`vm memory`) is left alone until the VM's next start. The
//! worker's balloon does the moving; the guest's own demand is not read yet (its statistics
//! through virtio-balloon are the next step), so a busy guest is shrunk like an idle one.

use std::sync::Arc;
use std::time::Duration;

use strata_api::VmState;

use super::Service;
use crate::events::Code;
use crate::worker::{self, Verb};

/// How often the policy looks.
const EVERY: Duration = Duration::from_secs(5);

/// The host's available memory as a percentage of its total (`/proc/meminfo`).
fn available_percent() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (total, avail) = (field("MemTotal:")?, field("MemAvailable:")?);
    (total > 0).then(|| avail * 100 / total)
}

/// The threshold, from `STRATA_MEMORY_LOW` (a percentage, 1 to 100).
fn low_percent() -> u64 {
    std::env::var("STRATA_MEMORY_LOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|p| (1..=100).contains(p))
        .unwrap_or(10)
}

/// The next target for a VM of range `min..=max` that has `current` now, or none to leave it.
pub(crate) fn next_target(
    min: u32,
    max: u32,
    current: u32,
    short: bool,
    roomy: bool,
) -> Option<u32> {
    let step = (max.saturating_sub(min) / 4).max(16);
    let target = if short {
        current.saturating_sub(step).max(min)
    } else if roomy {
        current.saturating_add(step).min(max)
    } else {
        return None;
    };
    (target != current).then_some(target)
}

impl Service {
    /// Starts the policy's thread.
    pub fn watch_memory(self: &Arc<Self>) {
        let svc = Arc::clone(self);
        std::thread::spawn(move || loop {
            std::thread::sleep(EVERY);
            svc.balance_memory();
        });
    }

    fn balance_memory(&self) {
        let Some(avail) = available_percent() else {
            return;
        };
        let low = low_percent();
        let (short, roomy) = (avail < low, avail >= (2 * low).min(100));
        for name in self.home.names() {
            let Ok((c, st)) = self.read(&name) else {
                continue;
            };
            let Some(min) = c.vm.memory_min_mib else {
                continue;
            };
            if st.state != VmState::Running || !st.worker_alive() {
                continue;
            }
            // A target a person set wins until the VM's next start.
            if st.memory_target.is_some_and(|(_, manual)| manual) {
                continue;
            }
            let current = st.memory_current_mib.unwrap_or(c.vm.memory_mib);
            let Some(target) = next_target(min, c.vm.memory_mib, current, short, roomy) else {
                continue;
            };
            // Asked already (a guest without a balloon driver never gets there): not again.
            if st.memory_target.is_some_and(|(t, _)| t == target) {
                continue;
            }
            let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
            let verb = Verb::Balloon { target_mib: target };
            if worker::request(&socket, "system", verb, Duration::from_secs(30)).is_ok() {
                let why = if short { "short of" } else { "has room in" };
                self.events.log(
                    Code::VmAutomaticAction,
                    Some(&name),
                    "system",
                    &format!("dynamic memory: the host {why} memory ({avail}% available): {current} -> {target} MiB"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_target;

    #[test]
    fn vms_shrink_toward_their_minimum_and_grow_back_by_quarters() {
        assert_eq!(next_target(128, 512, 512, true, false), Some(416));
        assert_eq!(next_target(128, 512, 150, true, false), Some(128));
        assert_eq!(next_target(128, 512, 128, true, false), None);
        assert_eq!(next_target(128, 512, 128, false, true), Some(224));
        assert_eq!(next_target(128, 512, 500, false, true), Some(512));
        assert_eq!(next_target(128, 512, 300, false, false), None);
        // A narrow range still moves in useful steps.
        assert_eq!(next_target(256, 260, 260, true, false), Some(256));
    }
}
