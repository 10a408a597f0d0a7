"""Byte-level HTTP/1.1 helpers shared by backends and clients: a buffered
socket Reader with deadlines, head parsing, Headers, chunked bodies,
response builders. Part of harness.py."""

import re
import socket
import time


class Closed(Exception):
    """The peer closed (or reset) the connection."""

    def __init__(self, how="closed", pending=b""):
        super().__init__("peer %s the connection%s" % (
            how, "; unread bytes: %r" % bytes(pending[:200]) if pending else " (nothing unread)"))


class Reader:
    """Buffered reads from a socket with an overall deadline per call."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _fill(self, deadline):
        if self.eof:
            raise Closed("closed", self.buf)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
            raise Closed("reset", self.buf)
        if not data:
            self.eof = True
            raise Closed("closed", self.buf)
        self.buf += data

    def until(self, delim, deadline=None, limit=1 << 20):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise ValueError("no %r within %d bytes" % (delim, limit))
            self._fill(deadline)

    def exact(self, n, deadline=None):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self, deadline=None):
        """Everything until EOF (or until the deadline passes)."""
        try:
            while True:
                self._fill(deadline)
        except (Closed, socket.timeout, OSError):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def parse_head(head):
    """b"START\\r\\nName: value\\r\\n...\\r\\n\\r\\n" -> (start line str, [(name, value)])."""
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return start, headers


class Headers(list):
    """A list of (name, value) with case-insensitive look-ups."""

    def get(self, name, default=None):
        for k, v in self:
            if k.lower() == name.lower():
                return v
        return default

    def get_all(self, name):
        return [v for k, v in self if k.lower() == name.lower()]

    def names(self):
        return [k.lower() for k, _ in self]


def header_tokens(value):
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


def read_chunked(reader, deadline):
    """Read a chunked body; returns (decoded, raw framing+data). Raises ValueError if malformed."""
    raw = bytearray()
    body = bytearray()
    while True:
        line = reader.until(b"\r\n", deadline, limit=8192)
        raw += line
        size_s = line[:-2].split(b";", 1)[0].strip()
        if not size_s or not re.fullmatch(rb"[0-9a-fA-F]+", size_s):
            raise ValueError("bad chunk size line %r" % line)
        size = int(size_s, 16)
        if size == 0:
            while True:  # trailers, then the final CRLF
                t = reader.until(b"\r\n", deadline, limit=16384)
                raw += t
                if t == b"\r\n":
                    return bytes(body), bytes(raw)
        data = reader.exact(size + 2, deadline)
        if data[-2:] != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        raw += data
        body += data[:-2]


def http_response(status=200, body=b"ok", headers=(), reason=None, head_only=False,
                  content_length=True):
    """Build a response with Content-Length (unless content_length=False)."""
    if isinstance(body, str):
        body = body.encode()
    reason = reason or _REASONS.get(status, "Status")
    out = ["HTTP/1.1 %d %s" % (status, reason)]
    for k, v in headers:
        out.append("%s: %s" % (k, v))
    if content_length:
        out.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return data if head_only else data + body


def chunked_response(pieces, status=200, headers=(), delay=0.0):
    """A chunked response as a list of send items (bytes, or float = sleep)."""
    items = [("HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Status"))
              + "".join("%s: %s\r\n" % kv for kv in headers)
              + "Transfer-Encoding: chunked\r\n\r\n").encode("latin-1")]
    for p in pieces:
        if delay:
            items.append(delay)
        items.append(b"%x\r\n%s\r\n" % (len(p), p))
    items.append(b"0\r\n\r\n")
    return items


_REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
            301: "Moved Permanently", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}

CLOSE = object()  # in a response item list: close the connection here
