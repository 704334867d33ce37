//! A real guest (stock Debian kernel, busybox initramfs, QEMU under TCG) whose disks reach QEMU only
//! through Strata's NBD server (`blockdev-add` driver nbd over Unix sockets): a virtio disk that is
//! a differencing disk over a base the host wrote, and an IDE disk. The guest reads the base's
//! data through the chain, writes a marker to each disk, syncs and powers off; the VHD files then
//! hold the markers, read through the library, and pass `check`.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_nbd::{Export, VhdBackend};
use strata_vhd::{Disk, NewDisk, OpenOptions};

fn serve(disk: &Path, socket: &Path) {
    let d = Disk::open(disk, OpenOptions::write()).unwrap();
    let listener = UnixListener::bind(socket).unwrap();
    let export = Export {
        name: String::new(),
        backend: Arc::new(VhdBackend::new(d)),
    };
    std::thread::spawn(move || strata_nbd::serve_unix(listener, export));
}

fn read(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let d = Disk::open(
        path,
        OpenOptions {
            lock: false,
            ..OpenOptions::read()
        },
    )
    .unwrap();
    let mut b = vec![0u8; len];
    d.read_at(&mut b, off).unwrap();
    b
}

#[test]
fn a_guest_writes_through_strata_to_virtio_and_ide_disks() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    strata_vhd::create(&base, 64 << 20, NewDisk::dynamic()).unwrap();
    let d = Disk::open(&base, OpenOptions::write()).unwrap();
    d.write_at(b"BASE-DATA-FROM-THE-HOST", 100 * 512).unwrap();
    d.close().unwrap();
    let child = dir.path().join("child.vhd");
    strata_vhd::create_differencing(&child, &base).unwrap();
    let ide = dir.path().join("ide.vhd");
    strata_vhd::create(&ide, 32 << 20, NewDisk::dynamic()).unwrap();
    let (sock_a, sock_b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    serve(&child, &sock_a);
    serve(&ide, &sock_b);

    let init = r#"
for i in $(seq 1 30); do [ -b /dev/vda ] && [ -b /dev/sda ] && break; sleep 1; done
echo "guest: disks $(ls /dev/vda /dev/sda)"
echo "guest: base says $(dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -c 23)"
printf STRATA-VIRTIO-MARKER | dd of=/dev/vda bs=512 seek=2048 conv=notrunc 2>/dev/null
printf STRATA-IDE-MARKER | dd of=/dev/sda bs=512 seek=4096 conv=notrunc 2>/dev/null
sync
echo "guest: done"
poweroff -f
"#;
    let guest = strata_testguest::build(
        dir.path(),
        &["virtio_pci", "virtio_blk", "ata_piix", "sd_mod"],
        init,
    );
    let blockdev = |sock: &Path, node: &str| {
        format!(
            "driver=nbd,server.type=unix,server.path={},node-name={node}",
            sock.display()
        )
    };
    let extra = vec![
        "-blockdev".to_string(),
        blockdev(&sock_a, "va"),
        "-device".to_string(),
        "virtio-blk-pci,drive=va".to_string(),
        "-blockdev".to_string(),
        blockdev(&sock_b, "ib"),
        "-device".to_string(),
        "ide-hd,drive=ib,bus=ide.0".to_string(),
    ];
    let run = strata_testguest::run(&guest, 256, &extra, Duration::from_secs(240));
    assert!(
        run.exited,
        "the guest did not power off in time:\n{}",
        run.console
    );
    assert!(run.console.contains("guest: done"), "{}", run.console);
    assert!(
        run.console.contains("base says BASE-DATA-FROM-THE-HOST"),
        "the guest read the base through the chain:\n{}",
        run.console
    );
    assert_eq!(read(&child, 2048 * 512, 20), b"STRATA-VIRTIO-MARKER");
    assert_eq!(read(&ide, 4096 * 512, 17), b"STRATA-IDE-MARKER");
    // The base was never written: the guest's writes went to the differencing disk.
    assert_eq!(read(&base, 2048 * 512, 20), vec![0u8; 20]);
    for p in [&base, &child, &ide] {
        let report = strata_vhd::ops::check::check(p, false).unwrap();
        assert!(report.ok(), "{}: {:?}", p.display(), report.errors);
    }
}
