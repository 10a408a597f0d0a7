"""Client timeouts (slowloris, idle keep-alive, stalled body) and max_connections."""

import socket
import time

from harness import Client, ProxyTestCase, request_bytes, wait_until


class ClientTimeouts(ProxyTestCase):
    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(self.service_config(self.b, extra_proxy=(
            "client_header_timeout = 1s\nkeepalive_timeout = 1s\nclient_body_timeout = 1s")))

    def assertClosedBetween(self, c, t0, lo, hi):
        closed = c.closed_within(hi + 1 - (time.monotonic() - t0))
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "connection still open after %.1fs" % elapsed)
        self.assertTrue(lo <= elapsed <= hi, "closed after %.2fs, want %.1f..%.1fs" % (elapsed, lo, hi))

    def test_half_request_line(self):
        with Client(self.p.port) as c:
            t0 = time.monotonic()
            c.send(b"GET /slowlo")
            self.assertClosedBetween(c, t0, 0.5, 3)
        self.assertEqual(self.b.requests, [])

    def test_slowloris_dribble(self):
        # one byte every 0.2 s: activity must not extend the header deadline
        data = request_bytes("GET", "/", headers=[("X-Pad", "p" * 200)])
        with Client(self.p.port) as c:
            t0 = time.monotonic()
            closed = False
            for i in range(len(data) - 1):
                try:
                    c.send(data[i:i + 1])
                except OSError:
                    closed = True
                    break
                if c.closed_within(0.2):
                    closed = True
                    break
                if time.monotonic() - t0 > 6:
                    break
            elapsed = time.monotonic() - t0
        self.assertTrue(closed, "slowloris connection still open after %.1fs" % elapsed)
        self.assertLess(elapsed, 3.5)
        self.assertEqual(self.b.requests, [])

    def test_keepalive_idle_closed(self):
        with Client(self.p.port) as c:
            self.assertEqual(c.request("GET", "/").status, 200)
            t0 = time.monotonic()
            self.assertClosedBetween(c, t0, 0.5, 3)

    def test_keepalive_not_closed_early(self):
        with Client(self.p.port) as c:
            self.assertEqual(c.request("GET", "/").status, 200)
            time.sleep(0.4)
            self.assertEqual(c.request("GET", "/again").status, 200)

    def test_stalled_body(self):
        with Client(self.p.port) as c:
            t0 = time.monotonic()
            c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
            self.assertClosedBetween(c, t0, 0.5, 4)
            data = bytes(c.reader.buf)
        if data:
            self.assertRegex(data, rb"^HTTP/1\.1 (408|400) ")
        self.assertEqual(self.b.requests, [])

    def test_idle_connection_without_request_closed(self):
        with Client(self.p.port) as c:
            t0 = time.monotonic()
            self.assertClosedBetween(c, t0, 0.5, 3)


class MaxConnections(ProxyTestCase):
    def test_max_connections(self):
        p = self.proxy("[proxy]\nmax_connections = 5\n")
        held = []
        try:
            for i in range(5):
                c = Client(p.port, timeout=3)
                held.append(c)
                r = c.request("GET", "/health")
                self.assertEqual(r.status, 200, "connection %d" % i)
            # a sixth is not served while five are open
            extra = socket.create_connection(("127.0.0.1", p.port), timeout=3)
            held_extra = [extra]
            try:
                extra.sendall(request_bytes("GET", "/health"))
            except OSError:
                pass
            extra.settimeout(1.5)
            try:
                got = extra.recv(4096)
            except socket.timeout:
                got = None
            except OSError:
                got = b""
            self.assertFalse(got and got.startswith(b"HTTP/1.1 200"),
                             "a 6th connection was served: %r" % got)
            # close two: service resumes (the waiting connection, or a new one)
            for c in held[:2]:
                c.close()
            del held[:2]
            served = False
            if got is None:  # still pending in the backlog: it should be answered now
                extra.settimeout(3)
                try:
                    served = extra.recv(4096).startswith(b"HTTP/1.1 200")
                except OSError:
                    served = False
            if not served:
                def try_new():
                    try:
                        with Client(p.port, timeout=1) as c:
                            return c.request("GET", "/health").status == 200
                    except (OSError, AssertionError, Exception):
                        return False
                served = wait_until(try_new, 4, interval=0.2)
            self.assertTrue(served, "no service after closing connections")
            # the remaining three still work
            for c in held:
                self.assertEqual(c.request("GET", "/health").status, 200)
            for s in held_extra:
                s.close()
        finally:
            for c in held:
                c.close()
