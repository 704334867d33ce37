//! The host service with real guests: `strata serve` runs in the test, VMs boot a stock Debian
//! kernel with a busybox initramfs under TCG, and everything goes through the `strata` binary
//! (and curl for raw API requests).

mod agent;
mod api;
mod checkpoints;
mod guests;
mod hardware;
mod hotplug;
mod net;
mod net_guards;
mod net_nat;
mod net_nic;
mod netlab;
mod service;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testguest::Guest;

/// A host service in a data folder of its own, stopped (with its VMs) when dropped.
pub struct Host {
    pub dir: tempfile::TempDir,
    service: Option<Child>,
    env: Vec<(String, String)>,
    /// The network namespace the service (and so its VMs, bridges and taps) runs in.
    pub netns: Option<String>,
}

impl Host {
    pub fn new() -> Self {
        Self::with_env(&[])
    }

    /// A host whose service (and so its workers) runs with `env` added.
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sh")
            .tempdir_in("/tmp")
            .unwrap();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let mut h = Self {
            dir,
            service: None,
            env,
            netns: None,
        };
        h.start_service();
        h
    }

    /// A host whose service runs in a network namespace of its own (made here, deleted on drop
    /// with every bridge and tap in it): network tests never touch the host's own network.
    pub fn in_netns() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ns = format!("strata-t{}-{n}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {ns}");
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(ok.success());
        let dir = tempfile::Builder::new()
            .prefix("sh")
            .tempdir_in("/tmp")
            .unwrap();
        let mut h = Self {
            dir,
            service: None,
            env: Vec::new(),
            netns: Some(ns),
        };
        h.start_service();
        h
    }

    /// Runs `args` inside the host's network namespace; returns (success, stdout + stderr).
    pub fn in_ns(&self, args: &[&str]) -> (bool, String) {
        let ns = self
            .netns
            .as_deref()
            .expect("a host in a network namespace");
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn start_service(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home().join("serve.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_strata")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_strata")),
        };
        let child = cmd
            .arg("serve")
            .env("STRATA_HOME", self.home())
            .env("STRATA_ACCEL", "tcg")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.service = Some(child);
        let sock = self.home().join("api.sock");
        wait_for("the service's socket", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    /// Stops the service with SIGTERM (as systemd does on restart); VMs keep running.
    pub fn stop_service(&mut self) {
        if let Some(mut c) = self.service.take() {
            let pid = rustix::process::Pid::from_child(&c);
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            let status = c.wait().unwrap();
            assert!(status.success(), "strata serve exited with {status}");
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("STRATA_HOME", self.home())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "strata {args:?} panicked: {stderr}"
        );
        out
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            !out.status.success(),
            "strata {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn state(&self, vm: &str) -> String {
        self.json(&["vm", "show", vm, "--json"])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn wait_state(&self, vm: &str, want: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let s = self.state(vm);
            if s == want {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "VM {vm} stayed {s}, expected {want}:\n{}\n{}",
                self.console(vm),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn console(&self, vm: &str) -> String {
        self.ok(&["vm", "console", vm, "--log"])
    }

    /// Waits until the console shows `text`.
    pub fn wait_console(&self, vm: &str, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.console(vm).contains(text) {
            assert!(
                start.elapsed() < limit,
                "VM {vm}'s console never showed {text:?}:\n{}\n{}",
                self.console(vm),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn events(&self, vm: &str) -> Vec<Value> {
        self.json(&["events", "--vm", vm, "--json"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// The message of VM `vm`'s first event whose message starts with `prefix`.
    pub fn event_message(&self, vm: &str, prefix: &str) -> String {
        self.events(vm)
            .iter()
            .filter_map(|e| e["message"].as_str())
            .find(|m| m.starts_with(prefix))
            .unwrap_or_else(|| panic!("{vm}: no event starting with '{prefix}'"))
            .to_string()
    }

    pub fn has_event(&self, vm: &str, name: &str) -> bool {
        self.events(vm).iter().any(|e| e["name"] == name)
    }

    /// Whether the event log has an event called `name` (any VM or none).
    pub fn has_event_named(&self, name: &str) -> bool {
        let all: Value = self.json(&["events", "--json"]);
        all.as_array().unwrap().iter().any(|e| e["name"] == name)
    }

    /// The service's and the workers' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- serve.log\n{}",
            std::fs::read_to_string(self.home().join("serve.log")).unwrap_or_default()
        );
        for e in std::fs::read_dir(self.home().join("vms"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in ["worker.log", "qemu.log"] {
                let text = std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
                out.push_str(&format!(
                    "--- {}/{f}\n{text}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
        out
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Turn off every VM still running (workers and QEMU), then the service.
        for e in std::fs::read_dir(self.home().join("vms"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(e.path().join("status.json")) else {
                continue;
            };
            let Ok(st) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            for key in ["worker", "qemu"] {
                if let Some(pid) = st[key][0].as_i64().and_then(|p| i32::try_from(p).ok()) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
        }
        if let Some(mut c) = self.service.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Sends `sig` to the process whose pid is the JSON number `pid` (from `vm show --json`).
pub fn signal(pid: &Value, sig: rustix::process::Signal) {
    let pid = i32::try_from(pid.as_i64().expect("a pid")).unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), sig).unwrap();
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds a guest whose init runs `script` (busybox sh) after loading `modules`.
pub fn guest(dir: &Path, name: &str, modules: &[&str], script: &str) -> Guest {
    let d = dir.join(format!("guest-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    strata_testguest::build(&d, modules, script)
}

/// `vm create` arguments for direct kernel boot of `g`.
pub fn boot_args(g: &Guest) -> Vec<String> {
    vec![
        "--kernel".into(),
        g.kernel.display().to_string(),
        "--initrd".into(),
        g.initrd.display().to_string(),
        "--cmdline".into(),
        "console=ttyS0 panic=-1 quiet".into(),
    ]
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A guest that prints a counter on its console, five times a second, forever.
pub const COUNTER: &str = r#"
i=0
while true; do echo "count $i"; i=$((i+1)); sleep 0.2; done
"#;

/// The numbers of the complete `count N` lines in `text`.
pub fn counts(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("count ")?.trim().parse().ok())
        .collect()
}

pub fn vm_create(h: &Host, name: &str, g: &Guest, extra: &[&str]) -> Value {
    let mut args: Vec<String> = vec![
        "vm".into(),
        "create".into(),
        name.into(),
        "--memory".into(),
        "256M".into(),
    ];
    args.extend(boot_args(g));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(&h.ok(&a)).unwrap()
}
