#!/usr/bin/env python3
"""A minimal QMP client for bench/checkpoint.sh: an external disk snapshot of a running bare QEMU
done by hand, the way libvirt/QEMU users do it, over QEMU's QMP unix socket.

    qmpsnap.py SOCKET snap DEVICE DIR N PAUSE
        N times `blockdev-snapshot-sync` of DEVICE to a new qcow2 overlay DIR/snap-I.qcow2
        (the guest keeps running); prints the microseconds of each command (one a line)
    qmpsnap.py SOCKET full DEVICE DIR N PAUSE
        N times what `strata checkpoint create` does for a running VM, by hand: `stop`, `migrate`
        to `file:DIR/mem-I` with `max-bandwidth` 0 (as the Strata worker sets it), polling
        `query-migrate` every 20 ms (as the worker) until completed, fsync of the file,
        `blockdev-snapshot-sync` to DIR/full-I.qcow2, `cont`; prints "PAUSE_US SNAPSHOT_US" of
        each (one a line)

PAUSE: seconds the guest runs between two snapshots.
"""
import json
import os
import socket
import sys
import time


class Qmp:
    def __init__(self, path, timeout):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.line()  # greeting
        self.call("qmp_capabilities")

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("QMP socket closed")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        return json.loads(raw)

    def call(self, cmd, args=None):
        msg = {"execute": cmd}
        if args is not None:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            v = self.line()
            if "event" in v:
                continue
            if "error" in v:
                raise RuntimeError(f"{cmd}: {v['error']}")
            return v.get("return")


def snapshot(q, device, path):
    q.call("blockdev-snapshot-sync",
           {"device": device, "snapshot-file": path, "format": "qcow2"})


def main():
    path, op, device, folder = sys.argv[1:5]
    n, pause = int(sys.argv[5]), float(sys.argv[6])
    q = Qmp(path, 120)
    if op == "full":
        q.call("migrate-set-parameters", {"max-bandwidth": 0})
    for i in range(n):
        time.sleep(pause)
        if op == "snap":
            t0 = time.perf_counter_ns()
            snapshot(q, device, os.path.join(folder, f"snap-{i}.qcow2"))
            print((time.perf_counter_ns() - t0) // 1000, flush=True)
        elif op == "full":
            mem = os.path.join(folder, f"mem-{i}")
            t0 = time.perf_counter_ns()
            q.call("stop")
            q.call("migrate", {"uri": f"file:{mem}"})
            while True:
                st = q.call("query-migrate").get("status")
                if st == "completed":
                    break
                if st in ("failed", "cancelled"):
                    sys.exit(f"qmpsnap.py: migration {st}")
                time.sleep(0.02)  # as the Strata worker polls
            fd = os.open(mem, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            t1 = time.perf_counter_ns()
            snapshot(q, device, os.path.join(folder, f"full-{i}.qcow2"))
            t2 = time.perf_counter_ns()
            q.call("cont")
            t3 = time.perf_counter_ns()
            print((t3 - t0) // 1000, (t2 - t1) // 1000, flush=True)
        else:
            sys.exit(f"qmpsnap.py: unknown op {op}")


if __name__ == "__main__":
    main()
