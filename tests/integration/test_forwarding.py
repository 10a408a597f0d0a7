"""What proxyd forwards, byte for byte, once a head parsed (issue 6): the
exact request head that reaches a stub upstream, and the exact response head
that reaches the client."""

import socket
import threading
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

    def setUp(self):
        # streamed (buffer_requests = no): the framing and its trailers go up verbatim; a
        # buffered body goes up with a Content-Length (test_buffering)
        self.b = self.backend(response=self.response)
        self.p = self.proxy(self.service_config(self.b, extra_proxy="client_body_timeout = 3s")
                            + "buffer_requests = no\n")

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


class LoopDetection(ProxyTestCase):
    """Every request proxyd sends upstream carries its per-process token in a
    CDN-Loop line (RFC 8586); one that comes back with it is answered 508
    without going upstream again, so a target that is proxyd itself (or two
    proxyd pointing at each other) costs two connections, not all of them."""

    TOKEN = r"^proxyd-[0-9a-f]{16}$"

    def test_upstream_gets_the_token_after_the_clients_lines(self):
        from harness import RecordingBackend
        b = self.backend(RecordingBackend)
        p = self.proxy(self.service_config(b))
        for extra in (b"", b"CDN-Loop: cloudflare\r\n", b"CDN-Loop: proxyd-0123456789abcdef\r\n"):
            r = raw_request(p.port, b"GET /x HTTP/1.1\r\nHost: a\r\n" + extra + b"Connection: close\r\n\r\n")
            self.assertEqual(r.status, 200, r)  # another proxyd's token passes
        reqs = b.wait_requests(3)
        own = [q.headers.get_all("cdn-loop")[-1] for q in reqs]
        self.assertRegex(own[0], self.TOKEN)
        self.assertEqual(own, [own[0]] * 3)  # one token for the process
        self.assertEqual(reqs[1].headers.get_all("cdn-loop"), ["cloudflare", own[0]])
        self.assertEqual(reqs[2].headers.get_all("cdn-loop"), ["proxyd-0123456789abcdef", own[0]])
        # a request that carries it is not forwarded
        r = raw_request(p.port, b"GET /x HTTP/1.1\r\nHost: a\r\nCDN-Loop: x, " + own[0].encode() + b"\r\n\r\n")
        self.assertEqual(r.status, 508, r)
        self.assertEqual(len(b.requests), 3)

    def relay_to(self, port):
        """A TCP relay to 127.0.0.1:port on a port of its own, as a container
        runtime's port mapping or a NAT rule would be: proxyd cannot see that
        a target behind it is proxyd itself (a target equal to its own listen
        address is refused outright), only the token can."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        ls.settimeout(0.2)
        stop = threading.Event()
        socks = []

        def pipe(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def accept():
            while not stop.is_set():
                try:
                    c, _ = ls.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                u = socket.create_connection(("127.0.0.1", port), timeout=10)
                c.settimeout(None)
                u.settimeout(None)
                socks.extend((c, u))
                for a, b in ((c, u), (u, c)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

        t = threading.Thread(target=accept, daemon=True)
        t.start()

        def cleanup():
            stop.set()
            t.join(5)
            ls.close()
            for x in socks:
                x.close()
        self.addCleanup(cleanup)
        return ls.getsockname()[1]

    def test_self_target_answers_508_and_other_sites_still_answer(self):
        from harness import RecordingBackend, free_port
        b = self.backend(RecordingBackend)
        port = free_port()
        relay = self.relay_to(port)
        p = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\nmax_connections = 50\n"
                       "[service loop]\nhosts = loop.test\ntargets = 127.0.0.1:%d\n"
                       "[service web]\nhosts = web.test\ntargets = %s\n" % (port, relay, b.addr))
        for _ in range(3):
            r = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: loop.test\r\nConnection: close\r\n\r\n", timeout=10)
            self.assertEqual(r.status, 508, r)  # relayed from the inner hop
            self.assertIn(b"Loop Detected", r.data)
        r = raw_request(p.port, b"GET /index.html HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([q.target for q in b.wait_requests(1)], ["/index.html"])
        lines = p.wait_access_log(7)
        loop = [e for e in lines if e["host"] == "loop.test"]
        self.assertEqual(sorted((e["status"], e["upstream"]) for e in loop),
                         [(508, "")] * 3 + [(508, "127.0.0.1:%d" % relay)] * 3, loop)

    def test_two_instances_pointing_at_each_other(self):
        from harness import free_port
        pa, pb = free_port(), free_port()
        a = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\n[service s]\ntargets = 127.0.0.1:%d\n" % (pa, pb))
        bp = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\n[service s]\ntargets = 127.0.0.1:%d\n" % (pb, pa))
        r = raw_request(a.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
        self.assertEqual(r.status, 508, r)
        # A -> B -> A: A saw its own token and answered; B relayed it
        self.assertEqual([e["status"] for e in a.wait_access_log(2)], [508, 508])
        self.assertEqual([e["status"] for e in bp.wait_access_log(1)], [508])
