"""The data path's counters (px/stats.h) with the real binary: a known mix of
requests through a 2-worker proxyd -- HTTP/1.0, HTTP/1.1 and HTTP/2; 200s,
404s, a 429 from a limit, a 502 from a dead target, a 499 from a stream the
client reset -- moves each sum in `proxyctl status --json` by exactly that
much, and the open-connection count goes back to 0."""

import json
import os
import subprocess

from harness import (SLOW, Client, H2Client, ProxyTestCase, RecordingBackend, build_dir, free_port,
                     http_response, raw_request, request_bytes, tls_config, wait_until)

PROXYCTL = os.path.join(build_dir(), "proxyctl")


def ctl(p, *args):
    r = subprocess.run([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=10 * SLOW)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def status(p):
    rc, out, err = ctl(p, "--json", "status")
    if rc != 0:
        raise AssertionError("proxyctl status: rc %d: %s" % (rc, err))
    return json.loads(out)


def respond(req):
    if req.path == "/slow":
        return [2.0, http_response(200, b"late")]
    return http_response(200, b"hello", head_only=req.method == "HEAD")


class Counts(ProxyTestCase):
    def test_known_mix_exact(self):
        b = self.backend(RecordingBackend, response=respond)
        dead = "127.0.0.1:%d" % free_port()
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nworkers = 2\nredirect_https = no\n\n" + tls_config() +
                       "[limit api]\nrate = 1r/m\nburst = 0\nzone_size = 1m\n"
                       "[route /api/]\nlimit = api\n"
                       "[service web]\nhosts = app.test localhost\ntargets = %s\n"
                       "[service dead]\nhosts = dead.test\ntargets = %s\n" % (b.addr, dead))
        st0 = status(p)
        self.assertEqual((st0["requests"], st0["connections"]), (0, 0), st0)
        self.assertEqual(st0["stats"]["requests"]["http1.1"]["2xx"], 0, st0)

        body_bytes = 0
        with Client(p.port) as c:                               # HTTP/1.1, one keep-alive connection (a 502 ends it)
            got = []
            for host, method, path, body in [("app.test", "GET", "/", b"")] * 3 + \
                    [("other.test", "GET", "/", b"")] * 2 + \
                    [("app.test", "GET", "/api/x", b""), ("app.test", "GET", "/api/x", b""),
                     ("app.test", "POST", "/", b"x" * 100), ("dead.test", "GET", "/", b"")]:
                c.send(request_bytes(method, path, host=host, body=body))
                r = c.read_response(method)
                got.append(r.status)
                body_bytes += len(r.body)
        self.assertEqual(got, [200, 200, 200, 404, 404, 200, 429, 200, 502])
        r10 = raw_request(p.port, request_bytes("GET", "/", host="app.test", version="HTTP/1.0"))
        head, _, body = r10.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 ") or head.startswith(b"HTTP/1.0 200 "), r10)
        body_bytes += len(body)

        with H2Client(p.https_port) as h:                       # HTTP/2 over TLS
            self.assertEqual(h.alpn, "h2")
            for _ in range(4):
                s = h.get("/")
                self.assertEqual(s.status, 200)
                body_bytes += len(s.data)
            sid = h.request("GET", "/slow")
            self.assertTrue(wait_until(lambda: any(q.path == "/slow" for q in b.requests), 5.0))
            h.reset(sid)                                        # before the answer: 499

        def settled():
            st = status(p)
            return st if st["requests"] == 15 and st["connections"] == 0 else None
        st = wait_until(settled, 10.0) or status(p)
        s = st["stats"]
        zero = {"other": 0, "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
        self.assertEqual(s["requests"], {
            "http1.0": dict(zero, **{"2xx": 1}),
            "http1.1": dict(zero, **{"2xx": 5, "4xx": 3, "5xx": 1}),
            "http2": dict(zero, **{"2xx": 4, "4xx": 1}),
        }, st)
        self.assertEqual((st["requests"], st["connections"]), (15, 0), st)
        self.assertEqual(s["accepted"], {"http": 2, "https": 1}, st)
        self.assertEqual(s["tls"], {"new": 1, "resumed": 0, "failed": 0}, st)
        self.assertEqual(s["upstream_errors"], {"connect": 1, "timeout": 0, "reset": 0, "bad_response": 0}, st)
        self.assertEqual((s["limited"], s["closed_early"], s["parked"]), (1, 1, 0), st)
        # the access log's numbers (head and body as on the wire), one line per request
        log = p.access_log_lines()
        self.assertEqual(len(log), 15, log)
        self.assertEqual(s["bytes_in"], sum(e["bytes_in"] for e in log), st)
        self.assertEqual(s["bytes_out"], sum(e["bytes_out"] for e in log), st)
        self.assertGreater(s["bytes_out"], body_bytes, st)
        post = [e for e in log if e["method"] == "POST"]
        self.assertEqual(post[0]["bytes_in"], len(request_bytes("POST", "/", host="app.test", body=b"x" * 100)))
        # the table shows the scalar keys only (then a blank line and the targets' and certificates' tables)
        rc, out, err = ctl(p, "status")
        self.assertEqual(rc, 0, err)
        rows = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
        self.assertEqual(rows.get("requests"), "15", out)
        self.assertEqual(rows.get("connections"), "0", out)
        self.assertNotIn("stats", rows, out)
