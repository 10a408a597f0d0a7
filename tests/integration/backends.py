"""Test backends: threads in the test process on 127.0.0.1:0 that record
the exact bytes of each request proxyd sends and answer with a scripted
response (RecordingBackend and its variants). Part of harness.py."""

import base64
import hashlib
import re
import socket
import threading
import time

from common import SLOW
from httpwire import (CLOSE, Closed, Headers, Reader, chunked_response, header_tokens, http_response,
                      parse_head, read_chunked)


class ParseError(ValueError):
    """A request from proxyd that a strict HTTP/1.1 server would refuse
    (RFC 9112): recorded in the backend's parse_errors, and the test fails
    at cleanup unless it declared them expected (ProxyTestCase.backend)."""


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE_RE = re.compile(_TOKEN + rb" [\x21-\x7e]+ HTTP/1\.[01]")
_FIELD_LINE_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\x21-\x7e\x80-\xff]([ \t\x21-\x7e\x80-\xff]*"
                            rb"[\x21-\x7e\x80-\xff])?)?[ \t]*")


def check_request_head(head):
    """Raise ParseError unless head (through CRLFCRLF) is a well-formed
    request line and field lines: CRLF only (no bare CR or LF), no empty line
    or other bytes before the request line, no obs-fold, no control bytes in
    a value, a Content-Length of digits."""
    if head.startswith(b"\r\n") or head.startswith(b"\n"):
        raise ParseError("empty line before the request line (garbage between requests?): %r" % head[:200])
    lines = head[:-4].split(b"\r\n")
    if not _REQUEST_LINE_RE.fullmatch(lines[0]):
        raise ParseError("bad request line %r" % lines[0][:200])
    for line in lines[1:]:
        m = _FIELD_LINE_RE.fullmatch(line)
        if not m:
            raise ParseError("bad header line %r in request %r" % (line[:200], lines[0][:100]))
        if m.group(1).lower() == b"content-length" and not re.fullmatch(rb"[0-9]+", m.group(2) or b""):
            raise ParseError("bad Content-Length %r in request %r" % (line[:200], lines[0][:100]))


class BackendRequest:
    """One request as the upstream received it."""

    def __init__(self, conn_id, head, body, raw_body, chunked):
        self.conn_id = conn_id
        self.head = head              # exact bytes of the head, up to and including CRLFCRLF
        self.body = body              # decoded body
        self.raw_body = raw_body      # body bytes as framed on the wire
        self.chunked = chunked
        self.raw = head + raw_body
        self.start_line, hdrs = parse_head(head)
        self.headers = Headers(hdrs)
        parts = self.start_line.split(" ")
        self.method = parts[0]
        self.target = parts[1] if len(parts) > 1 else ""
        self.version = parts[2] if len(parts) > 2 else ""
        self.path = self.target.split("?", 1)[0]
        self.time = time.time()

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def __repr__(self):
        return "<BackendRequest %r>" % self.start_line


def default_response(req):
    return http_response(200, b"ok", head_only=(req.method == "HEAD"))


class RecordingBackend:
    """Records every request (exact head bytes, decoded body) and answers with
    `response`: None (200 "ok"), bytes, or a function request -> bytes or a
    list of items (bytes; a float = sleep that many seconds; CLOSE = close).
    Requests to health_path ("/up") are answered 200 and kept apart in
    `health_requests`, so proxyd's active health checks never disturb counts.
    Keep-alive: the connection stays open unless the request or the response
    says Connection: close, or keep_alive=False."""

    def __init__(self, response=None, name=None, health_path="/up", healthy=True,
                 keep_alive=True, send_continue=True, parse_errors_ok=False):
        self.response = response
        self.name = name
        self.health_path = health_path
        self.healthy = healthy
        self.keep_alive = keep_alive
        self.send_continue = send_continue
        self.requests = []
        self.health_requests = []
        self.errors = []
        self.parse_errors = []        # ParseError texts: proxyd sent a malformed request
        self.parse_errors_ok = parse_errors_ok
        self.accepted = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._conns = []
        self._stopping = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # -- public ------------------------------------------------------------
    def reset(self):
        with self.lock:
            self.requests.clear()
            self.health_requests.clear()
            self.errors.clear()
            self.parse_errors.clear()

    def wait_requests(self, n, timeout=5.0):
        """Wait until at least n requests were recorded; returns a copy of the list."""
        deadline = time.monotonic() + timeout * SLOW
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.requests)

    def request_connections(self):
        """Distinct upstream connections that carried recorded requests."""
        with self.lock:
            return len({r.conn_id for r in self.requests})

    def open_connections(self):
        with self.lock:
            return sum(1 for c in self._conns if c.fileno() != -1)

    def close(self):
        self._stopping = True
        for s in [self.sock] + list(self._conns):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self._thread.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- internals ---------------------------------------------------------
    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self._stopping:
                    conn.close()
                    return
                conn_id = self.accepted
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve_conn, args=(conn, conn_id), daemon=True).start()

    def _serve_conn(self, conn, conn_id):
        try:
            self.serve(conn, conn_id, Reader(conn))
        except (Closed, OSError, socket.timeout):
            pass
        except ValueError as e:
            with self.lock:
                self.errors.append(str(e))
                if isinstance(e, ParseError):
                    self.parse_errors.append("connection %d: %s" % (conn_id, e))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def read_request(self, conn, conn_id, reader):
        """Read one request; returns BackendRequest or raises Closed, or
        ParseError (a ValueError) when proxyd sent a malformed one."""
        try:
            head = reader.until(b"\r\n\r\n", None, limit=1 << 20)
        except ValueError as e:
            raise ParseError("request head: %s" % e)
        check_request_head(head)
        _, hdrs = parse_head(head)
        h = Headers(hdrs)
        te = h.get_all("transfer-encoding")
        cls = h.get_all("content-length")
        if te and cls:
            raise ParseError("upstream request has both Transfer-Encoding and Content-Length")
        if len(set(cls)) > 1:
            raise ParseError("upstream request has differing Content-Length")
        if (self.send_continue and "100-continue" in header_tokens(h.get("expect"))):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if te:
            if header_tokens(",".join(te))[-1:] != ["chunked"]:
                raise ParseError("unsupported Transfer-Encoding %r" % te)
            try:
                body, raw = read_chunked(reader, None)
            except ValueError as e:
                raise ParseError("chunked body of %r: %s" % (head.split(b"\r\n", 1)[0][:100], e))
            return BackendRequest(conn_id, head, body, raw, True)
        n = int(cls[0]) if cls else 0
        body = reader.exact(n) if n else b""
        return BackendRequest(conn_id, head, body, body, False)

    def serve(self, conn, conn_id, reader):
        while not self._stopping:
            req = self.read_request(conn, conn_id, reader)
            if req.path == self.health_path and self.health_path:
                with self.lock:
                    self.health_requests.append(req)
                resp = http_response(200 if self.healthy else 503, b"up",
                                     head_only=req.method == "HEAD")
            else:
                with self.cond:
                    self.requests.append(req)
                    self.cond.notify_all()
                resp = self.respond(req)
            if not self.send_items(conn, resp):
                return
            if "close" in header_tokens(req.header("connection")) and reader.buf:
                raise ParseError("%d bytes after a Connection: close request: %r"
                                 % (len(reader.buf), bytes(reader.buf[:200])))
            if not self.keep_alive or "close" in header_tokens(req.header("connection")):
                return
            if isinstance(resp, (bytes, bytearray)):
                _, rh = parse_head(resp.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
                if "close" in header_tokens(Headers(rh).get("connection")):
                    return

    def respond(self, req):
        r = self.response
        if r is None:
            if self.name is not None:
                return http_response(200, self.name, head_only=req.method == "HEAD")
            return default_response(req)
        if callable(r):
            return r(req)
        return r

    def send_items(self, conn, resp):
        """Send bytes or a list of items; returns False when CLOSE was hit."""
        items = [resp] if isinstance(resp, (bytes, bytearray)) else resp
        for it in items:
            if it is CLOSE:
                return False
            if isinstance(it, (int, float)):
                time.sleep(it)
            else:
                conn.sendall(it)
        return True


class StreamingBackend(RecordingBackend):
    """Answers every request with `total` bytes of body sent in `pieces`
    writes, `delay` seconds apart (Content-Length framing unless chunked)."""

    def __init__(self, total=10 * 1024 * 1024, pieces=10, delay=0.0, chunked=False, **kw):
        self.body = (b"0123456789abcdef" * (total // 16 + 1))[:total]
        step = max(1, -(-total // pieces))
        parts = [self.body[i:i + step] for i in range(0, total, step)]
        if chunked:
            items = chunked_response(parts, delay=delay)
        else:
            items = [http_response(200, self.body, head_only=True)]
            for p in parts:
                if delay:
                    items.append(delay)
                items.append(p)
        super().__init__(response=lambda req: items, **kw)


class ClosingBackend(RecordingBackend):
    """Reads the request, then closes the connection without answering."""

    def __init__(self, **kw):
        super().__init__(response=lambda req: [CLOSE], **kw)


class SilentBackend(RecordingBackend):
    """Reads the request and never answers (until teardown)."""

    def __init__(self, **kw):
        super().__init__(response=self._hang, **kw)

    def _hang(self, req):
        deadline = time.monotonic() + 120
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        return [CLOSE]


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


class WebSocketBackend(RecordingBackend):
    """Answers an Upgrade: websocket request with 101 and Sec-WebSocket-Accept,
    then echoes every byte it receives (frames are not interpreted)."""

    def serve(self, conn, conn_id, reader):
        req = self.read_request(conn, conn_id, reader)
        if req.path == self.health_path:
            conn.sendall(http_response(200, b"up"))
            return
        with self.cond:
            self.requests.append(req)
            self.cond.notify_all()
        key = req.header("sec-websocket-key")
        if (req.header("upgrade") or "").lower() != "websocket" or not key:
            conn.sendall(http_response(400, b"not a websocket upgrade\n",
                                       headers=[("Connection", "close")]))
            return
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                      % ws_accept(key)).encode())
        if reader.buf:
            conn.sendall(bytes(reader.buf))
            reader.buf.clear()
        while not self._stopping:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
