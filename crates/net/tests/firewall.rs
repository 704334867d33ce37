//! Strata's nftables tables and a tap's bandwidth limits against the real kernel, real `nft` and
//! `tc`, each test in a network namespace of its own (unshare(CLONE_NEWNET) on the test's thread,
//! gone with it, also on failure): the host's own ruleset, routes and sysctls are never touched.
//!
//! The library spawns `nft` and `tc` from the calling thread; the first test proves such children
//! run in that thread's namespace. The checks here use `nsenter` into the thread's namespace, so
//! they do not depend on that.

use std::net::Ipv4Addr;
use std::process::Command;

use serde_json::Value;
use strata_net::firewall::{self, Forward, PortRules, Proto, Ruleset, SwitchRules};
use strata_net::subnet::Subnet;
use strata_net::{shape, NetErrorKind};

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

/// The `--net=` argument of nsenter for this thread's namespace.
fn this_ns() -> String {
    let tid = nix::unistd::gettid();
    format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id())
}

/// Runs `program args` in this thread's namespace; panics with its stderr when it fails.
fn here(program: &str, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("nsenter")
        .arg(this_ns())
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair in this thread's namespace.
fn veth(name: &str, peer: &str) {
    here(
        "ip",
        &["link", "add", name, "type", "veth", "peer", "name", peer],
        None,
    );
}

fn nft_text() -> String {
    here("nft", &["list", "ruleset"], None)
}

/// The rules of a table as (chain, rule's expressions as JSON text).
fn rules(family: &str, table: &str) -> Vec<(String, String)> {
    let out = here("nft", &["-j", "list", "table", family, table], None);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .map(|r| {
            (
                r["chain"].as_str().unwrap().to_string(),
                r["expr"].to_string(),
            )
        })
        .collect()
}

fn tables() -> String {
    here("nft", &["list", "tables"], None)
}

fn subnet(s: &str) -> Subnet {
    Subnet::parse(s).unwrap().0
}

fn switch(bridge: &str, net: &str, forwards: Vec<Forward>) -> SwitchRules {
    SwitchRules {
        bridge: bridge.into(),
        subnet: subnet(net),
        nat: true,
        forwards,
    }
}

fn tcp(host_port: u16, to: [u8; 4], to_port: u16) -> Forward {
    Forward {
        proto: Proto::Tcp,
        host_port,
        to: Ipv4Addr::from(to),
        to_port,
    }
}

fn guarded(tap: &str) -> PortRules {
    PortRules {
        tap: tap.into(),
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        mac_spoofing: false,
        dhcp_guard: true,
        router_guard: true,
        upload_limit: None,
    }
}

fn two_switches() -> Ruleset {
    Ruleset {
        switches: vec![
            switch("stb-a", "10.1.0.0/24", vec![tcp(8080, [10, 1, 0, 5], 80)]),
            switch("stb-b", "10.2.0.0/24", vec![tcp(2222, [10, 2, 0, 7], 22)]),
        ],
        ports: vec![guarded("stt-a-0"), guarded("stt-b-0")],
    }
}

/// A foreign firewall: firewalld-like `inet filter` with a forward chain dropping by default,
/// an `ip other` table whose forward chain accepts, and a rule in each.
const FOREIGN: &str = "table inet filter {
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept; }
  chain helper { tcp dport 22 accept; }
}
table ip other {
  chain pass { type filter hook forward priority 10; policy accept; counter; }
}
";

#[test]
fn children_spawned_by_a_thread_run_in_its_namespace() {
    in_new_netns(|| {
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let out = Command::new("readlink")
            .arg("/proc/self/ns/net")
            .output()
            .unwrap();
        let child = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(child, mine.to_string_lossy());
        // /proc/self is the main thread's: still the host's namespace.
        let main = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(mine, main, "the test thread is in a namespace of its own");
    });
}

#[test]
fn apply_installs_masquerade_dnat_and_port_guards() {
    in_new_netns(|| {
        firewall::apply(&two_switches()).unwrap();
        let ip = rules("ip", "strata");
        let masq: Vec<_> = ip.iter().filter(|(c, _)| c == "postrouting").collect();
        assert_eq!(masq.len(), 2, "{ip:?}");
        assert!(
            masq.iter().all(|(_, e)| e.contains("\"masquerade\"")),
            "{ip:?}"
        );
        assert!(masq[0].1.contains("\"10.1.0.0\"") && masq[0].1.contains("stb-a"));
        let dnat: Vec<_> = ip.iter().filter(|(c, _)| c == "prerouting").collect();
        assert_eq!(dnat.len(), 2, "{ip:?}");
        assert!(
            dnat[0]
                .1
                .contains(r#""dnat":{"addr":"10.1.0.5","port":80}"#),
            "{ip:?}"
        );
        assert!(dnat[0].1.contains("8080") && dnat[0].1.contains("\"fib\""));
        assert!(
            dnat[1]
                .1
                .contains(r#""dnat":{"addr":"10.2.0.7","port":22}"#),
            "{ip:?}"
        );
        let bridge = rules("bridge", "strata");
        let guards = bridge.iter().filter(|(c, _)| c == "ports").count();
        assert_eq!(guards, 2 * 5, "{bridge:?}");
        for hook in ["forward", "input"] {
            assert!(bridge.iter().any(|(c, e)| c == hook && e.contains("jump")));
        }
        let text = nft_text();
        assert!(
            text.contains("ether saddr != 52:54:00:12:34:56 drop"),
            "{text}"
        );
        assert!(text.contains("nd-router-advert"), "{text}");
        firewall::remove_all().unwrap();
    });
}

#[test]
fn apply_is_idempotent_and_replaces_the_old_rules() {
    in_new_netns(|| {
        let r = two_switches();
        firewall::apply(&r).unwrap();
        let first = nft_text();
        firewall::apply(&r).unwrap();
        assert_eq!(nft_text(), first, "a second apply changes nothing");
        let fewer = Ruleset {
            switches: vec![r.switches[1].clone()],
            ports: vec![r.ports[1].clone()],
        };
        firewall::apply(&fewer).unwrap();
        let text = nft_text();
        assert!(
            !text.contains("stb-a") && !text.contains("stt-a-0"),
            "{text}"
        );
        assert!(!text.contains("10.1.0."), "{text}");
        assert!(text.contains("stb-b") && text.contains("stt-b-0"), "{text}");
        assert_eq!(rules("ip", "strata").len(), 2);
    });
}

#[test]
fn an_empty_ruleset_removes_the_tables_and_remove_all_tolerates_their_absence() {
    in_new_netns(|| {
        firewall::apply(&two_switches()).unwrap();
        assert!(tables().contains("strata"));
        firewall::apply(&Ruleset::default()).unwrap();
        assert_eq!(tables().trim(), "", "no table left");
        firewall::remove_all().unwrap();
        firewall::apply(&two_switches()).unwrap();
        firewall::remove_all().unwrap();
        assert_eq!(tables().trim(), "");
        // Only NAT, no guarded port: no bridge table at all.
        let nat_only = Ruleset {
            switches: vec![switch("stb-a", "10.1.0.0/24", vec![])],
            ports: vec![],
        };
        firewall::apply(&nat_only).unwrap();
        assert_eq!(tables().trim(), "table ip strata");
        firewall::remove_all().unwrap();
    });
}

#[test]
fn foreign_tables_are_untouched_and_their_forward_drop_chains_reported() {
    in_new_netns(|| {
        here("nft", &["-f", "-"], Some(FOREIGN));
        let before = nft_text();
        firewall::apply(&two_switches()).unwrap();
        let drops = firewall::foreign_forward_drops().unwrap();
        assert_eq!(drops.len(), 1, "{drops:?}");
        let d = &drops[0];
        assert_eq!(
            (d.family.as_str(), d.table.as_str(), d.chain.as_str()),
            ("inet", "filter", "forward")
        );
        assert_eq!(d.policy, "drop");
        firewall::apply(&Ruleset {
            switches: vec![],
            ports: vec![guarded("stt-x")],
        })
        .unwrap();
        firewall::remove_all().unwrap();
        assert_eq!(nft_text(), before, "the foreign tables are as they were");
    });
}

#[test]
fn nothing_is_reported_without_foreign_drop_chains() {
    in_new_netns(|| {
        assert!(firewall::foreign_forward_drops().unwrap().is_empty());
        firewall::apply(&two_switches()).unwrap();
        assert!(firewall::foreign_forward_drops().unwrap().is_empty());
        firewall::remove_all().unwrap();
    });
}

#[test]
fn a_duplicate_host_port_or_a_bad_name_is_refused_and_changes_nothing() {
    in_new_netns(|| {
        firewall::apply(&two_switches()).unwrap();
        let before = nft_text();
        let mut dup = two_switches();
        dup.switches[1].forwards.push(tcp(8080, [10, 2, 0, 8], 80));
        let e = firewall::apply(&dup).unwrap_err();
        assert_eq!(e.kind, NetErrorKind::Conflict, "{e}");
        assert!(e.to_string().contains("8080"), "{e}");
        assert_eq!(nft_text(), before);
        for name in ["stb-a\" accept", "stb-a;", "a-name-far-too-long"] {
            let mut bad = two_switches();
            bad.switches[0].bridge = name.into();
            let e = firewall::apply(&bad).unwrap_err();
            assert_eq!(e.kind, NetErrorKind::Invalid, "{e}");
            let mut bad = two_switches();
            bad.ports[0].tap = name.into();
            assert_eq!(
                firewall::apply(&bad).unwrap_err().kind,
                NetErrorKind::Invalid
            );
        }
        assert_eq!(nft_text(), before);
        firewall::remove_all().unwrap();
    });
}

#[test]
fn ip_forwarding_is_turned_on_in_the_namespace_only() {
    let root_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    in_new_netns(|| {
        // /proc/sys/net shows the reading thread's namespace: an interface made here appears.
        veth("stfw-probe", "stfw-probep");
        assert!(std::path::Path::new("/proc/sys/net/ipv4/conf/stfw-probe").exists());
        assert!(firewall::enable_ip_forwarding().unwrap(), "was off");
        assert!(!firewall::enable_ip_forwarding().unwrap(), "already on");
        let now = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(now.trim(), "1");
    });
    let root_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(root_after, root_before, "the host's setting is untouched");
}

/// The qdiscs of `dev` as (kind, root?).
fn qdiscs(dev: &str) -> Vec<(String, bool)> {
    let out = here("tc", &["-j", "qdisc", "show", "dev", dev], None);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let root = q.get("root").and_then(Value::as_bool) == Some(true);
            (q["kind"].as_str().unwrap().to_string(), root)
        })
        .collect()
}

fn has(q: &[(String, bool)], kind: &str) -> bool {
    q.iter().any(|(k, _)| k == kind)
}

#[test]
fn a_bandwidth_limit_shapes_the_tap_and_is_removed() {
    in_new_netns(|| {
        veth("stt-bw", "stt-bwp");
        here("ip", &["link", "set", "stt-bw", "up"], None);
        let e = shape::set_bandwidth("stt-none", Some(1_000_000)).unwrap_err();
        assert_eq!(e.kind, NetErrorKind::NotFound, "{e}");
        let e = shape::set_bandwidth("stt;bw", Some(1_000_000)).unwrap_err();
        assert_eq!(e.kind, NetErrorKind::Invalid, "{e}");
        assert_eq!(
            shape::set_bandwidth("stt-bw", Some(0)).unwrap_err().kind,
            NetErrorKind::Invalid
        );
        shape::set_bandwidth("stt-bw", Some(10_000_000)).unwrap();
        shape::set_bandwidth("stt-bw", Some(20_000_000)).unwrap();
        let q = qdiscs("stt-bw");
        assert!(q.contains(&("tbf".into(), true)), "{q:?}");
        let t = here("tc", &["qdisc", "show", "dev", "stt-bw"], None);
        assert!(t.contains("rate 20Mbit"), "{t}");
        // An earlier Strata's ingress qdisc goes too.
        here("tc", &["qdisc", "add", "dev", "stt-bw", "ingress"], None);
        shape::set_bandwidth("stt-bw", None).unwrap();
        let q = qdiscs("stt-bw");
        assert!(!has(&q, "tbf") && !has(&q, "ingress"), "{q:?}");
        shape::set_bandwidth("stt-bw", None).unwrap();
    });
}

/// A named network namespace (`ip netns add`), deleted when dropped.
struct NamedNs(String);

impl NamedNs {
    fn new(role: &str) -> Self {
        let name = format!("strata-fwtest-{}-{role}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        Self(name)
    }

    /// Runs `cmd` (split on spaces) in the namespace; panics when it fails.
    fn run(&self, cmd: &str) {
        let args: Vec<&str> = cmd.split(' ').collect();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cmd} in {}: {stderr}", self.0);
    }

    /// A python3 program in the namespace, for its standard output.
    fn python(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, "python3", "-c", program])
            .args(args);
        c
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Accepts TCP connections on port argv[1] (for 30 s at most) and sends each the peer's address.
const SERVER: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('0.0.0.0',int(sys.argv[1]))); s.listen(4); s.settimeout(30)
while True:
    c,a=s.accept(); c.sendall(a[0].encode()); c.close()";

/// Connects to argv[1]:argv[2], argv[3] tries 0.1 s apart (2 s timeout each), prints what it
/// reads; exits 1 when no try worked.
const CLIENT: &str = "import socket,sys,time
for i in range(int(sys.argv[3])):
    try:
        c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)
        print(c.recv(100).decode()); sys.exit(0)
    except OSError: time.sleep(0.1)
sys.exit(1)";

fn connect(ns: &NamedNs, addr: &str, port: &str, tries: &str) -> Option<String> {
    let out = ns.python(CLIENT, &[addr, port, tries]).output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Connects from this thread's namespace, retrying for up to 5 s; what the server sent.
fn from_host(addr: &str) -> Option<String> {
    use std::io::Read;
    for _ in 0..50 {
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            let mut text = String::new();
            c.read_to_string(&mut text).ok()?;
            return Some(text);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// The bridge `stb-t` (10.1.0.1/24) in this thread's namespace, and on it the tap `stt-g` whose
/// peer `g0` (10.1.0.5/24, MAC 52:54:00:12:34:56, default route through the bridge) is in `guest`.
fn guest_on_bridge(guest: &NamedNs) {
    here("ip", &["link", "set", "lo", "up"], None);
    here("ip", &["link", "add", "stb-t", "type", "bridge"], None);
    here("ip", &["addr", "add", "10.1.0.1/24", "dev", "stb-t"], None);
    here("ip", &["link", "set", "stb-t", "up"], None);
    veth("stt-g", "g0");
    here("ip", &["link", "set", "g0", "netns", &guest.0], None);
    here(
        "ip",
        &["link", "set", "stt-g", "master", "stb-t", "up"],
        None,
    );
    for cmd in [
        "ip link set lo up",
        "ip link set g0 address 52:54:00:12:34:56",
        "ip addr add 10.1.0.5/24 dev g0",
        "ip link set g0 up",
        "ip route add default via 10.1.0.1",
    ] {
        guest.run(cmd);
    }
}

/// A server on the host's address on the bridge (this thread's namespace: the socket stays
/// there whatever thread accepts), sending each client its address.
fn host_server() {
    let l = std::net::TcpListener::bind("10.1.0.1:7000").unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = std::io::Write::write_all(&mut c, peer.as_bytes());
        }
    });
}

/// The MAC guard on real frames from a guest to the host's address on its bridge (bridge hook
/// `input`): its own MAC passes, another is dropped, and passes once spoofing is allowed.
#[test]
fn the_mac_guard_drops_a_guest_s_spoofed_frames_to_the_host() {
    in_new_netns(|| {
        let guest = NamedNs::new("m");
        guest_on_bridge(&guest);
        host_server();
        let mut port = guarded("stt-g");
        let only = |p: &PortRules| Ruleset {
            switches: vec![],
            ports: vec![p.clone()],
        };
        firewall::apply(&only(&port)).unwrap();
        let seen = connect(&guest, "10.1.0.1", "7000", "50");
        assert_eq!(seen.as_deref(), Some("10.1.0.5"), "its own MAC passes");
        guest.run("ip link set g0 address 52:54:00:99:99:99");
        // The host forgets the old MAC: only the guard can stop the exchange now.
        here("ip", &["neigh", "flush", "dev", "stb-t"], None);
        assert_eq!(connect(&guest, "10.1.0.1", "7000", "1"), None, "spoofed");
        port.mac_spoofing = true;
        firewall::apply(&only(&port)).unwrap();
        let seen = connect(&guest, "10.1.0.1", "7000", "50");
        assert_eq!(seen.as_deref(), Some("10.1.0.5"), "spoofing allowed");
    });
}

/// Guest (10.1.0.5 on the switch's bridge, in a namespace of its own) and outside (192.0.2.2,
/// no route to the switch's subnet) around the NAT host (the test thread's namespace): the
/// outside sees the guest's connection come from 192.0.2.1 only with masquerade, and reaches
/// the guest's port 80 through the host's 8080.
#[test]
fn masquerade_and_a_port_forward_carry_real_packets() {
    in_new_netns(|| {
        let guest = NamedNs::new("g");
        let outside = NamedNs::new("o");
        guest_on_bridge(&guest);
        veth("up0", "o0");
        here("ip", &["link", "set", "o0", "netns", &outside.0], None);
        here("ip", &["addr", "add", "192.0.2.1/24", "dev", "up0"], None);
        here("ip", &["link", "set", "up0", "up"], None);
        for cmd in [
            "ip link set lo up",
            "ip addr add 192.0.2.2/24 dev o0",
            "ip link set o0 up",
        ] {
            outside.run(cmd);
        }
        assert!(firewall::enable_ip_forwarding().unwrap());
        let mut sw = switch("stb-t", "10.1.0.0/24", vec![tcp(8080, [10, 1, 0, 5], 80)]);
        sw.nat = false;
        firewall::apply(&Ruleset {
            switches: vec![sw.clone()],
            ports: vec![],
        })
        .unwrap();
        let _out_server = Killed(outside.python(SERVER, &["9000"]).spawn().unwrap());
        let _guest_server = Killed(guest.python(SERVER, &["80"]).spawn().unwrap());
        // The outside reaches the guest through the port forward (and sees its own address).
        let seen = connect(&outside, "192.0.2.1", "8080", "50");
        assert_eq!(seen.as_deref(), Some("192.0.2.2"));
        // The outside's server is up (the host reaches it directly), yet without masquerade the
        // outside cannot answer the guest.
        assert_eq!(from_host("192.0.2.2:9000").as_deref(), Some("192.0.2.1"));
        assert_eq!(connect(&guest, "192.0.2.2", "9000", "1"), None);
        sw.nat = true;
        firewall::apply(&Ruleset {
            switches: vec![sw],
            ports: vec![],
        })
        .unwrap();
        let seen = connect(&guest, "192.0.2.2", "9000", "50");
        assert_eq!(seen.as_deref(), Some("192.0.2.1"), "masqueraded");
    });
}
