//! `strata completions` and `strata man`: scripts that name the real commands (and a bash one
//! that completes in a real bash), refused shells, and roff pages for each command.

use std::process::Command;

use crate::{fails, ok, s, sh, strata};

/// Commands at several depths, a hyphenated one included.
const NAMES: [&str; 7] = [
    "vm",
    "disk",
    "events",
    "host",
    "discard-saved",
    "set-parent",
    "stop-vms",
];

#[test]
fn completions_name_the_real_commands() {
    for (shell, marker) in [
        ("bash", "complete -F _strata"),
        ("zsh", "#compdef strata"),
        ("fish", "complete -c strata"),
    ] {
        let script = ok(&["completions", shell]);
        assert!(
            script.contains(marker),
            "{shell}: no '{marker}' in:\n{script}"
        );
        for name in NAMES {
            assert!(script.contains(name), "{shell}: '{name}' missing");
        }
        // Options come along too (fish names them without their dashes).
        assert!(
            script.contains("delete-disks"),
            "{shell}: no --delete-disks"
        );
        assert!(
            script.contains("allow-shrink"),
            "{shell}: no --allow-shrink"
        );
    }
}

#[test]
fn bash_completion_completes_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.bash");
    std::fs::write(&file, ok(&["completions", "bash"])).unwrap();
    // What bash offers after `strata vm discard-s` and `strata disk set-p`.
    let script = format!(
        "source {}
         COMP_WORDS=(strata vm discard-s); COMP_CWORD=2; _strata strata discard-s vm; echo \"${{COMPREPLY[*]}}\"
         COMP_WORDS=(strata disk set-p); COMP_CWORD=2; _strata strata set-p disk; echo \"${{COMPREPLY[*]}}\"",
        s(&file)
    );
    let out = sh(Command::new("bash").args(["-c", &script]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["discard-saved", "set-parent"], "{out}");
}

#[test]
fn an_unknown_shell_is_refused() {
    let out = strata(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "printed a script: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(err.contains("bash, zsh, fish"), "{err}");
    // And a shell is required.
    assert!(fails(&["completions"]).contains("<SHELL>"));
}

#[test]
fn man_writes_a_roff_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/man1");
    let said = ok(&["man", "--out", s(&out)]);
    let mut pages: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert!(
        said.contains(&format!("wrote {} manual pages", pages.len())),
        "{said} {pages:?}"
    );
    for page in [
        "strata.1",
        "strata-vm.1",
        "strata-disk.1",
        "strata-events.1",
        "strata-host.1",
        "strata-serve.1",
        "strata-completions.1",
        "strata-man.1",
        "strata-vm-create.1",
        "strata-vm-discard-saved.1",
        "strata-disk-set-parent.1",
        "strata-host-stop-vms.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "no {page} in {pages:?}");
    }
    // Hidden commands (the workers) and clap's `help` get no page.
    for p in &pages {
        assert!(
            !p.contains("worker") && !p.contains("help") && p != "strata-disk-serve.1",
            "{p}"
        );
    }
    let top = std::fs::read_to_string(out.join("strata.1")).unwrap();
    assert!(top.contains(".TH strata 1"), "{top}");
    assert!(top.contains(".SH SUBCOMMANDS"), "{top}");
    assert!(top.contains("strata\\-vm(1)"), "{top}");
    let create = std::fs::read_to_string(out.join("strata-vm-create.1")).unwrap();
    assert!(create.contains(".TH strata-vm-create 1"), "{create}");
    assert!(create.contains("\\-\\-memory"), "{create}");
}

#[test]
fn man_into_a_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "").unwrap();
    assert!(fails(&["man", "--out", s(&file)]).contains("strata: error:"));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `strata disk inspect X | head -1`: the reader closes the pipe before the text is out.
    let vhd = crate::interop("qemu-ext2-dynamic.vhd");
    for args in [
        &["disk", "inspect", s(&vhd)][..],
        &["completions", "bash"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "strata {args:?}: {stderr}"
        );
    }
}
