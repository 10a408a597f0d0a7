"""Upstream failures (502/504, retry on another target, cut responses),
balancing and WebSocket tunnels."""

import os
import socket
import threading
import time

from harness import (CLOSE, Client, ClosingBackend, ProxyTestCase, RecordingBackend, SilentBackend,
                     WebSocketBackend, chunked_response, free_port, get, http_response, raw_request,
                     request_bytes, wait_until, ws_accept)


class Failures(ProxyTestCase):
    def test_nothing_listening_502(self):
        p = self.proxy(self.service_config("127.0.0.1:%d" % free_port()))
        t0 = time.monotonic()
        r = get(p.port, "/")
        self.assertEqual(r.status, 502, r)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertSecurityHeaders(r)

    def test_read_timeout_504(self):
        b = self.backend(SilentBackend)
        p = self.proxy(self.service_config(b, extra_proxy="upstream_read_timeout = 1s"))
        t0 = time.monotonic()
        r = get(p.port, "/", timeout=8)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 504, r)
        self.assertTrue(0.8 <= elapsed <= 4, "504 after %.2fs" % elapsed)
        self.assertEqual(len(b.requests), 1)

    def test_connect_timeout_504(self):
        """A target whose accept queue is full drops our SYN: the connect hangs
        and upstream_connect_timeout (1 s) answers 504."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(0)
        self.addCleanup(ls.close)
        fillers = []
        for _ in range(3):  # fill the queue (never accepted)
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(ls.getsockname())
            fillers.append(f)
            self.addCleanup(f.close)
        time.sleep(0.2)
        p = self.proxy(self.service_config("127.0.0.1:%d" % ls.getsockname()[1], extra_proxy=(
            "upstream_connect_timeout = 1s\nupstream_read_timeout = 60s")))
        t0 = time.monotonic()
        r = get(p.port, "/", timeout=15)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 504, r)
        self.assertTrue(0.8 <= elapsed <= 5, "504 after %.2fs" % elapsed)
        self.assertIn("connect timed out", p.error_log_text())

    def test_send_timeout_504(self):
        """An upstream that stops taking the request body: upstream_send_timeout
        (1 s) answers 504, long before upstream_read_timeout (60 s)."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(8)  # never accepted: the kernel buffers, then stops taking bytes
        self.addCleanup(ls.close)
        p = self.proxy(self.service_config("127.0.0.1:%d" % ls.getsockname()[1], extra_proxy=(
            "upstream_send_timeout = 1s\nupstream_read_timeout = 60s\nclient_body_timeout = 60s")))
        size = 90 << 20
        c = Client(p.port)
        self.addCleanup(c.close)
        c.send(request_bytes("POST", "/upload", host="t", headers=[("Content-Length", str(size))]))
        stop = threading.Event()

        def pump():  # bounded: stops at the deadline, when stopped, or when proxyd closes
            chunk = b"x" * 65536
            deadline = time.monotonic() + 20
            c.sock.settimeout(0.2)
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    c.sock.send(chunk)
                except socket.timeout:
                    continue
                except OSError:
                    return

        t = threading.Thread(target=pump, daemon=True)
        t0 = time.monotonic()
        t.start()
        self.addCleanup(t.join, 5)
        self.addCleanup(stop.set)
        r = c.read_response(timeout=15)
        elapsed = time.monotonic() - t0
        stop.set()
        self.assertEqual(r.status, 504, r)
        self.assertLess(elapsed, 12, "504 after %.1fs: the send timeout did not govern" % elapsed)

    def test_retry_on_live_target(self):
        b = self.backend()
        dead = "127.0.0.1:%d" % free_port()
        for order in ((dead, b), (b, dead)):
            with self.subTest(order=[getattr(t, "addr", t) for t in order]):
                p = self.proxy(self.service_config(*order))
                for i in range(10):
                    r = get(p.port, "/r%d" % i)
                    self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
                with Client(p.port) as c:
                    for i in range(10):
                        self.assertEqual(c.request("GET", "/k%d" % i).status, 200)
                p.close()

    def test_upstream_closes_without_answer_502(self):
        b = self.backend(ClosingBackend)
        p = self.proxy(self.service_config(b))
        r = get(p.port, "/", timeout=8)
        self.assertEqual(r.status, 502, r)

    def test_upstream_invalid_response_502(self):
        b = self.backend(response=b"HELLO THERE\r\n\r\n")
        p = self.proxy(self.service_config(b))
        r = get(p.port, "/", timeout=8)
        self.assertEqual(r.status, 502, r)

    def test_upstream_cl_and_te_response_502(self):
        b = self.backend(response=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        p = self.proxy(self.service_config(b))
        r = get(p.port, "/", timeout=8)
        self.assertEqual(r.status, 502, r)

    def test_upstream_closes_mid_response_content_length(self):
        b = self.backend(response=[http_response(200, b"x" * 100000, head_only=True), b"x" * 1000, 0.1, CLOSE])
        p = self.proxy(self.service_config(b))
        r = raw_request(p.port, request_bytes("GET", "/"), timeout=6)
        self.assertTrue(r.closed, "client connection not closed after a cut upstream response: %r" % r)
        self.assertLess(r.elapsed, 5)
        self.assertLess(len(r.data), 100000)

    def test_upstream_closes_mid_response_chunked(self):
        items = chunked_response([b"a" * 1000, b"b" * 1000])[:-1] + [0.1, CLOSE]  # no final chunk
        b = self.backend(response=items)
        p = self.proxy(self.service_config(b))
        r = raw_request(p.port, request_bytes("GET", "/"), timeout=6)
        self.assertTrue(r.closed, "client connection not closed after a cut upstream response: %r" % r)
        self.assertLess(r.elapsed, 5)
        self.assertFalse(r.data.endswith(b"0\r\n\r\n"), "a cut response was completed with a final chunk")

    def test_upstream_close_delimited_response(self):
        b = self.backend(response=[b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", b"until close", CLOSE])
        p = self.proxy(self.service_config(b))
        with Client(p.port) as c:
            r = c.request("GET", "/")
        self.assertEqual((r.status, r.body), (200, b"until close"))


class Balancing(ProxyTestCase):
    def setUp(self):
        self.b1 = self.backend(name="one")
        self.b2 = self.backend(name="two")
        self.p = self.proxy(self.service_config(self.b1, self.b2))

    def test_new_connections_spread(self):
        for i in range(20):
            self.assertEqual(get(self.p.port, "/").status, 200)
        n1, n2 = len(self.b1.requests), len(self.b2.requests)
        self.assertEqual(n1 + n2, 20)
        self.assertGreaterEqual(min(n1, n2), 5, "unbalanced: %d / %d" % (n1, n2))

    def test_one_client_connection_spread(self):
        with Client(self.p.port) as c:
            for i in range(20):
                self.assertEqual(c.request("GET", "/").status, 200)
        n1, n2 = len(self.b1.requests), len(self.b2.requests)
        self.assertGreaterEqual(min(n1, n2), 5, "unbalanced: %d / %d" % (n1, n2))


class KeepalivePool(ProxyTestCase):
    def test_idle_pool_bounded(self):
        """[proxy] upstream_keepalive bounds the idle upstream connections a
        worker keeps (nginx's `keepalive N`): after a burst of 12 concurrent
        requests, each on its own upstream connection (the backend answers
        after 0.5 s), the backend sees at
        most 3 stay open (the rest closed, least recently used first), and
        the next request reuses one of those kept instead of connecting."""
        b = self.backend(RecordingBackend, response=lambda req: [0.5, http_response(200, b"ok")])
        p = self.proxy(self.service_config(b, extra_proxy="workers = 1\nupstream_keepalive = 3"))
        results = []

        def one():
            results.append(get(p.port, "/", timeout=10).status)
        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        self.assertEqual(results, [200] * 12)
        opened = b.accepted  # 12 unless a request started after another had ended
        self.assertGreaterEqual(opened, 8, "the burst did not open many upstream connections")
        self.assertTrue(wait_until(lambda: b.open_connections() <= 3, 5),
                        "%d idle upstream connections kept (bound 3)" % b.open_connections())
        time.sleep(0.2)  # nothing closes the kept ones: they stay pooled
        self.assertEqual(b.open_connections(), 3)
        b.response = None
        self.assertEqual(get(p.port, "/").status, 200)
        self.assertEqual(b.accepted, opened, "a kept connection was not reused")


class NagleBackend(ProxyTestCase):
    def test_head_and_body_in_two_writes_no_delayed_ack_stall(self):
        """A backend that leaves Nagle on (Python's http.server, many dev
        servers) and writes the head and the body in two send()s holds the
        body until the head is acknowledged. A delayed ACK from proxyd would
        cost ~40 ms per keep-alive request (nginx pays it); proxyd acks at
        once (TCP_QUICKACK), so the median request through it takes far
        less than one delayed-ACK timer (40 ms on Linux)."""
        body = b"x" * 100
        b = self.backend(RecordingBackend, response=lambda req: [
            http_response(200, body, head_only=True), body])
        p = self.proxy(self.service_config(b, extra_proxy="workers = 1"))
        times = []
        with Client(p.port) as c:
            for _ in range(20):
                t0 = time.monotonic()
                r = c.request("GET", "/")
                times.append(time.monotonic() - t0)
                self.assertEqual((r.status, r.body), (200, body))
        self.assertEqual(b.request_connections(), 1, "the requests did not share one upstream connection")
        times.sort()
        self.assertLess(times[10], 0.02, "median %.1f ms per request (a delayed ACK is 40 ms)" % (times[10] * 1000))


class WebSocket(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(WebSocketBackend)
        self.p = self.proxy(self.service_config(self.b, extra_proxy="upstream_read_timeout = 2s"))

    def handshake(self):
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        c = Client(self.p.port)
        self.addCleanup(c.close)
        c.send(request_bytes("GET", "/ws?room=1", host="ws.test", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"), ("Origin", "http://ws.test")]))
        r = c.read_response()
        self.assertEqual(r.status, 101, r)
        self.assertEqual(r.header("sec-websocket-accept"), ws_accept(key))
        self.assertEqual((r.header("upgrade") or "").lower(), "websocket")
        self.assertIn("upgrade", [t.strip().lower() for t in (r.header("connection") or "").split(",")])
        return c

    def test_handshake_headers_reach_upstream(self):
        self.handshake()
        up = self.b.wait_requests(1)[0]
        self.assertEqual(up.start_line, "GET /ws?room=1 HTTP/1.1")
        self.assertEqual((up.header("upgrade") or "").lower(), "websocket")
        self.assertIn("upgrade", [t.strip().lower() for t in (up.header("connection") or "").split(",")])
        self.assertEqual(up.header("sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==")
        self.assertEqual(up.header("sec-websocket-version"), "13")
        self.assertEqual(up.header("x-forwarded-for"), "127.0.0.1")

    def test_echo_both_ways(self):
        c = self.handshake()
        for size in (1, 125, 4000, 70000):
            data = os.urandom(size)
            c.send(data)
            got = c.reader.exact(size, time.monotonic() + 5)
            self.assertEqual(got, data, "echo of %d bytes" % size)

    def test_tunnel_outlives_read_timeout_while_active(self):
        c = self.handshake()
        for i in range(4):  # 4 x 0.8 s > upstream_read_timeout, but never idle that long
            c.send(b"ping%d" % i)
            self.assertEqual(c.reader.exact(5, time.monotonic() + 5), b"ping%d" % i)
            time.sleep(0.8)

    def test_client_close_closes_upstream(self):
        c = self.handshake()
        c.send(b"x")
        self.assertEqual(c.reader.exact(1, time.monotonic() + 5), b"x")
        self.assertEqual(self.b.open_connections(), 1)
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        self.assertTrue(wait_until(lambda: self.b.open_connections() == 0, 5),
                        "upstream side of the tunnel still open")

    def test_non_websocket_upgrade_not_forwarded(self):
        b = self.backend(RecordingBackend)
        p = self.proxy(self.service_config(b))
        r = get(p.port, "/", headers=[("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings"),
                                      ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")])
        self.assertEqual(r.status, 200, r)
        up = b.wait_requests(1)[0]
        self.assertIsNone(up.header("upgrade"), up.head)
        self.assertIsNone(up.header("http2-settings"), up.head)
