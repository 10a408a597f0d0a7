"""The plain listener next to a TLS one: health answered, the ACME path
reserved, everything else 301 to https://HOST/PATH?QUERY (redirect_https =
yes, the default, and only when listen_https is configured)."""

from harness import (Client, ProxyTestCase, RecordingBackend, curl, get, http_response, raw_request,
                     request_bytes, shared_certs, tls_service_config)


def echo_path(req):
    return http_response(200, req.target, head_only=req.method == "HEAD")


class Redirect(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(RecordingBackend, response=echo_path)
        self.p = self.proxy(tls_service_config(self.b))

    def assertRedirect(self, resp, location):
        self.assertEqual(resp.status, 301, resp)
        self.assertEqual(resp.headers.get_all("location"), [location], resp)

    def test_redirect_keeps_path_and_query(self):
        cases = [
            ("/", "example.com", "https://example.com/"),
            ("/a/b?x=1&y=2", "example.com", "https://example.com/a/b?x=1&y=2"),
            ("/p%20q?a=%2F&b=c+d", "example.com", "https://example.com/p%20q?a=%2F&b=c+d"),
            ("/x?", "example.com", "https://example.com/x?"),
            ("/Case/Path", "Example.COM", "https://example.com/Case/Path"),         # host lowercased
            ("/port", "example.com:8080", "https://example.com/port"),              # port stripped
            ("/v6", "[::1]:8080", "https://[::1]/v6"),
        ]
        for target, host, location in cases:
            with self.subTest(target=target, host=host):
                self.assertRedirect(get(self.p.port, target, host=host), location)
        self.assertEqual(self.b.requests, [])

    def test_every_method_redirected(self):
        for method, body in (("POST", b"data"), ("PUT", b"x"), ("DELETE", b""), ("HEAD", b"")):
            with self.subTest(method=method):
                with Client(self.p.port) as c:
                    r = c.request(method, "/m?q=1", host="example.com", body=body)
                self.assertRedirect(r, "https://example.com/m?q=1")
        self.assertEqual(self.b.requests, [])

    def test_redirect_keeps_connection(self):
        with Client(self.p.port) as c:
            for path in ("/one", "/two"):
                self.assertRedirect(c.request("GET", path, host="example.com"), "https://example.com" + path)

    def test_redirect_has_security_headers_no_hsts(self):
        r = get(self.p.port, "/", host="example.com")
        self.assertEqual(r.status, 301)
        self.assertSecurityHeaders(r)

    def test_health_answered(self):
        r = get(self.p.port, "/health", host="example.com")
        self.assertEqual((r.status, r.body), (200, b"healthy\n"))
        with Client(self.p.port) as c:
            c.send(request_bytes("HEAD", "/health", host="example.com"))
            r = c.read_response("HEAD")
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertEqual(self.b.requests, [])

    def test_acme_path_reserved(self):
        for target in ("/.well-known/acme-challenge/TOKEN123", "/.well-known/acme-challenge/x?y=1"):
            with self.subTest(target=target):
                r = get(self.p.port, target, host="example.com")
                self.assertEqual(r.status, 404, r)
                self.assertIsNone(r.header("location"), r)
        # only that exact prefix: a neighbour is redirected
        self.assertRedirect(get(self.p.port, "/.well-known/other", host="example.com"),
                            "https://example.com/.well-known/other")
        self.assertEqual(self.b.requests, [])

    def test_no_host_400(self):
        r = raw_request(self.p.port, b"GET /x HTTP/1.0\r\n\r\n", timeout=3)
        self.assertEqual(r.status, 400, r)
        self.assertNotIn(b"Location:", r.data)
        self.assertEqual(self.b.requests, [])

    def test_curl_follows_to_tls(self):
        # curl -L: the 301 to https://localhost/... (port 443) is sent to the TLS listener
        r = curl("-L", "--cacert", shared_certs().ca, "--connect-to", "localhost:443:127.0.0.1:%d" % self.p.https_port,
                 "--resolve", "localhost:%d:127.0.0.1" % self.p.port,
                 "http://localhost:%d/followed?a=1" % self.p.port, "-w", "\n%{num_redirects} %{url_effective}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"/followed?a=1\n1 https://localhost/followed?a=1")
        up = self.b.wait_requests(1)[0]
        self.assertEqual(up.headers.get_all("x-forwarded-proto"), ["https"])


class NoRedirect(ProxyTestCase):
    def test_redirect_https_no_proxies(self):
        b = self.backend(RecordingBackend, response=echo_path)
        p = self.proxy(tls_service_config(b, extra_proxy="redirect_https = no"))
        r = get(p.port, "/plain?q=1", host="example.com")
        self.assertEqual((r.status, r.body), (200, b"/plain?q=1"), r)
        self.assertEqual(b.wait_requests(1)[0].headers.get_all("x-forwarded-proto"), ["http"])
        self.assertEqual(get(p.port, "/health").body, b"healthy\n")

    def test_without_https_listener_proxies(self):
        b = self.backend(RecordingBackend, response=echo_path)
        p = self.proxy("[proxy]\nredirect_https = yes\n\n[service web]\ntargets = %s\n" % b.addr)
        r = get(p.port, "/plain", host="example.com")
        self.assertEqual((r.status, r.body), (200, b"/plain"), r)


if __name__ == "__main__":
    import unittest
    unittest.main()
