"""Routing: exact host (case-insensitive, port stripped), *.suffix wildcard,
catch-all, longest path_prefix on a segment boundary."""

from harness import Client, ProxyTestCase, RecordingBackend, get


class Routing(ProxyTestCase):
    NAMES = ("exact", "api", "wild", "app", "admin", "catch")

    def setUp(self):
        self.b = {n: self.backend(RecordingBackend, name=n) for n in self.NAMES}
        a = {n: b.addr for n, b in self.b.items()}
        self.p = self.proxy(
            "[service exact]\nhosts = example.com www.example.com\ntargets = %(exact)s\n\n"
            "[service api]\nhosts = api.example.org\ntargets = %(api)s\n\n"
            "[service wild]\nhosts = *.example.org\ntargets = %(wild)s\n\n"
            "[service app]\nhosts = example.com\npath_prefix = /app\ntargets = %(app)s\n\n"
            "[service admin]\nhosts = example.com\npath_prefix = /app/admin\ntargets = %(admin)s\n\n"
            "[service catch]\ntargets = %(catch)s\n" % a)

    def route(self, host, path="/"):
        r = get(self.p.port, path, host=host)
        self.assertEqual(r.status, 200, "%s%s -> %r" % (host, path, r))
        return r.body.decode()

    def check(self, cases):
        for host, path, want in cases:
            with self.subTest(host=host, path=path):
                self.assertEqual(self.route(host, path), want)

    def test_exact_host(self):
        self.check([("example.com", "/", "exact"), ("www.example.com", "/x", "exact")])

    def test_host_case_and_port(self):
        self.check([("EXAMPLE.com", "/", "exact"), ("example.com:8080", "/", "exact"),
                    ("WWW.Example.COM:80", "/y", "exact")])

    def test_wildcard(self):
        self.check([("a.example.org", "/", "wild"), ("B.Example.Org:81", "/", "wild")])

    def test_exact_beats_wildcard(self):
        self.check([("api.example.org", "/", "api")])

    def test_wildcard_does_not_match_bare_domain(self):
        self.check([("example.org", "/", "catch")])

    def test_catch_all(self):
        self.check([("other.test", "/", "catch"), ("127.0.0.1:1234", "/app", "catch")])

    def test_http10_without_host_goes_to_catch_all(self):
        with Client(self.p.port) as c:
            c.send(b"GET /nohost HTTP/1.0\r\n\r\n")
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"catch"))

    def test_path_prefix_segment_boundary(self):
        self.check([("example.com", "/app", "app"), ("example.com", "/app/", "app"),
                    ("example.com", "/app/x", "app"), ("example.com", "/app?q=1", "app"),
                    ("example.com", "/appointment", "exact"), ("example.com", "/ap", "exact"),
                    ("example.com", "/", "exact")])

    def test_longest_prefix(self):
        self.check([("example.com", "/app/admin", "admin"), ("example.com", "/app/admin/users", "admin"),
                    ("example.com", "/app/administrator", "app")])

    def test_upstream_sees_full_path(self):
        self.route("example.com", "/app/admin/x?y=1")
        self.assertEqual(self.b["admin"].wait_requests(1)[0].target, "/app/admin/x?y=1")


class NoCatchAll(ProxyTestCase):
    def test_unknown_host_404(self):
        b = self.backend(response=b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nUPSTREAM")
        p = self.proxy("[service s]\nhosts = known.test\ntargets = %s\n" % b.addr)
        self.assertEqual(get(p.port, "/", host="known.test").body, b"UPSTREAM")
        for host in ("unknown.test", "sub.known.test", "known.test.evil"):
            r = get(p.port, "/", host=host)
            self.assertEqual(r.status, 404, host)
            self.assertNotIn(b"UPSTREAM", r.body)
        self.assertEqual(len(b.requests), 1)

    def test_prefix_only_service_404_outside(self):
        b = self.backend(name="app")
        p = self.proxy("[service app]\npath_prefix = /app\ntargets = %s\n" % b.addr)
        self.assertEqual(get(p.port, "/app/x").body, b"app")
        self.assertEqual(get(p.port, "/other").status, 404)
        self.assertEqual(get(p.port, "/appx").status, 404)
