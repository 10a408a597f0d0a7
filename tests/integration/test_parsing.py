"""Strict request parsing: malformed or smuggling-prone requests get 400
(or 431/413) and never reach the upstream."""

import time

from harness import ProxyTestCase, raw_request, request_bytes

H = b"Host: t\r\n"

# (name, request bytes, allowed statuses)
BAD_REQUESTS = [
    ("cl_and_te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te_and_cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}),
    ("two_different_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", {400}),
    ("cl_list_differing", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", {400}),
    ("cl_negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", {400}),
    ("cl_plus_sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", {400}),
    ("cl_not_a_number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5x\r\n\r\nhello", {400}),
    ("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n  folded\r\n\r\n", {400}),
    ("space_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : a\r\n\r\n", {400}),
    ("space_before_colon_host", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", {400}),
    ("tab_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A\t: a\r\n\r\n", {400}),
    ("bare_lf", b"GET / HTTP/1.1\nHost: t\n\n", {400}),
    ("bare_lf_in_headers", b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n", {400}),
    ("bare_cr", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", {400}),
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}),
    ("bad_header_name", b"GET / HTTP/1.1\r\n" + H + b"X@Y: 1\r\n\r\n", {400}),
    ("empty_header_name", b"GET / HTTP/1.1\r\n" + H + b": 1\r\n\r\n", {400}),
    ("no_host_http11", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", {400}),
    ("two_hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    ("space_in_target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("http09_request_line", b"GET /\r\n\r\n", {400}),
    ("garbage_request_line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", {400}),
    ("te_not_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nxx", {501}),
    ("te_chunked_not_final", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", {501}),
    ("te_xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {501}),
    # nginx 1.22: Transfer-Encoding is exactly "chunked" (else 501) on one line (a second: 400)
    ("te_gzip_chunked_list", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501}),
    ("te_gzip_then_chunked_lines", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te_chunked_twice_lines", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("chunk_size_invalid", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_negative", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_0x", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_missing_crlf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", {400}),
    ("lowercase_method", b"get / HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("mixed_case_method", b"Post / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", {400}),
    ("digit_in_method", b"GET1 / HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("tchar_method", b"M!X / HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("connect_method", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", {400, 405, 501}),
]


class ParsingCase(ProxyTestCase):
    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(self.service_config(self.b, extra_proxy=(
            "client_header_timeout = 3s\nclient_body_timeout = 3s\n"
            "max_header_size = 4k\nmax_body_size = 1k")))

    def expect(self, data, statuses, closed=True):
        r = raw_request(self.p.port, data, timeout=5)
        self.assertIn(r.status, statuses, r)
        self.assertEqual(r.data.count(b"HTTP/1.1 "), 1, "more than one response: %r" % r)
        if closed:
            self.assertTrue(r.closed, "connection left open after %s: %r" % (r.status, r))
        time.sleep(0.05)
        self.assertEqual(self.b.requests, [], "request reached the upstream")
        return r


class StrictParsing(ParsingCase):
    pass


def _make_bad_request_test(data, statuses):
    def test(self):
        self.expect(data, statuses)
    return test


for _name, _data, _statuses in BAD_REQUESTS:
    setattr(StrictParsing, "test_" + _name, _make_bad_request_test(_data, _statuses))


class Limits(ParsingCase):
    def test_smuggled_request_after_cl_te_not_served(self):
        self.expect(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", {400})

    def test_header_too_large_431(self):
        self.expect(request_bytes("GET", "/", headers=[("X-Big", "a" * 8000)]), {431}, closed=False)

    def test_many_headers_too_large_431(self):
        hdrs = [("X-H%03d" % i, "v" * 40) for i in range(200)]
        self.expect(request_bytes("GET", "/", headers=hdrs), {431}, closed=False)

    def test_too_many_headers_431(self):
        hdrs = [("X-%d" % i, "1") for i in range(150)]  # about 1.3 KB: fits the size limit
        self.expect(request_bytes("GET", "/", headers=hdrs), {431, 400}, closed=False)

    def test_header_under_limit_ok(self):
        r = raw_request(self.p.port, request_bytes("GET", "/", headers=[("X-Big", "a" * 3000),
                                                                        ("Connection", "close")]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.b.wait_requests(1)[0].header("x-big"), "a" * 3000)

    def test_body_too_large_content_length_413(self):
        self.expect(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", {413}, closed=False)

    def test_body_too_large_with_expect_413_without_continue(self):
        r = self.expect(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
                        {413}, closed=False)
        self.assertNotIn(b"100 Continue", r.data)

    def test_body_at_limit_ok(self):
        r = raw_request(self.p.port, request_bytes("POST", "/", body=b"x" * 1024,
                                                   headers=[("Connection", "close")]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.b.wait_requests(1)[0].body), 1024)

    def test_body_too_large_chunked_413(self):
        data = (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n")
        r = raw_request(self.p.port, data, timeout=5)
        self.assertEqual(r.status, 413, r)
        time.sleep(0.05)
        self.assertEqual(self.b.requests, [], "a complete oversized request reached the upstream")

    def test_connection_usable_after_good_request(self):
        # sanity: the same proxy serves a well-formed request
        r = raw_request(self.p.port, request_bytes("GET", "/ok", headers=[("Connection", "close")]))
        self.assertEqual(r.status, 200, r)

