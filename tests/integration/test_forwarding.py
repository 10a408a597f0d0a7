"""What proxyd forwards, byte for byte, once a head parsed (issue 6): the
exact request head that reaches a stub upstream, and the exact response head
that reaches the client."""

import time

from harness import H2Client, ProxyTestCase, raw_request, tls_service_config


def head_of(data):
    """The head bytes (through CRLFCRLF) of a raw response."""
    i = data.find(b"\r\n\r\n")
    return data[:i + 4] if i >= 0 else data


def field_lines(head, name):
    """Every "Name: value" line of head whose name is `name` (any case)."""
    out = []
    for line in head.split(b"\r\n")[1:]:
        n, sep, _ = line.partition(b":")
        if sep and n.lower() == name.lower():
            out.append(line)
    return out


class ForwardingCase(ProxyTestCase):
    response = None

    def setUp(self):
        self.b = self.backend(response=self.response)
        self.p = self.proxy(self.service_config(self.b, extra_proxy="client_body_timeout = 3s"))

    def forward(self, data, status=200):
        """Send a request; return (upstream request, client response bytes)."""
        r = raw_request(self.p.port, data, timeout=5)
        self.assertEqual(r.status, status, r)
        reqs = self.b.wait_requests(1)
        self.assertEqual(len(reqs), 1, "the request did not reach the upstream: %r / %r" % (r, self.b.errors))
        return reqs[0], r.data

    def rejected(self, data, status):
        r = raw_request(self.p.port, data, timeout=5)
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.closed, r)
        time.sleep(0.05)
        self.assertEqual(self.b.requests, [], "request reached the upstream")
        return r


class ContentLengthToUpstream(ForwardingCase):
    def test_equal_list_forwarded_as_one_value(self):
        req, _ = self.forward(b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n"
                              b"Connection: close\r\n\r\nhello")
        self.assertEqual(field_lines(req.head, b"content-length"), [b"Content-Length: 5"], req.head)
        self.assertEqual(req.body, b"hello")

    def test_repeated_equal_lines_forwarded_once(self):
        req, _ = self.forward(b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\ncontent-length: 005\r\n"
                              b"Connection: close\r\n\r\nhello")
        self.assertEqual(field_lines(req.head, b"content-length"), [b"Content-Length: 5"], req.head)
        self.assertEqual(req.body, b"hello")


class ContentLengthToClient(ForwardingCase):
    response = (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nX-A: 1\r\ncontent-length: 5\r\n\r\nhello")

    def test_upstream_equal_list_relayed_as_one_value(self):
        _, data = self.forward(b"GET /r HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head = head_of(data)
        self.assertEqual(field_lines(head, b"content-length"), [b"Content-Length: 5"], head)
        self.assertEqual(data[len(head):], b"hello")


class ContentLengthToH2Client(ProxyTestCase):
    def test_upstream_equal_list_relayed_as_one_value(self):
        b = self.backend(response=ContentLengthToClient.response)
        p = self.proxy(tls_service_config(b))
        c = H2Client(p.https_port, validate=False)
        self.addCleanup(c.close)
        s = c.wait_stream(c.request("GET", "/r"))
        self.assertEqual(s.status, 200, s)
        self.assertEqual(s.headers.get_all("content-length"), ["5"], s.headers)
        self.assertEqual(bytes(s.data), b"hello")


class HostToUpstream(ForwardingCase):
    def test_http10_without_host_gets_target_address(self):
        # nginx's default Host is $proxy_host, the upstream's address
        req, _ = self.forward(b"GET /old HTTP/1.0\r\n\r\n")
        self.assertEqual(field_lines(req.head, b"host"), [b"Host: " + self.b.addr.encode()], req.head)
        self.assertEqual(field_lines(req.head, b"x-forwarded-host"), [], req.head)

    def test_http10_with_host_kept(self):
        req, _ = self.forward(b"GET /old HTTP/1.0\r\nHost: example.test\r\n\r\n")
        self.assertEqual(field_lines(req.head, b"host"), [b"Host: example.test"], req.head)

    def test_http10_absolute_form_host_from_authority(self):
        req, _ = self.forward(b"GET http://abs.test/x HTTP/1.0\r\n\r\n")
        self.assertEqual(req.start_line, "GET /x HTTP/1.1")
        self.assertEqual(field_lines(req.head, b"host"), [b"Host: abs.test"], req.head)


class MethodToUpstream(ForwardingCase):
    def test_extension_method_forwarded_verbatim(self):
        req, _ = self.forward(b"VERSION-CONTROL_X /m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        self.assertEqual(req.start_line, "VERSION-CONTROL_X /m HTTP/1.1")

    def test_lowercase_method_rejected(self):
        self.rejected(b"get /m HTTP/1.1\r\nHost: t\r\n\r\n", 400)


class TrailersToUpstream(ForwardingCase):
    HEAD = b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"

    def test_allowed_trailer_passes_verbatim(self):
        body = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"
        req, _ = self.forward(self.HEAD + body)
        self.assertEqual(req.raw_body, body)
        self.assertEqual(req.body, b"hello")

    def test_content_length_trailer_rejected(self):
        r = raw_request(self.p.port, self.HEAD + b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", timeout=5)
        self.assertEqual(r.status, 400, r)
        self.assertTrue(r.closed, r)
        time.sleep(0.05)
        self.assertEqual(self.b.requests, [], "the trailer reached the upstream")

    def test_host_trailer_rejected(self):
        r = raw_request(self.p.port, self.HEAD + b"0\r\nhost: other.test\r\n\r\n", timeout=5)
        self.assertEqual(r.status, 400, r)
        time.sleep(0.05)
        self.assertEqual(self.b.requests, [], "the trailer reached the upstream")


class SamePipeline(ProxyTestCase):
    """HTTP/1.1 and HTTP/2 requests go through one pipeline: the same request
    from the same client reaches the upstream with the same Host and the same
    forwarding fields, whatever the protocol (repeated X-Forwarded-For lines
    or fields joined in both)."""

    FWD = ("host", "x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-host", "x-request-id")

    def test_h1_and_h2_forward_the_same(self):
        from harness import TlsClient
        b = self.backend()
        p = self.proxy(tls_service_config(b, extra_proxy="trusted_proxies = 127.0.0.0/8 10.0.0.0/8"))
        fields = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.1.2.3"),
                  ("x-request-id", "same-request-1")]
        with TlsClient(p.https_port) as c:
            lines = "".join("%s: %s\r\n" % kv for kv in fields)
            c.send(("GET /same?q=1 HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % lines).encode())
            self.assertEqual(c.read_response().status, 200)
        with H2Client(p.https_port) as c:
            st = c.get("/same?q=1", authority="localhost", headers=fields)
            self.assertEqual(st.status, 200)
        reqs = b.wait_requests(2)
        self.assertEqual(len(reqs), 2)

        def fwd(req):
            return {n: [v for k, v in req.headers if k.lower() == n] for n in self.FWD}
        h1, h2 = fwd(reqs[0]), fwd(reqs[1])
        self.assertEqual(h1, h2)
        self.assertEqual(h1["x-real-ip"], ["203.0.113.7"])
        self.assertEqual(h1["x-forwarded-for"], ["203.0.113.7, 10.1.2.3, 127.0.0.1"])
        self.assertEqual(reqs[0].target, reqs[1].target)
