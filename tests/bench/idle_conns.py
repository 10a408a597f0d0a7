#!/usr/bin/env python3
"""Resident memory of a proxy holding N idle keep-alive client connections.

usage: idle_conns.py PORT N PID [PID ...]
Opens N connections to 127.0.0.1:PORT, sends one keep-alive GET / on each,
reads each response, then sums VmRSS of the given PIDs (and their threads'
process) while all N stay open and idle. Bounded: 120 s overall."""
import re, resource, selectors, socket, sys, time

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

def main():
    port, n, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    before = sum(rss_kib(p) for p in pids)
    deadline = time.monotonic() + 120
    sel = selectors.DefaultSelector()
    socks, pending = [], 0
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
        pending += 1
        if i % 500 == 499:  # drain as we go to keep the backlog short
            while pending and time.monotonic() < deadline:
                evs = sel.select(0.05)
                if not evs:
                    break
                for key, _ in evs:
                    data = key.fileobj.recv(65536)
                    key.data.extend(data)
                    if b"\r\n\r\n" in key.data or not data:
                        sel.unregister(key.fileobj)
                        pending -= 1
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            data = key.fileobj.recv(65536)
            key.data.extend(data)
            if b"\r\n\r\n" in key.data or not data:
                sel.unregister(key.fileobj)
                pending -= 1
    time.sleep(1)
    after = sum(rss_kib(p) for p in pids)
    print("connections=%d answered=%d rss_before_kib=%d rss_idle_kib=%d per_conn_bytes=%.0f"
          % (n, n - pending, before, after, (after - before) * 1024.0 / n))
    for s in socks:
        s.close()

main()
