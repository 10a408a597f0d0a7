"""HTTP/1.1 proxying: request line, headers both ways, health, bodies,
keep-alive and pipelining. Exact bytes are checked at the upstream."""

import os
import re
import tempfile
import time

from harness import (CLOSE, build_dir, Client, ProxyTestCase, RecordingBackend, StreamingBackend, chunked_response,
                     curl, get, header_tokens, http_response, raw_request, request_bytes, sha256)

HOP_BY_HOP = ("connection", "keep-alive", "te", "proxy-connection", "proxy-authorization", "upgrade",
              "proxy-authenticate", "trailer", "transfer-encoding")


class Basics(ProxyTestCase):
    """One proxy and one recording backend per test."""

    def setUp(self):
        self.b = self.backend(RecordingBackend, response=self.echo_path)
        self.p = self.proxy(self.service_config(self.b))

    @staticmethod
    def echo_path(req):
        return http_response(200, req.target, head_only=req.method == "HEAD")

    def one(self, data):
        """Send raw bytes on a fresh connection; return (client response, upstream request)."""
        with Client(self.p.port) as c:
            c.send(data)
            resp = c.read_response()
        reqs = self.b.wait_requests(1)
        self.assertEqual(len(reqs), 1, "upstream requests: %r" % reqs)
        return resp, reqs[0]

    def test_get_returns_upstream_body(self):
        r = curl(self.p.url("/hello"), "-w", "\n%{http_code}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"/hello\n200")

    def test_query_string_byte_for_byte(self):
        for target in ["/p?a=%20b&c=d;e", "/p?x=%2F%3f&y=a+b&&z=&=", "/?", "/a/b?q=%E2%82%AC"]:
            with self.subTest(target=target):
                self.b.reset()
                resp, up = self.one(request_bytes("GET", target))
                self.assertEqual(resp.status, 200)
                self.assertEqual(up.start_line, "GET %s HTTP/1.1" % target)

    def test_request_line_methods(self):
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]:
            with self.subTest(method=method):
                self.b.reset()
                body = b"x" if method in ("POST", "PUT", "PATCH") else b""
                resp, up = self.one(request_bytes(method, "/m/path?y=1", body=body))
                self.assertEqual(resp.status, 200)
                self.assertEqual(up.start_line, "%s /m/path?y=1 HTTP/1.1" % method)
                self.assertEqual(up.body, body)

    def test_head_request_line(self):
        with Client(self.p.port) as c:
            c.send(request_bytes("HEAD", "/h?x"))
            resp = c.read_response("HEAD")
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.b.wait_requests(1)[0].start_line, "HEAD /h?x HTTP/1.1")

    def test_http10_client_upstream_gets_http11(self):
        resp, up = self.one(b"GET /old HTTP/1.0\r\nHost: test.local\r\n\r\n")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, b"/old")
        self.assertEqual(up.start_line, "GET /old HTTP/1.1")
        self.assertEqual(up.header("host"), "test.local")

    def test_absolute_form_target(self):
        resp, up = self.one(b"GET http://example.com/x?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.start_line, "GET /x?q=1 HTTP/1.1")
        self.assertEqual(up.headers.get_all("host"), ["example.com"])

    def test_absolute_form_without_path(self):
        resp, up = self.one(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.start_line, "GET / HTTP/1.1")
        self.assertEqual(up.headers.get_all("host"), ["example.com"])

    def test_host_kept_as_sent(self):
        _, up = self.one(request_bytes("GET", "/", host="App.Example.test:1234"))
        self.assertEqual(up.headers.get_all("host"), ["App.Example.test:1234"])

    def test_forwarded_headers_untrusted_peer(self):
        _, up = self.one(request_bytes("GET", "/", host="fwd.test", headers=[
            ("X-Forwarded-For", "1.2.3.4"), ("X-Real-IP", "5.6.7.8"),
            ("X-Forwarded-Host", "evil.test")]))
        self.assertEqual(up.headers.get_all("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(up.headers.get_all("x-real-ip"), ["127.0.0.1"])
        self.assertEqual(up.headers.get_all("x-forwarded-proto"), ["http"])
        self.assertEqual(up.headers.get_all("x-forwarded-host"), ["fwd.test"])

    def test_forwarded_proto_not_spoofable(self):
        _, up = self.one(request_bytes("GET", "/", headers=[("X-Forwarded-Proto", "https")]))
        self.assertEqual(up.headers.get_all("x-forwarded-proto"), ["http"])

    def test_request_id_kept(self):
        _, up = self.one(request_bytes("GET", "/", headers=[("X-Request-ID", "abc-123_XYZ")]))
        self.assertEqual(up.headers.get_all("x-request-id"), ["abc-123_XYZ"])

    def test_request_id_generated(self):
        ids = []
        for i in range(3):
            self.b.reset()
            _, up = self.one(request_bytes("GET", "/id%d" % i))
            got = up.headers.get_all("x-request-id")
            self.assertEqual(len(got), 1, up.head)
            self.assertRegex(got[0], r"^[0-9a-f]{32}$")
            ids.append(got[0])
        self.assertEqual(len(set(ids)), 3, ids)

    def test_request_start(self):
        t0 = time.time() * 1000
        _, up = self.one(request_bytes("GET", "/"))
        t1 = time.time() * 1000
        got = up.headers.get_all("x-request-start")
        self.assertEqual(len(got), 1, up.head)
        m = re.fullmatch(r"t=(\d+)", got[0])
        self.assertTrue(m, got[0])
        self.assertTrue(t0 - 3000 <= int(m.group(1)) <= t1 + 3000, (t0, got[0], t1))

    def test_hop_by_hop_request_headers_removed(self):
        sent = [("Connection", "keep-alive, X-Foo"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                ("Proxy-Connection", "keep-alive"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                ("Upgrade", "h2c"), ("X-Foo", "1"), ("X-Bar", "2"), ("Accept", "*/*")]
        _, up = self.one(request_bytes("GET", "/", headers=sent))
        for name in ("keep-alive", "te", "proxy-connection", "proxy-authorization", "upgrade", "x-foo"):
            self.assertIsNone(up.header(name), "%s reached the upstream: %r" % (name, up.head))
        conn = header_tokens(up.header("connection"))
        self.assertTrue(set(conn) <= {"keep-alive", "close"}, "Connection to upstream: %r" % conn)
        self.assertEqual(up.headers.get_all("x-bar"), ["2"])
        self.assertEqual(up.headers.get_all("accept"), ["*/*"])

    def test_connection_close_names_removed(self):
        resp = raw_request(self.p.port, request_bytes("GET", "/", headers=[
            ("Connection", "close, X-Foo"), ("X-Foo", "secret"), ("X-Keep", "yes")]))
        self.assertEqual(resp.status, 200, resp)
        self.assertTrue(resp.closed, "connection not closed after Connection: close")
        up = self.b.wait_requests(1)[0]
        self.assertIsNone(up.header("x-foo"), up.head)
        self.assertEqual(up.header("x-keep"), "yes")

    def test_end_to_end_headers_in_order(self):
        sent = [("User-Agent", "t/1"), ("X-Multi", "1"), ("Accept", "text/html"), ("X-Multi", "2"),
                ("Cookie", "a=1; b=2"), ("X-Weird", "a  b\tc,  d"), ("Authorization", "Bearer x.y.z"),
                ("X-Empty", "")]
        _, up = self.one(request_bytes("GET", "/", headers=sent))
        names = {k.lower() for k, _ in sent}
        got = [(k.lower(), v) for k, v in up.headers if k.lower() in names]
        self.assertEqual(got, [(k.lower(), v) for k, v in sent], up.head)

    def test_transfer_encoding_case_insensitive(self):
        _, up = self.one(b"POST /te HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n"
                         b"4\r\nwxyz\r\n0\r\n\r\n")
        self.assertEqual(up.body, b"wxyz")

    def test_obs_text_value_passes(self):
        _, up = self.one(b"GET / HTTP/1.1\r\nHost: t\r\nX-Latin: caf\xe9 \xff\r\n\r\n")
        self.assertIn(b"\r\nX-Latin: caf\xe9 \xff\r\n", up.head)

    def test_long_url(self):
        target = "/long?" + "q=%s" % ("x" * 8000)
        resp, up = self.one(request_bytes("GET", target))
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.target, target)

    def test_many_headers_pass(self):
        sent = [("X-H%02d" % i, "v%d" % i) for i in range(80)]
        _, up = self.one(request_bytes("GET", "/", headers=sent))
        self.assertEqual([(k, v) for k, v in up.headers if k.startswith("X-H")], sent)

    def test_duplicate_client_xff_replaced(self):
        _, up = self.one(request_bytes("GET", "/", headers=[("x-forwarded-for", "1.1.1.1"),
                                                           ("X-Forwarded-For", "2.2.2.2")]))
        self.assertEqual(up.headers.get_all("x-forwarded-for"), ["127.0.0.1"])

    def test_not_chunked_for_bodyless_get(self):
        _, up = self.one(request_bytes("GET", "/"))
        self.assertIsNone(up.header("transfer-encoding"), up.head)
        self.assertIn(up.header("content-length"), (None, "0"), up.head)
        self.assertEqual(up.body, b"")


class TrustedProxies(ProxyTestCase):
    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(self.service_config(self.b, extra_proxy="trusted_proxies = 127.0.0.0/8"))

    def up_for(self, xff):
        hdrs = [("X-Forwarded-For", xff)] if xff else []
        r = get(self.p.port, "/", headers=hdrs)
        self.assertEqual(r.status, 200)
        reqs = self.b.wait_requests(1)
        self.b.reset()
        return reqs[0]

    def test_xff_appended(self):
        up = self.up_for("203.0.113.7, 198.51.100.2")
        self.assertEqual(up.headers.get_all("x-forwarded-for"), ["203.0.113.7, 198.51.100.2, 127.0.0.1"])
        self.assertEqual(up.headers.get_all("x-real-ip"), ["198.51.100.2"])

    def test_real_ip_skips_trusted_hops(self):
        up = self.up_for("203.0.113.7, 127.0.0.5")
        self.assertEqual(up.headers.get_all("x-forwarded-for"), ["203.0.113.7, 127.0.0.5, 127.0.0.1"])
        self.assertEqual(up.headers.get_all("x-real-ip"), ["203.0.113.7"])

    def test_xff_split_over_two_lines(self):
        r = get(self.p.port, "/", headers=[("X-Forwarded-For", "203.0.113.7"),
                                           ("X-Forwarded-For", "198.51.100.2")])
        self.assertEqual(r.status, 200)
        up = self.b.wait_requests(1)[0]
        self.assertEqual(up.headers.get_all("x-forwarded-for"), ["203.0.113.7, 198.51.100.2, 127.0.0.1"])
        self.assertEqual(up.headers.get_all("x-real-ip"), ["198.51.100.2"])

    def test_no_client_xff(self):
        up = self.up_for(None)
        self.assertEqual(up.headers.get_all("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(up.headers.get_all("x-real-ip"), ["127.0.0.1"])


class ResponseHeaders(ProxyTestCase):
    UPSTREAM_HEADERS = [("X-Up", "1"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "secret"),
                        ("Keep-Alive", "timeout=5, max=99"), ("Proxy-Authenticate", "Basic"),
                        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Type", "text/plain")]

    def test_upstream_headers_pass_hop_by_hop_removed(self):
        b = self.backend(response=http_response(200, b"body", headers=self.UPSTREAM_HEADERS))
        p = self.proxy(self.service_config(b))
        r = get(p.port, "/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"body")
        self.assertEqual(r.headers.get_all("x-up"), ["1"])
        self.assertEqual(r.headers.get_all("set-cookie"), ["a=1", "b=2"])
        self.assertEqual(r.headers.get_all("content-type"), ["text/plain"])
        self.assertIsNone(r.header("x-hop"), r)
        self.assertIsNone(r.header("proxy-authenticate"), r)
        self.assertNotIn("timeout=5, max=99", r.headers.get_all("keep-alive"), r)
        self.assertNotIn("x-hop", header_tokens(r.header("connection")), r)
        self.assertSecurityHeaders(r)

    def test_upstream_security_header_wins(self):
        b = self.backend(response=http_response(200, b"x", headers=[
            ("x-frame-options", "SAMEORIGIN"), ("X-Content-Type-Options", "custom")]))
        p = self.proxy(self.service_config(b))
        r = get(p.port, "/")
        self.assertEqual(r.headers.get_all("x-frame-options"), ["SAMEORIGIN"], r)
        self.assertEqual(r.headers.get_all("x-content-type-options"), ["custom"], r)
        self.assertEqual(r.headers.get_all("x-xss-protection"), ["1; mode=block"], r)

    def test_empty_headers_section_adds_none(self):
        b = self.backend()
        p = self.proxy(self.service_config(b) + "\n[headers]\n")
        for path in ("/", "/health"):
            r = get(p.port, path)
            self.assertEqual(r.status, 200)
            for name in ("x-frame-options", "x-content-type-options", "x-xss-protection",
                         "strict-transport-security"):
                self.assertIsNone(r.header(name), "%s on %s: %r" % (name, path, r))

    def test_custom_headers(self):
        b = self.backend()
        p = self.proxy(self.service_config(b) + "\n[headers]\nX-Custom = hello world\n"
                       "Referrer-Policy = no-referrer\n")
        r = get(p.port, "/")
        self.assertEqual(r.headers.get_all("x-custom"), ["hello world"])
        self.assertEqual(r.headers.get_all("referrer-policy"), ["no-referrer"])
        self.assertIsNone(r.header("x-frame-options"), r)
        r = get(p.port, "/health")
        self.assertEqual(r.headers.get_all("x-custom"), ["hello world"])

    def test_hsts_never_on_plain_http(self):
        b = self.backend()
        p = self.proxy(self.service_config(b) + "\n[headers]\nStrict-Transport-Security = max-age=60\n"
                       "X-Frame-Options = DENY\n")
        r = get(p.port, "/")
        self.assertIsNone(r.header("strict-transport-security"), r)
        self.assertEqual(r.headers.get_all("x-frame-options"), ["DENY"])

    def test_security_headers_on_own_responses(self):
        b = self.backend()
        p = self.proxy("[service only]\nhosts = only.test\ntargets = %s\n" % b.addr)
        r404 = get(p.port, "/", host="other.test")
        self.assertEqual(r404.status, 404)
        self.assertSecurityHeaders(r404)
        self.assertSecurityHeaders(get(p.port, "/health", host="other.test"))


class Health(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(response=http_response(200, b"UPSTREAM"))
        self.p = self.proxy("[service only]\nhosts = only.test\ntargets = %s\n" % self.b.addr)

    def test_get(self):
        for host in ("only.test", "nomatch.test"):
            r = get(self.p.port, "/health", host=host)
            self.assertEqual((r.status, r.body), (200, b"healthy\n"), r)
        self.assertEqual(self.b.requests, [])

    def test_head(self):
        with Client(self.p.port) as c:
            c.send(request_bytes("HEAD", "/health"))
            r = c.read_response("HEAD")
            self.assertEqual(r.status, 200)
            # nothing after the head: the next response parses cleanly
            r2 = c.request("GET", "/health")
            self.assertEqual((r2.status, r2.body), (200, b"healthy\n"))
        self.assertEqual(self.b.requests, [])

    def test_curl(self):
        r = curl(self.p.url("/health"), "-w", "%{http_code}")
        self.assertEqual(r.stdout, b"healthy\n200")
        r = curl("-I", self.p.url("/health"))
        self.assertRegex(r.stdout.split(b"\r\n")[0], rb"^HTTP/1\.1 200")
        self.assertEqual(self.b.requests, [])

    def test_unknown_host_404(self):
        r = get(self.p.port, "/x", host="nomatch.test")
        self.assertEqual(r.status, 404)
        self.assertNotIn(b"UPSTREAM", r.body)
        self.assertLess(len(r.body), 1024)
        self.assertTrue(r.header("content-type", "").startswith("text/"), r)
        time.sleep(0.1)
        self.assertEqual(self.b.requests, [])


class Bodies(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(response=self.digest)
        self.p = self.proxy(self.service_config(self.b))

    @staticmethod
    def digest(req):
        return http_response(200, sha256(req.body))

    def assertWellFramed(self, up, body):
        self.assertEqual(up.body, body)
        if up.chunked:
            self.assertIsNone(up.header("content-length"), up.head)
        else:
            self.assertEqual(up.headers.get_all("content-length"), [str(len(body))], up.head)

    def test_post_content_length(self):
        with Client(self.p.port) as c:
            r = c.request("POST", "/p", body=b"a=1&b=2", headers=[("Content-Type", "application/x-www-form-urlencoded")])
        self.assertEqual(r.body, sha256(b"a=1&b=2").encode())
        self.assertWellFramed(self.b.wait_requests(1)[0], b"a=1&b=2")

    def test_post_empty_body(self):
        with Client(self.p.port) as c:
            r = c.request("POST", "/empty", headers=[("Content-Length", "0")])
        self.assertEqual(r.body, sha256(b"").encode())
        up = self.b.wait_requests(1)[0]
        self.assertEqual(up.body, b"")
        self.assertIsNone(up.header("transfer-encoding"), up.head)

    def test_post_chunked(self):
        data = (b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
        with Client(self.p.port) as c:
            c.send(data)
            r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, sha256(b"hello world").encode())
        up = self.b.wait_requests(1)[0]
        self.assertWellFramed(up, b"hello world")
        self.assertEqual(self.b.errors, [])

    def test_chunked_then_pipelined_request(self):
        data = (b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n"
                b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
        with Client(self.p.port) as c:
            c.send(data)
            r1 = c.read_response()
            r2 = c.read_response()
        self.assertEqual((r1.status, r2.status), (200, 200))
        reqs = self.b.wait_requests(2)
        self.assertEqual([(q.method, q.target, q.body) for q in reqs],
                         [("POST", "/c", b"abc"), ("GET", "/second", b"")])

    def test_content_length_then_pipelined_request(self):
        data = request_bytes("POST", "/a", body=b"0123456789") + request_bytes("GET", "/b")
        with Client(self.p.port) as c:
            c.send(data)
            r1, r2 = c.read_response(), c.read_response()
        self.assertEqual((r1.status, r2.status), (200, 200))
        reqs = self.b.wait_requests(2)
        self.assertEqual([(q.target, q.body) for q in reqs], [("/a", b"0123456789"), ("/b", b"")])

    def test_upload_10mib(self):
        data = os.urandom(10 * 1024 * 1024)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            r = curl("--data-binary", "@" + f.name, "-H", "Content-Type: application/octet-stream",
                     "-H", "Expect:", self.p.url("/up10"), timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(), sha256(data))
        up = self.b.wait_requests(1)[0]
        self.assertEqual(len(up.body), len(data))

    def test_upload_10mib_chunked(self):
        data = os.urandom(10 * 1024 * 1024)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            r = curl("-T", f.name, "-H", "Transfer-Encoding: chunked", "-H", "Expect:",
                     self.p.url("/upchunked"), timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(), sha256(data))

    def test_expect_100_continue_curl(self):
        data = os.urandom(1024 * 1024)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            t0 = time.monotonic()
            r = curl("-H", "Expect: 100-continue", "--expect100-timeout", "5", "--data-binary",
                     "@" + f.name, self.p.url("/expect"), timeout=20)
            elapsed = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(), sha256(data))
        self.assertLess(elapsed, 3.0, "curl waited for 100 Continue that never came")

    def test_expect_100_continue_raw(self):
        with Client(self.p.port) as c:
            c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            c.sock.settimeout(3)
            first = c.sock.recv(4096)
            self.assertRegex(first, rb"^HTTP/1\.1 100 Continue\r\n")
            c.reader.buf += first.split(b"\r\n\r\n", 1)[1]
            c.send(b"hello")
            r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, sha256(b"hello").encode())

    def test_download_10mib(self):
        sb = self.backend(StreamingBackend, total=10 * 1024 * 1024, pieces=40)
        p = self.proxy(self.service_config(sb))
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "body")
            r = curl("-o", out, "-w", "%{http_code}", p.url("/big"), timeout=30)
            self.assertEqual(r.stdout, b"200", r.stderr)
            with open(out, "rb") as f:
                self.assertEqual(sha256(f.read()), sha256(sb.body))

    def test_download_10mib_chunked(self):
        sb = self.backend(StreamingBackend, total=10 * 1024 * 1024, pieces=160, chunked=True)
        p = self.proxy(self.service_config(sb))
        with Client(p.port, timeout=30) as c:
            r = c.request("GET", "/bigchunked")
        self.assertEqual(r.status, 200)
        self.assertEqual(sha256(r.body), sha256(sb.body))


class Backpressure(ProxyTestCase):
    def test_slow_client_does_not_buffer_whole_response(self):
        if "asan" in os.path.basename(build_dir()):
            self.skipTest("RSS is not meaningful under ASan (quarantine)")
        total = 48 * 1024 * 1024
        sb = self.backend(StreamingBackend, total=total, pieces=192)
        p = self.proxy(self.service_config(sb))
        self.assertEqual(get(p.port, "/health").status, 200)
        rss0 = p.rss_kb()
        with Client(p.port, timeout=60) as c:
            c.send(request_bytes("GET", "/big"))
            head = c.reader.until(b"\r\n\r\n", time.monotonic() + 5)
            self.assertRegex(head, rb"^HTTP/1\.1 200 ")
            time.sleep(1.5)  # the client reads nothing: proxyd must stop reading the upstream
            grown = (p.rss_kb() - rss0) / 1024
            body = c.reader.exact(total, time.monotonic() + 60)
        self.assertEqual(sha256(body), sha256(sb.body))
        self.assertLess(grown, 16, "proxyd grew by %.1f MiB while the client did not read" % grown)


class BodilessResponses(ProxyTestCase):
    @staticmethod
    def respond(req):
        if req.path == "/204":
            return b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
        if req.path == "/304":
            return b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n'
        if req.path == "/304cl":  # Content-Length describes the representation, no body follows
            return b'HTTP/1.1 304 Not Modified\r\nETag: "v2"\r\nContent-Length: 1234\r\n\r\n'
        if req.path == "/early":
            return (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                    + http_response(200, b"after hints"))
        if req.method == "HEAD" and req.path == "/chunkedhead":
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        if req.method == "HEAD":
            return http_response(200, b"x" * 1234, head_only=True)
        return http_response(200, req.path)

    def setUp(self):
        self.b = self.backend(response=self.respond)
        self.p = self.proxy(self.service_config(self.b))

    def test_head_has_no_body(self):
        with Client(self.p.port) as c:
            c.send(request_bytes("HEAD", "/h"))
            r = c.read_response("HEAD")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("content-length"), "1234")
            r2 = c.request("GET", "/after")
            self.assertEqual((r2.status, r2.body), (200, b"/after"))

    def test_204_304_keep_connection_usable(self):
        with Client(self.p.port) as c:
            r1 = c.request("GET", "/204")
            r2 = c.request("GET", "/304")
            r3 = c.request("GET", "/ok")
        self.assertEqual((r1.status, r1.body), (204, b""))
        self.assertIsNone(r1.header("transfer-encoding"), r1)
        self.assertIsNone(r1.header("content-length"), r1)
        self.assertEqual(r1.header("x-a"), "1")
        self.assertEqual((r2.status, r2.body), (304, b""))
        self.assertIsNone(r2.header("transfer-encoding"), r2)
        self.assertEqual(r2.header("etag"), '"v1"')
        self.assertEqual((r3.status, r3.body), (200, b"/ok"))

    def test_304_with_content_length(self):
        with Client(self.p.port) as c:
            r1 = c.request("GET", "/304cl")
            r2 = c.request("GET", "/next")
        self.assertEqual((r1.status, r1.body, r1.header("etag")), (304, b"", '"v2"'))
        self.assertEqual((r2.status, r2.body), (200, b"/next"))

    def test_head_with_chunked_header(self):
        with Client(self.p.port) as c:
            c.send(request_bytes("HEAD", "/chunkedhead"))
            r1 = c.read_response("HEAD")
            r2 = c.request("GET", "/next")
        self.assertEqual(r1.status, 200)
        self.assertEqual((r2.status, r2.body), (200, b"/next"))

    def test_interim_103_then_final(self):
        with Client(self.p.port) as c:
            r = c.request("GET", "/early")
            r2 = c.request("GET", "/next")
        self.assertEqual((r.status, r.body), (200, b"after hints"))
        self.assertEqual((r2.status, r2.body), (200, b"/next"))

    def test_204_pipelined(self):
        with Client(self.p.port) as c:
            c.send(request_bytes("GET", "/204") + request_bytes("GET", "/304") + request_bytes("GET", "/z"))
            got = [c.read_response() for _ in range(3)]
        self.assertEqual([(r.status, r.body) for r in got], [(204, b""), (304, b""), (200, b"/z")])


class KeepAlive(ProxyTestCase):
    @staticmethod
    def respond(req):
        if req.path == "/slow":
            return [0.3, http_response(200, req.path)]
        if req.path == "/chunked":
            return chunked_response([b"hel", b"lo"])
        return http_response(200, req.path)

    def setUp(self):
        self.b = self.backend(response=self.respond)
        self.p = self.proxy(self.service_config(self.b))

    def test_two_requests_one_connection(self):
        with Client(self.p.port) as c:
            r1 = c.request("GET", "/a")
            r2 = c.request("GET", "/b")
        self.assertEqual([(r1.status, r1.body), (r2.status, r2.body)], [(200, b"/a"), (200, b"/b")])

    def test_pipelined_three_in_order(self):
        with Client(self.p.port) as c:
            c.send(request_bytes("GET", "/1") + request_bytes("GET", "/2") + request_bytes("GET", "/3"))
            bodies = [c.read_response().body for _ in range(3)]
        self.assertEqual(bodies, [b"/1", b"/2", b"/3"])

    def test_pipelined_fifty(self):
        with Client(self.p.port) as c:
            c.send(b"".join(request_bytes("GET", "/p%d" % i) for i in range(50)))
            bodies = [c.read_response().body for _ in range(50)]
        self.assertEqual(bodies, [b"/p%d" % i for i in range(50)])

    def test_pipelined_close_stops_pipeline(self):
        data = (request_bytes("GET", "/1") + request_bytes("GET", "/2", headers=[("Connection", "close")])
                + request_bytes("GET", "/3"))
        r = raw_request(self.p.port, data)
        self.assertTrue(r.closed, r)
        self.assertEqual(r.data.count(b"HTTP/1.1 200"), 2, r)
        self.assertTrue(r.data.endswith(b"/2"), r)
        time.sleep(0.1)
        self.assertEqual([q.target for q in self.b.requests], ["/1", "/2"])

    def test_http10_post_with_body(self):
        r = raw_request(self.p.port, b"POST /p10 HTTP/1.0\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        self.assertTrue(r.closed, r)
        self.assertTrue(r.data.endswith(b"/p10"), r)
        self.assertEqual(self.b.wait_requests(1)[0].body, b"abc")

    def test_pipelined_slow_first(self):
        with Client(self.p.port) as c:
            c.send(request_bytes("GET", "/slow") + request_bytes("GET", "/2") + request_bytes("GET", "/3"))
            bodies = [c.read_response().body for _ in range(3)]
        self.assertEqual(bodies, [b"/slow", b"/2", b"/3"])

    def test_http10_closes(self):
        r = raw_request(self.p.port, b"GET /ten HTTP/1.0\r\nHost: t\r\n\r\n")
        self.assertTrue(r.closed, r)
        self.assertRegex(r.data, rb"^HTTP/1\.[01] 200 ")
        self.assertTrue(r.data.endswith(b"\r\n\r\n/ten"), r)

    def test_http10_chunked_upstream_is_dechunked(self):
        r = raw_request(self.p.port, b"GET /chunked HTTP/1.0\r\nHost: t\r\n\r\n")
        self.assertTrue(r.closed, r)
        head, _, body = r.data.partition(b"\r\n\r\n")
        self.assertNotIn(b"transfer-encoding", head.lower())
        self.assertEqual(body, b"hello")

    def test_http10_keep_alive(self):
        with Client(self.p.port) as c:
            c.send(b"GET /k1 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
            r1 = c.read_response()
            self.assertEqual(r1.body, b"/k1")
            self.assertIn("keep-alive", header_tokens(r1.header("connection")), r1)
            c.send(b"GET /k2 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
            r2 = c.read_response()
            self.assertEqual(r2.body, b"/k2")

    def test_http11_connection_close(self):
        r = raw_request(self.p.port, request_bytes("GET", "/c", headers=[("Connection", "close")]))
        self.assertTrue(r.closed, r)
        self.assertTrue(r.data.endswith(b"/c"), r)
        self.assertIn(b"close", r.data.split(b"\r\n\r\n")[0].lower())

    def test_upstream_reuse_one_client_connection(self):
        with Client(self.p.port) as c:
            for i in range(20):
                r = c.request("GET", "/r%d" % i)
                self.assertEqual(r.body, b"/r%d" % i)
        self.assertEqual(len(self.b.requests), 20)
        self.assertLessEqual(self.b.request_connections(), 2,
                             "20 requests used %d upstream connections" % self.b.request_connections())

    def test_upstream_reuse_across_client_connections(self):
        for i in range(20):
            self.assertEqual(get(self.p.port, "/n%d" % i).status, 200)
        self.assertLessEqual(self.b.request_connections(), 4,
                             "20 requests used %d upstream connections" % self.b.request_connections())


class UpstreamConnectionClose(ProxyTestCase):
    def test_upstream_connection_close_not_reused(self):
        b = self.backend(response=lambda req: http_response(200, req.path, headers=[("Connection", "close")]))
        p = self.proxy(self.service_config(b))
        with Client(p.port) as c:
            for i in range(5):
                r = c.request("GET", "/c%d" % i)
                self.assertEqual((r.status, r.body), (200, b"/c%d" % i))
        self.assertEqual(b.request_connections(), 5)

    def test_upstream_idle_close_then_next_request(self):
        # The upstream closes an idle keep-alive connection shortly after answering
        # (its keep-alive timeout is shorter than ours): the next request still works.
        b = self.backend(response=lambda req: [http_response(200, req.path), 0.05, CLOSE])
        p = self.proxy(self.service_config(b))
        with Client(p.port) as c:
            for i in range(5):
                r = c.request("GET", "/i%d" % i)
                self.assertEqual((r.status, r.body), (200, b"/i%d" % i))
                time.sleep(0.3)
