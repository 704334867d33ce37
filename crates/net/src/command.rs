//! Running the few kernel tools this crate spawns (`nft`, `tc`): their standard error is the
//! kernel's or the tool's reason, and it always goes into the error, never to a log alone.
//!
//! Children are spawned from the calling thread, so they run in that thread's network namespace
//! (fork copies the calling task's namespaces): a thread that entered a namespace of its own gets
//! its rules there.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{NetError, NetErrorKind};

/// Runs `program` with `args`, feeding it `input` on its standard input when given; returns its
/// standard output. A failure names `object` and carries the tool's standard error.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    object: &str,
) -> Result<String, NetError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (not installed? see scripts/install-deps.sh)"
            } else {
                ""
            };
            NetError::new(
                NetErrorKind::Io,
                object,
                format!("cannot run {program}: {e}{hint}"),
            )
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error (the tool exited early) shows up as its exit status and stderr below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::new(NetErrorKind::Io, object, format!("{program}: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(NetError::new(
        NetErrorKind::Kernel,
        object,
        format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            stderr.trim()
        ),
    ))
}

/// Refuses an interface name that the kernel would not take or that could be read as more than
/// a name by `nft` or `tc`: only `[A-Za-z0-9-_.]`, 1 to 15 bytes, not `.` or `..`.
pub(crate) fn check_ifname(name: &str) -> Result<(), NetError> {
    let bad = |why: &str| {
        NetError::new(
            NetErrorKind::Invalid,
            &format!("interface name '{}'", name.escape_debug()),
            why,
        )
    };
    if name.is_empty() || name.len() > 15 {
        return Err(bad("must be 1 to 15 bytes long"));
    }
    if name == "." || name == ".." {
        return Err(bad("is not a valid interface name"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(ok) {
        return Err(bad("may only hold letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_s_refusal_carries_its_stderr_and_a_missing_tool_is_named() {
        // `nft -c` only checks: nothing reaches the kernel.
        let e = run(
            "nft",
            &["-c", "-f", "-"],
            Some("table ip x { bogus }\n"),
            "fw",
        )
        .unwrap_err();
        assert_eq!(e.kind, NetErrorKind::Kernel, "{e}");
        assert!(
            e.message.contains("syntax error") && e.object == "fw",
            "{e}"
        );
        let e = run("strata-no-such-tool", &[], None, "fw").unwrap_err();
        assert_eq!(e.kind, NetErrorKind::Io, "{e}");
        assert!(e.message.contains("strata-no-such-tool"), "{e}");
    }

    #[test]
    fn interface_names_are_checked() {
        for good in ["stb-0123456789", "stt-01234567-15", "eth0", "a.b_c"] {
            check_ifname(good).unwrap();
        }
        for bad in [
            "",
            "0123456789abcdef",
            "br0\" accept",
            "br0;",
            "a b",
            "..",
            "tap{",
            "é",
        ] {
            assert_eq!(
                check_ifname(bad).unwrap_err().kind,
                NetErrorKind::Invalid,
                "{bad}"
            );
        }
    }
}
