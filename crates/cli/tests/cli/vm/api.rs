//! Bad requests get 4xx answers with clear messages, through curl on the API socket and through
//! the CLI.

use std::process::Command;

use super::*;

/// (status, body) of a raw request with curl.
fn curl(h: &Host, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(h.home().join("api.sock"))
        .args(["-X", method, &format!("http://strata{path}")]);
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let v = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (code.trim().parse().unwrap(), v)
}

fn error(h: &Host, method: &str, path: &str, body: Option<&str>, status: u16, words: &str) {
    let (code, v) = curl(h, method, path, body);
    assert_eq!(code, status, "{method} {path} {body:?}: {v}");
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {v}"));
    assert!(
        msg.contains(words),
        "{method} {path}: {msg:?} should say {words:?}"
    );
    // The kind goes with the status.
    let kind = v["kind"].as_str().unwrap_or_default();
    let expected: &[&str] = match status {
        400 => &["invalid"],
        404 => &["not-found"],
        409 => &["conflict", "unsupported", "refused"],
        _ => &[],
    };
    assert!(
        expected.is_empty() || expected.contains(&kind),
        "{method} {path}: kind {kind:?} with status {status}"
    );
}

#[test]
fn bad_requests_get_4xx_with_clear_messages() {
    let h = Host::new();
    error(
        &h,
        "GET",
        "/v1/vms/nosuch",
        None,
        404,
        "no VM named 'nosuch'",
    );
    error(
        &h,
        "POST",
        "/v1/vms/nosuch/start",
        None,
        404,
        "no VM named 'nosuch'",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","memory_mib":0}"#),
        400,
        "memory 0 MiB is out of range",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","cpus":1000}"#),
        400,
        "1000 virtual processors",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","memory_mib":"lots"}"#),
        400,
        "memory_mib",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a", "#),
        400,
        "invalid request body",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","memroy_mib":512}"#),
        400,
        "unknown field `memroy_mib`",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"../etc"}"#),
        400,
        "invalid VM name",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","disks":[{"path":"relative.vhd"}]}"#),
        400,
        "must be absolute",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","disks":[{"path":"/etc/passwd"}]}"#),
        400,
        "disk '/etc/passwd'",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","nics":[{"mac":"01:00:5e:00:00:01"}]}"#),
        409,
        "multicast",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","nics":[{"mac":"00:00:00:00:00:00"}]}"#),
        409,
        "all zeros",
    );
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","nics":[{"mac":"02:53:54:00:00:07"},{"mac":"02:53:54:00:00:07"}]}"#),
        409,
        "used twice in this VM",
    );
    let (code, _) = curl(&h, "POST", "/v1/vms", Some(r#"{"name":"web1"}"#));
    assert_eq!(code, 201);
    error(
        &h,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"web1"}"#),
        409,
        "already exists",
    );
    error(
        &h,
        "POST",
        "/v1/vms/web1/pause",
        None,
        409,
        "VM 'web1' is off",
    );
    let (_, v) = curl(&h, "POST", "/v1/vms/web1/pause", None);
    assert_eq!(v["kind"], "conflict");
    let (code, v) = curl(
        &h,
        "PATCH",
        "/v1/vms/web1",
        Some(r#"{"machine":"pc-i440fx-99.0"}"#),
    );
    assert_eq!(
        (code, v["kind"].as_str()),
        (409, Some("unsupported")),
        "{v}"
    );
    // Refusals are in the event log, with the request and the reason.
    let refused: Vec<String> = h
        .events("web1")
        .into_iter()
        .filter(|e| e["name"] == "vm-request-failed")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        refused
            .iter()
            .any(|m| m == "Pause: VM 'web1' is off: cannot pause it (start it first)")
            && refused
                .iter()
                .any(|m| m.contains("Create: a VM named 'web1' already exists")),
        "{refused:?}"
    );
    error(
        &h,
        "POST",
        "/v1/vms/web1/fly",
        None,
        404,
        "unknown action 'fly'",
    );
    error(
        &h,
        "PATCH",
        "/v1/vms/web1",
        Some(r#"{"cpus":0}"#),
        400,
        "0 virtual processors",
    );
    error(
        &h,
        "PATCH",
        "/v1/vms/web1",
        Some(r#"{"colour":"red"}"#),
        400,
        "unknown field `colour`",
    );
    error(
        &h,
        "GET",
        "/v1/events?since=yesterday",
        None,
        400,
        "since 'yesterday'",
    );
    error(&h, "GET", "/v2/nothing", None, 404, "no such API route");

    // The CLI shows the same messages and exits non-zero.
    let err = h.fails(&["vm", "start", "nosuch"]);
    assert!(err.contains("no VM named 'nosuch'"), "{err}");
    let err = h.fails(&["vm", "create", "big", "--memory", "3T"]);
    assert!(err.contains("out of range"), "{err}");
    let err = h.fails(&["vm", "create", "x", "--nic", "token-ring"]);
    assert!(
        err.contains("invalid network adapter model 'token-ring'"),
        "{err}"
    );
    assert_eq!(
        h.json(&["vm", "list", "--json"]).as_array().unwrap().len(),
        1
    );
}

#[test]
fn settings_change_only_where_the_state_allows_and_delete_keeps_disks() {
    let h = Host::new();
    let g = guest(h.home(), "counter", &[], COUNTER);
    let disk = h.home().join("keep.vhd");
    h.ok(&["disk", "create", &s(&disk), "--size", "16M"]);
    vm_create(&h, "web1", &g, &["--disk", &s(&disk), "--nic", "virtio"]);
    let mac = h.json(&["vm", "show", "web1", "--json"])["nics"][0]["mac"].clone();
    h.ok(&[
        "vm", "set", "web1", "--memory", "300", "--nic", "e1000", "--nic", "virtio",
    ]);
    let shown = h.json(&["vm", "show", "web1", "--json"]);
    assert_eq!(shown["memory_mib"], 300);
    assert_eq!(
        shown["nics"][0]["mac"], mac,
        "the first adapter keeps its MAC"
    );
    assert_eq!(shown["nics"][0]["model"], "e1000");
    // The machine type is pinned at creation to the host's newest, and changes only when asked.
    let host = h.json(&["host", "info", "--json"]);
    assert_eq!(shown["machine"], host["default_machine"]);
    let older = host["machines"][1].as_str().unwrap().to_string();
    h.ok(&["vm", "set", "web1", "--machine", &older]);
    assert_eq!(h.json(&["vm", "show", "web1", "--json"])["machine"], older);
    let err = h.fails(&["vm", "set", "web1", "--machine", "pc-i440fx-99.0"]);
    assert!(
        err.contains("'pc-i440fx-99.0'") && err.contains("offers"),
        "{err}"
    );
    let err = h.fails(&["vm", "set", "web1", "--machine", "isapc"]);
    assert!(err.contains("machine type 'isapc'"), "{err}");
    // Q35 is a machine family of its own, pinned to this host's newest.
    h.ok(&["vm", "set", "web1", "--machine", "q35"]);
    let m = h.json(&["vm", "show", "web1", "--json"])["machine"].clone();
    assert!(m.as_str().unwrap().starts_with("pc-q35-"), "{m}");
    h.ok(&["vm", "set", "web1", "--machine", "pc"]);
    assert_eq!(
        h.json(&["vm", "show", "web1", "--json"])["machine"],
        host["default_machine"]
    );
    // Direct kernel boot changes while the VM is off, like any other hardware setting.
    let cmdline = format!(
        "{} strata.test=1",
        shown["kernel"]["cmdline"].as_str().unwrap()
    );
    let kernel = shown["kernel"]["kernel"].as_str().unwrap().to_string();
    let initrd = shown["kernel"]["initrd"].as_str().unwrap().to_string();
    h.ok(&[
        "vm",
        "set",
        "web1",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        &cmdline,
    ]);
    assert_eq!(
        h.json(&["vm", "show", "web1", "--json"])["kernel"]["cmdline"],
        cmdline.as_str()
    );
    h.ok(&["vm", "start", "web1"]);
    h.wait_console("web1", "count 1", Duration::from_secs(180));
    let err = h.fails(&["vm", "set", "web1", "--memory", "1G"]);
    assert!(
        err.contains("VM 'web1' is running: cannot change its memory"),
        "{err}"
    );
    let err = h.fails(&["vm", "set", "web1", "--machine", "pc"]);
    assert!(err.contains("cannot change its machine type"), "{err}");
    let err = h.fails(&["vm", "set", "web1", "--kernel", ""]);
    assert!(
        err.contains("cannot change its direct kernel boot"),
        "{err}"
    );
    h.ok(&["vm", "set", "web1", "--notes", "front end"]);
    let err = h.fails(&["vm", "delete", "web1"]);
    assert!(
        err.contains("VM 'web1' is running")
            && err.contains("shut it down, turn it off or save it first"),
        "{err}"
    );
    let err = h.fails(&["vm", "start", "web1"]);
    assert!(err.contains("already started"), "{err}");
    // A second VM can't take the disk of the first.
    let err = h.fails(&["vm", "create", "thief", "--disk", &s(&disk)]);
    assert!(err.contains("already attached to VM 'web1'"), "{err}");
    h.ok(&["vm", "stop", "web1"]);
    h.ok(&["vm", "delete", "web1"]);
    assert!(disk.exists(), "delete keeps the disks");
    assert!(!h.home().join("vms/web1").exists());
    assert!(h.has_event("web1", "vm-deleted"));
}

use std::time::Duration;

#[test]
fn an_old_qemu_refuses_saving_up_front_and_says_which_version_is_needed() {
    // QEMU 7.2 (Debian 12's own) lacks the file: migration transport. A wrapper says 7.2 and
    // runs the real QEMU otherwise, so the VM really runs.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("qemu-7.2");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then\n  echo 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)'\n  exit 0\nfi\nexec qemu-system-x86_64 \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = Host::with_env(&[("STRATA_QEMU", &s(&wrapper))]);
    let info = h.json(&["host", "info", "--json"]);
    assert_eq!(info["qemu_version"], "7.2.19");
    let save = info["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "save-state")
        .unwrap()
        .clone();
    assert_eq!(save["available"], false);
    assert!(
        save["problem"].as_str().unwrap().contains("8.2.0"),
        "{save}"
    );
    let text = h.ok(&["host", "info"]);
    assert!(text.contains("save-state (unavailable"), "{text}");

    let g = guest(h.home(), "counter", &[], COUNTER);
    vm_create(&h, "old", &g, &[]);
    h.ok(&["vm", "start", "old"]);
    let err = h.fails(&["vm", "save", "old"]);
    assert!(
        err.contains("cannot save its state")
            && err.contains("QEMU 8.2.0 or newer")
            && err.contains("7.2.19"),
        "{err}"
    );
    let (code, v) = curl(&h, "POST", "/v1/vms/old/save", None);
    assert_eq!(
        (code, v["kind"].as_str()),
        (409, Some("unsupported")),
        "{v}"
    );
    assert_eq!(
        h.state("old"),
        "running",
        "a refused save leaves the VM as it was"
    );
    assert!(!h.home().join("vms/old/saved.json").exists());
    let (code, v) = curl(&h, "POST", "/v1/vms/old/turn-off", None);
    assert_eq!((code, v["state"].as_str()), (200, Some("off")), "{v}");
}

/// The processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text))
        })
        .collect()
}

#[test]
fn a_failed_start_undoes_itself_and_a_failed_restore_keeps_the_saved_state() {
    let h = Host::new();
    let g = guest(h.home(), "counter", &[], COUNTER);
    let disk = h.home().join("held.vhd");
    h.ok(&["disk", "create", &s(&disk), "--size", "16M"]);
    vm_create(&h, "held", &g, &["--disk", &s(&disk)]);

    // Before QEMU: a disk held by another program.
    let holder = strata_vhd::Disk::open(&disk, strata_vhd::OpenOptions::write()).unwrap();
    let err = h.fails(&["vm", "start", "held"]);
    assert!(err.contains("held.vhd") && err.contains("in use"), "{err}");
    let vm = h.json(&["vm", "show", "held", "--json"]);
    assert_eq!(vm["state"], "off");
    assert!(
        vm["last_error"].as_str().unwrap().contains("in use"),
        "{vm}"
    );
    assert!(h.has_event("held", "vm-start-failed"));
    // The worker's kind reaches the API.
    let (code, v) = curl(&h, "POST", "/v1/vms/held/start", None);
    assert_eq!((code, v["kind"].as_str()), (409, Some("conflict")), "{v}");
    drop(holder);

    // After QEMU: a saved state that does not load. QEMU is killed, the VM stays saved.
    h.ok(&["vm", "start", "held"]);
    assert_eq!(h.json(&["vm", "save", "held", "--json"])["state"], "saved");
    let image = h.home().join("vms/held/saved.state");
    let len = std::fs::metadata(&image).unwrap().len();
    std::fs::write(&image, vec![0x5a; usize::try_from(len).unwrap()]).unwrap();
    let (code, v) = curl(&h, "POST", "/v1/vms/held/start", None);
    assert_eq!((code, v["kind"].as_str()), (409, Some("refused")), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot restore the saved state"),
        "{v}"
    );
    let vm = h.json(&["vm", "show", "held", "--json"]);
    assert_eq!(vm["state"], "saved", "{vm}");
    assert!(vm["pid"].is_null() && vm["qemu_pid"].is_null(), "{vm}");
    let home = h.home().display().to_string();
    wait_for(
        "no QEMU of the failed restore",
        Duration::from_secs(10),
        || processes_mentioning(&format!("{home}/run/")).is_empty(),
    );
    assert!(image.exists(), "a failed restore keeps the saved state");
    h.ok(&["vm", "discard-saved", "held"]);
    h.ok(&["vm", "start", "held"]);
    assert_eq!(
        h.json(&["vm", "turn-off", "held", "--json"])["state"],
        "off"
    );
}
