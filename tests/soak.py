#!/usr/bin/env python3
"""make soak: a short, bounded load run through proxyd.

Starts a local backend and proxyd (plain and TLS listeners, 2 workers), then
for --seconds runs --h1 HTTP/1.1 keep-alive clients and --h2 HTTP/2 clients
(several streams each) against it, checking every response (status and
body). A SIGHUP is sent halfway through: a reload must not fail a request.
Prints one summary line and exits 1 when any request failed or proxyd died.
Every loop is bounded by the deadline; processes are stopped by PID. It is
kept out of `make test`; the deploy soak (repeated deploys and rollbacks
under load) will grow here.

usage: python3 tests/soak.py [--build build] [--seconds 10] [--h1 8] [--h2 4]
"""

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--h1", type=int, default=8, help="HTTP/1.1 keep-alive clients")
    ap.add_argument("--h2", type=int, default=4, help="HTTP/2 clients")
    ap.add_argument("--streams", type=int, default=5, help="concurrent streams per HTTP/2 client")
    args = ap.parse_args()
    os.environ["PROXYD_BUILD"] = os.path.abspath(args.build)

    from harness import (Client, H2Client, Proxy, RecordingBackend, close_all, http_response, tls_service_config)

    def answer(req):
        return http_response(200, ("ok " + req.target).encode(), head_only=req.method == "HEAD")

    backend = RecordingBackend(response=answer)
    proxy = None
    counts = {"ok": 0, "failed": 0}
    errors = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def record(ok, what):
        with lock:
            counts["ok" if ok else "failed"] += 1
            if not ok and len(errors) < 20:
                errors.append(what)

    def h1_client(n):
        i = 0
        while time.monotonic() < deadline:
            try:
                with Client(proxy.port, timeout=10.0) as c:
                    for _ in range(200):  # then a new connection
                        if time.monotonic() >= deadline:
                            break
                        path = "/h1/%d/%d" % (n, i)
                        i += 1
                        r = c.request("GET", path, host="soak.test")
                        record(r.status == 200 and r.body == ("ok " + path).encode(),
                               "h1 %s: %s %r" % (path, r.status, r.body[:60]))
            except Exception as e:  # noqa: BLE001 -- any failure is a failed request
                record(False, "h1 client %d: %r" % (n, e))

    def h2_client(n):
        i = 0
        while time.monotonic() < deadline:
            try:
                with H2Client(proxy.https_port) as c:
                    for _ in range(100):
                        if time.monotonic() >= deadline:
                            break
                        sids = []
                        for _ in range(args.streams):
                            path = "/h2/%d/%d" % (n, i)
                            i += 1
                            sids.append((path, c.request("GET", path)))
                        for path, sid in sids:
                            s = c.wait_stream(sid)
                            status, body = s.status, bytes(s.data)
                            record(status == 200 and body == ("ok " + path).encode(),
                                   "h2 %s: %s %r" % (path, status, body[:60]))
                        if c.terminated:  # GOAWAY (a reload): reconnect
                            break
            except Exception as e:  # noqa: BLE001
                record(False, "h2 client %d: %r" % (n, e))

    rc = 1
    try:
        proxy = Proxy(tls_service_config(backend, extra_proxy="access_log = off\nredirect_https = no"))
        threads = [threading.Thread(target=h1_client, args=(n,), daemon=True) for n in range(args.h1)]
        threads += [threading.Thread(target=h2_client, args=(n,), daemon=True) for n in range(args.h2)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.seconds / 2)
        proxy.send_signal(signal.SIGHUP)
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()) + 30)
        hung = sum(t.is_alive() for t in threads)
        alive = proxy.alive()
        elapsed = time.monotonic() - started
        reloaded = "configuration reloaded" in proxy.error_log_text()
        print("soak: %d ok, %d failed in %.1fs (%.0f req/s), %d HTTP/1.1 + %d HTTP/2 clients, reload %s, "
              "proxyd %s%s" % (counts["ok"], counts["failed"], elapsed, counts["ok"] / elapsed, args.h1, args.h2,
                               "done" if reloaded else "MISSING", "alive" if alive else "DEAD",
                               ", %d clients hung" % hung if hung else ""))
        for e in errors:
            print("  " + e)
        rc = 0 if counts["failed"] == 0 and counts["ok"] > 0 and alive and reloaded and not hung else 1
    finally:
        if proxy is not None:
            proxy.close()
        backend.close()
        close_all()
    return rc


if __name__ == "__main__":
    sys.exit(main())
