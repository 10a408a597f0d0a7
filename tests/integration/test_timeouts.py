"""Client timeouts (slowloris, idle keep-alive, stalled body) and max_connections."""

import http.client
import re
import socket
import time

from harness import Client, ProxyTestCase, request_bytes, wait_until


def idle_connections(p):
    """proxyd_connections{state="idle"} from metrics_listen."""
    m = re.search(r"listening metrics \S+:(\d+)", p.error_log_text())
    if not m:
        return None
    c = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=5)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    v = re.search(r'^proxyd_connections\{state="idle"\} (\d+)$', body, re.M)
    return int(v.group(1)) if v else None


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
    def test_max_connections_busy(self):
        """Five connections inside a request head (not reusable): a sixth
        waits in the listen queue until one closes."""
        p = self.proxy("[proxy]\nmax_connections = 5\nmetrics_listen = 127.0.0.1:0\n")
        held = []
        try:
            for i in range(5):
                c = Client(p.port, timeout=3)
                held.append(c)
                r = c.request("GET", "/health")
                self.assertEqual(r.status, 200, "connection %d" % i)
                c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # half a head: busy
            # proxyd has read the half heads before the sixth arrives (until
            # then the five are keep-alive waits, which a new client may
            # take the place of): no connection idle in /metrics
            self.assertTrue(wait_until(lambda: idle_connections(p) == 0, 5), "the half heads were not read")
            # a sixth is not served while five are busy
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
            # the remaining three finish their heads and are answered
            for c in held:
                c.send(b"\r\n")
                self.assertEqual(c.read_response().status, 200)
            for s in held_extra:
                s.close()
        finally:
            for c in held:
                c.close()

    def test_max_connections_idle_make_room(self):
        """At max_connections, idle keep-alive connections do not lock new
        clients out until keepalive_timeout: the oldest is closed for the
        newcomer, as nginx does with its reusable connections."""
        # one worker: each worker makes room among its own connections
        p = self.proxy("[proxy]\nworkers = 1\nmax_connections = 5\nkeepalive_timeout = 60s\n")
        held = []
        try:
            for i in range(5):
                c = Client(p.port, timeout=3)
                held.append(c)
                self.assertEqual(c.request("GET", "/health").status, 200, "connection %d" % i)
                time.sleep(0.02)  # an order of age
            t0 = time.monotonic()
            with Client(p.port, timeout=3) as c:
                self.assertEqual(c.request("GET", "/health").status, 200)
            self.assertLess(time.monotonic() - t0, 2.5, "the new client waited for an idle one to time out")
            self.assertTrue(held[0].closed_within(3), "the oldest idle connection was not the one closed")
            for c in held[1:]:
                self.assertEqual(c.request("GET", "/health").status, 200)
        finally:
            for c in held:
                c.close()


class LaterDeadlines(ProxyTestCase):
    """Timeouts re-armed lazily (px/timer.h): a timer whose deadline moved
    later wakes at the old deadline and must re-arm for the rest, not run
    the timeout. Each case has a short timeout armed first and a longer one
    that replaces it, then waits past the short one."""

    def test_keepalive_outlives_the_header_timeout(self):
        # header 1 s armed when the request starts, keep-alive 4 s after it
        b = self.backend()
        p = self.proxy(self.service_config(b, extra_proxy="client_header_timeout = 1s\nkeepalive_timeout = 4s"))
        with Client(p.port) as c:
            self.assertEqual(c.request("GET", "/one").status, 200)
            time.sleep(1.8)  # past the header timeout, inside keep-alive (not scaled by SLOW: timeouts are not)
            self.assertEqual(c.request("GET", "/two").status, 200, "idle connection closed at the header timeout")
            t0 = time.monotonic()
            self.assertTrue(c.closed_within(6), "idle connection not closed at keepalive_timeout")
            self.assertGreater(time.monotonic() - t0, 3.0)

    def test_pooled_upstream_outlives_the_connect_timeout(self):
        # connect 1 s armed when the upstream connection opens, idle 60 s in the pool after it
        b = self.backend()
        p = self.proxy(self.service_config(b, extra_proxy="workers = 1\nupstream_connect_timeout = 1s"))
        with Client(p.port) as c:
            self.assertEqual(c.request("GET", "/one").status, 200)
            time.sleep(1.8)
            self.assertEqual(c.request("GET", "/two").status, 200)
        self.assertEqual(len(b.wait_requests(2)), 2)
        self.assertEqual(b.request_connections(), 1, "the pooled connection was closed at the connect timeout")
