//! Dynamic memory's policy, run by the host service every few seconds for each running VM with
//! dynamic memory (a target set by hand with `vm memory` is left alone until the VM's next
//! start). The worker's balloon does the moving; the guest's balloon driver reports what it has
//! available (its `MemAvailable`), and the policy reads it:
//!
//! 1. A guest that needs memory (less than 15% of what it has is available) gets a step more,
//!    up to its memory, whatever the host's state: starving a guest would only make it swap.
//! 2. When the host is short (less than `STRATA_MEMORY_LOW` percent of its memory available,
//!    10 by default), a VM gives back a step, down to its minimum, but only what the guest can
//!    spare: a quarter of what it has stays available, so an idle guest shrinks and a busy one
//!    does not. (Before the guest's first statistics, it gives back a step regardless.)
//! 3. When the host has room again (twice that threshold), VMs get memory back by steps, up to
//!    their memory.
//!
//! A step is a quarter of the VM's range (at least 16 MiB); moves under 8 MiB are not made.

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

/// Why the policy moves a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The guest has less than 15% available.
    GuestNeeds,
    /// The host is short and the guest can spare memory.
    HostShort,
    /// The host has room.
    HostRoomy,
}

/// What the policy knows of one VM: its range, what it has, and what its guest reports
/// available (none before its first statistics).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub min: u32,
    pub max: u32,
    pub current: u32,
    pub available: Option<u32>,
}

/// The smallest move made, MiB.
const MIN_MOVE: u32 = 8;

/// The next target for a VM, and why; none to leave it.
pub(crate) fn next_target(v: Seen, short: bool, roomy: bool) -> Option<(u32, Why)> {
    let step = (v.max.saturating_sub(v.min) / 4).max(16);
    let needs = v
        .available
        .is_some_and(|a| u64::from(a) * 100 < u64::from(v.current) * 15);
    let (target, why) = if needs {
        (v.current.saturating_add(step).min(v.max), Why::GuestNeeds)
    } else if short {
        // Keep a quarter of what it has available: give back at most what is above that.
        let spare = v
            .available
            .map_or(step, |a| a.saturating_sub(v.current / 4));
        let give = step.min(spare);
        (v.current.saturating_sub(give).max(v.min), Why::HostShort)
    } else if roomy {
        (v.current.saturating_add(step).min(v.max), Why::HostRoomy)
    } else {
        return None;
    };
    let moved = target.abs_diff(v.current);
    let to_bound = target == v.min || target == v.max;
    (moved >= MIN_MOVE || (moved > 0 && to_bound)).then_some((target, why))
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
            let seen = Seen {
                min,
                max: c.vm.memory_mib,
                current,
                available: st.memory_available_mib,
            };
            let Some((target, why)) = next_target(seen, short, roomy) else {
                continue;
            };
            // Asked already (a guest without a balloon driver never gets there): not again.
            if st.memory_target.is_some_and(|(t, _)| t == target) {
                continue;
            }
            let socket = crate::qemu::Sockets::new(&self.home.run_dir(&c.id)).control;
            let verb = Verb::Balloon { target_mib: target };
            if worker::request(&socket, "system", verb, Duration::from_secs(30)).is_ok() {
                let guest = st.memory_available_mib.map_or(String::new(), |a| {
                    format!(", {a} MiB available in the guest")
                });
                let why = match why {
                    Why::GuestNeeds => "the guest needs memory".to_string(),
                    Why::HostShort => format!("the host short of memory ({avail}% available)"),
                    Why::HostRoomy => format!("the host has room in memory ({avail}% available)"),
                };
                self.events.log(
                    Code::VmAutomaticAction,
                    Some(&name),
                    "system",
                    &format!("dynamic memory: {why}{guest}: {current} -> {target} MiB"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{next_target, Seen, Why};

    fn seen(current: u32, available: Option<u32>) -> Seen {
        Seen {
            min: 128,
            max: 512,
            current,
            available,
        }
    }

    #[test]
    fn without_statistics_vms_move_by_quarters_with_the_host() {
        let t = |c, short, roomy| next_target(seen(c, None), short, roomy).map(|(t, _)| t);
        assert_eq!(t(512, true, false), Some(416));
        assert_eq!(t(150, true, false), Some(128));
        assert_eq!(t(128, true, false), None);
        assert_eq!(t(128, false, true), Some(224));
        assert_eq!(t(500, false, true), Some(512));
        assert_eq!(t(300, false, false), None);
        // A narrow range still moves in useful steps.
        let narrow = Seen {
            min: 256,
            max: 260,
            current: 260,
            available: None,
        };
        assert_eq!(
            next_target(narrow, true, false),
            Some((256, Why::HostShort))
        );
    }

    #[test]
    fn a_guest_that_needs_memory_gets_it_and_a_busy_one_is_not_shrunk() {
        // 10 MiB of 128 available: it needs memory, even while the host is short.
        assert_eq!(
            next_target(seen(128, Some(10)), true, false),
            Some((224, Why::GuestNeeds))
        );
        // At its memory already: nothing more to give.
        assert_eq!(next_target(seen(512, Some(10)), false, false), None);
        // Host short, 40 of 160 available: only 0 MiB spare above a quarter: left alone.
        assert_eq!(next_target(seen(160, Some(40)), true, false), None);
        // Host short, idle guest (400 of 512 available): a full step back.
        assert_eq!(
            next_target(seen(512, Some(400)), true, false),
            Some((416, Why::HostShort))
        );
        // Spare but less than a step: only the spare.
        assert_eq!(
            next_target(seen(256, Some(100)), true, false),
            Some((220, Why::HostShort))
        );
        // A guest using 156 MiB, the host short: it shrinks until a quarter stays available,
        // and never so far that it needs memory back (no see-saw).
        let (mut current, used) = (256, 156);
        for _ in 0..20 {
            match next_target(seen(current, Some(current - used)), true, false) {
                Some((t, why)) => {
                    assert_eq!(why, Why::HostShort, "at {current}");
                    current = t;
                }
                None => break,
            }
        }
        assert!(current - used >= current / 4, "{current}");
        assert!(current < 220, "{current}");
    }
}
