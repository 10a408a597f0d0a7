"""H2Client: an HTTP/2 client over TLS (Python h2, ALPN h2, the test CA),
which records GOAWAY frames itself. Part of harness.py."""

import os
import socket
import time

from common import SLOW
from httpwire import Closed, Headers
from tlskit import shared_certs


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

    def __init__(self, port, host="localhost", settings=None, auto_window=True, timeout=10.0, validate=True,
                 cafile=None):
        import ssl
        self.h2 = import_h2()
        ctx = ssl.create_default_context(cafile=cafile or shared_certs().ca)
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
