"""Route policies with the real binary: [limit] zones on [route]s (nginx
limit_req: burst, nodelay, delay, several zones, 429 + Retry-After or 503),
the client address (peer, trusted X-Forwarded-For, IPv6), zones shared by
the workers and kept across SIGHUP, HTTP/2 streams, suffix routes, header
sets on proxied and proxyd's own responses (the upstream's header wins), the
access log's `limited`; and, where nginx is installed, the same burst
through nginx and proxyd, request by request.

Rates are low (1r/m) so that nothing leaks back during a test: the tests
assert statuses and order, never timings."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import (SLOW, Client, H2Client, ProxyTestCase, RecordingBackend, free_port, get, http_response,
                     raw_request, request_bytes, tls_service_config, wait_until)

SECURITY = ("x-frame-options", "x-content-type-options", "x-xss-protection")
CORS = ("[headers cors]\n"
        "Access-Control-Allow-Origin = https://example.com\n"
        "Access-Control-Allow-Methods = GET, POST, PUT, DELETE, OPTIONS\n"
        "Access-Control-Allow-Credentials = true\n")
IMMUTABLE = "[headers immutable]\nCache-Control = public, max-age=31536000, immutable\n"
LONG_CACHE = "[headers next]\nCache-Control = public, max-age=31536000\n"


def limit(name="api", rate="1r/m", burst=20, more=""):
    return "[limit %s]\nrate = %s\nburst = %d\nzone_size = 1m\n%s\n" % (name, rate, burst, more)


def statuses(port, path, n, host="app.test", headers=()):
    """n requests on one keep-alive connection; their statuses."""
    out = []
    with Client(port) as c:
        for _ in range(n):
            out.append(c.request("GET", path, host=host, headers=headers).status)
    return out


class LimitCase(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(RecordingBackend)

    def start(self, sections, extra_proxy="", backend=None):
        return self.proxy(self.service_config(backend or self.b, extra_proxy=extra_proxy, extra=sections))


class Burst(LimitCase):
    def test_21_of_40_pass_with_burst_20(self):
        p = self.start(limit() + "[route /api/]\nlimit = api\n")
        got = statuses(p.port, "/api/x", 40)
        self.assertEqual(got, [200] * 21 + [429] * 19)
        self.assertEqual(len(self.b.wait_requests(21)), 21)
        # another route is not touched
        self.assertEqual(statuses(p.port, "/other", 3), [200] * 3)

    def test_429_has_retry_after_and_the_headers(self):
        p = self.start(limit(burst=0) + "[route /api/v1/]\nlimit = api\nheaders = cors\n" + CORS)
        with Client(p.port) as c:
            ok = c.request("GET", "/api/v1/x", host="app.test")
            r = c.request("GET", "/api/v1/x", host="app.test")
            again = c.request("GET", "/api/v1/x", host="app.test")  # the connection stays open
        self.assertEqual((ok.status, r.status, again.status), (200, 429, 429))
        self.assertEqual(r.reason, "Too Many Requests")
        ra = r.headers.get_all("retry-after")
        self.assertEqual(len(ra), 1, r)
        self.assertRegex(ra[0], r"^[1-9][0-9]*$")
        self.assertGreaterEqual(int(ra[0]), 1)
        self.assertLessEqual(int(ra[0]), 63)  # 1r/m: nginx's 16 milli-requests a second
        for name in SECURITY:
            self.assertEqual(len(r.headers.get_all(name)), 1, (name, r))
        self.assertEqual(r.headers.get_all("access-control-allow-origin"), ["https://example.com"])
        self.assertEqual(r.headers.get_all("access-control-allow-credentials"), ["true"])
        self.assertEqual(ok.headers.get_all("access-control-allow-origin"), ["https://example.com"])
        self.assertIsNone(ok.header("retry-after"))

    def test_rejected_post_keeps_the_connection(self):
        """A POST answered 429 without reading its body keeps its keep-alive
        connection: the body is read and dropped, as nginx discards it; the
        next request on the connection, pipelined right behind the body or
        sent later, is answered. A chunked body, an Expect: 100-continue whose
        body may never come, or a body over 1 MiB still closes."""
        p = self.start(limit(burst=0) + "[route /api/]\nlimit = api\n")
        with Client(p.port) as c:
            self.assertEqual(c.request("POST", "/api/x", host="app.test", body=b"a" * 10).status, 200)
            big = b"b" * 200000
            r = c.request("POST", "/api/x", host="app.test", body=big)
            self.assertEqual(r.status, 429)
            self.assertNotEqual((r.header("connection") or "").lower(), "close", r)
            # the body's tail and the next request in one write
            c.send(request_bytes("POST", "/api/x", host="app.test", body=b"c" * 5000) +
                   request_bytes("GET", "/other", host="app.test"))
            self.assertEqual(c.read_response().status, 429)
            self.assertEqual(c.read_response().status, 200)
            # a head now, its body later
            c.send(request_bytes("POST", "/api/x", host="app.test", headers=[("Content-Length", "6")],
                                 content_length=False))
            self.assertEqual(c.read_response().status, 429)
            time.sleep(0.05)
            c.send(b"later!" + request_bytes("GET", "/other", host="app.test"))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, r.body))
        got = [q.path for q in self.b.requests]
        self.assertEqual(got.count("/other"), 2, got)
        self.assertEqual(len([q for q in self.b.requests if q.path == "/api/x"]), 1)
        for headers, body in ((("Transfer-Encoding", "chunked"),), b"5\r\nhello\r\n0\r\n\r\n"), \
                             ((("Expect", "100-continue"),), None), \
                             ((), b"x" * (1024 * 1024 + 1)):
            with Client(p.port) as c:
                if body is None:  # the client waits for 100 before its body
                    c.send(request_bytes("POST", "/api/x", host="app.test",
                                         headers=list(headers) + [("Content-Length", "5")], content_length=False))
                else:
                    c.send(request_bytes("POST", "/api/x", host="app.test", headers=list(headers), body=body,
                                         content_length=None if not headers else False))
                r = c.read_response()
                self.assertEqual(r.status, 429)
                self.assertEqual((r.header("connection") or "").lower(), "close", (headers, r))
                self.assertTrue(c.closed_within(5), headers)

    def test_503_configured(self):
        p = self.start(limit(burst=1, more="status = 503") + "[route /]\nlimit = api\nheaders = cors\n" + CORS)
        with Client(p.port) as c:
            got = [c.request("GET", "/x", host="app.test") for _ in range(4)]
        self.assertEqual([r.status for r in got], [200, 200, 503, 503])
        r = got[2]
        self.assertIsNone(r.header("retry-after"), r)  # as nginx: a bare 503
        self.assertEqual(r.headers.get_all("access-control-allow-origin"), ["https://example.com"])
        self.assertEqual(len(r.headers.get_all("x-frame-options")), 1)
        lines = p.wait_access_log(4)
        self.assertEqual([(e["status"], e.get("limited")) for e in lines],
                         [(200, None), (200, None), (503, "api"), (503, "api")])

    def test_several_zones_as_nginx(self):
        """Every zone is looked at; a rejection charges none (nginx's several
        limit_req): /multi passes 3 (b's burst), and a's budget shows only
        those 3 on /single."""
        p = self.start(limit("a", burst=5) + limit("b", burst=2) +
                       "[route /multi/]\nlimit = a b\n[route /single/]\nlimit = a\n")
        self.assertEqual(statuses(p.port, "/multi/x", 8), [200] * 3 + [429] * 5)
        self.assertEqual(statuses(p.port, "/single/x", 5), [200] * 3 + [429] * 2)
        lines = p.wait_access_log(13)
        self.assertEqual([e.get("limited") for e in lines if e["status"] == 429], ["b"] * 5 + ["a"] * 2)

    def test_health_and_acme_never_limited(self):
        p = self.start(limit(burst=0) + "[route /]\nlimit = api\n")
        self.assertEqual(statuses(p.port, "/health", 5), [200] * 5)
        acme = statuses(p.port, "/.well-known/acme-challenge/tok", 3)
        self.assertNotIn(429, acme)
        self.assertEqual(statuses(p.port, "/x", 3), [200, 429, 429])
        self.assertEqual(statuses(p.port, "/health", 2), [200] * 2)

    def test_access_log_limited(self):
        p = self.start(limit(burst=1) + "[route /api/]\nlimit = api\n")
        statuses(p.port, "/api/x", 3)
        p.wait_access_log(3)  # logged before the next connection, which another worker may take
        statuses(p.port, "/free", 1)
        lines = p.wait_access_log(4)
        self.assertEqual(len(lines), 4, lines)
        self.assertNotIn("limited", lines[0])
        self.assertNotIn("limited", lines[1])
        self.assertEqual((lines[2]["status"], lines[2]["limited"], lines[2]["service"]), (429, "api", ""))
        self.assertNotIn("limited", lines[3])


class NoService(LimitCase):
    def test_unmatched_host_limited_with_headers(self):
        conf = ("[proxy]\n" + limit(burst=1) + "[route /api/]\nlimit = api\nheaders = cors\n" + CORS +
                "[service web]\nhosts = app.test\ntargets = %s\n" % self.b.addr)
        p = self.proxy(conf)
        with Client(p.port) as c:
            got = [c.request("GET", "/api/x", host="other.test") for _ in range(3)]
        self.assertEqual([r.status for r in got], [404, 404, 429])
        for r in got:
            self.assertEqual(r.headers.get_all("access-control-allow-origin"), ["https://example.com"], r)
        self.assertEqual(self.b.requests, [])


class ClientAddress(LimitCase):
    def test_two_clients_through_a_trusted_proxy(self):
        p = self.start(limit(burst=2) + "[route /]\nlimit = api\n",
                       extra_proxy="trusted_proxies = 127.0.0.1/32 10.1.0.0/16")

        def run(xff, n):
            return statuses(p.port, "/x", n, headers=[("X-Forwarded-For", xff)])

        self.assertEqual(run("10.0.0.1", 3), [200] * 3)
        self.assertEqual(run("10.0.0.2", 4), [200] * 3 + [429])
        self.assertEqual(run("10.0.0.1", 1), [429])
        # the right-most untrusted entry is the client
        self.assertEqual(run("10.0.0.9, 10.0.0.1", 1), [429])
        self.assertEqual(run("10.0.0.1, 10.0.0.3", 1), [200])
        self.assertEqual(run("10.0.0.3, 10.1.0.5", 3), [200, 200, 429])
        # the proxy itself (no X-Forwarded-For) has a budget of its own
        self.assertEqual(statuses(p.port, "/x", 3), [200] * 3)
        lines = p.wait_access_log(16)
        self.assertEqual(lines[0]["client"], "10.0.0.1")

    def test_untrusted_forwarded_for_ignored(self):
        p = self.start(limit(burst=2) + "[route /]\nlimit = api\n")
        got = [statuses(p.port, "/x", 1, headers=[("X-Forwarded-For", "10.0.0.%d" % i)])[0] for i in range(5)]
        self.assertEqual(got, [200] * 3 + [429] * 2)

    def test_ipv6_clients_by_full_address(self):
        p = self.start(limit(burst=1) + "[route /]\nlimit = api\n", extra_proxy="trusted_proxies = 127.0.0.1/32")

        def run(xff, n=1):
            return statuses(p.port, "/x", n, headers=[("X-Forwarded-For", xff)])

        self.assertEqual(run("2001:db8::1", 2), [200, 200])
        self.assertEqual(run("2001:DB8:0:0::1"), [429])          # the same address written otherwise
        self.assertEqual(run("2001:db8::2", 2), [200, 200])      # the same /64, another client (no /64 option)
        self.assertEqual(run("10.0.0.7", 2), [200, 200])
        self.assertEqual(run("::ffff:10.0.0.7"), [429])          # IPv4-mapped is the IPv4 address


class Workers(LimitCase):
    def test_two_workers_share_one_budget(self):
        p = self.start(limit() + "[route /api/]\nlimit = api\n", extra_proxy="workers = 2")
        results = []
        lock = threading.Lock()

        def client(n):
            for _ in range(n):
                st = get(p.port, "/api/x", host="app.test").status  # a new connection each
                with lock:
                    results.append(st)

        threads = [threading.Thread(target=client, args=(10,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30 * SLOW)
        self.assertEqual(len(results), 40)
        self.assertEqual(results.count(200), 21, results)
        self.assertEqual(results.count(429), 19, results)


class Delay(LimitCase):
    """Without nodelay the burst waits its turn, parked: other requests go
    past it meanwhile (no worker waits). Asserted by order, not by time."""

    def order(self):
        return [r.path for r in self.b.requests]

    def test_delay_without_nodelay(self):
        p = self.start(limit(rate="30r/m", burst=5, more="nodelay = no") + "[route /api/]\nlimit = api\n",
                       extra_proxy="workers = 1")
        with Client(p.port) as a, Client(p.port) as b, Client(p.port) as c:
            self.assertEqual(a.request("GET", "/api/a", host="app.test").status, 200)  # excess 0: at once
            b.send(request_bytes("GET", "/api/b", host="app.test"))                    # waits ~2 s
            time.sleep(0.3)
            self.assertEqual(c.request("GET", "/free/c", host="app.test").status, 200)
            rb = b.read_response(timeout=10)
        self.assertEqual(rb.status, 200)
        self.assertEqual(self.order(), ["/api/a", "/free/c", "/api/b"])
        self.assertNotIn("limited", p.wait_access_log(3)[-1])

    def test_two_stage_delay(self):
        """nginx's delay=2: the first two excess requests pass at once, the
        third of the burst waits, beyond the burst it is rejected."""
        p = self.start(limit(rate="30r/m", burst=3, more="delay = 2") + "[route /api/]\nlimit = api\n",
                       extra_proxy="workers = 1")
        with Client(p.port) as d, Client(p.port) as e, Client(p.port) as f:
            self.assertEqual(statuses(p.port, "/api/a", 3), [200] * 3)  # excess 0, 1, 2
            d.send(request_bytes("GET", "/api/d", host="app.test"))    # excess 3 > delay 2: waits
            time.sleep(0.3)
            self.assertEqual(e.request("GET", "/api/e", host="app.test").status, 429)  # excess 4 > burst 3
            self.assertEqual(f.request("GET", "/free/f", host="app.test").status, 200)
            self.assertEqual(d.read_response(timeout=10).status, 200)
        self.assertEqual(self.order(), ["/api/a"] * 3 + ["/free/f", "/api/d"])


class Reload(LimitCase):
    def conf(self, burst, zone_size="1m", extra=""):
        return self.service_config(self.b, extra="[limit api]\nrate = 1r/m\nburst = %d\nzone_size = %s\n"
                                   "[route /api/]\nlimit = api\n%s" % (burst, zone_size, extra))

    def test_state_kept_across_sighup_and_reset_by_zone_size(self):
        p = self.proxy(self.conf(2))
        self.assertEqual(statuses(p.port, "/api/x", 4), [200, 200, 200, 429])
        # an unchanged zone (another key elsewhere): its buckets stay full
        log = p.reload(self.conf(2, extra="[headers]\nX-Reloaded = 1\n"))
        self.assertIn("reloaded", log)
        with Client(p.port) as c:
            r = c.request("GET", "/api/x", host="app.test")
        self.assertEqual((r.status, r.header("x-reloaded")), (429, "1"))
        # a new burst is a parameter: the state stays, the new burst applies
        p.reload(self.conf(3))
        self.assertEqual(statuses(p.port, "/api/x", 2), [200, 429])
        # a new zone_size is a new zone: empty
        p.reload(self.conf(3, zone_size="2m"))
        self.assertEqual(statuses(p.port, "/api/x", 5), [200] * 4 + [429])

    def test_failed_reload_keeps_state(self):
        p = self.proxy(self.conf(1))
        self.assertEqual(statuses(p.port, "/api/x", 3), [200, 200, 429])
        log = p.reload(self.conf(1) + "[route /api]\n")  # conflicts with [route /api/]
        self.assertIn("reload failed", log)
        self.assertIn("conflicts with [route /api/]", log)
        self.assertEqual(statuses(p.port, "/api/x", 1), [429])


class TargetVariants(LimitCase):
    """What a backend would serve as /login is limited by [route /login]:
    after the burst, every spelling of it is 429 -- ";params", a decoded
    '?', space, ".json" -- or 400 when it is no valid target ('#', "%00",
    "%zz", a cut "%"), as nginx answers; never forwarded. Within the burst
    the upstream gets the target byte for byte."""

    LIMITED = ["/login;x", "/login;jsessionid=1/", "/login%3f", "/login%3Fa=1", "/login%20", "/login%23",
               "/login.json", "/login/", "/a/..;/login", "//login", "/%6cogin"]
    BAD = ["/login#x", "/login%00", "/login%", "/login%zz", "/login%4?x", "/login?a#b"]

    def test_h1_variants_limited_or_400(self):
        p = self.start(limit(burst=2) + "[route /login]\nlimit = api\n")
        first = "/login;jsessionid=AB%2f?x=%zz"
        self.assertEqual(statuses(p.port, first, 1), [200])
        self.assertEqual(statuses(p.port, "/login", 2), [200, 200])
        got = {}
        for t in self.LIMITED + self.BAD:
            # Connection: close, so that each answer ends at once (a 429 keeps the connection
            # open, and 1r/m leaks a whole request back within a minute of waiting)
            r = raw_request(p.port, request_bytes("GET", t, host="app.test", headers=[("Connection", "close")]),
                            timeout=5.0)
            got[t] = int(r.data.split(b" ")[1]) if r.data else 0
        self.assertEqual(got, dict([(t, 429) for t in self.LIMITED] + [(t, 400) for t in self.BAD]))
        reqs = self.b.wait_requests(3)  # a forwarded variant would be recorded before its status came back
        self.assertEqual([r.target for r in self.b.requests], [first, "/login", "/login"])
        # another name is another route: not limited
        self.assertEqual(statuses(p.port, "/login-help", 1) + statuses(p.port, "/loginx", 1), [200, 200])
        self.assertEqual(reqs[0].start_line, "GET %s HTTP/1.1" % first)

    def test_h2_variants_limited_or_refused(self):
        p = self.proxy(tls_service_config(self.b, extra_proxy="redirect_https = no",
                                          extra=limit(burst=2) + "[route /login]\nlimit = api\n"))
        c = H2Client(p.https_port, validate=False)
        self.addCleanup(c.close)
        self.assertEqual([c.get("/login").status for _ in range(3)], [200] * 3)
        for t in ["/login;x", "/login%3f", "/login.json"]:
            self.assertEqual(c.get(t).status, 429, t)
        for t in ["/login%00", "/login%zz", "/login%"]:
            self.assertEqual(c.get(t).status, 400, t)
        # '#': 400, or a stream error where the HTTP/2 layer refuses it first
        s = c.get("/login#x")
        self.assertTrue(s.status == 400 or s.reset is not None, s)
        self.assertEqual(len(self.b.requests), 3)


class HTTP2(ProxyTestCase):
    def test_streams_limited_like_requests(self):
        b = self.backend(RecordingBackend)
        p = self.proxy(tls_service_config(b, extra_proxy="redirect_https = no",
                                          extra=limit(burst=5) + "[route /api/]\nlimit = api\nheaders = cors\n" +
                                          CORS))
        c = H2Client(p.https_port)
        self.addCleanup(c.close)
        sids = [c.request("GET", "/api/x") for _ in range(10)]  # ten streams at once
        got = [c.wait_stream(sid) for sid in sids]
        self.assertEqual([s.status for s in got], [200] * 6 + [429] * 4, got)
        r = got[-1]
        self.assertRegex(r.header("retry-after"), r"^[1-9][0-9]*$")
        self.assertEqual(r.headers.get_all("access-control-allow-origin"), ["https://example.com"])
        self.assertEqual(len(r.headers.get_all("strict-transport-security")), 1)  # HTTPS: [headers] with HSTS
        self.assertEqual(got[0].headers.get_all("access-control-allow-origin"), ["https://example.com"])
        # the same client over HTTP/1.1 shares the budget (same address)
        self.assertEqual(statuses(p.port, "/api/x", 1, host="localhost"), [429])
        lines = p.wait_access_log(11)
        h2 = [e for e in lines if e["proto"] == "HTTP/2"]
        self.assertEqual(sorted(e.get("limited") or "" for e in h2), [""] * 6 + ["api"] * 4)


def app(req):
    """/up-*: the upstream sets its own CORS origin (lowercase) and cache header."""
    if req.path.startswith("/api/v1/up-"):
        return http_response(200, b"u", headers=[("access-control-allow-origin", "https://up.example"),
                                                 ("CACHE-CONTROL", "no-store")])
    if req.path.startswith("/_next/static/up-"):
        return http_response(200, b"u", headers=[("Cache-Control", "private")])
    return http_response(200, b"ok")


class HeaderSets(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(RecordingBackend, response=app)
        dead = free_port()
        sections = (CORS + IMMUTABLE + LONG_CACHE +
                    "[route /api/v1/]\nheaders = cors\n"
                    "[route /_next/static/]\nheaders = next\n"
                    "[route /]\nsuffix = .js .css .png .woff2\nheaders = immutable\n"
                    "[service dead]\nhosts = dead.test\ntargets = 127.0.0.1:%d\n" % dead)
        conf = tls_service_config(self.b, extra_proxy="redirect_https = no", extra=sections)
        self.p = self.proxy(conf.replace("[service web]\n", "[service web]\nhosts = app.test\n"))

    def h1(self, path, host="app.test"):
        with Client(self.p.port) as c:
            return c.request("GET", path, host=host)

    def test_cors_on_proxied_and_own_responses(self):
        for host, path, status in (("app.test", "/api/v1/users", 200), ("other.test", "/api/v1/users", 404),
                                   ("dead.test", "/api/v1/users?x=1", 502), ("app.test", "/api/v1", 200)):
            with self.subTest(host=host, path=path):
                r = self.h1(path, host)
                self.assertEqual(r.status, status, r)
                self.assertEqual(r.headers.get_all("access-control-allow-origin"), ["https://example.com"], r)
                self.assertEqual(r.headers.get_all("access-control-allow-methods"),
                                 ["GET, POST, PUT, DELETE, OPTIONS"])
                for name in SECURITY:
                    self.assertEqual(len(r.headers.get_all(name)), 1, (name, r))
        # outside the route: none
        for host, path in (("app.test", "/api/v2/x"), ("other.test", "/x"), ("app.test", "/api/v1x")):
            r = self.h1(path, host)
            self.assertIsNone(r.header("access-control-allow-origin"), r)
        # not on the health path either (proxyd's own endpoint, no route)
        self.assertIsNone(self.h1("/health").header("access-control-allow-origin"))

    def test_upstream_wins(self):
        r = self.h1("/api/v1/up-x")
        self.assertEqual(r.headers.get_all("access-control-allow-origin"), ["https://up.example"], r)
        self.assertEqual(r.headers.get_all("access-control-allow-credentials"), ["true"])  # the rest of the set
        r = self.h1("/_next/static/up-x.js")
        self.assertEqual(r.headers.get_all("cache-control"), ["private"], r)
        with H2Client(self.p.https_port) as c:
            s = c.get("/api/v1/up-x", authority="app.test")
        self.assertEqual(s.headers.get_all("access-control-allow-origin"), ["https://up.example"], s)
        self.assertEqual(s.headers.get_all("access-control-allow-credentials"), ["true"])

    def test_suffix_routes(self):
        for path, want in (("/app.js", True), ("/a/b/STYLE.CSS", True), ("/app.JS?v=1", True),
                           ("/font.woff2", True), ("/app.js.map", False), ("/page.html?x.js", False),
                           ("/x.js/", False), ("/api/v1/x.js", False), ("/%61pp%2Ejs", True)):
            with self.subTest(path=path):
                r = self.h1(path)
                self.assertEqual(r.status, 200)
                cc = r.headers.get_all("cache-control")
                self.assertEqual(cc, ["public, max-age=31536000, immutable"] if want else [], (path, r))
        # the longer prefix wins over a suffix at "/": /_next/static/ has its own set
        r = self.h1("/_next/static/chunks/main.js")
        self.assertEqual(r.headers.get_all("cache-control"), ["public, max-age=31536000"], r)
        # the query passes to the upstream untouched
        self.assertEqual(self.b.requests[2].target, "/app.JS?v=1")

    def test_h2_header_sets(self):
        with H2Client(self.p.https_port) as c:
            ok = c.get("/api/v1/x", authority="app.test")
            nf = c.get("/api/v1/x", authority="other.test")
            js = c.get("/a.Js", authority="app.test")
        self.assertEqual((ok.status, nf.status), (200, 404))
        for s in (ok, nf):
            self.assertEqual(s.headers.get_all("access-control-allow-origin"), ["https://example.com"], s)
            self.assertEqual(len(s.headers.get_all("strict-transport-security")), 1, s)
        self.assertEqual(js.headers.get_all("cache-control"), ["public, max-age=31536000, immutable"])


# --------------------------------------------------------------------------
# nginx, the yardstick
# --------------------------------------------------------------------------

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)

NGINX_CONF = """
worker_processes 1;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    limit_req_zone $binary_remote_addr zone=api:1m rate=1r/m;
    limit_req_zone $binary_remote_addr zone=a:1m rate=1r/m;
    limit_req_zone $binary_remote_addr zone=b:1m rate=1r/m;
    limit_req_status 429;
    upstream app {{ server {backend}; }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ limit_req zone=api burst=20 nodelay; proxy_pass http://app; }}
        location /multi/ {{ limit_req zone=a burst=5 nodelay; limit_req zone=b burst=2 nodelay;
                            proxy_pass http://app; }}
        location /single/ {{ limit_req zone=a burst=5 nodelay; proxy_pass http://app; }}
        location / {{ proxy_pass http://app; }}
    }}
}}
"""

PROXYD_SAME = (limit("api", burst=20) + limit("a", burst=5) + limit("b", burst=2) +
               "[route /api/]\nlimit = api\n[route /multi/]\nlimit = a b\n[route /single/]\nlimit = a\n")

# (path, how many requests) in order, on one keep-alive connection
SEQUENCE = (("/api/x", 30), ("/free", 2), ("/multi/x", 6), ("/single/x", 6), ("/api/y", 2))


class Nginx(ProxyTestCase):
    def start_nginx(self, backend):
        tmp = tempfile.mkdtemp(prefix="proxyd-nginx-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port, backend=backend.addr))
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(tmp, d))
        err = open(os.path.join(tmp, "stderr.log"), "wb")
        proc = subprocess.Popen([NGINX, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log"),
                                 "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()

        def stop():  # by PID
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
        self.addCleanup(stop)

        def up():
            if proc.poll() is not None:
                return True
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(up, 10)
        if proc.poll() is not None:
            with open(os.path.join(tmp, "stderr.log"), "rb") as f:
                self.fail("nginx did not start: %r" % f.read()[-2000:])
        return port

    def run_sequence(self, port):
        out = []
        with Client(port) as c:
            for path, n in SEQUENCE:
                for _ in range(n):
                    out.append((path, c.request("GET", path, host="app.test").status))
        return out

    def test_same_answers_as_nginx(self):
        if NGINX is None:
            self.skipTest("nginx is not installed (tests/deps-test.txt lists it): no yardstick to compare with")
        b = self.backend(RecordingBackend)
        ngx = self.run_sequence(self.start_nginx(b))
        p = self.proxy(self.service_config(b, extra=PROXYD_SAME))
        ours = self.run_sequence(p.port)
        self.assertEqual(len(ours), sum(n for _, n in SEQUENCE))
        self.assertEqual(len(ngx), len(ours))
        for i, (a, n) in enumerate(zip(ours, ngx)):
            self.assertEqual(a, n, "request %d (%s): proxyd %d, nginx %d" % (i + 1, a[0], a[1], n[1]))
        # and the expected shape, so that a broken nginx run cannot make it pass
        self.assertEqual([s for _, s in ours[:30]], [200] * 21 + [429] * 9)


if __name__ == "__main__":
    import unittest
    unittest.main()
