"""Blue-green deploys with the real binaries: build/proxyd (the harness's
config: control_socket and state_file in the test's temp dir) driven by
build/proxyctl. Backends answer with their colour ("blue", "green") so every
test can tell which target served a request.

Covers DESIGN.md "Blue-green deploy" and issue 8's test list: blue -> green
(plain, keep-alive and HTTP/2 connections opened before the switch),
unhealthy targets, a long request that finishes before deploy returns, the
drain_timeout cut (504), WebSocket tunnels closed at the switch, rollback,
pause/stop/resume, restart from the state file, corrupted state files, the
control socket's peer check and hostile clients, and the short form of the
promise (10 deploys under load, zero failed requests).
"""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (SLOW, Client, H2Client, ProxyError, ProxyTestCase, RecordingBackend, WebSocketBackend,
                     build_dir, free_port, get, http_response, tls_config, wait_until)

PROXYCTL = os.path.join(build_dir(), "proxyctl")
FAST = ["--health-check-interval", "100ms", "--health-check-timeout", "1s"]


class Ctl:
    """The result of one proxyctl run."""

    def __init__(self, proc, t0, t1):
        self.rc = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")
        self.started = t0
        self.ended = t1
        self.elapsed = t1 - t0

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "<proxyctl rc=%s %.2fs stdout=%r stderr=%r>" % (self.rc, self.elapsed, self.out[-1500:],
                                                               self.err[-1500:])


def proxyctl(proxy_or_sock, *args, timeout=30.0, preexec=None, prefix=()):
    sock = proxy_or_sock if isinstance(proxy_or_sock, str) else os.path.join(proxy_or_sock.tmp, "control.sock")
    t0 = time.monotonic()
    p = subprocess.run(list(prefix) + [PROXYCTL, "--socket", sock] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout * SLOW,
                       preexec_fn=preexec)
    return Ctl(p, t0, time.monotonic())


def colour(name, slow_paths=None):
    """A response function: 200 `name` (the body), or for a path in slow_paths
    {path: seconds} the same after that many seconds."""
    slow_paths = slow_paths or {}

    def respond(req):
        body = http_response(200, name, head_only=req.method == "HEAD")
        if req.path in slow_paths:
            return [slow_paths[req.path], body]
        return body
    return respond


class DeployCase(ProxyTestCase):
    """Helpers: a proxy with no configured service (optionally TLS too),
    coloured backends, deploys."""

    def plain_proxy(self, extra_proxy="", **kw):
        return self.proxy("[proxy]\n%s\n" % extra_proxy, **kw)

    def tls_proxy(self, extra_proxy=""):
        return self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\n%s\n\n%s"
                          % (extra_proxy, tls_config()))

    def coloured(self, name, slow_paths=None, **kw):
        return self.backend(response=colour(name, slow_paths), **kw)

    def deploy(self, proxy, service, target, *extra, ok=True, timeout=60.0):
        t = target if isinstance(target, str) else target.addr
        r = proxyctl(proxy, "deploy", service, "--target", t, *(FAST + list(extra)), timeout=timeout)
        if ok:
            self.assertEqual(r.rc, 0, r)
        return r

    def body_of(self, proxy, path="/", host="test.local"):
        r = get(proxy.port, path, host=host)
        self.assertEqual(r.status, 200, r)
        return r.body

    def assertProxyAlive(self, proxy):
        self.assertTrue(proxy.alive(), "proxyd died (exit %s); log:\n%s"
                        % (proxy.proc.poll(), proxy.error_log_text()[-3000:]))


# --------------------------------------------------------------------------
# 1. blue -> green
# --------------------------------------------------------------------------

class TestBlueGreen(DeployCase):

    def test_blue_to_green_switches_new_and_open_connections(self):
        blue, green = self.coloured("blue"), self.coloured("green")
        p = self.tls_proxy()
        r = self.deploy(p, "web", blue)
        self.assertIn("switched", r.err)
        self.assertIn("done in", r.err)
        self.assertEqual(self.body_of(p), b"blue")

        # connections opened (and used) before the switch
        h1 = Client(p.port)
        self.addCleanup(h1.close)
        self.assertEqual(h1.request("GET", "/before", host="test.local").body, b"blue")
        h2 = H2Client(p.https_port)
        self.addCleanup(h2.close)
        s = h2.get("/before")
        self.assertEqual((s.status, bytes(s.data)), (200, b"blue"), s)

        r = self.deploy(p, "web", green, "--deploy-timeout", "5s")
        self.assertIn("waiting for %s to be healthy" % green.addr, r.err)
        self.assertIn("switched", r.err)
        # stdout is the result as key/value lines
        self.assertRegex(r.out, r"(?m)^active\s+%s$" % green.addr)
        self.assertRegex(r.out, r"(?m)^previous\s+%s$" % blue.addr)

        # the same switch, seen with --json (a rollback to blue, then green again)
        self.assertEqual(proxyctl(p, "rollback", "web").rc, 0)
        rj = proxyctl(p, "--json", "deploy", "web", "--target", green.addr, *FAST)
        self.assertEqual(rj.rc, 0, rj)
        res = rj.json()
        self.assertEqual(res["service"], "web")
        self.assertEqual(res["active"], [green.addr])
        self.assertEqual(res["previous"], [blue.addr])

        # new connections, and the next request on the old ones, go to green
        self.assertEqual(self.body_of(p), b"green")
        r1 = h1.request("GET", "/after", host="test.local")
        self.assertEqual((r1.status, r1.body), (200, b"green"), r1)
        s = h2.get("/after")
        self.assertEqual((s.status, bytes(s.data)), (200, b"green"), s)
        self.assertFalse(h2.terminated, "the HTTP/2 connection got a GOAWAY: %r" % h2.terminated)
        self.assertEqual([q.path for q in blue.requests if q.path == "/after"], [])

        lj = proxyctl(p, "list", "--json")
        self.assertEqual(lj.rc, 0, lj)
        web = [s for s in lj.json()["services"] if s["name"] == "web"]
        self.assertEqual(len(web), 1, lj)
        self.assertEqual((web[0]["active"], web[0]["previous"], web[0]["state"]),
                         ([green.addr], [blue.addr], "running"))


# --------------------------------------------------------------------------
# 2. unhealthy targets
# --------------------------------------------------------------------------

class TestUnhealthy(DeployCase):

    def test_unhealthy_target_fails_after_deploy_timeout_and_blue_keeps_serving(self):
        blue = self.coloured("blue")
        sick = self.coloured("green", healthy=False)  # 503 on /up
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        r = self.deploy(p, "web", sick, "--deploy-timeout", "2s", ok=False)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("health_check_failed", r.err)
        self.assertIn(sick.addr, r.err)
        self.assertIn("503", r.err)
        self.assertGreaterEqual(r.elapsed, 1.8, r)
        self.assertLess(r.elapsed, 8 * SLOW, r)
        self.assertGreater(len(sick.health_requests), 1, "the sick target was probed more than once")
        self.assertEqual(self.body_of(p), b"blue")
        self.assertEqual(sick.requests, [])
        res = [s for s in proxyctl(p, "list", "--json").json()["services"] if s["name"] == "web"][0]
        self.assertEqual(res["active"], [blue.addr])
        self.assertEqual(res["previous"], [])

    def test_nothing_listening_fails_and_blue_keeps_serving(self):
        blue = self.coloured("blue")
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        r = self.deploy(p, "web", "127.0.0.1:%d" % free_port(), "--deploy-timeout", "2s", ok=False)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("health_check_failed", r.err)
        self.assertGreaterEqual(r.elapsed, 1.8, r)
        self.assertLess(r.elapsed, 8 * SLOW, r)
        self.assertEqual(self.body_of(p), b"blue")

    def test_first_deploy_that_fails_leaves_the_service_absent(self):
        sick = self.coloured("green", healthy=False)
        p = self.plain_proxy()
        r = self.deploy(p, "fresh", sick, "--host", "fresh.test", "--deploy-timeout", "1s", ok=False)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("health_check_failed", r.err)
        resp = get(p.port, "/", host="fresh.test")
        self.assertEqual(resp.status, 404, resp)
        self.assertEqual(sick.requests, [])
        self.assertEqual(proxyctl(p, "list", "--json").json()["services"], [])
        self.assertProxyAlive(p)


# --------------------------------------------------------------------------
# 3, 4. draining: a long request finishes first; drain_timeout cuts with 504
# --------------------------------------------------------------------------

class TestDraining(DeployCase):

    def _background_get(self, port, path, timeout):
        out = {}

        def run():
            try:
                out["resp"] = get(port, path, timeout=timeout, host="test.local")
            except Exception as e:  # noqa: BLE001
                out["error"] = e
            out["end"] = time.monotonic()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, out

    def test_long_request_on_blue_finishes_before_deploy_returns(self):
        blue = self.coloured("blue", slow_paths={"/slow": 1.5})
        green = self.coloured("green")
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        t, out = self._background_get(p.port, "/slow", timeout=10)
        self.assertTrue(wait_until(lambda: any(q.path == "/slow" for q in blue.requests), 3),
                        "the slow request did not reach blue")
        started = time.monotonic()
        r = proxyctl(p, "--json", "deploy", "web", "--target", green.addr, *FAST)
        t.join(10 * SLOW)
        self.assertEqual(r.rc, 0, r)
        self.assertNotIn("error", out, out)
        self.assertEqual((out["resp"].status, out["resp"].body), (200, b"blue"), out["resp"])
        # the promise: when deploy returns, the old target has nothing running
        self.assertGreaterEqual(r.ended, out["end"] - 0.05, (r, out["end"] - started))
        self.assertLess(r.ended - out["end"], 1.0 * SLOW, "deploy returned long after the drain")
        self.assertGreaterEqual(r.json().get("drained", 0), 1, r)
        self.assertIn("draining 1 request", r.err)
        self.assertEqual(self.body_of(p), b"green")

    def test_drain_timeout_cuts_a_running_request_with_504(self):
        blue = self.coloured("blue", slow_paths={"/hang": 10})
        green = self.coloured("green")
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        t, out = self._background_get(p.port, "/hang", timeout=15)
        self.assertTrue(wait_until(lambda: any(q.path == "/hang" for q in blue.requests), 3))
        r = self.deploy(p, "web", green, "--drain-timeout", "1s")
        t.join(15 * SLOW)
        self.assertNotIn("error", out, out)
        self.assertEqual(out["resp"].status, 504, out["resp"])
        cut_after = out["end"] - r.started
        self.assertGreaterEqual(cut_after, 0.9, "cut before drain_timeout: %.2fs" % cut_after)
        self.assertLess(cut_after, 3.0 * SLOW, "cut late: %.2fs" % cut_after)
        self.assertLess(r.elapsed, 4.0 * SLOW, r)
        self.assertIn("drain_timeout", r.err)
        self.assertEqual(self.body_of(p), b"green")

    def test_drain_timeout_result_counts_the_cut(self):
        # include/px/control.h: "cut" counts the requests cut with 504 at
        # drain_timeout.
        blue = self.coloured("blue", slow_paths={"/hang": 10})
        green = self.coloured("green")
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        t, out = self._background_get(p.port, "/hang", timeout=15)
        self.assertTrue(wait_until(lambda: any(q.path == "/hang" for q in blue.requests), 3))
        r = proxyctl(p, "--json", "deploy", "web", "--target", green.addr, "--drain-timeout", "500ms", *FAST)
        t.join(15 * SLOW)
        self.assertEqual(r.rc, 0, r)
        res = r.json()
        self.assertEqual(res.get("drained"), 1, res)
        self.assertEqual(res.get("cut"), 1, res)

    def test_websocket_tunnel_to_blue_closed_at_switch(self):
        ws = self.backend(WebSocketBackend)
        green = self.coloured("green")
        p = self.plain_proxy()
        self.deploy(p, "web", ws)
        c = Client(p.port)
        self.addCleanup(c.close)
        c.send(b"GET /ws HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        resp = c.read_response()
        self.assertEqual(resp.status, 101, resp)
        c.send(b"ping-before")
        self.assertEqual(c.reader.exact(len(b"ping-before"), time.monotonic() + 3), b"ping-before")
        r = self.deploy(p, "web", green, "--drain-timeout", "10s")
        self.assertLess(r.elapsed, 3.0 * SLOW, "deploy waited for the tunnel instead of closing it: %r" % r)
        self.assertTrue(c.closed_within(2.0), "the tunnel to blue stayed open after the switch")
        self.assertEqual(self.body_of(p), b"green")


# --------------------------------------------------------------------------
# 6. rollback
# --------------------------------------------------------------------------

class TestReload(DeployCase):

    def test_reload_keeps_deployed_services(self):
        """`proxyctl reload` and SIGHUP rebuild the services from the file
        with the deployed ones on top: a deploy survives both."""
        blue = self.coloured("blue")
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        r = proxyctl(p, "--json", "reload")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(self.body_of(p), b"blue")
        p.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "configuration reloaded" in p.error_log_text(), 5))
        self.assertEqual(self.body_of(p), b"blue")
        r = proxyctl(p, "--json", "list")
        self.assertEqual(r.rc, 0, r)
        names = [svc["name"] for svc in r.json()["services"]]
        self.assertEqual(names, ["web"])


class TestRollback(DeployCase):

    def test_rollback_switches_back_to_blue(self):
        blue, green = self.coloured("blue"), self.coloured("green")
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        self.deploy(p, "web", green)
        self.assertEqual(self.body_of(p), b"green")
        r = proxyctl(p, "--json", "rollback", "web")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual((r.json()["active"], r.json()["previous"]), ([blue.addr], [green.addr]))
        self.assertEqual(self.body_of(p), b"blue")
        # and forward again
        r = proxyctl(p, "rollback", "web")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(self.body_of(p), b"green")

    def test_rollback_without_previous_exits_1(self):
        blue = self.coloured("blue")
        p = self.plain_proxy()
        # Deploys answer asynchronously; no_previous answers at once. See
        # test_rollback_of_unknown_service_exits_1 for what that does.
        self.deploy(p, "web", blue)
        r = proxyctl(p, "rollback", "web", timeout=10)
        self.assertProxyAlive(p)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("no_previous", r.err)

    def test_rollback_of_unknown_service_exits_1(self):
        # A long command refused at once (its done callback runs before the
        # handler returns) once re-ran its own request line until the stack
        # overflowed; it must answer and leave proxyd running.
        p = self.plain_proxy()
        r = proxyctl(p, "rollback", "nope", timeout=10)
        self.assertProxyAlive(p)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("unknown_service", r.err)

    def test_second_deploy_while_one_runs_is_refused_with_busy(self):
        blue = self.coloured("blue")
        sick = self.coloured("green", healthy=False)
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault(
            "r", self.deploy(p, "web", sick, "--deploy-timeout", "3s", ok=False)), daemon=True)
        t.start()
        self.assertTrue(wait_until(lambda: sick.health_requests, 3))
        r = self.deploy(p, "web", blue.addr, ok=False, timeout=10)
        t.join(10 * SLOW)
        self.assertProxyAlive(p)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("busy", r.err)
        self.assertEqual(out["r"].rc, 1, out)
        self.assertEqual(self.body_of(p), b"blue")


    def test_conflicting_deploy_is_refused_with_conflict(self):
        blue = self.coloured("blue")
        p = self.plain_proxy()
        self.deploy(p, "web", blue, "--host", "a.test")
        r = self.deploy(p, "other", blue, "--host", "a.test", ok=False, timeout=10)
        self.assertProxyAlive(p)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("conflict", r.err)
        # the service is named once ("service other: service other: ..." before)
        self.assertIn("service other: conflicts with service web (host a.test", r.err)
        self.assertEqual(self.body_of(p, host="a.test"), b"blue")




# --------------------------------------------------------------------------
# 7. pause / stop / resume
# --------------------------------------------------------------------------

class TestPauseStop(DeployCase):

    def test_pause_holds_requests_until_resume(self):
        blue = self.coloured("blue")
        p = self.plain_proxy("health_path = /health")
        self.deploy(p, "web", blue)
        r = proxyctl(p, "pause", "web", "--max-pause", "10s")
        self.assertEqual(r.rc, 0, r)
        out = {}

        def run():
            t0 = time.monotonic()
            out["resp"] = get(p.port, "/held", timeout=15, host="test.local")
            out["elapsed"] = time.monotonic() - t0
        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(0.8)
        self.assertNotIn("resp", out, "a request went through while paused")
        self.assertEqual([q.path for q in blue.requests if q.path == "/held"], [])
        h = get(p.port, "/health")
        self.assertEqual((h.status, h.body), (200, b"healthy\n"), h)
        lj = proxyctl(p, "list", "--json").json()["services"][0]
        self.assertEqual(lj["state"], "paused")
        r = proxyctl(p, "resume", "web")
        self.assertEqual(r.rc, 0, r)
        t.join(5 * SLOW)
        self.assertEqual((out["resp"].status, out["resp"].body), (200, b"blue"), out)
        self.assertGreaterEqual(out["elapsed"], 0.8)

    def test_max_pause_gives_504(self):
        blue = self.coloured("blue")
        p = self.plain_proxy("health_path = /health")
        self.deploy(p, "web", blue)
        self.assertEqual(proxyctl(p, "pause", "web", "--max-pause", "1s").rc, 0)
        t0 = time.monotonic()
        resp = get(p.port, "/x", timeout=10, host="test.local")
        elapsed = time.monotonic() - t0
        self.assertEqual(resp.status, 504, resp)
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 3 * SLOW)
        self.assertEqual(get(p.port, "/health").status, 200)
        self.assertEqual(proxyctl(p, "resume", "web").rc, 0)
        self.assertEqual(self.body_of(p), b"blue")

    def test_stop_gives_503_with_message_and_resume_brings_200(self):
        blue = self.coloured("blue")
        p = self.plain_proxy("health_path = /health")
        self.deploy(p, "web", blue)
        r = proxyctl(p, "stop", "web", "--message", "back soon")
        self.assertEqual(r.rc, 0, r)
        resp = get(p.port, "/", host="test.local")
        self.assertEqual(resp.status, 503, resp)
        self.assertIn(b"back soon", resp.body)
        self.assertEqual(get(p.port, "/health").status, 200)
        self.assertEqual(blue.requests, [])
        lj = proxyctl(p, "list", "--json").json()["services"][0]
        self.assertEqual((lj["state"], lj.get("stop_message")), ("stopped", "back soon"))
        self.assertEqual(proxyctl(p, "resume", "web").rc, 0)
        self.assertEqual(self.body_of(p), b"blue")
        self.assertEqual(get(p.port, "/health").status, 200)


# --------------------------------------------------------------------------
# 8, 9. state file: restart, corruption
# --------------------------------------------------------------------------

class TestStateFile(DeployCase):

    def state_dir(self):
        d = tempfile.mkdtemp(prefix="proxyd-state-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def test_restart_restores_services_targets_and_states(self):
        blue, green = self.coloured("blue"), self.coloured("green")
        api, maint = self.coloured("api"), self.coloured("maint")
        d = self.state_dir()
        cfg = "[proxy]\nstate_file = {sd}/state.json\n"
        p1 = self.proxy(cfg, subst={"sd": d})
        self.deploy(p1, "web", blue)
        self.deploy(p1, "web", green)
        self.deploy(p1, "api", api, "--host", "api.test")
        self.deploy(p1, "maint", maint, "--host", "maint.test")
        self.assertEqual(proxyctl(p1, "pause", "api", "--max-pause", "7s").rc, 0)
        self.assertEqual(proxyctl(p1, "stop", "maint", "--message", "back soon").rc, 0)
        before = {s["name"]: s for s in proxyctl(p1, "list", "--json").json()["services"]}
        self.assertEqual(p1.stop(), 0, p1.error_log_text()[-2000:])

        p2 = self.proxy(cfg, subst={"sd": d})
        after = {s["name"]: s for s in proxyctl(p2, "list", "--json").json()["services"]}
        self.assertEqual(sorted(after), ["api", "maint", "web"])
        for name in after:
            for k in ("state", "hosts", "path_prefix", "active", "previous", "stop_message", "max_pause_ms"):
                self.assertEqual(after[name].get(k), before[name].get(k), (name, k, before, after))
        self.assertEqual((after["web"]["active"], after["web"]["previous"]), ([green.addr], [blue.addr]))
        self.assertEqual(after["api"]["state"], "paused")
        self.assertEqual(after["api"]["max_pause_ms"], 7000)
        self.assertEqual((after["maint"]["state"], after["maint"]["stop_message"]), ("stopped", "back soon"))
        self.assertEqual(self.body_of(p2), b"green")
        resp = get(p2.port, "/", host="maint.test")
        self.assertEqual(resp.status, 503, resp)
        self.assertIn(b"back soon", resp.body)
        # rollback still knows previous after the restart
        self.assertEqual(proxyctl(p2, "rollback", "web").rc, 0)
        self.assertEqual(self.body_of(p2), b"blue")

    def test_kill_9_after_deploy_keeps_a_valid_state_file(self):
        blue, green = self.coloured("blue"), self.coloured("green")
        d = self.state_dir()
        cfg = "[proxy]\nstate_file = {sd}/state.json\n"
        p1 = self.proxy(cfg, subst={"sd": d})
        self.deploy(p1, "web", blue)
        self.deploy(p1, "web", green)
        p1.send_signal(signal.SIGKILL)
        self.assertIsNotNone(p1.wait(5))
        with open(os.path.join(d, "state.json")) as f:
            saved = json.load(f)  # written before deploy answered: complete and valid
        self.assertEqual([(s["name"], s["active"], s["previous"]) for s in saved["services"]],
                         [("web", [green.addr], [blue.addr])])
        p2 = self.proxy(cfg, subst={"sd": d})
        self.assertEqual(self.body_of(p2), b"green")

    def _start_on(self, text):
        p = self.proxy("[proxy]\n", start=False)
        with open(os.path.join(p.tmp, "state.json"), "w") as f:
            f.write(text)
        return p

    def test_one_bad_entry_keeps_the_good_one(self):
        blue = self.coloured("blue")
        state = {"version": 1, "services": [
            {"name": "broken", "hosts": ["broken.test"], "active": "not-a-list", "previous": []},
            {"name": "web", "hosts": [], "path_prefix": "/", "active": [blue.addr], "previous": [],
             "health_check_path": "/up", "state": "active"},
        ]}
        p = self._start_on(json.dumps(state))
        p.start()
        self.assertEqual(self.body_of(p), b"blue")
        names = [s["name"] for s in proxyctl(p, "list", "--json").json()["services"]]
        self.assertEqual(names, ["web"])
        log = p.error_log_text()
        self.assertRegex(log, r"state\.json: service entry 0 \(broken\) skipped")
        # the next write keeps the good entry and drops the bad one
        self.assertEqual(proxyctl(p, "stop", "web").rc, 0)
        with open(os.path.join(p.tmp, "state.json")) as f:
            saved = json.load(f)
        self.assertEqual([s["name"] for s in saved["services"]], ["web"])

    def _assert_set_aside(self, text, what):
        """A state file that cannot be read never stops the front door: it is
        renamed aside (never overwritten), the error log and `status` say so,
        the config's services serve, and the next deploy writes a fresh file."""
        blue = self.coloured("blue")
        p = self.proxy("[proxy]\n\n[service conf]\nhosts = conf.test\ntargets = %s\n" % blue.addr, start=False)
        path = os.path.join(p.tmp, "state.json")
        with open(path, "w") as f:
            f.write(text)
        p.start(timeout=5)
        aside = [n for n in os.listdir(p.tmp) if n.startswith("state.json.unreadable-")]
        self.assertEqual(len(aside), 1, os.listdir(p.tmp))
        with open(os.path.join(p.tmp, aside[0])) as f:
            self.assertEqual(f.read(), text, "the %s state file was not kept as it was" % what)
        self.assertFalse(os.path.exists(path))
        log = p.error_log_text()
        self.assertRegex(log, r"\[error\] state_file %s: unreadable .*moved aside to %s"
                         % (re.escape(path), re.escape(os.path.join(p.tmp, aside[0]))))
        self.assertEqual(self.body_of(p, host="conf.test"), b"blue")
        st = proxyctl(p, "--json", "status")
        self.assertEqual(st.rc, 0, st)
        self.assertIn(aside[0], st.json().get("state_file_error", ""), st)
        st = proxyctl(p, "status")
        self.assertRegex(st.out, r"state_file_error\s+unreadable .*%s" % re.escape(aside[0]))
        self.deploy(p, "web", blue, "--host", "web.test")
        with open(path) as f:
            self.assertEqual([s["name"] for s in json.load(f)["services"]], ["web"])
        with open(os.path.join(p.tmp, aside[0])) as f:
            self.assertEqual(f.read(), text, "the deploy overwrote the file set aside")
        return p

    def test_truncated_state_file_is_set_aside(self):
        blue = self.coloured("blue")
        good = json.dumps({"version": 1, "services": [
            {"name": "web", "hosts": [], "path_prefix": "/", "active": [blue.addr], "previous": [],
             "health_check_path": "/up", "state": "active"}]}, indent=2)
        self._assert_set_aside(good[:len(good) // 2], "truncated")

    def test_garbage_state_file_is_set_aside(self):
        self._assert_set_aside("\x00\x01garbage{{{ not json\n", "garbage")

    def test_state_file_without_services_list_is_set_aside(self):
        p = self._assert_set_aside('{"version": 1, "services": 42}\n', "malformed")
        # a second bad file later gets a name of its own: the first is never overwritten
        first = sorted(n for n in os.listdir(p.tmp) if n.startswith("state.json.unreadable-"))
        self.assertEqual(p.stop(), 0)
        with open(os.path.join(p.tmp, "state.json"), "w") as f:
            f.write("second {")
        p.port = None
        p.start(timeout=5)
        names = sorted(n for n in os.listdir(p.tmp) if n.startswith("state.json.unreadable-"))
        self.assertEqual(len(names), 2, names)
        self.assertTrue(set(first) < set(names))
        contents = set()
        for n in names:
            with open(os.path.join(p.tmp, n)) as f:
                contents.add(f.read())
        self.assertEqual(contents, {'{"version": 1, "services": 42}\n', "second {"})


# --------------------------------------------------------------------------
# 10. the control socket
# --------------------------------------------------------------------------

def unix_conn(proxy, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout * SLOW)
    s.connect(os.path.join(proxy.tmp, "control.sock"))
    return s


def read_line(s, buf, deadline):
    """One line from s (buf: a bytearray carried between calls); b"" on EOF."""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no line")
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            d = b""
        if not d:
            return b""
        buf += d
    i = buf.index(b"\n")
    line = bytes(buf[:i])
    del buf[:i + 1]
    return line


class TestControlSocket(DeployCase):

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
    def test_peer_of_another_uid_is_forbidden(self):
        p = self.plain_proxy()
        sock = os.path.join(p.tmp, "control.sock")
        # let nobody reach the socket, so SO_PEERCRED is what refuses it
        os.chmod(p.tmp, 0o711)
        os.chmod(sock, 0o666)
        os.chmod(os.path.dirname(PROXYCTL), os.stat(os.path.dirname(PROXYCTL)).st_mode | 0o011)
        r = proxyctl(p, "list", timeout=10,
                     prefix=["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        self.assertEqual(r.rc, 1, r)
        self.assertIn("forbidden", r.err)
        # the reply can reach proxyctl before the log line reaches the file
        self.assertTrue(wait_until(lambda: "refused a peer" in p.error_log_text(), timeout=5), p.error_log_text())
        self.assertEqual(proxyctl(p, "list").rc, 0)

    def test_live_socket_refused_stale_socket_replaced(self):
        p1 = self.plain_proxy()
        sock = os.path.join(p1.tmp, "control.sock")
        # a second proxyd on a socket another one answers on: refused
        p2 = self.proxy("[proxy]\ncontrol_socket = %s\n" % sock, start=False)
        with self.assertRaises(ProxyError):
            p2.start(timeout=5)
        self.assertIn("another process answers there", p2.error_log_text())
        self.assertEqual(proxyctl(p1, "list").rc, 0, "the live socket was taken over")
        # a stale socket (its proxyd killed) is replaced
        p1.send_signal(signal.SIGKILL)
        p1.wait(5)
        self.assertTrue(stat.S_ISSOCK(os.stat(sock).st_mode))
        p3 = self.proxy("[proxy]\ncontrol_socket = %s\n" % sock)
        r = proxyctl(sock, "status", "--json")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.json()["pid"], p3.pid)

    def test_hostile_clients_do_not_block_others(self):
        blue = self.coloured("blue")
        p = self.plain_proxy()
        self.deploy(p, "web", blue)
        conns = []

        def conn():
            s = unix_conn(p)
            conns.append(s)
            self.addCleanup(s.close)
            return s

        half = conn()
        half.sendall(b'{"id":1,"cmd":"li')                    # half a line, then silence
        huge = conn()
        huge_data = b'{"id":2,"cmd":"list","x":"' + b"a" * (100 * 1024) + b'"}\n'
        t = threading.Thread(target=lambda: huge.sendall(huge_data), daemon=True)
        t.start()
        garbage = conn()
        garbage.sendall(b"\x00\xffnot json at all\n")
        noread = conn()                                         # asks a lot, never reads
        noread.sendall(b'{"id":3,"cmd":"list"}\n' * 2000)

        # another proxyctl is answered promptly meanwhile
        for _ in range(3):
            r = proxyctl(p, "list", timeout=5)
            self.assertEqual(r.rc, 0, r)
            self.assertLess(r.elapsed, 2.0 * SLOW, r)
            self.assertIn("web", r.out)

        # the huge line: line_too_long, then the connection is closed
        buf = bytearray()
        line = read_line(huge, buf, time.monotonic() + 5 * SLOW)
        rep = json.loads(line)
        self.assertEqual((rep["ok"], rep["error"]["code"]), (False, "line_too_long"), rep)
        t.join(5)
        self.assertEqual(read_line(huge, buf, time.monotonic() + 5 * SLOW), b"", "still open after line_too_long")

        # garbage: bad_request with id null, and the connection stays usable
        gbuf = bytearray()
        rep = json.loads(read_line(garbage, gbuf, time.monotonic() + 5 * SLOW))
        self.assertEqual((rep["id"], rep["ok"], rep["error"]["code"]), (None, False, "bad_request"), rep)
        garbage.sendall(b'{"id":"again","cmd":"list"}\n')
        rep = json.loads(read_line(garbage, gbuf, time.monotonic() + 5 * SLOW))
        self.assertEqual((rep["id"], rep["ok"]), ("again", True), rep)
        self.assertEqual([s["name"] for s in rep["result"]["services"]], ["web"])

        # the half line, completed later, is answered
        half.sendall(b'st"}\n')
        rep = json.loads(read_line(half, bytearray(), time.monotonic() + 5 * SLOW))
        self.assertEqual((rep["id"], rep["ok"]), (1, True), rep)

        # a deploy still works, and traffic never noticed
        self.assertEqual(self.body_of(p), b"blue")
        self.assertProxyAlive(p)


# --------------------------------------------------------------------------
# 10b. issue 14: reload conflicts, self targets, shutdown, codes, progress,
#      rollback timings
# --------------------------------------------------------------------------

def control_lines(proxy, request, until_final=True, timeout=20.0):
    """Send one raw request line; return every line read until the final
    reply (or EOF), as parsed JSON objects."""
    s = unix_conn(proxy, timeout)
    try:
        s.sendall((json.dumps(request) + "\n").encode())
        buf, out = bytearray(), []
        deadline = time.monotonic() + timeout * SLOW
        while True:
            line = read_line(s, buf, deadline)
            if not line:
                return out
            out.append(json.loads(line))
            if until_final and "ok" in out[-1]:
                # anything more on the wire for this request would be a protocol violation
                s.settimeout(0.3)
                try:
                    extra = s.recv(65536)
                except socket.timeout:
                    extra = b""
                if extra:
                    out.extend(json.loads(x) for x in extra.decode().splitlines() if x.strip())
                return out
    finally:
        s.close()


class TestReloadConflict(DeployCase):
    CONF = "[proxy]\n\n[service web]\nhosts = www.test\ntargets = %s\n"

    def test_reload_claiming_a_deployed_host_is_refused(self):
        """README: a reload never drops a deployed service, reloads are all
        or nothing. A config adding a [service] on a deployed service's host
        and prefix is refused (FILE:LINE naming the deployed service); the
        old table keeps serving."""
        www, app, other = self.coloured("www"), self.coloured("app"), self.coloured("other")
        p = self.proxy(self.CONF % www.addr)
        self.deploy(p, "app", app, "--host", "app.test")
        self.assertEqual(self.body_of(p, host="app.test"), b"app")
        bad = self.CONF % www.addr + "\n[service other]\nhosts = app.test\ntargets = %s\n" % other.addr
        p.write_config(bad)
        line = p.config_text.splitlines().index("[service other]") + 1
        r = proxyctl(p, "reload")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("reload_failed", r.err)
        self.assertIn("%s:%d: [service other]: conflicts with service app" % (p.config_path, line), r.err)
        self.assertIn("deployed by proxyctl", r.err)
        log = p.reload(bad)  # SIGHUP: the same refusal in the error log
        self.assertIn("reload failed", log)
        self.assertIn("%s:%d: [service other]" % (p.config_path, line), log)
        self.assertEqual(self.body_of(p, host="app.test"), b"app")
        self.assertEqual(self.body_of(p, host="www.test"), b"www")
        names = [s["name"] for s in proxyctl(p, "--json", "list").json()["services"]]
        self.assertEqual(sorted(names), ["app", "web"])
        self.assertEqual(other.requests, [])
        # a section that does not conflict still reloads
        ok = self.CONF % www.addr + "\n[service other]\nhosts = other.test\ntargets = %s\n" % other.addr
        p.write_config(ok)
        self.assertEqual(proxyctl(p, "reload").rc, 0)
        self.assertEqual(self.body_of(p, host="other.test"), b"other")
        self.assertEqual(self.body_of(p, host="app.test"), b"app")

    def test_start_with_a_config_claiming_a_deployed_host_keeps_the_deployed_service(self):
        """At start the front door must come up: the deployed service (what
        served before the restart) keeps its host, the conflicting [service]
        is left out with an error-log line naming both."""
        www, app, other = self.coloured("www"), self.coloured("app"), self.coloured("other")
        p = self.proxy(self.CONF % www.addr)
        self.deploy(p, "app", app, "--host", "app.test")
        self.assertEqual(p.stop(), 0)
        p.write_config(self.CONF % www.addr + "\n[service other]\nhosts = app.test\ntargets = %s\n" % other.addr)
        line = p.config_text.splitlines().index("[service other]") + 1
        p.port = None  # a new ephemeral port
        p.start()
        self.assertEqual(self.body_of(p, host="app.test"), b"app")
        self.assertEqual(self.body_of(p, host="www.test"), b"www")
        self.assertRegex(p.error_log_text(), r"\[error\] %s:%d: \[service other\]: conflicts with service app.*left out"
                         % (re.escape(p.config_path), line))
        names = [s["name"] for s in proxyctl(p, "--json", "list").json()["services"]]
        self.assertEqual(sorted(names), ["app", "web"])
        # a later deploy is not blocked by the section left out
        self.deploy(p, "app", app.addr, "--host", "app.test")
        self.assertEqual(other.requests, [])


class TestSelfTarget(DeployCase):
    """A deploy whose target is proxyd's own listen address loops every
    request back into proxyd: refused with invalid_target, nothing changes."""

    def assertRefused(self, p, target):
        r = proxyctl(p, "deploy", "loop", "--target", target, "--host", "loop.test", "--force", timeout=10)
        self.assertEqual(r.rc, 1, (target, r))
        self.assertIn("invalid_target", r.err)
        self.assertIn("proxyd's own listen address", r.err)

    def test_deploy_to_own_address_is_refused(self):
        p = self.plain_proxy()
        for t in ("127.0.0.1:%d" % p.port, "localhost:%d" % p.port):
            self.assertRefused(p, t)
        self.assertEqual(proxyctl(p, "--json", "list").json()["services"], [])
        self.assertFalse(os.path.exists(os.path.join(p.tmp, "state.json")))
        self.assertEqual(get(p.port, "/", host="loop.test").status, 404)
        # another port of this host is fine (a forced deploy does not wait for it)
        r = proxyctl(p, "deploy", "ok", "--target", "127.0.0.1:%d" % free_port(), "--force", timeout=10)
        self.assertEqual(r.rc, 0, r)

    def test_wildcard_listener_matches_every_local_address(self):
        p = self.proxy("[proxy]\nlisten_http = 0.0.0.0:0\n")
        targets = ["127.0.0.1:%d" % p.port, "localhost:%d" % p.port, "127.0.0.2:%d" % p.port,
                   "0.0.0.0:%d" % p.port]
        if socket.has_ipv6:
            targets.append("[::1]:%d" % p.port)
        for t in targets:
            self.assertRefused(p, t)

    def test_config_target_equal_to_listen_address_is_an_error(self):
        port = free_port()
        text = ("[proxy]\nlisten_http = 0.0.0.0:%d\ncontrol_socket = /tmp/x.sock\n\n[service web]\nhosts = a.test\n"
                "targets = 127.0.0.1:%d\n" % (port, port))
        d = tempfile.mkdtemp(prefix="proxyd-self-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "p.ini")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([os.path.join(build_dir(), "proxyd"), "-t", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10 * SLOW)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("%s:7: targets: 127.0.0.1:%d is proxyd's own listen address" % (path, port),
                      (r.stdout + r.stderr).decode())


    def test_state_entry_targeting_proxyd_itself_is_left_out(self):
        """A state file written before the rule (or a listener moved onto a
        target since): that entry is left out with an error line, the others
        serve."""
        blue = self.coloured("blue")
        port = free_port()
        p = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\n" % port, start=False)
        with open(os.path.join(p.tmp, "state.json"), "w") as f:
            json.dump({"version": 1, "services": [
                {"name": "loop", "hosts": ["loop.test"], "active": ["localhost:%d" % port], "previous": []},
                {"name": "web", "hosts": ["web.test"], "active": [blue.addr], "previous": []}]}, f)
        p.start()
        self.assertEqual([s["name"] for s in proxyctl(p, "--json", "list").json()["services"]], ["web"])
        self.assertIn("state: service loop left out: target localhost:%d is proxyd's own listen address 127.0.0.1:%d"
                      % (port, port),
                      p.error_log_text())
        self.assertEqual(self.body_of(p, host="web.test"), b"blue")
        self.assertEqual(get(p.port, "/", host="loop.test").status, 404)

    def test_error_code_is_typed_never_found_in_the_message(self):
        """The code of an error is the failing module's, never read from its
        text (deploy once picked `conflict` by strstr(message, "conflict")):
        a path prefix named "conflict" (no leading '/') is bad_request, though
        its message says "conflict"."""
        p = self.plain_proxy()
        s = unix_conn(p, 10)
        self.addCleanup(s.close)
        s.sendall(b'{"id":1,"cmd":"deploy","args":{"service":"web","targets":["127.0.0.1:1"],'
                  b'"hosts":["a.test"],"path_prefix":"conflict","force":true}}\n')
        reply = json.loads(read_line(s, bytearray(), time.monotonic() + 10 * SLOW))
        self.assertEqual(reply["ok"], False, reply)
        self.assertIn("conflict", reply["error"]["message"])
        self.assertEqual(reply["error"]["code"], "bad_request", reply)

    def test_an_entry_left_out_blocks_no_other_command(self):
        """A state entry left out at start (its target is proxyd itself) does
        not make every later command fail: stop, deploy and remove of other
        services work, and the entry stays in the state file."""
        blue, green = self.coloured("blue"), self.coloured("green")
        port = free_port()
        p = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\n" % port, start=False)
        state = os.path.join(p.tmp, "state.json")
        with open(state, "w") as f:
            json.dump({"version": 1, "services": [
                {"name": "loop", "hosts": ["loop.test"], "active": ["localhost:%d" % port], "previous": []},
                {"name": "web", "hosts": ["web.test"], "active": [blue.addr], "previous": []}]}, f)
        p.start()
        self.assertEqual(proxyctl(p, "stop", "web", timeout=10).rc, 0)
        self.assertEqual(get(p.port, "/", host="web.test").status, 503)
        self.assertEqual(proxyctl(p, "resume", "web", timeout=10).rc, 0)
        self.deploy(p, "api", green, "--host", "api.test")
        self.assertEqual(self.body_of(p, host="api.test"), b"green")
        self.assertEqual(proxyctl(p, "remove", "api", timeout=10).rc, 0)
        with open(state) as f:
            self.assertIn("loop", [s["name"] for s in json.load(f)["services"]])


class TestShutdownDuringDeploy(DeployCase):

    def test_sigterm_answers_pending_deploys_and_rollbacks_with_shutting_down(self):
        """DESIGN's shutting_down: every long command still waiting when
        proxyd stops gets its one reply before the control socket closes
        (proxyctl would otherwise report 'closed without answering', as if
        the daemon were unreachable and the deploy might still run)."""
        blue, green = self.coloured("blue"), self.coloured("green")
        sick = self.coloured("sick", healthy=False)
        p = self.plain_proxy()
        self.deploy(p, "web", blue, "--deploy-timeout", "15s")
        self.deploy(p, "web", green, "--deploy-timeout", "15s")
        blue.healthy = False  # the rollback waits for it
        blue.reset()
        conns = []
        for req in ({"id": 7, "cmd": "deploy", "args": {"service": "api", "targets": [sick.addr], "hosts": ["api.test"],
                                                       "health_check_interval_ms": 100, "deploy_timeout_ms": 15000}},
                    {"id": "rb", "cmd": "rollback", "args": {"service": "web"}}):
            s = unix_conn(p, 20)
            self.addCleanup(s.close)
            s.sendall((json.dumps(req) + "\n").encode())
            conns.append(s)
        self.assertTrue(wait_until(lambda: sick.health_requests and blue.health_requests, 5))
        p.send_signal(signal.SIGTERM)
        got = []
        for s in conns:
            buf, lines = bytearray(), []
            deadline = time.monotonic() + 10 * SLOW
            while True:
                line = read_line(s, buf, deadline)
                if not line:
                    break
                lines.append(json.loads(line))
            got.append(lines)
        for lines, rid in zip(got, (7, "rb")):
            self.assertEqual(len(lines), 1, lines)
            self.assertEqual((lines[0]["id"], lines[0]["ok"], lines[0]["error"]["code"]),
                             (rid, False, "shutting_down"), lines)
            self.assertIn("nothing changed", lines[0]["error"]["message"])
        self.assertEqual(p.wait(10), 0)


    def test_sigterm_answers_a_pending_cert_renew_with_shutting_down(self):
        """The same for `cert renew` waiting on a CA that does not answer
        (a socket that accepts and stays silent)."""
        hang = socket.socket()
        self.addCleanup(hang.close)
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        p = self.proxy("[proxy]\n\n[acme]\nenabled = yes\ndirectory = https://127.0.0.1:%d/dir\n"
                       "ca_bundle = %s/certs-dev/ca.crt\ndomains = a.test\nconfig_dir = {tmp}/le\n"
                       % (hang.getsockname()[1], root))
        s = unix_conn(p, 20)
        self.addCleanup(s.close)
        s.sendall(b'{"id":5,"cmd":"cert_renew","args":{"force":true}}\n')
        self.assertTrue(wait_until(lambda: "ordering a certificate" in p.error_log_text(), 5))
        # in its handler by now or not: either way it answers shutting_down
        p.send_signal(signal.SIGTERM)
        buf, lines = bytearray(), []
        deadline = time.monotonic() + 10 * SLOW
        while True:
            line = read_line(s, buf, deadline)
            if not line:
                break
            lines.append(json.loads(line))
        self.assertEqual([(x["id"], x["ok"], x["error"]["code"]) for x in lines], [(5, False, "shutting_down")],
                         lines)
        self.assertEqual(p.wait(10), 0)


class TestCodesAndProgress(DeployCase):

    def test_rollback_of_a_config_service_never_deployed_is_no_previous(self):
        blue = self.coloured("blue")
        p = self.proxy(self.service_config(blue))
        r = proxyctl(p, "rollback", "web", timeout=10)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("proxyctl: no_previous:", r.err)
        r = proxyctl(p, "rollback", "nope", timeout=10)
        self.assertIn("proxyctl: unknown_service:", r.err)

    def test_progress_lines_only_when_asked(self):
        blue, green = self.coloured("blue"), self.coloured("green")
        p = self.plain_proxy()
        args = {"service": "web", "targets": [blue.addr], "health_check_interval_ms": 100}
        lines = control_lines(p, {"id": 1, "cmd": "deploy", "args": args})
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual((lines[0]["id"], lines[0]["ok"]), (1, True), lines)
        args["targets"] = [green.addr]
        lines = control_lines(p, {"id": 2, "cmd": "deploy", "args": args, "progress": True})
        self.assertGreater(len(lines), 1, lines)
        self.assertTrue(all(set(x) == {"id", "progress"} and x["id"] == 2 for x in lines[:-1]), lines)
        self.assertEqual((lines[-1]["id"], lines[-1]["ok"]), (2, True), lines)
        self.assertTrue(any("healthy" in x["progress"] for x in lines[:-1]), lines)
        lines = control_lines(p, {"id": 3, "cmd": "rollback", "args": {"service": "web"}, "progress": False})
        self.assertEqual([x.get("ok") for x in lines], [True], lines)
        lines = control_lines(p, {"id": 4, "cmd": "list", "progress": "yes"})
        self.assertEqual((lines[0]["ok"], lines[0]["error"]["code"]), (False, "bad_request"), lines)
        # proxyctl asks, and prints them on stderr
        r = self.deploy(p, "web", green)
        self.assertIn("is healthy", r.err)


class TestRollbackTimings(DeployCase):

    def test_rollback_uses_the_last_deploys_health_check_timings(self):
        """The deploy's interval (100 ms) and deploy timeout (2 s) are kept
        with the service: a rollback to a target that stays unhealthy checks
        it every 100 ms and gives up after 2 s, not every 1 s for 30 s."""
        blue, green = self.coloured("blue"), self.coloured("green")
        p = self.plain_proxy()
        self.deploy(p, "web", blue, "--deploy-timeout", "2s")
        self.deploy(p, "web", green, "--deploy-timeout", "2s")
        with open(os.path.join(p.tmp, "state.json")) as f:
            saved = json.load(f)["services"][0]
        self.assertEqual((saved["health_check_interval_ms"], saved["health_check_timeout_ms"],
                          saved["deploy_timeout_ms"]), (100, 1000, 2000), saved)
        blue.healthy = False
        blue.reset()
        r = proxyctl(p, "rollback", "web", timeout=60)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("health_check_failed", r.err)
        # the deploy timeout kept (2 s), not the default 30 s
        self.assertLess(r.elapsed, 15 * SLOW, r)
        # checks every 100 ms: ~10 a second; the default interval gives 1 a second
        n = len(blue.health_requests)
        self.assertGreaterEqual(n, max(8, 4 * r.elapsed), (n, r.elapsed))
        self.assertEqual(self.body_of(p), b"green")


class TestServiceHealthTimings(DeployCase):

    def test_health_check_interval_is_honoured(self):
        """[service] health_check_interval: 200 ms sees clearly more checks
        than 5 s in the same window."""
        fast, slow = self.coloured("fast"), self.coloured("slow")
        p = self.proxy("[proxy]\n\n[service fast]\nhosts = fast.test\ntargets = %s\nhealth_check_path = /up\n"
                       "health_check_interval = 200ms\nhealth_check_timeout = 1s\n\n"
                       "[service slow]\nhosts = slow.test\ntargets = %s\nhealth_check_path = /up\n"
                       "health_check_interval = 5s\n" % (fast.addr, slow.addr))
        self.assertTrue(wait_until(lambda: len(fast.health_requests) >= 8, 10), len(fast.health_requests))
        n_fast, n_slow = len(fast.health_requests), len(slow.health_requests)
        self.assertLessEqual(n_slow, 2, (n_fast, n_slow))
        self.assertGreaterEqual(n_fast, 4 * max(n_slow, 1), (n_fast, n_slow))
        # a reload that changes the interval changes the checker
        p.write_config(p.config_text.replace("health_check_interval = 5s", "health_check_interval = 200ms"))
        self.assertEqual(proxyctl(p, "reload").rc, 0)
        slow.reset()
        self.assertTrue(wait_until(lambda: len(slow.health_requests) >= 5, 10), len(slow.health_requests))


# --------------------------------------------------------------------------
# 11. the promise, short form
# --------------------------------------------------------------------------

class Load:
    """Client threads sending requests until stop(); every response must be
    200 with a body from one of `ok_bodies` (per path prefix)."""

    def __init__(self, proxy, bodies):
        self.proxy = proxy
        self.bodies = bodies          # {path: set of acceptable bodies}
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []

    def record(self, ok, what):
        with self.lock:
            if ok:
                self.ok += 1
            elif len(self.failed) < 50:
                self.failed.append(what)
            else:
                self.failed.append("...")

    def check(self, path, status, body):
        good = status == 200 and body in self.bodies[path]
        self.record(good, "%s: %s %r" % (path, status, body[:60]))

    def h1(self, path):
        while not self.stopping.is_set():
            try:
                with Client(self.proxy.port, timeout=10.0) as c:
                    for _ in range(500):
                        if self.stopping.is_set():
                            break
                        r = c.request("GET", path, host="test.local")
                        self.check(path, r.status, r.body)
            except Exception as e:  # noqa: BLE001 -- a reset or timeout is a failed request
                self.record(False, "h1 %s: %r" % (path, e))

    def h2(self, paths):
        while not self.stopping.is_set():
            try:
                with H2Client(self.proxy.https_port) as c:
                    for _ in range(200):
                        if self.stopping.is_set():
                            break
                        sids = [(path, c.request("GET", path)) for path in paths]
                        for path, sid in sids:
                            s = c.wait_stream(sid)
                            if s.reset is not None:
                                self.record(False, "h2 %s: RST_STREAM %s" % (path, s.reset))
                            else:
                                self.check(path, s.status, bytes(s.data))
                        if c.terminated:
                            self.record(False, "h2: GOAWAY %r" % c.terminated)
                            break
            except Exception as e:  # noqa: BLE001
                self.record(False, "h2: %r" % e)

    def start(self, h1_paths, h2_paths):
        for path in h1_paths:
            self.threads.append(threading.Thread(target=self.h1, args=(path,), daemon=True))
        if h2_paths:
            self.threads.append(threading.Thread(target=self.h2, args=(h2_paths,), daemon=True))
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(20 * SLOW)
        return sum(t.is_alive() for t in self.threads)


def streaming(name, total=48 * 1024, pieces=6, delay=0.01):
    """A response function: `total` bytes naming `name`, sent in pieces."""
    body = (("%s-" % name).encode() * (total // 4 + 1))[:total]
    step = total // pieces

    def respond(req):
        items = [http_response(200, body, head_only=True)]
        for i in range(0, total, step):
            items += [delay, body[i:i + step]]
        return items
    return respond, body


class TestPromise(DeployCase):

    def test_ten_alternating_deploys_under_load_fail_no_request(self):
        # A rollback reuses the targets the last deploy retired: they must
        # stop draining before the switch is published, or a request in that
        # window finds no usable target (503). This caught it.
        blue, green = self.coloured("blue"), self.coloured("green")
        sb_resp, sb_body = streaming("blue")
        sg_resp, sg_body = streaming("green")
        sblue = self.backend(response=sb_resp)
        sgreen = self.backend(response=sg_resp)
        p = self.tls_proxy("access_log = off")
        self.deploy(p, "web", blue)
        self.deploy(p, "stream", sblue, "--path-prefix", "/stream")
        load = Load(p, {"/": {b"blue", b"green"}, "/stream": {sb_body, sg_body}})
        load.start(h1_paths=["/", "/", "/stream"], h2_paths=["/", "/stream"])
        t0 = time.monotonic()
        results = []
        try:
            time.sleep(0.3)
            for i in range(10):
                web, strm = (green, sgreen) if i % 2 == 0 else (blue, sblue)
                results.append(self.deploy(p, "web", web, ok=False))
                results.append(self.deploy(p, "stream", strm, "--path-prefix", "/stream", ok=False))
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            hung = load.stop()
        elapsed = time.monotonic() - t0
        bad = [r for r in results if r.rc != 0]
        self.assertEqual(bad, [], "deploys that failed")
        self.assertEqual(hung, 0, "client threads hung")
        self.assertEqual(load.failed, [], "%d failed of %d" % (len(load.failed), load.ok + len(load.failed)))
        self.assertGreater(load.ok, 100, "too little load to mean anything")
        self.assertLess(elapsed, 45 * SLOW)
        # both colours served
        self.assertTrue(blue.requests and green.requests and sblue.requests and sgreen.requests)
        self.assertProxyAlive(p)


if __name__ == "__main__":
    unittest.main()
