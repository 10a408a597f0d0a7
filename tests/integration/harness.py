"""Integration-test harness for proxyd (stdlib only).

- Proxy: runs the real build/proxyd on a generated config in a temp dir,
  learns its ephemeral port from the error log, offers the access log,
  signals, reload and a bounded stop.
- Backends: threads in the test process on 127.0.0.1:0 that record the
  exact bytes each request carried and answer with a scripted response
  (RecordingBackend and its variants: Streaming, Closing, Silent,
  WebSocket).
- Clients: raw_request() and Client, a small HTTP/1.1 response reader for
  keep-alive and pipelining on one socket; curl().

Every wait is bounded; every process and socket is cleaned up by the
object that made it.
"""

import base64
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import weakref

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Scale for timing bounds (set by the runner for sanitizer builds).
SLOW = float(os.environ.get("PROXYD_TEST_SLOW", "1"))


def build_dir():
    d = os.environ.get("PROXYD_BUILD", "build")
    return d if os.path.isabs(d) else os.path.join(REPO, d)


def proxyd_path():
    return os.path.join(build_dir(), "proxyd")


def wait_until(pred, timeout=5.0, interval=0.02):
    """Poll pred() until it returns a true value or timeout passes; return the last value."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def free_port():
    """A loopback port with nothing listening on it (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def _pdeathsig():
    # The proxy dies with the test process, even if the test process is killed.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# --------------------------------------------------------------------------
# Proxy
# --------------------------------------------------------------------------

_LISTEN_RE = re.compile(r"\[info\] listening (http|https) (\S+)")
_STARTED_RE = re.compile(r"\[info\] proxyd \S+ started: ")


def _split_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class ProxyError(AssertionError):
    pass


_LIVE = weakref.WeakSet()  # every Proxy not yet closed


def kill_all():
    """SIGKILL every proxy still running (by PID) and remove its temp dir."""
    for p in list(_LIVE):
        try:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(5)
        except Exception:
            pass
        shutil.rmtree(p.tmp, ignore_errors=True)


def close_all():
    """Stop every proxy still running (the runner calls this at exit)."""
    for p in list(_LIVE):
        try:
            p.close()
        except Exception:
            pass


class Proxy:
    """A running proxyd. `config` is the INI text minus the harness's keys:
    `{tmp}` and any `{name}` passed in `subst` are replaced. The harness adds
    to [proxy] (unless the config sets them): listen_http = 127.0.0.1:0,
    workers = 2, access_log, control_socket and state_file in the temp dir.
    """

    DEFAULTS = (
        ("listen_http", "127.0.0.1:0"),
        ("workers", "2"),
        ("access_log", "{tmp}/access.log"),
        ("control_socket", "{tmp}/control.sock"),
        ("state_file", "{tmp}/state.json"),
    )

    def __init__(self, config="", subst=None, defaults=True, start=True, start_timeout=10.0):
        self.tmp = tempfile.mkdtemp(prefix="proxyd-test-")
        self.subst = dict(subst or {})
        self.defaults = defaults
        self.config_path = os.path.join(self.tmp, "proxyd.ini")
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        self.stdout_path = os.path.join(self.tmp, "stdout.log")
        self.proc = None
        self.port = None
        self.https_port = None
        self.returncode = None
        self._final_log = ""
        _LIVE.add(self)
        self.write_config(config)
        if start:
            try:
                self.start(start_timeout)
            except BaseException:
                self.close()
                raise

    # -- config ------------------------------------------------------------
    def render(self, config):
        text = config
        if self.defaults:
            text = _merge_proxy_section(text, self.DEFAULTS)
        for k, v in dict(self.subst, tmp=self.tmp).items():
            text = text.replace("{%s}" % k, str(v))
        return text

    def write_config(self, config):
        self.config_text = self.render(config)
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(self.config_text)
        os.rename(tmp, self.config_path)

    def _proxy_key(self, key):
        sect = None
        for line in self.config_text.splitlines():
            s = line.strip()
            if s.startswith("["):
                sect = s.strip("[]").strip()
            elif sect == "proxy" and "=" in s and not s.startswith((";", "#")):
                k, v = s.split("=", 1)
                if k.strip() == key:
                    return v.split(" ;")[0].strip()
        return None

    @property
    def error_log_path(self):
        p = self._proxy_key("error_log")
        return p if p and p != "-" else self.stderr_path

    @property
    def access_log_path(self):
        return self._proxy_key("access_log")

    # -- process -----------------------------------------------------------
    def start(self, timeout=10.0):
        exe = proxyd_path()
        if not os.access(exe, os.X_OK):
            raise ProxyError("proxyd binary not found: %s (run make)" % exe)
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [exe, "-c", self.config_path], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=self.tmp, preexec_fn=_pdeathsig)
        finally:
            out.close()
            err.close()
        want_https = self._proxy_key("listen_https") is not None
        want_http = self._proxy_key("listen_http") is not None

        def ready():
            if self.proc.poll() is not None:
                return True
            text = self.error_log_text()
            for kind, addr in _LISTEN_RE.findall(text):
                if kind == "http" and self.port is None:
                    self.port = _split_hostport(addr)[1]
                if kind == "https" and self.https_port is None:
                    self.https_port = _split_hostport(addr)[1]
            # "started" comes after everything that can still fail (the
            # control socket, the state file), not just the listeners
            return _STARTED_RE.search(text) is not None and \
                (self.port is not None or not want_http) and \
                (self.https_port is not None or not want_https)

        wait_until(ready, timeout)
        if self.proc.poll() is not None:
            raise ProxyError("proxyd exited with %s during start-up; log:\n%s"
                             % (self.proc.returncode, self.error_log_text()[-4000:]))
        if (want_http and self.port is None) or (want_https and self.https_port is None) or \
                _STARTED_RE.search(self.error_log_text()) is None:
            raise ProxyError("proxyd did not log 'listening http[s] ADDR' and 'started' within %.0fs; log:\n%s"
                             % (timeout * SLOW, self.error_log_text()[-4000:]))

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def https_url(self, path="/", host="localhost"):
        """The TLS listener's URL for `host` (pair it with curl --resolve, see curl_https())."""
        return "https://%s:%d%s" % (host, self.https_port, path)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def rss_kb(self):
        """Resident set size of the proxyd process (kB), from /proc."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for exit; returns the exit code or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout * SLOW)
            return self.returncode
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to timeout, then SIGKILL (by PID). Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        return self.returncode

    def close(self):
        try:
            self.stop()
        finally:
            if os.path.isdir(self.tmp):
                self._final_log = self.error_log_text()
                try:  # sanitizer reports go to stderr even when error_log is a file
                    with open(self.stderr_path, "rb") as f:
                        self._final_stderr = f.read().decode("utf-8", "replace")
                except OSError:
                    self._final_stderr = ""
                shutil.rmtree(self.tmp, ignore_errors=True)
            _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- logs --------------------------------------------------------------
    def error_log_text(self):
        try:
            with open(self.error_log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return self._final_log

    def access_log_lines(self, path=None):
        path = path or self.access_log_path
        try:
            with open(path, "rb") as f:
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        lines = data.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        else:
            lines = lines[:-1]  # a partial line is still being written
        return [json.loads(line) for line in lines if line.strip()]

    def wait_access_log(self, n, timeout=3.0, path=None):
        """Wait until the access log has at least n lines; return them."""
        wait_until(lambda: len(self.access_log_lines(path)) >= n, timeout)
        return self.access_log_lines(path)

    def reload(self, new_config, timeout=3.0):
        """Rewrite the config and send SIGHUP. Waits (bounded) for a new
        error-log line mentioning reload; returns the log text added since."""
        before = len(self.error_log_text())
        self.write_config(new_config)
        self.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload" in self.error_log_text()[before:].lower(), timeout)
        time.sleep(0.1)
        return self.error_log_text()[before:]


def _merge_proxy_section(text, defaults):
    """Insert (key, value) defaults into [proxy] unless the text sets the key there."""
    lines = text.split("\n")
    sect, proxy_idx, present = None, None, set()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("[") and "]" in s:
            sect = s[1:s.index("]")].strip()
            if sect == "proxy" and proxy_idx is None:
                proxy_idx = i
        elif sect == "proxy" and "=" in s and not s.startswith((";", "#")):
            present.add(s.split("=", 1)[0].strip())
    add = ["%s = %s" % (k, v) for k, v in defaults if k not in present]
    if proxy_idx is None:
        return "\n".join(["[proxy]"] + add + [""] + lines)
    return "\n".join(lines[:proxy_idx + 1] + add + lines[proxy_idx + 1:])


# --------------------------------------------------------------------------
# Byte-level HTTP helpers shared by backends and clients
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------

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
                 keep_alive=True, send_continue=True):
        self.response = response
        self.name = name
        self.health_path = health_path
        self.healthy = healthy
        self.keep_alive = keep_alive
        self.send_continue = send_continue
        self.requests = []
        self.health_requests = []
        self.errors = []
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
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def read_request(self, conn, conn_id, reader):
        """Read one request; returns BackendRequest or raises Closed/ValueError."""
        head = reader.until(b"\r\n\r\n", None, limit=1 << 20)
        _, hdrs = parse_head(head)
        h = Headers(hdrs)
        te = h.get_all("transfer-encoding")
        cls = h.get_all("content-length")
        if te and cls:
            raise ValueError("upstream request has both Transfer-Encoding and Content-Length")
        if len(set(cls)) > 1:
            raise ValueError("upstream request has differing Content-Length")
        if (self.send_continue and "100-continue" in header_tokens(h.get("expect"))):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if te:
            if header_tokens(",".join(te))[-1:] != ["chunked"]:
                raise ValueError("unsupported Transfer-Encoding %r" % te)
            body, raw = read_chunked(reader, None)
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


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# TestCase base
# --------------------------------------------------------------------------

class ProxyTestCase(unittest.TestCase):
    """Starts backends and proxies whose cleanup is registered with the test."""

    maxDiff = 4000

    def backend(self, cls=RecordingBackend, **kw):
        b = cls(**kw)
        self.addCleanup(b.close)
        return b

    def proxy(self, config="", **kw):
        p = Proxy(config, **kw)
        self._proxies = getattr(self, "_proxies", []) + [p]
        self.addCleanup(self._check_sanitizers, p)
        self.addCleanup(p.close)
        return p

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer")

    def _check_sanitizers(self, p):
        """After proxyd stopped (cleanups run last-in first-out): a sanitizer
        report in its error log fails the test (make asan)."""
        try:
            text = p.error_log_text() + getattr(p, "_final_stderr", "")
        except Exception:
            return
        for mark in self.SANITIZER_MARKS:
            if mark in text:
                i = text.index(mark)
                self.fail("proxyd sanitizer report:\n" + text[max(0, i - 200):i + 3000])

    def service_config(self, *backends, extra_proxy="", extra=""):
        """A catch-all service over the given backends."""
        return "[proxy]\n%s\n%s\n[service web]\ntargets = %s\n" % (
            extra_proxy, extra, " ".join(b if isinstance(b, str) else b.addr for b in backends))

    def assertSecurityHeaders(self, resp):
        self.assertEqual(resp.headers.get_all("x-frame-options"), ["DENY"], resp)
        self.assertEqual(resp.headers.get_all("x-content-type-options"), ["nosniff"], resp)
        self.assertEqual(resp.headers.get_all("x-xss-protection"), ["1; mode=block"], resp)
        self.assertIsNone(resp.header("strict-transport-security"), resp)


# --------------------------------------------------------------------------
# TLS: test certificates, config snippets, real TLS clients
# --------------------------------------------------------------------------

class Certs:
    """Paths of the test PKI made by make_certs(): a throwaway CA and leaves
    signed by it. Attributes name (crt, key) pairs:
      ec, rsa          CN=localhost, SAN DNS:localhost IP:127.0.0.1 (P-256 / RSA 2048)
      v2               CN=localhost-v2, same SAN, another key and serial (reload tests)
      other_ec, other_rsa  CN=other.test, SAN DNS:other.test
      wild             CN=*.wild.test, SAN DNS:*.wild.test
    plus `ca` (the CA certificate to verify with)."""

    LEAVES = (
        ("ec", "ec", "localhost", "DNS:localhost,IP:127.0.0.1"),
        ("rsa", "rsa", "localhost", "DNS:localhost,IP:127.0.0.1"),
        ("v2", "ec", "localhost-v2", "DNS:localhost,IP:127.0.0.1"),
        ("other_ec", "ec", "other.test", "DNS:other.test"),
        ("other_rsa", "rsa", "other.test", "DNS:other.test"),
        ("wild", "ec", "*.wild.test", "DNS:*.wild.test"),
    )

    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")
        self.ca_key = os.path.join(d, "ca.key")
        for name, _, _, _ in self.LEAVES:
            setattr(self, name, (os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")))

    def pem(self, name):
        """The PEM text of leaf `name`'s certificate."""
        with open(getattr(self, name)[0]) as f:
            return f.read().strip()


def _openssl(*args):
    r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args[:3]), r.stderr.decode()[-2000:]))
    return r.stdout


def make_certs(d):
    """Make the test PKI (see Certs) in directory d with the openssl CLI; returns Certs."""
    os.makedirs(d, exist_ok=True)
    c = Certs(d)
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", c.ca_key, "-out", c.ca, "-sha256", "-days", "30", "-subj", "/CN=proxyd test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for i, (name, kind, cn, san) in enumerate(Certs.LEAVES):
        crt, key = getattr(c, name)
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" \
            else ["-newkey", "rsa:2048"]
        _openssl("req", "-x509", "-new", *newkey, "-nodes", "-keyout", key, "-out", crt,
                 "-CA", c.ca, "-CAkey", c.ca_key, "-sha256", "-days", "30",
                 "-set_serial", "0x%x%04x" % (int(time.time()), 0x100 + i), "-subj", "/CN=" + cn,
                 "-addext", "subjectAltName=" + san, "-addext", "basicConstraints=CA:FALSE",
                 "-addext", "extendedKeyUsage=serverAuth")
    return c


_CERTS = None


def shared_certs():
    """The test PKI, made once per process (each test module runs in its own
    process) in a temp dir removed at exit. Tests that change files on disk
    copy them first (copy_cert)."""
    global _CERTS
    if _CERTS is None:
        import atexit
        d = tempfile.mkdtemp(prefix="proxyd-certs-")
        atexit.register(shutil.rmtree, d, True)
        _CERTS = make_certs(d)
    return _CERTS


def copy_cert(pair, dest_dir, name):
    """Copy a (crt, key) pair to dest_dir/name.{crt,key}; returns the new pair."""
    out = (os.path.join(dest_dir, name + ".crt"), os.path.join(dest_dir, name + ".key"))
    for src, dst in zip(pair, out):
        shutil.copyfile(src, dst)
    return out


def tls_config(certs=None, pairs=None, sni=(), **keys):
    """A [tls] section. pairs: the default certificate(s), a list of (crt, key)
    (default [certs.ec]); sni: (name, (crt, key)) items, one `sni =` line each;
    keys: more [tls] keys (session_timeout="0", alpn="http/1.1", ...)."""
    certs = certs or shared_certs()
    pairs = pairs or [certs.ec]
    lines = ["[tls]",
             "certificate = " + " ".join(p[0] for p in pairs),
             "certificate_key = " + " ".join(p[1] for p in pairs)]
    for name, (crt, key) in sni:
        lines.append("sni = %s:%s:%s" % (name, crt, key))
    for k, v in keys.items():
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


def tls_service_config(*backends, tls=None, extra_proxy="", extra=""):
    """[proxy] with listen_https = 127.0.0.1:0 (next to the harness's plain
    listener), `tls` (default tls_config()) and a catch-all service."""
    tls = tls if tls is not None else tls_config()
    return "[proxy]\nlisten_https = 127.0.0.1:0\n%s\n\n%s\n%s\n[service web]\ntargets = %s\n" % (
        extra_proxy, tls, extra, " ".join(b if isinstance(b, str) else b.addr for b in backends))


def curl_https(proxy, path="/", *args, host="localhost", ca=None, timeout=15.0, input=None):
    """curl https://host:PORT/path with --resolve host:PORT:127.0.0.1 (real SNI and
    name verification) and --cacert the test CA."""
    ca = ca or shared_certs().ca
    port = proxy if isinstance(proxy, int) else proxy.https_port
    return curl("--resolve", "%s:%d:127.0.0.1" % (host, port), "--cacert", ca,
                "https://%s:%d%s" % (host, port, path), *args, timeout=timeout, input=input)


class SClient:
    """Result of openssl s_client: .ok (exit 0), .out (stdout+stderr text)."""

    def __init__(self, proc):
        self.returncode = proc.returncode
        self.out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        self.ok = proc.returncode == 0

    def field(self, regex):
        m = re.search(regex, self.out, re.M)
        return m.group(1).strip() if m else None

    @property
    def subject_cn(self):
        """CN of the peer (leaf) certificate."""
        return self.field(r"^subject=.*?CN ?= ?([^,\n]+)")

    @property
    def protocol(self):
        return self.field(r"^\s*Protocol\s*:\s*(\S+)")

    @property
    def alpn(self):
        v = self.field(r"^ALPN protocol: (\S+)")
        return v

    @property
    def key_bits(self):
        v = self.field(r"^Server public key is (\d+) bit")
        return int(v) if v else None

    @property
    def verified(self):
        return re.search(r"Verify return code: 0 \(ok\)", self.out) is not None

    def leaf_pem(self):
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", self.out, re.S)
        return m.group(0).strip() if m else None

    def sessions(self):
        """'New' / 'Reused' per handshake, in order (-reconnect makes several)."""
        return re.findall(r"^(New|Reused), ", self.out, re.M)

    def __repr__(self):
        return "<s_client rc=%s\n%s>" % (self.returncode, self.out[-3000:])


def s_client(port, *args, servername="localhost", ca=None, input=b"", timeout=10.0):
    """openssl s_client -connect 127.0.0.1:PORT -CAfile CA -verify_return_error
    [-servername NAME] ARGS; stdin = input (EOF ends the session)."""
    ca = ca or shared_certs().ca
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", ca, "-verify_return_error"]
    cmd += ["-servername", servername] if servername else ["-noservername"]
    cmd += list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, input=input,
                       timeout=timeout * SLOW)
    return SClient(p)


class TlsClient(Client):
    """Client over TLS (OpenSSL through Python's ssl, verified against the test
    CA, SNI = host, ALPN http/1.1 unless alpn says otherwise)."""

    _contexts = {}  # one SSLContext per ALPN list, so a session can be offered again

    def __init__(self, port, host="localhost", timeout=5.0, alpn=("http/1.1",), session=None):
        import ssl
        ctx = self._contexts.get(tuple(alpn or ()))
        if ctx is None:
            ctx = ssl.create_default_context(cafile=shared_certs().ca)
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            self._contexts[tuple(alpn or ())] = ctx
        self.timeout = timeout * SLOW
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host, session=session)
        except BaseException:
            raw.close()
            raise
        self.reader = Reader(self.sock)


# --------------------------------------------------------------------------
# HTTP/2 client (Python h2 over an ssl socket with ALPN h2)
# --------------------------------------------------------------------------

def import_h2():
    """Import the h2 package (Debian python3-h2). When the running python is not
    Debian's (pyenv), fall back to Debian's dist-packages (h2 is pure Python)."""
    try:
        import h2.connection  # noqa: F401
    except ImportError:
        import sys
        for d in ("/usr/lib/python3/dist-packages",):
            if os.path.isdir(os.path.join(d, "h2")) and d not in sys.path:
                sys.path.append(d)
        import h2.connection  # noqa: F401
    import h2
    import h2.config
    import h2.events
    import h2.errors
    import h2.settings
    return h2


class H2Stream:
    def __init__(self, sid):
        self.id = sid
        self.headers = None        # response headers: Headers of (str, str)
        self.interim = []
        self.trailers = None
        self.data = bytearray()
        self.ended = False
        self.reset = None          # error code of a RST_STREAM from the server
        self.frames = 0

    @property
    def status(self):
        return int(self.headers.get(":status")) if self.headers else None

    @property
    def done(self):
        return self.ended or self.reset is not None

    def header(self, name, default=None):
        return self.headers.get(name, default) if self.headers else default

    def __repr__(self):
        return "<H2Stream %d status=%s ended=%s reset=%s %d bytes %r>" % (
            self.id, self.status, self.ended, self.reset, len(self.data),
            list(self.headers or [])[:20])


class GoAway:
    """A GOAWAY frame the server sent."""

    def __init__(self, last_stream_id, error_code, additional_data):
        self.last_stream_id = last_stream_id
        self.error_code = error_code
        self.additional_data = additional_data

    def __repr__(self):
        return "<GOAWAY last_stream_id=%d error_code=%d %r>" % (
            self.last_stream_id, self.error_code, self.additional_data[:100])


class H2Client:
    """An HTTP/2 client connection over TLS (ALPN h2, verified against the test
    CA). auto_window=True acknowledges received DATA (WINDOW_UPDATEs as h2
    decides); False leaves every WINDOW_UPDATE to the test. `settings`: local
    SETTINGS sent after the preface (e.g. {INITIAL_WINDOW_SIZE: 1024})."""

    def __init__(self, port, host="localhost", settings=None, auto_window=True, timeout=10.0, validate=True):
        import ssl
        self.h2 = import_h2()
        ctx = ssl.create_default_context(cafile=shared_certs().ca)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        self.alpn = self.sock.selected_alpn_protocol()
        cfg = self.h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                             validate_outbound_headers=validate,
                                             normalize_outbound_headers=validate)
        self.conn = self.h2.connection.H2Connection(config=cfg)
        self.timeout = timeout * SLOW
        self.auto_window = auto_window
        self.streams = {}
        self.terminated = []       # GoAway frames received, in order
        self.settings_acked = 0
        self.remote_settings_seen = False
        self.eof = False
        self.window_updates = 0
        self._inbuf = bytearray()
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = H2Stream(sid)
        return self.streams[sid]

    def request(self, method="GET", path="/", authority="localhost", headers=(), body=None,
                end_stream=None, scheme="https"):
        """Send HEADERS (and a small body in one go); returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method)]
        if method != "CONNECT":
            hdrs += [(":scheme", scheme), (":path", path)]
        hdrs += [(":authority", authority)] + list(headers)
        if end_stream is None:
            end_stream = not body
        self.conn.send_headers(sid, hdrs, end_stream=end_stream and not body)
        self.stream(sid)
        if body:
            self.send_body(sid, body, end_stream=end_stream is not False)
        self.flush()
        return sid

    def send_body(self, sid, data, end_stream=True, timeout=None):
        """Send data on a stream as the peer's flow-control windows allow."""
        deadline = time.monotonic() + (timeout * SLOW if timeout else self.timeout)
        view = memoryview(data)
        while len(view):
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                self.flush()
                if time.monotonic() >= deadline:
                    raise socket.timeout("no WINDOW_UPDATE for stream %d within the deadline" % sid)
                self.pump(0.2, lambda: self.conn.local_flow_control_window(sid) > 0 or self.stream(sid).done)
                if self.stream(sid).done:
                    raise Closed("stream %d closed by the server while sending" % sid)
                continue
            n = min(win, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def reset(self, sid, code=8):
        """RST_STREAM (default CANCEL)."""
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def pump(self, timeout, until=None):
        """Read and process frames until until() is true, timeout passes or EOF.
        Returns the last until() value (True when until is None and EOF)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            if until is not None:
                v = until()
                if v:
                    return v
            if self.eof:
                return until() if until else True
            left = deadline - time.monotonic()
            if left <= 0:
                return until() if until else False
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError, OSError):
                data = b""
            if not data:
                self.eof = True
                continue
            self.feed(data)

    def feed(self, data):
        """Split the bytes into frames; GOAWAY frames are recorded here and not
        given to h2 (which would refuse every later frame, while a graceful
        GOAWAY lets the open streams finish); the rest goes to h2."""
        self._inbuf += data
        out = bytearray()
        while len(self._inbuf) >= 9:
            length = int.from_bytes(self._inbuf[:3], "big")
            if len(self._inbuf) < 9 + length:
                break
            frame = bytes(self._inbuf[:9 + length])
            del self._inbuf[:9 + length]
            if frame[3] == 0x7:  # GOAWAY
                if out:
                    self._process(bytes(out))
                    out.clear()
                self.terminated.append(GoAway(
                    int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF, int.from_bytes(frame[13:17], "big"),
                    frame[17:]))
            else:
                out += frame
        if out:
            self._process(bytes(out))

    def _process(self, data):
        ev = self.h2.events
        for e in self.conn.receive_data(data):
            if isinstance(e, ev.ResponseReceived):
                s = self.stream(e.stream_id)
                h = Headers(e.headers)
                if h.get(":status", "").startswith("1"):
                    s.interim.append(h)
                else:
                    s.headers = h
            elif isinstance(e, ev.InformationalResponseReceived):
                self.stream(e.stream_id).interim.append(Headers(e.headers))
            elif isinstance(e, ev.TrailersReceived):
                self.stream(e.stream_id).trailers = Headers(e.headers)
            elif isinstance(e, ev.DataReceived):
                s = self.stream(e.stream_id)
                s.data += e.data
                s.frames += 1
                if self.auto_window and e.flow_controlled_length:
                    try:
                        self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                    except self.h2.exceptions.StreamClosedError:
                        pass
            elif isinstance(e, ev.StreamEnded):
                self.stream(e.stream_id).ended = True
            elif isinstance(e, ev.StreamReset):
                self.stream(e.stream_id).reset = int(e.error_code)
            elif isinstance(e, ev.SettingsAcknowledged):
                self.settings_acked += 1
            elif isinstance(e, ev.RemoteSettingsChanged):
                self.remote_settings_seen = True
            elif isinstance(e, ev.WindowUpdated):
                self.window_updates += 1
        self.flush_quiet()

    def flush_quiet(self):
        try:
            self.flush()
        except OSError:
            pass

    def wait_stream(self, sid, timeout=None):
        s = self.stream(sid)
        self.pump(timeout or self.timeout / SLOW, lambda: s.done)
        return s

    def get(self, path="/", authority="localhost", headers=(), timeout=None):
        """One GET; waits for the end of the response (bounded); returns H2Stream."""
        return self.wait_stream(self.request("GET", path, authority=authority, headers=headers), timeout)

    def close(self):
        try:
            self.conn.close_connection()
            self.flush()
        except Exception:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

