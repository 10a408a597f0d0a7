"""proxyctl list and status with the real daemon (DESIGN "proxyctl",
README "proxyctl"): each target's health (healthy, failing N/M, unhealthy,
draining, standby) and requests in flight, in the table and in --json;
status's open connections, request rate over the last minute and
certificate expiry."""

import datetime
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (SLOW, Client, ProxyTestCase, RecordingBackend, build_dir, get, http_response, tls_config,
                     wait_until)

PROXYCTL = os.path.join(build_dir(), "proxyctl")


def ctl(proxy, *args, timeout=30.0):
    sock = os.path.join(proxy.tmp, "control.sock")
    p = subprocess.run([PROXYCTL, "--socket", sock] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout * SLOW)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def ctl_json(proxy, *args):
    rc, out, err = ctl(proxy, "--json", *args)
    assert rc == 0, (rc, out, err)
    return json.loads(out)


def slow(name, paths):
    """A response function: 200 `name`, after paths[path] seconds for those paths."""
    def respond(req):
        body = http_response(200, name, head_only=req.method == "HEAD")
        return [paths[req.path], body] if req.path in paths else body
    return respond


def background_get(port, path, timeout=15.0):
    out = {}

    def run():
        try:
            out["resp"] = get(port, path, timeout=timeout * SLOW, host="test.local")
        except Exception as e:  # noqa: BLE001
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def target_of(listing, service, address):
    for s in listing["services"]:
        if s["name"] == service:
            for t in s["targets"]:
                if t["address"] == address:
                    return t
    return None


class TestTargets(ProxyTestCase):

    def deploy(self, p, service, target, *extra):
        rc, out, err = ctl(p, "deploy", service, "--target", target, "--health-check-timeout", "1s", *extra)
        self.assertEqual(rc, 0, (out, err))

    def test_failing_then_unhealthy_then_healthy(self):
        b = self.backend(RecordingBackend)
        p = self.proxy("[proxy]\n")
        self.deploy(p, "web", b.addr, "--health-check-interval", "1s")

        def health():
            return target_of(ctl_json(p, "list"), "web", b.addr)["health"]
        self.assertEqual(health(), "healthy")
        b.healthy = False
        seen = ["healthy"]
        deadline = time.monotonic() + 15 * SLOW
        while seen[-1] != "unhealthy" and time.monotonic() < deadline:
            h = health()
            if h != seen[-1]:
                seen.append(h)
            time.sleep(0.05)
        self.assertEqual(seen, ["healthy", "failing 1/3", "failing 2/3", "unhealthy"])
        rc, out, _ = ctl(p, "list")
        row = [ln.split() for ln in out.splitlines() if ln.startswith("web ") and b.addr in ln and "active" in ln]
        self.assertEqual(row, [["web", b.addr, "active", "unhealthy", "0"]], out)
        b.healthy = True
        self.assertTrue(wait_until(lambda: health() == "healthy", 10 * SLOW), health())

    def test_failing_shows_in_the_table(self):
        b = self.backend(RecordingBackend)
        p = self.proxy("[proxy]\n")
        self.deploy(p, "web", b.addr, "--health-check-interval", "1s")
        b.healthy = False
        n = len(b.health_requests)
        self.assertTrue(wait_until(lambda: len(b.health_requests) > n, 5 * SLOW))
        self.assertTrue(wait_until(lambda: "failing 1/3" in ctl(p, "list")[1], 3 * SLOW), ctl(p, "list"))
        rc, out, _ = ctl(p, "status")
        self.assertIn("failing ", out)

    def test_in_flight_of_a_slow_request(self):
        b = self.backend(response=slow("blue", {"/slow": 2.0}))
        p = self.proxy("[proxy]\n")
        self.deploy(p, "web", b.addr, "--health-check-interval", "100ms")
        self.assertEqual(target_of(ctl_json(p, "list"), "web", b.addr)["in_flight"], 0)
        t, out = background_get(p.port, "/slow")
        self.assertTrue(wait_until(lambda: any(q.path == "/slow" for q in b.requests), 3 * SLOW))
        listing = ctl_json(p, "list")
        self.assertEqual(target_of(listing, "web", b.addr)["in_flight"], 1, listing)
        self.assertEqual(listing["services"][0]["in_flight"], 1)
        status = ctl_json(p, "status")
        self.assertEqual([(x["service"], x["address"], x["role"], x["in_flight"]) for x in status["targets"]],
                         [("web", b.addr, "active", 1)])
        t.join(10 * SLOW)
        self.assertEqual(out["resp"].status, 200, out)
        self.assertTrue(wait_until(lambda: target_of(ctl_json(p, "list"), "web", b.addr)["in_flight"] == 0,
                                   3 * SLOW))

    def test_old_target_draining_during_a_deploy(self):
        blue = self.backend(response=slow("blue", {"/slow": 2.5}))
        green = self.backend(response=slow("green", {}))
        p = self.proxy("[proxy]\n")
        self.deploy(p, "web", blue.addr, "--health-check-interval", "100ms")
        t, out = background_get(p.port, "/slow")
        self.assertTrue(wait_until(lambda: any(q.path == "/slow" for q in blue.requests), 3 * SLOW))
        sock = os.path.join(p.tmp, "control.sock")
        dep = subprocess.Popen([PROXYCTL, "--socket", sock, "deploy", "web", "--target", green.addr,
                                "--health-check-interval", "100ms"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: dep.poll() is None and dep.kill())
        seen = {}

        def draining():
            listing = ctl_json(p, "list")
            old = target_of(listing, "web", blue.addr)
            seen["listing"] = listing
            return old is not None and old["role"] == "previous" and old["health"] == "draining"
        self.assertTrue(wait_until(draining, 5 * SLOW), seen)
        old = target_of(seen["listing"], "web", blue.addr)
        self.assertEqual(old["in_flight"], 1, seen)
        new = target_of(seen["listing"], "web", green.addr)
        self.assertEqual((new["role"], new["health"], new["in_flight"]), ("active", "healthy", 0))
        rc, table, _ = ctl(p, "list")
        self.assertIn(["web", blue.addr, "previous", "draining", "1"], [ln.split() for ln in table.splitlines()])
        dep.communicate(timeout=15 * SLOW)
        self.assertEqual(dep.returncode, 0)
        t.join(10 * SLOW)
        self.assertEqual((out["resp"].status, out["resp"].body), (200, b"blue"), out)
        old = target_of(ctl_json(p, "list"), "web", blue.addr)
        self.assertEqual((old["role"], old["health"], old["in_flight"]), ("previous", "standby", 0))


class TestStatus(ProxyTestCase):

    def test_connections_rate_and_certificate_expiry(self):
        d = tempfile.mkdtemp(prefix="proxyd-cert-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        crt, key = os.path.join(d, "c.crt"), os.path.join(d, "c.key")
        subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", crt, "-days", "10", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        end = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-enddate"], check=True,
                             capture_output=True, text=True).stdout.strip().split("=", 1)[1]
        not_after = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.timezone.utc)
        b = self.backend(RecordingBackend)
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\n\n[service web]\ntargets = %s\n\n"
                       % b.addr + tls_config(pairs=[(crt, key)]))
        n = 7
        for _ in range(n):
            self.assertEqual(get(p.port, "/").status, 200)
        # two client connections held open, one request on each (then counted as open)
        held = [Client(p.port) for _ in range(2)]
        for c in held:
            self.addCleanup(c.close)
            self.assertEqual(c.request("GET", "/").status, 200)
        st = {}

        def settled():
            st.update(ctl_json(p, "status"))
            return st["connections"] == 2
        self.assertTrue(wait_until(settled, 5 * SLOW), st)
        self.assertEqual(st["requests"], n + 2)
        self.assertEqual(st["request_rate_count"], n + 2)  # every request so far is within the minute
        self.assertGreater(st["request_rate"], 0)
        self.assertGreater(st["request_rate_window_s"], 0)
        self.assertAlmostEqual(st["request_rate"] * st["request_rate_window_s"], n + 2, places=6)
        certs = st["certificates"]
        self.assertEqual(len(certs), 1, certs)
        got = datetime.datetime.strptime(certs[0]["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        self.assertEqual(got, not_after)
        self.assertEqual(certs[0]["days_left"], 9)  # 10 days less the seconds since it was made
        self.assertEqual(certs[0]["key_type"], "ECDSA-P256")
        rc, table, _ = ctl(p, "status")
        self.assertEqual(rc, 0)
        fields = dict(ln.split(None, 1) for ln in table.splitlines() if ln and not ln[0].isupper())
        self.assertEqual(fields["connections"].strip(), "2")
        self.assertEqual(fields["request_rate_count"].strip(), str(n + 2))
        self.assertIn("DAYS-LEFT", table)
        self.assertRegex(table, r"default\s+ECDSA-P256\s+\S+\s+9\n")


if __name__ == "__main__":
    unittest.main()
