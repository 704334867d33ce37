//! Helpers of the network tests: a guest driven through its console (it runs the lines the test
//! types), and extra network namespaces standing in for the outside world or a LAN, removed when
//! dropped (also when a test fails).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

pub const T: Duration = Duration::from_secs(180);

/// A guest that takes a DHCP lease on eth0 (printing `LEASE <if> <ip>/<mask> router=<r>` for
/// every lease it binds), says `READY`, then runs each line typed on its console.
pub fn shell_guest(h: &Host, name: &str) -> Guest {
    let script = r#"i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo '#!/bin/sh' > /lease.sh
echo 'if [ "$1" = bound ]; then ip addr add $ip/$mask dev $interface; [ -n "$router" ] && ip route add default via $router dev $interface 2>/dev/null; echo "LEASE $interface $ip/$mask router=$router"; fi' >> /lease.sh
chmod +x /lease.sh
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /lease.sh -t 20 -T 2 -n -q || echo DHCP-FAILED
echo READY
while read -r line; do eval "$line"; done < /dev/ttyS0
"#;
    guest(h.home(), name, &["virtio_pci", "virtio_net"], script)
}

impl Host {
    /// Types `line` on VM `vm`'s console.
    pub fn type_line(&self, vm: &str, line: &str) {
        let shown = self.json(&["vm", "show", vm, "--json"]);
        let path = shown["console_socket"].as_str().expect("a console socket");
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// What guest `vm` (a console-driven one) prints for `cmd`, as the line after `tag:` (`tag`
    /// unique in the test).
    pub fn says(&self, vm: &str, tag: &str, cmd: &str) -> String {
        self.type_line(vm, &format!("echo \"{tag}:$({cmd})\""));
        let want = format!("{tag}:");
        wait_for(tag, T, || {
            self.console(vm).lines().any(|l| l.starts_with(&want))
        });
        let text = self.console(vm);
        let line = text.lines().find(|l| l.starts_with(&want)).unwrap();
        line[want.len()..].trim().to_string()
    }

    /// Runs `cmd` in guest `vm` (a shell guest) and tells whether it succeeded. `tag` must be
    /// unique in the test: the guest prints `<tag>-yes` or `<tag>-no` (the typed line, echoed on
    /// the console, holds neither).
    pub fn guest_runs(&self, vm: &str, tag: &str, cmd: &str) -> bool {
        self.type_line(
            vm,
            &format!("R={tag}; if ( {cmd} ) >/dev/null 2>&1; then echo \"$R\"-yes; else echo \"$R\"-no; fi"),
        );
        let (yes, no) = (format!("{tag}-yes"), format!("{tag}-no"));
        let start = Instant::now();
        loop {
            let text = self.console(vm);
            if text.contains(&yes) {
                return true;
            }
            if text.contains(&no) {
                return false;
            }
            assert!(start.elapsed() < T, "{vm}: no answer to {tag}:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address of guest `vm`'s lease on `iface`, once it has one.
    pub fn lease_of(&self, vm: &str, iface: &str) -> String {
        let want = format!("LEASE {iface} ");
        self.wait_console(vm, &want, T);
        let text = self.console(vm);
        let line = text.lines().find(|l| l.contains(&want)).unwrap();
        let rest = &line[line.find(&want).unwrap() + want.len()..];
        rest.split('/').next().unwrap().to_string()
    }

    /// Runs a shell command line in the host's namespace; panics naming it on failure.
    pub fn ns_sh(&self, line: &str) -> String {
        let (ok, out) = self.in_ns(&["sh", "-c", line]);
        assert!(ok, "{line}: {out}");
        out
    }
}

/// Another network namespace (`ip netns add`), deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn new(role: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("strata-{role}{}-{n}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let ns = Self(name);
        ns.sh("ip link set lo up");
        ns
    }

    /// Runs a shell command line inside; panics naming it on failure.
    pub fn sh(&self, line: &str) -> String {
        let (ok, out) = self.try_sh(line);
        assert!(ok, "{line}: {out}");
        out
    }

    /// Runs a shell command line inside; (success, output).
    pub fn try_sh(&self, line: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", line])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Links it to host `h`'s namespace with a veth pair: `host_end` there (left without an
    /// address when `host_ip` is none), `own_end` here with `own_ip`.
    pub fn link(
        &self,
        h: &Host,
        host_end: &str,
        host_ip: Option<&str>,
        own_end: &str,
        own_ip: &str,
    ) {
        h.ns_sh(&format!(
            "ip link add {host_end} type veth peer name {own_end} netns {}",
            self.0
        ));
        match host_ip {
            Some(ip) => h.ns_sh(&format!(
                "ip addr add {ip} dev {host_end}; ip link set {host_end} up"
            )),
            None => h.ns_sh(&format!("ip link set {host_end} up")),
        };
        self.sh(&format!(
            "ip addr add {own_ip} dev {own_end}; ip link set {own_end} up"
        ));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Its processes first (a listener would keep nothing alive, but be tidy), then itself.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").arg(pid).status();
                }
            });
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
