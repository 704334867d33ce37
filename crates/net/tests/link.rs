//! Bridges, addresses and ports through netlink, each test in a network namespace of its own
//! (made for the test's thread with unshare(CLONE_NEWNET) and gone with it: nothing is left on the
//! host, even on failure).

use std::net::Ipv4Addr;
use std::process::Command;

use strata_net::link;

/// Runs `f` on a thread inside a new, empty network namespace.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): run the tests as root");
        f()
    })
    .join()
    .unwrap()
}

/// `ip` run in the namespace of this thread, to check what netlink did (reading only).
fn ip(args: &[&str]) -> String {
    let tid = nix::unistd::gettid();
    let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
    let out = Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .arg("ip")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_bridge_is_created_once_with_its_address_and_deleted() {
    in_new_netns(|| {
        let name = link::bridge_name("0123456789abcdef0123456789abcdef");
        assert!(!link::exists(&name).unwrap());
        let addr = Some((Ipv4Addr::new(10, 10, 0, 1), 24));
        assert!(link::ensure_bridge(&name, addr).unwrap(), "created");
        assert!(!link::ensure_bridge(&name, addr).unwrap(), "already there");
        let shown = ip(&["-d", "addr", "show", "dev", &name]);
        assert!(shown.contains("bridge"), "{shown}");
        assert!(shown.contains("10.10.0.1/24"), "{shown}");
        assert_eq!(shown.matches("inet 10.10.0.1/24").count(), 1, "{shown}");
        link::delete(&name).unwrap();
        assert!(!link::exists(&name).unwrap());
        link::delete(&name).unwrap();
    });
}

#[test]
fn a_port_goes_on_its_bridge_and_a_foreign_interface_is_not_taken_for_a_bridge() {
    in_new_netns(|| {
        let bridge = "stb-test";
        link::ensure_bridge(bridge, None).unwrap();
        // A veth stands in for a tap (made with ip: only netlink's side is tested).
        let tid = nix::unistd::gettid();
        let ns = format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id());
        let ok = Command::new("nsenter")
            .args([
                &ns, "ip", "link", "add", "stt-port", "type", "veth", "peer", "name", "stt-peer",
            ])
            .status()
            .unwrap();
        assert!(ok.success());
        link::attach("stt-port", bridge).unwrap();
        let shown = ip(&["link", "show", "stt-port"]);
        assert!(shown.contains(&format!("master {bridge}")), "{shown}");
        let e = link::ensure_bridge("stt-port", None).unwrap_err();
        assert_eq!(e.kind, strata_net::NetErrorKind::Conflict, "{e}");
        let e = link::attach("stt-none", bridge).unwrap_err();
        assert_eq!(e.kind, strata_net::NetErrorKind::NotFound, "{e}");
    });
}
