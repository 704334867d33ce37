//! The real QEMU guest agent (Debian's `qemu-ga`, copied into the initramfs with its libraries)
//! in a TCG guest, on a virtio-serial port named `org.qemu.guest_agent.0` whose host side is a
//! Unix socket: the test answers `guest-sync` and `guest-get-osinfo`, then `guest-shutdown`
//! powers the guest off.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_testguest::{
    agent_qemu_args, build_with, host_kernel, run, shared_libraries, Options, AGENT_BINARY,
    AGENT_MODULES, START_AGENT,
};

/// How long the agent has to answer, from QEMU's start.
const AGENT_DEADLINE: Duration = Duration::from_secs(90);

/// A QMP connection to the agent: one JSON object per line each way.
struct Agent {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Agent {
    fn send(&mut self, command: &str) {
        self.writer.write_all(command.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    /// The next line the agent sends, without whitespace; None if none comes within the socket's
    /// read timeout.
    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => panic!("the agent's socket closed"),
            Ok(_) => Some(l.chars().filter(|c| !c.is_whitespace()).collect()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading from the agent: {e}"),
        }
    }

    /// Sends `guest-sync` with `id` until the agent answers it (discarding anything else, such as
    /// answers to earlier attempts) or `deadline` passes.
    fn sync(&mut self, id: u32, deadline: Instant) -> bool {
        let want = format!("{{\"return\":{id}}}");
        while Instant::now() < deadline {
            self.send(&format!(
                "{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{id}}}}}"
            ));
            let attempt = Instant::now();
            while attempt.elapsed() < Duration::from_secs(3) {
                match self.line() {
                    Some(l) if l == want => return true,
                    Some(_) => {}
                    None => break,
                }
            }
        }
        false
    }
}

fn connect(socket: &Path, deadline: Instant) -> Agent {
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "QEMU never listened on {socket:?}: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    Agent {
        writer: stream.try_clone().unwrap(),
        reader: BufReader::new(stream),
    }
}

#[test]
fn agent_libraries_resolve() {
    let libs = shared_libraries(Path::new(AGENT_BINARY));
    assert!(
        libs.iter()
            .any(|l| l == Path::new("/lib64/ld-linux-x86-64.so.2")),
        "{libs:?}"
    );
    assert!(
        libs.iter().any(|l| l
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libglib-2.0.so"))),
        "{libs:?}"
    );
    assert!(
        libs.iter().all(|l| l.is_absolute() && l.exists()),
        "{libs:?}"
    );
    // busybox-static has none.
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .unwrap();
    assert_eq!(shared_libraries(busybox), Vec::<std::path::PathBuf>::new());
}

#[test]
fn real_agent_answers_over_virtio_serial() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("qga.sock");
    let init = format!(
        "{START_AGENT}\necho guest: dirs $(ls -d /run /var/run /tmp)\n\
         sleep 120\ncat /tmp/qemu-ga.log\npoweroff -f"
    );
    let guest = build_with(
        dir.path(),
        &Options {
            modules: AGENT_MODULES,
            binaries: &[Path::new(AGENT_BINARY)],
            init: &init,
        },
    );
    let root = dir.path().join("initramfs");
    for p in [
        "usr/sbin/qemu-ga",
        "lib64/ld-linux-x86-64.so.2",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "var/run",
    ] {
        assert!(root.join(p).exists(), "{p} is not in the initramfs");
    }

    let extra = agent_qemu_args(&socket);
    let started = Instant::now();
    let qemu = std::thread::spawn(move || run(&guest, 256, &extra, Duration::from_secs(240)));
    let deadline = started + AGENT_DEADLINE;
    let mut agent = connect(&socket, deadline);
    let synced = agent.sync(1234, deadline);
    if !synced {
        // The guest sleeps 120 s then powers off: wait for it, to show its console.
        let run = qemu.join().unwrap();
        panic!(
            "the agent did not answer guest-sync within {AGENT_DEADLINE:?}:\n{}",
            run.console
        );
    }
    eprintln!("agent answered guest-sync after {:?}", started.elapsed());
    // A second sync with a fresh id drains any answer to an earlier attempt.
    let resynced = agent.sync(5678, Instant::now() + Duration::from_secs(30));
    agent.send("{\"execute\":\"guest-get-osinfo\"}");
    let osinfo = agent.line();
    // guest-shutdown answers nothing on success: the guest powers off and QEMU exits. Shut down
    // before checking the answers, so that a failed check leaves no QEMU behind.
    agent.send("{\"execute\":\"guest-shutdown\"}");
    let run = qemu.join().unwrap();

    assert!(resynced, "the agent answered one guest-sync only");
    let osinfo = osinfo.expect("guest-get-osinfo answers");
    assert!(osinfo.starts_with("{\"return\":{"), "{osinfo}");
    let (_, version) = host_kernel();
    assert!(
        osinfo.contains(&format!("\"kernel-release\":\"{version}\"")),
        "the guest runs the host's Debian kernel: {osinfo}"
    );
    assert!(osinfo.contains("\"machine\":\"x86_64\""), "{osinfo}");
    assert!(
        run.exited,
        "guest-shutdown did not power off:\n{}",
        run.console
    );
    assert!(
        run.console.contains("qga: started on /dev/vport"),
        "{}",
        run.console
    );
    assert!(
        run.console.contains("guest: dirs /run /tmp /var/run"),
        "{}",
        run.console
    );
}
