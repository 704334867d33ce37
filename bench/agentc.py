#!/usr/bin/env python3
"""A minimal qemu-guest-agent client for bench/hw.sh: the same agent commands the Strata worker
sends (crates/host/src/worker/agent.rs), sent straight to QEMU's chardev socket.

    agentc.py SOCKET OP N     connect once, guest-sync-delimited, then N times OP; prints the
                              microseconds of each OP (one a line)
    agentc.py SOCKET wait S   retries connect + guest-ping until the agent answers (S seconds)

OP: ping (guest-ping); to (guest-file-open "w", guest-file-write of 16 bytes, guest-file-close);
from (guest-file-open "r", guest-file-read of up to 48 KiB, guest-file-close); freeze
(guest-fsfreeze-freeze then guest-fsfreeze-thaw).
"""
import base64
import json
import os
import socket
import sys
import time


class Agent:
    def __init__(self, path, timeout):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        ident = os.getpid() << 20 | (time.time_ns() & 0xFFFF)
        self.send({"execute": "guest-sync-delimited", "arguments": {"id": ident}})
        while True:  # everything before the 0xFF marker is stale
            b = self.s.recv(1)
            if not b:
                raise EOFError("channel closed")
            if b == b"\xff":
                break
        while self.line().get("return") != ident:
            pass

    def send(self, msg):
        self.s.sendall(json.dumps(msg).encode() + b"\n")

    def line(self):
        while True:
            while b"\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError("channel closed")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\n", 1)
            raw = raw.replace(b"\xff", b"").strip()
            if raw:
                return json.loads(raw)

    def call(self, cmd, args=None):
        msg = {"execute": cmd}
        if args is not None:
            msg["arguments"] = args
        self.send(msg)
        v = self.line()
        if "error" in v:
            raise RuntimeError(f"{cmd}: {v['error']}")
        return v.get("return")


def op_to(a, payload):
    h = a.call("guest-file-open", {"path": "/tmp/bench-in", "mode": "w"})
    a.call("guest-file-write", {"handle": h, "buf-b64": payload})
    a.call("guest-file-close", {"handle": h})


def op_from(a):
    h = a.call("guest-file-open", {"path": "/tmp/bench-in", "mode": "r"})
    r = a.call("guest-file-read", {"handle": h, "count": 48 * 1024})
    a.call("guest-file-close", {"handle": h})
    assert base64.b64decode(r["buf-b64"]) == b"strata bench 16\n", r


def main():
    path, op, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if op == "wait":
        deadline = time.monotonic() + n
        while True:
            try:
                Agent(path, 3).call("guest-ping")
                return
            except (OSError, EOFError, ValueError):
                if time.monotonic() > deadline:
                    sys.exit(f"agentc.py: no agent on {path} within {n} s")
                time.sleep(0.2)
    a = Agent(path, 60)
    payload = base64.b64encode(b"strata bench 16\n").decode()
    if op == "from":
        op_to(a, payload)
    for _ in range(n):
        t0 = time.perf_counter_ns()
        if op == "ping":
            a.call("guest-ping")
        elif op == "to":
            op_to(a, payload)
        elif op == "from":
            op_from(a)
        elif op == "freeze":
            a.call("guest-fsfreeze-freeze")
            a.call("guest-fsfreeze-thaw")
        else:
            sys.exit(f"agentc.py: unknown op {op}")
        print((time.perf_counter_ns() - t0) // 1000)


if __name__ == "__main__":
    main()
