"""HTTP/1.1 clients: request_bytes, raw_request, Client (keep-alive and
pipelining on one socket), get and curl. Part of harness.py."""

import os
import re
import socket
import subprocess
import time

from common import SLOW
from httpwire import Closed, Headers, Reader, header_tokens, parse_head, read_chunked


def request_bytes(method="GET", path="/", host="test.local", headers=(), body=b"",
                  version="HTTP/1.1", content_length=None):
    """Serialize a request. Content-Length is added when a body is given
    (unless headers already frame it or content_length=False)."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s %s" % (method, path, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    names = set()
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
        names.add(k.lower())
    if body and content_length is not False and not names & {"content-length", "transfer-encoding"}:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawResult:
    def __init__(self, data, closed, elapsed):
        self.data = data
        self.closed = closed      # the peer closed (EOF or reset) before the timeout
        self.elapsed = elapsed

    @property
    def status(self):
        m = re.match(rb"HTTP/1\.[01] (\d{3})", self.data)
        return int(m.group(1)) if m else None

    def __repr__(self):
        return "<RawResult closed=%s %.2fs %r>" % (self.closed, self.elapsed, self.data[:300])


def raw_request(port, data, timeout=5.0, shut_wr=False):
    """Send bytes, read until the peer closes or timeout passes."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    out = bytearray()
    closed = False
    try:
        if data:
            s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        deadline = t0 + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
    finally:
        s.close()
    return RawResult(bytes(out), closed, time.monotonic() - t0)


class Response:
    def __init__(self, version, status, reason, headers, body, head, interim):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = Headers(headers)
        self.body = body
        self.head = head
        self.interim = interim        # 1xx responses before this one (list of Response)
        self.chunked = False

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def __repr__(self):
        return "<Response %s %s %r %r>" % (self.status, self.reason, list(self.headers), self.body[:200])


class Client:
    """One client connection: send requests, read responses in order."""

    def __init__(self, port, timeout=5.0):
        self.timeout = timeout * SLOW
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = Reader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", path="/", **kw):
        """Send one request and read its response."""
        self.send(request_bytes(method, path, **kw))
        return self.read_response(method)

    def read_response(self, method="GET", timeout=None):
        deadline = time.monotonic() + (timeout * SLOW if timeout else self.timeout)
        interim = []
        while True:
            head = self.reader.until(b"\r\n\r\n", deadline)
            start, hdrs = parse_head(head)
            m = re.match(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", start)
            if not m:
                raise AssertionError("bad status line %r" % start)
            version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
            h = Headers(hdrs)
            if 100 <= status < 200 and status != 101:
                interim.append(Response(version, status, reason, hdrs, b"", head, []))
                continue
            body = b""
            chunked = False
            if method == "HEAD" or status in (101, 204, 304):
                pass
            elif "chunked" in header_tokens(h.get("transfer-encoding")):
                body, _ = read_chunked(self.reader, deadline)
                chunked = True
            elif h.get("content-length") is not None:
                body = self.reader.exact(int(h.get("content-length")), deadline)
            else:
                body = self.reader.rest(deadline)
            r = Response(version, status, reason, hdrs, body, head, interim)
            r.chunked = chunked
            return r

    def closed_within(self, timeout):
        """True when the peer closes (EOF/reset) within timeout; unread data is discarded."""
        deadline = time.monotonic() + timeout * SLOW
        try:
            while True:
                self.reader._fill(deadline)
        except Closed:
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def curl(*args, timeout=15.0, input=None):
    """Run curl (no proxy from the environment); returns CompletedProcess (bytes)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout * SLOW)] + list(args)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, input=input,
                          timeout=timeout * SLOW + 5, env=env)


def get(port, path="/", timeout=5.0, **kw):
    """One request on a fresh connection; returns Response."""
    with Client(port, timeout) as c:
        return c.request("GET", path, **kw)
