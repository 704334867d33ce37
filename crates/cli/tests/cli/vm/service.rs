//! The host service restarting under running VMs, and a worker dying.

use std::time::Duration;

use super::*;

const T: Duration = Duration::from_secs(180);

#[test]
fn restarting_the_service_leaves_two_vms_running_and_reattaches_them() {
    let mut h = Host::new();
    let g = guest(h.home(), "counter", &[], COUNTER);
    vm_create(&h, "one", &g, &[]);
    vm_create(&h, "two", &g, &["--cpus", "2"]);
    let p1 = h.json(&["vm", "start", "one", "--json"])["pid"].clone();
    let p2 = h.json(&["vm", "start", "two", "--json"])["pid"].clone();
    h.wait_console("one", "count 3", T);
    h.wait_console("two", "count 3", T);

    h.stop_service();
    // The guests keep running without the service.
    let log = h.home().join("vms/one/console.log");
    let before = counts(&std::fs::read_to_string(&log).unwrap()).len();
    wait_for("the guest to run without the service", T, || {
        counts(&std::fs::read_to_string(&log).unwrap()).len() > before + 3
    });
    h.start_service();

    for (vm, pid) in [("one", &p1), ("two", &p2)] {
        let shown = h.json(&["vm", "show", vm, "--json"]);
        assert_eq!(shown["state"], "running", "{shown}");
        assert_eq!(&shown["pid"], pid, "the same worker");
        assert!(h.has_event(vm, "vm-reattached"));
    }
    // The reattached VMs obey.
    assert_eq!(h.json(&["vm", "pause", "one", "--json"])["state"], "paused");
    assert_eq!(
        h.json(&["vm", "resume", "one", "--json"])["state"],
        "running"
    );
    assert_eq!(h.json(&["vm", "stop", "one", "--json"])["state"], "off");
    assert_eq!(h.json(&["vm", "stop", "two", "--json"])["state"], "off");
}

#[test]
fn a_dead_worker_is_reconciled_to_crashed_and_its_qemu_does_not_linger() {
    let mut h = Host::new();
    let g = guest(h.home(), "counter", &[], COUNTER);
    vm_create(&h, "lost", &g, &[]);
    let vm = h.json(&["vm", "start", "lost", "--json"]);
    h.wait_console("lost", "count 2", T);
    h.stop_service();
    // Power loss for the worker: SIGKILL, no chance to record anything.
    let qemu = u32::try_from(vm["qemu_pid"].as_i64().unwrap()).unwrap();
    signal(&vm["pid"], rustix::process::Signal::KILL);
    h.start_service();
    let shown = h.json(&["vm", "show", "lost", "--json"]);
    assert_eq!(shown["state"], "crashed", "{shown}");
    assert!(h.has_event("lost", "vm-reconciled"));
    wait_for(
        "QEMU to end with its worker",
        Duration::from_secs(10),
        || {
            !Path::new(&format!("/proc/{qemu}")).exists()
                || std::fs::read_to_string(format!("/proc/{qemu}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        },
    );
    h.ok(&["vm", "start", "lost"]);
    h.wait_console("lost", "count 2", T);
    h.ok(&["vm", "stop", "lost"]);
}

#[test]
fn automatic_stop_and_start_actions() {
    let mut h = Host::new();
    let g = guest(h.home(), "counter", &[], COUNTER);
    vm_create(
        &h,
        "auto",
        &g,
        &["--start-action", "if-running", "--stop-action", "save"],
    );
    vm_create(&h, "manual", &g, &["--stop-action", "turn-off"]);
    h.ok(&["vm", "start", "auto"]);
    h.ok(&["vm", "start", "manual"]);
    h.wait_console("auto", "count 2", T);
    let report = h.json(&["host", "stop-vms", "--json"]);
    let results = report["results"].as_array().unwrap();
    assert!(
        results.iter().any(|r| r[0] == "auto" && r[1] == "saved"),
        "{report}"
    );
    assert!(
        results
            .iter()
            .any(|r| r[0] == "manual" && r[1] == "turned off"),
        "{report}"
    );
    assert_eq!(h.state("auto"), "saved");
    assert_eq!(h.state("manual"), "off");
    // One service per data folder, even on another socket.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--socket"])
        .arg(h.home().join("other.sock"))
        .env("STRATA_HOME", h.home())
        .env("STRATA_ACCEL", "tcg")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another host service already runs on this data folder"),
        "{err}"
    );
    h.stop_service();
    h.start_service();
    // "auto" was running when the host stopped its VMs: it comes back (from its saved state).
    h.wait_state("auto", "running", T);
    assert_eq!(h.state("manual"), "off");
    assert!(h.has_event("auto", "vm-automatic-action"));
    assert!(h.has_event("auto", "vm-restored"));
    h.ok(&["vm", "stop", "auto"]);
}

#[test]
fn after_a_power_loss_no_vm_stays_in_a_transitional_state() {
    let mut h = Host::new();
    let g = guest(h.home(), "counter", &[], COUNTER);
    for name in ["was-saving", "was-running"] {
        vm_create(&h, name, &g, &[]);
    }
    h.stop_service();
    // What a power loss leaves: statuses of VMs that were active in the previous boot, naming
    // pids that are alive now (this test process, with its real start time).
    let me = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    for (name, state) in [("was-saving", "saving"), ("was-running", "running")] {
        let status = serde_json::json!({
            "state": state, "worker": [me, start], "qemu": [me, start],
            "accelerator": "tcg", "boot": "00000000-0000-0000-0000-000000000000"
        });
        std::fs::write(
            h.home().join(format!("vms/{name}/status.json")),
            status.to_string(),
        )
        .unwrap();
    }
    h.start_service();
    for name in ["was-saving", "was-running"] {
        let shown = h.json(&["vm", "show", name, "--json"]);
        assert_eq!(shown["state"], "crashed", "{shown}");
        assert!(h.has_event(name, "vm-reconciled"));
    }
    // This process was named as the VMs' QEMU but belongs to another boot: it was not killed,
    // and the VM starts again.
    h.ok(&["vm", "start", "was-running"]);
    h.wait_console("was-running", "count 1", T);
    h.ok(&["vm", "stop", "was-running"]);
}
