//! A NIC's bandwidth limit toward the guest, on its tap: what the guest receives leaves the tap,
//! and a `tbf` root qdisc shapes it (queues, then drops). It goes with the tap when it is deleted,
//! so a stopped VM leaves nothing behind.
//!
//! What the guest sends enters the tap, where nothing can queue it: that direction is limited by
//! the port's rule in Strata's bridge table ([`crate::firewall::PortRules::upload_limit`], nft's
//! `limit rate over … drop`), not by tc's `police` action, which some kernels (this project's test
//! machines among them) are built without.
//!
//! This spawns `tc` (iproute2) rather than using netlink: netlink-packet-route (under rtnetlink
//! 0.24) has no `tbf` options, and building them by hand would mean re-encoding tc's rate tables.
//! `tc`'s standard error is always in the error.

use crate::command::{check_ifname, run};
use crate::error::{NetError, NetErrorKind};

/// Limits what goes out of `tap` to the guest to `limit_bits_per_sec` (replacing any limit
/// Strata set before); `None` removes the limit. A failure leaves the tap without a limit rather
/// than half limited.
pub fn set_bandwidth(tap: &str, limit_bits_per_sec: Option<u64>) -> Result<(), NetError> {
    check_ifname(tap)?;
    let Some(rate) = limit_bits_per_sec else {
        return clear(tap);
    };
    if rate < 8_000 {
        return Err(NetError::new(
            NetErrorKind::Invalid,
            tap,
            format!("a bandwidth limit of {rate} bit/s is too low (at least 8000)"),
        ));
    }
    let result = limit(tap, rate);
    if result.is_err() {
        // Best effort: the first error is the one to report.
        let _ = clear(tap);
    }
    result
}

fn limit(tap: &str, rate: u64) -> Result<(), NetError> {
    // 20 ms of traffic, at least ten full frames: above the MTU and the timer's granularity.
    let burst = (rate / 8 / 50).max(15_140).to_string();
    let rate = format!("{rate}bit");
    if qdiscs(tap)?.ingress {
        // An ingress qdisc of an earlier Strata's police filter: the nft rule replaces it.
        tc(tap, &["qdisc", "del", "dev", tap, "ingress"])?;
    }
    #[rustfmt::skip]
    let tbf = [
        "qdisc", "replace", "dev", tap, "root", "tbf",
        "rate", &rate, "burst", &burst, "latency", "50ms",
    ];
    tc(tap, &tbf).map(drop)
}

/// Removes Strata's qdiscs from `tap`: a root `tbf` and the ingress qdisc.
fn clear(tap: &str) -> Result<(), NetError> {
    let q = qdiscs(tap)?;
    if q.root_tbf {
        tc(tap, &["qdisc", "del", "dev", tap, "root"])?;
    }
    if q.ingress {
        tc(tap, &["qdisc", "del", "dev", tap, "ingress"])?;
    }
    Ok(())
}

struct Present {
    root_tbf: bool,
    ingress: bool,
}

fn qdiscs(tap: &str) -> Result<Present, NetError> {
    let out = tc(tap, &["-j", "qdisc", "show", "dev", tap])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| {
        NetError::new(
            NetErrorKind::Kernel,
            tap,
            format!("tc -j qdisc show: unreadable output: {e}"),
        )
    })?;
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    let kind = |q: &serde_json::Value| q.get("kind").and_then(|k| k.as_str()).map(str::to_owned);
    Ok(Present {
        root_tbf: list.iter().any(|q| {
            q.get("root").and_then(serde_json::Value::as_bool) == Some(true)
                && kind(q).as_deref() == Some("tbf")
        }),
        ingress: list.iter().any(|q| kind(q).as_deref() == Some("ingress")),
    })
}

/// Runs `tc`; a missing device is `NotFound`.
fn tc(tap: &str, args: &[&str]) -> Result<String, NetError> {
    run("tc", args, None, tap).map_err(|mut e| {
        if e.message.contains("Cannot find device") {
            e.kind = NetErrorKind::NotFound;
        }
        e
    })
}
