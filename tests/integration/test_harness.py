"""The harness's own checks, without proxyd: a test backend that receives a
malformed request records it, and the cleanup check that every
ProxyTestCase runs fails the test on it (as the sanitizer check does)
unless the backend was made with parse_errors_ok=True."""

import unittest

from harness import ProxyTestCase, raw_request, wait_until

BAD = (
    ("bad request line", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("not HTTP/1.x", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n"),
    ("space before the colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n 2\r\n\r\n"),
    ("bare LF in a header", b"GET / HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n"),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\x002\r\n\r\n"),
    ("bad Content-Length", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc"),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("chunk without its CRLF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"),
    ("garbage between requests", b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("bytes after Connection: close",
     b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"),
)

GOOD = (
    b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\nX-Empty:\r\nX-Sp: a b\t\r\nX-Utf8: \xc3\xa9\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"POST /l HTTP/1.0\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
)


class BackendParseCheck(ProxyTestCase):

    def send(self, b, data):
        raw_request(b.port, data, timeout=1.0, shut_wr=True)

    def test_malformed_requests_fail_the_cleanup_check(self):
        for what, data in BAD:
            with self.subTest(what):
                b = self.backend(parse_errors_ok=True)  # this test checks by hand
                self.send(b, data)
                self.assertTrue(wait_until(lambda: b.parse_errors, 3.0), "not recorded: %s" % what)
                b.parse_errors_ok = False
                with self.assertRaises(self.failureException) as cm:
                    self._check_backend_parse(b)
                self.assertIn("malformed request", str(cm.exception))
                b.parse_errors_ok = True

    def test_well_formed_requests_pass(self):
        b = self.backend()
        for data in GOOD:
            self.send(b, data)
        self.assertEqual(len(b.wait_requests(len(GOOD), 3.0)), len(GOOD))
        self.assertEqual(b.parse_errors, [])
        self._check_backend_parse(b)  # does not fail

    def test_parse_errors_ok_declares_them_expected(self):
        b = self.backend(parse_errors_ok=True)
        self.send(b, b"NOT HTTP\r\n\r\n")
        self.assertTrue(wait_until(lambda: b.parse_errors, 3.0))
        self._check_backend_parse(b)  # does not fail


if __name__ == "__main__":
    unittest.main()
