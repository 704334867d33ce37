//! Text output of `strata vm`, `strata events` and `strata host`.

use strata_api::{Event, HostInfo, VmDetails, VmSummary};

pub fn list(vms: &[VmSummary]) {
    if vms.is_empty() {
        println!("No VMs. Create one with `strata vm create NAME`.");
        return;
    }
    println!(
        "{:<24} {:<9} {:>8} {:>4}",
        "NAME", "STATE", "MEMORY", "CPUS"
    );
    for v in vms {
        println!(
            "{:<24} {:<9} {:>5}MiB {:>4}",
            v.name,
            v.state.as_str(),
            v.memory_mib,
            v.cpus
        );
    }
}

pub fn show(v: &VmDetails) {
    println!("Name:          {}", v.name);
    println!("State:         {}", v.state.as_str());
    if let Some(e) = &v.last_error {
        println!("Last error:    {e}");
    }
    println!("Memory:        {} MiB", v.memory_mib);
    if let Some(min) = v.memory_min_mib {
        let now = v
            .memory_current_mib
            .map_or(String::new(), |c| format!("; now {c} MiB"));
        let avail = v.memory_available_mib.map_or(String::new(), |a| {
            format!(", {a} MiB available in the guest")
        });
        println!("Dynamic:       {min} MiB minimum{now}{avail}");
    }
    println!("Processors:    {}", v.cpus);
    let accel = if v.accelerator == v.accelerator_setting {
        v.accelerator.as_str().to_string()
    } else {
        format!(
            "{} (setting: {})",
            v.accelerator.as_str(),
            v.accelerator_setting.as_str()
        )
    };
    println!("Accelerator:   {accel}");
    println!("Machine:       {}", v.machine);
    let firmware = match (v.firmware, v.secure_boot) {
        (strata_api::Firmware::Bios, _) => "BIOS",
        (strata_api::Firmware::Uefi, false) => "UEFI",
        (strata_api::Firmware::Uefi, true) => "UEFI, secure boot",
    };
    println!(
        "Firmware:      {firmware}{}",
        if v.tpm { ", TPM 2.0" } else { "" }
    );
    if v.agent {
        println!("Guest agent:   heartbeat {}", heartbeat(v.heartbeat));
    }
    if let Some(g) = &v.guest {
        guest(g);
    }
    let boot: Vec<String> = v
        .boot_order
        .iter()
        .map(|b| format!("{b:?}").to_lowercase())
        .collect();
    println!("Boot order:    {}", boot.join(", "));
    for (i, d) in v.disks.iter().enumerate() {
        println!("Disk {i}:        {} ({:?})", d.path, d.bus);
    }
    if let Some(c) = &v.cdrom {
        println!("CD/DVD:        {c}");
    }
    if v.undo_disks || v.undo_kept {
        let kept = if v.undo_kept {
            "; kept undo disks hold changes"
        } else {
            ""
        };
        let on = if v.undo_disks { "on" } else { "off" };
        println!(
            "Undo disks:    {on} (when turned off: {}{kept})",
            v.undo_action.as_str()
        );
    }
    if v.checkpoints > 0 {
        println!("Checkpoints:   {}", v.checkpoints);
    }
    for m in &v.pending_merges {
        println!("Merge:         {} into {} ({})", m.layer, m.into, m.state);
    }
    nics(v);
    for c in &v.com_ports {
        println!("COM{}:          {:?} {}", c.port, c.kind, c.path);
    }
    if let Some(k) = &v.kernel {
        println!("Kernel:        {} {}", k.kernel, k.cmdline);
    }
    println!(
        "Automatic:     start {:?} (delay {} s), stop {:?}, shut-down timeout {} s",
        v.start_action, v.start_delay_secs, v.stop_action, v.shutdown_timeout_secs
    );
    if let (Some(pid), Some(q)) = (v.pid, v.qemu_pid) {
        println!(
            "Worker:        pid {pid} (QEMU pid {q}), started {}",
            v.started_at.as_deref().unwrap_or("?")
        );
    }
    if !v.notes.is_empty() {
        println!("Notes:         {}", v.notes);
    }
    println!("Folder:        {}", v.folder);
}

pub fn events(list: &[Event]) {
    for e in list {
        println!(
            "{} {:<7} {:>3} {:<16} {:<12} {}",
            e.time,
            e.level,
            e.code,
            e.vm.as_deref().unwrap_or("-"),
            e.user,
            e.message
        );
    }
}

pub fn host(h: &HostInfo) {
    println!("Strata:        {}", h.version);
    println!("Data folder:   {}", h.home);
    println!("QEMU:          {}", h.qemu);
    match &h.kvm_problem {
        None => println!("Accelerator:   kvm"),
        Some(why) => println!("Accelerator:   tcg (KVM unusable: {why})"),
    }
    println!(
        "Machine types: {} (new VMs), {} in all",
        h.default_machine,
        h.machines.len()
    );
    for f in &h.features {
        match &f.problem {
            None => println!("Feature:       {} (available)", f.name),
            Some(why) => println!("Feature:       {} (unavailable: {why})", f.name),
        }
    }
    println!("VMs:           {}", h.vms);
}

/// The VM's network adapters, one line each.
pub fn nics(v: &VmDetails) {
    for (i, n) in v.nics.iter().enumerate() {
        let mut line = format!("NIC {i}:         {:?}, MAC {}", n.model, n.mac);
        match &n.switch {
            Some(s) if n.connected => line.push_str(&format!(", switch {s}")),
            Some(s) => line.push_str(&format!(", switch {s} (disconnected)")),
            None => line.push_str(", user-mode network"),
        }
        if let Some(v) = n.vlan {
            line.push_str(&format!(", VLAN {v}"));
        }
        if let Some(b) = n.bandwidth_limit {
            line.push_str(&format!(", limit {b} bit/s"));
        }
        if n.switch.is_some() {
            let guards: Vec<&str> = [
                (!n.mac_spoofing, "MAC spoofing blocked"),
                (n.dhcp_guard, "DHCP guard"),
                (n.router_guard, "router guard"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect();
            if !guards.is_empty() {
                line.push_str(&format!(", {}", guards.join(", ")));
            }
        }
        if let Some(t) = &n.tap {
            line.push_str(&format!(", tap {t}"));
        }
        println!("{line}");
    }
}

fn heartbeat(h: strata_api::Heartbeat) -> &'static str {
    match h {
        strata_api::Heartbeat::None => "none",
        strata_api::Heartbeat::Ok => "ok",
        strata_api::Heartbeat::Lost => "lost",
    }
}

/// What the guest agent reported.
fn guest(g: &strata_api::GuestInfo) {
    let os = [g.os_name.as_deref(), g.os_version.as_deref()]
        .iter()
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if !os.is_empty() {
        println!("Guest OS:      {os}");
    }
    if let Some(h) = &g.hostname {
        println!("Guest name:    {h}");
    }
    for i in g.interfaces.iter().filter(|i| i.name != "lo") {
        println!(
            "Guest NIC:     {} {} {}",
            i.name,
            i.mac.as_deref().unwrap_or("-"),
            i.addresses.join(", ")
        );
    }
}
