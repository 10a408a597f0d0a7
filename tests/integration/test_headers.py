"""[headers] on every response — proxied ones of every status and proxyd's own
(404/413/431/400/502/504/501, health) — over plain HTTP/1.1, HTTPS HTTP/1.1
and HTTP/2; Strict-Transport-Security only over HTTPS; the upstream's own
header (any case) wins without a duplicate."""

import re

from harness import (Client, H2Client, ProxyTestCase, RecordingBackend, SilentBackend, TlsClient, curl_https,
                     free_port, http_response, raw_request, request_bytes, tls_config, tls_service_config)

HSTS = "max-age=63072000; includeSubDomains; preload"
DEFAULTS = [("strict-transport-security", HSTS), ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"), ("x-xss-protection", "1; mode=block")]
UPSTREAM_STATUSES = (200, 201, 204, 301, 304, 400, 404, 500, 503)
UPSTREAM_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"


def by_path(req):
    """/status/NNN answers NNN; /upstream-set sets two of the security headers itself."""
    m = re.match(r"/status/(\d{3})", req.path)
    if m:
        status = int(m.group(1))
        body = b"" if status in (204, 304) else b"s"
        extra = [("Location", "/elsewhere")] if status == 301 else []
        return http_response(status, body, headers=extra, content_length=status not in (204, 304))
    if req.path == "/dated":
        return http_response(200, b"d", headers=[("Date", UPSTREAM_DATE)])
    if req.path == "/upstream-set":
        return http_response(200, b"u", headers=[("STRICT-TRANSPORT-SECURITY", "max-age=5"),
                                                  ("x-frame-options", "SAMEORIGIN")])
    return http_response(200, b"ok")


class HeadersCase(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(RecordingBackend, response=by_path)
        self.silent = self.backend(SilentBackend)

    def make_proxy(self, headers_section=None, more=""):
        extra = ("[service slow]\nhosts = slow.test\ntargets = %s\n\n[service dead]\nhosts = dead.test\n"
                 "targets = 127.0.0.1:%d\n" % (self.silent.addr, free_port())) + more
        if headers_section is not None:
            extra += "\n[headers]\n" + headers_section
        conf = tls_service_config(self.b, extra_proxy="redirect_https = no\nmax_body_size = 1k\n"
                                  "max_header_size = 2k\nupstream_read_timeout = 500ms", extra=extra)
        # the catch-all service only for app.test, so other names get proxyd's 404
        conf = conf.replace("[service web]\n", "[service web]\nhosts = app.test\n")
        self.p = self.proxy(conf)
        return self.p

    # -- the three ways in ---------------------------------------------------
    def h1(self, data, tls, method="GET"):
        with (TlsClient(self.p.https_port) if tls else Client(self.p.port)) as c:
            c.send(data)
            r = c.read_response(method)
        return r.status, r.headers

    def h2(self, path, authority="app.test", method="GET", headers=(), body=None, end_stream=None):
        with H2Client(self.p.https_port, validate=False) as c:
            s = c.wait_stream(c.request(method, path, authority=authority, headers=headers, body=body,
                                        end_stream=end_stream), 10)
            self.assertIsNotNone(s.headers, s)
            return s.status, s.headers

    def assertHeaders(self, headers, https, expected=DEFAULTS, what=""):
        for name, value in expected:
            want = [value] if https or name != "strict-transport-security" else []
            self.assertEqual(headers.get_all(name), want, "%s %s: %r" % (what, name, list(headers)))


class Defaults(HeadersCase):
    def setUp(self):
        super().setUp()
        self.make_proxy()

    def test_proxied_every_status_http1(self):
        for tls in (False, True):
            for st in UPSTREAM_STATUSES:
                with self.subTest(tls=tls, status=st):
                    status, h = self.h1(request_bytes("GET", "/status/%d" % st, host="app.test"), tls)
                    self.assertEqual(status, st)
                    self.assertHeaders(h, tls, what="%d" % st)

    def test_proxied_every_status_h2(self):
        for st in UPSTREAM_STATUSES:
            with self.subTest(status=st):
                status, h = self.h2("/status/%d" % st)
                self.assertEqual(status, st)
                self.assertHeaders(h, True, what="%d" % st)

    def test_own_responses_http1(self):
        cases = [
            ("404 no service", request_bytes("GET", "/", host="nomatch.test"), 404),
            ("502 dead upstream", request_bytes("GET", "/", host="dead.test"), 502),
            ("504 upstream timeout", request_bytes("GET", "/", host="slow.test"), 504),
            ("413 body too large", request_bytes("POST", "/", host="app.test", body=b"x" * 2048), 413),
            ("431 head too large", request_bytes("GET", "/", host="app.test", headers=[("X-Big", "v" * 3000)]), 431),
            ("400 bad request", b"GET / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\n"
                                b"Content-Length: 2\r\n\r\nxx", 400),
            ("200 health", request_bytes("GET", "/health", host="nomatch.test"), 200),
        ]
        for tls in (False, True):
            for what, data, st in cases:
                with self.subTest(tls=tls, case=what):
                    status, h = self.h1(data, tls)
                    self.assertEqual(status, st)
                    self.assertHeaders(h, tls, what=what)

    def test_own_responses_h2(self):
        cases = [
            ("404 no service", dict(path="/", authority="nomatch.test"), 404),
            ("502 dead upstream", dict(path="/", authority="dead.test"), 502),
            ("504 upstream timeout", dict(path="/", authority="slow.test"), 504),
            ("413 body too large", dict(path="/", method="POST", headers=[("content-length", "2048")],
                                        end_stream=False), 413),
            ("431 head too large", dict(path="/", headers=[("x-big", "v" * 3000)]), 431),
            ("501 CONNECT", dict(path=None, method="CONNECT", authority="app.test:443"), 501),
            ("200 health", dict(path="/health", authority="nomatch.test"), 200),
        ]
        for what, kw, st in cases:
            with self.subTest(case=what):
                status, h = self.h2(**kw)
                self.assertEqual(status, st)
                self.assertHeaders(h, True, what=what)

    def test_upstream_value_wins(self):
        expected = [("strict-transport-security", "max-age=5"), ("x-frame-options", "SAMEORIGIN"),
                    ("x-content-type-options", "nosniff"), ("x-xss-protection", "1; mode=block")]
        _, h = self.h1(request_bytes("GET", "/upstream-set", host="app.test"), True)
        self.assertHeaders(h, True, expected, "https")
        _, h = self.h2("/upstream-set")
        self.assertHeaders(h, True, expected, "h2")
        # over plain HTTP the upstream's own HSTS is the upstream's business: passed through, not added
        _, h = self.h1(request_bytes("GET", "/upstream-set", host="app.test"), False)
        self.assertEqual(h.get_all("strict-transport-security"), ["max-age=5"])
        self.assertEqual(h.get_all("x-frame-options"), ["SAMEORIGIN"])

    def test_curl_sees_each_once(self):
        for http in ("--http1.1", "--http2"):
            with self.subTest(http=http):
                r = curl_https(self.p, "/", http, "-D", "-", "-o", "/dev/null", "-H", "Host: app.test")
                self.assertEqual(r.returncode, 0, r.stderr)
                lines = r.stdout.decode("latin-1").lower().split("\r\n")
                for name, value in DEFAULTS:
                    self.assertEqual([l for l in lines if l.startswith(name + ":")], ["%s: %s" % (name, value.lower())],
                                     r.stdout)


class Configured(HeadersCase):
    def test_custom_section(self):
        self.make_proxy("Strict-Transport-Security = max-age=60\nX-Custom = hello world\n")
        custom = [("strict-transport-security", "max-age=60"), ("x-custom", "hello world")]
        absent = [("x-frame-options", None), ("x-content-type-options", None), ("x-xss-protection", None)]
        for tls in (False, True):
            for data in (request_bytes("GET", "/", host="app.test"), request_bytes("GET", "/", host="nomatch.test")):
                with self.subTest(tls=tls, req=data[:30]):
                    _, h = self.h1(data, tls)
                    self.assertHeaders(h, tls, custom)
                    for name, _ in absent:
                        self.assertEqual(h.get_all(name), [])
        for authority in ("app.test", "nomatch.test"):
            with self.subTest(h2=authority):
                _, h = self.h2("/", authority=authority)
                self.assertHeaders(h, True, custom)
                for name, _ in absent:
                    self.assertEqual(h.get_all(name), [])

    def test_empty_section(self):
        self.make_proxy("")
        for tls in (False, True):
            for data in (request_bytes("GET", "/", host="app.test"), request_bytes("GET", "/", host="nomatch.test")):
                with self.subTest(tls=tls, req=data[:30]):
                    _, h = self.h1(data, tls)
                    for name, _ in DEFAULTS:
                        self.assertEqual(h.get_all(name), [], list(h))
        _, h = self.h2("/", authority="nomatch.test")
        for name, _ in DEFAULTS:
            self.assertEqual(h.get_all(name), [], list(h))

    def test_redirect_gets_headers(self):
        # redirect_https = yes: the 301 from the plain listener carries [headers], never HSTS
        b = self.backend()
        p = self.proxy(tls_service_config(b, tls=tls_config()))
        r = raw_request(p.port, request_bytes("GET", "/r", host="example.com", headers=[("Connection", "close")]))
        self.assertEqual(r.status, 301, r)
        head = r.data.split(b"\r\n\r\n")[0].decode("latin-1").lower()
        self.assertIn("\r\nx-frame-options: deny", head)
        self.assertNotIn("strict-transport-security", head)


if __name__ == "__main__":
    import unittest
    unittest.main()


class DateHeader(HeadersCase):
    """RFC 9110 6.6.1: every response proxyd makes itself has a Date (one
    cached string per worker and second), over HTTP/1.1, HTTPS and HTTP/2;
    a proxied response keeps the upstream's Date and gets proxyd's only
    when it has none."""

    LIMITS = ("[limit z429]\nrate = 1r/m\nburst = 0\nzone_size = 64k\n"
              "[limit z503]\nrate = 1r/m\nburst = 0\nzone_size = 64k\nstatus = 503\n"
              "[route /lim429]\nlimit = z429\n[route /lim503]\nlimit = z503\n")

    def setUp(self):
        super().setUp()
        self.make_proxy(more=self.LIMITS)
        # the token proxyd puts on upstream requests, for a request that loops back
        r = raw_request(self.p.port, request_bytes("GET", "/first", host="app.test"))
        self.assertEqual(r.status, 200, r)
        self.token = self.b.wait_requests(1)[0].headers.get_all("cdn-loop")[-1]

    def assertDate(self, headers, what):
        import email.utils
        import time
        got = headers.get_all("date")
        self.assertEqual(len(got), 1, "%s: %r" % (what, list(headers)))
        self.assertRegex(got[0], r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
                                 r"Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$", what)
        # the clock it shows is this machine's (loose: no timing decides the test)
        self.assertLess(abs(email.utils.parsedate_to_datetime(got[0]).timestamp() - time.time()), 300, what)

    def own_h1(self):
        return [
            ("404 no service", request_bytes("GET", "/", host="nomatch.test"), 404),
            ("502 dead upstream", request_bytes("GET", "/", host="dead.test"), 502),
            ("504 upstream timeout", request_bytes("GET", "/", host="slow.test"), 504),
            ("413 body too large", request_bytes("POST", "/", host="app.test", body=b"x" * 2048), 413),
            ("431 head too large", request_bytes("GET", "/", host="app.test", headers=[("X-Big", "v" * 3000)]), 431),
            ("400 bad request", b"GET /a%zz HTTP/1.1\r\nHost: app.test\r\n\r\n", 400),
            ("200 health", request_bytes("GET", "/health", host="nomatch.test"), 200),
            ("429 limited", request_bytes("GET", "/lim429", host="app.test"), 429),
            ("503 limited", request_bytes("GET", "/lim503", host="app.test"), 503),
            ("508 loop", request_bytes("GET", "/", host="app.test", headers=[("CDN-Loop", self.token)]), 508),
        ]

    def test_own_responses_http1(self):
        for path in ("/lim429", "/lim503"):  # use up burst 0 (the one request that passes)
            self.assertEqual(self.h1(request_bytes("GET", path, host="app.test"), False)[0], 200)
        for tls in (False, True):
            for what, data, st in self.own_h1():
                with self.subTest(tls=tls, case=what):
                    status, h = self.h1(data, tls)
                    self.assertEqual(status, st)
                    self.assertDate(h, what)
                    self.assertEqual(h.get_all("server"), ["proxyd"], what)

    def test_own_responses_h2(self):
        for path in ("/lim429", "/lim503"):
            self.assertEqual(self.h2(path)[0], 200)
        cases = [
            ("404 no service", dict(path="/", authority="nomatch.test"), 404),
            ("502 dead upstream", dict(path="/", authority="dead.test"), 502),
            ("504 upstream timeout", dict(path="/", authority="slow.test"), 504),
            ("413 body too large", dict(path="/", method="POST", headers=[("content-length", "2048")],
                                        end_stream=False), 413),
            ("431 head too large", dict(path="/", headers=[("x-big", "v" * 3000)]), 431),
            ("400 bad escape", dict(path="/a%zz"), 400),
            ("501 CONNECT", dict(path=None, method="CONNECT", authority="app.test:443"), 501),
            ("200 health", dict(path="/health", authority="nomatch.test"), 200),
            ("429 limited", dict(path="/lim429"), 429),
            ("503 limited", dict(path="/lim503"), 503),
            ("508 loop", dict(path="/", headers=[("cdn-loop", self.token)]), 508),
        ]
        for what, kw, st in cases:
            with self.subTest(case=what):
                status, h = self.h2(**kw)
                self.assertEqual(status, st)
                self.assertDate(h, what)

    def test_redirect_http1(self):
        conf = tls_service_config(self.b)  # redirect_https = yes by default
        p = self.proxy(conf)
        with Client(p.port) as c:
            c.send(request_bytes("GET", "/x", host="app.test"))
            r = c.read_response("GET")
        self.assertEqual(r.status, 301)
        self.assertDate(r.headers, "301")

    def test_proxied_keeps_the_upstreams_or_adds_one(self):
        for tls in (False, True):
            status, h = self.h1(request_bytes("GET", "/dated", host="app.test"), tls)
            self.assertEqual((status, h.get_all("date")), (200, [UPSTREAM_DATE]))
            status, h = self.h1(request_bytes("GET", "/", host="app.test"), tls)  # the backend sends none
            self.assertEqual(status, 200)
            self.assertDate(h, "proxied without Date, tls=%s" % tls)
        status, h = self.h2("/dated")
        self.assertEqual((status, h.get_all("date")), (200, [UPSTREAM_DATE]))
        status, h = self.h2("/")
        self.assertEqual(status, 200)
        self.assertDate(h, "h2 proxied without Date")
