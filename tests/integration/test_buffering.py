"""Request and response buffering (DESIGN "Buffering"): [service]
buffer_requests (default yes), buffer_responses, buffer_memory,
max_request_body, max_response_body, [proxy] temp_dir, and the same as
proxyctl deploy flags kept in the state file."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from harness import (SLOW, Closed, H2Client, ProxyTestCase, Reader, RecordingBackend, chunked_response,
                     http_response, parse_head, Headers, proxyd_path, tls_service_config, wait_until)


def digest(req):
    return http_response(200, hashlib.sha256(req.body).hexdigest(), head_only=req.method == "HEAD")


def spool_fds(p, d):
    """proxyd's open files under temp_dir d (unlinked: '/d/#123 (deleted)')."""
    out = []
    base = "/proc/%d/fd" % p.pid
    for fd in os.listdir(base):
        try:
            t = os.readlink(os.path.join(base, fd))
        except OSError:
            continue
        if t.startswith(d + "/"):
            out.append(t)
    return out


def read_response(sock, timeout=10.0):
    """(status, headers, body) of one response with Content-Length framing."""
    r = Reader(sock)
    deadline = time.monotonic() + timeout * SLOW
    while True:
        head = r.until(b"\r\n\r\n", deadline)
        start, hdrs = parse_head(head)
        status = int(start.split(" ")[1])
        if status >= 200:
            break
    h = Headers(hdrs)
    n = int(h.get("content-length", "0"))
    return status, h, r.exact(n, deadline) if n else b""


class BufferCase(ProxyTestCase):
    def spool_dir(self):
        d = tempfile.mkdtemp(prefix="proxyd-spool-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def buffered_proxy(self, b, service="", proxy="", temp_dir=None):
        """A catch-all service over b with its own temp_dir, which must hold
        no file of proxyd's (open or not) when the test ends."""
        temp_dir = temp_dir or self.spool_dir()
        cfg = "[proxy]\ntemp_dir = %s\n%s\n[service web]\ntargets = %s\n%s" % (temp_dir, proxy, b.addr, service)
        p = self.proxy(cfg)
        self.addCleanup(self.no_spool_left, p, temp_dir)  # runs before the proxy stops
        return p

    def connect(self, p, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10 * SLOW)
        s.connect(("127.0.0.1", p.port))
        self.addCleanup(s.close)
        return s

    def no_spool_left(self, p, d):
        left = wait_until(lambda: not spool_fds(p, d), 5)
        self.assertTrue(left, "temp files still open: %r" % spool_fds(p, d))
        self.assertEqual(os.listdir(d), [])


class RequestBuffering(BufferCase):
    def slow_upload(self, service):
        """150 bytes, one every 10 ms; the backend's connection count is read
        before the last byte goes."""
        b = self.backend(response=digest)
        p = self.buffered_proxy(b, service)
        body = bytes(range(150))
        s = self.connect(p)
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(len(body) - 1):
            s.sendall(body[i:i + 1])
            time.sleep(0.01)
        opened_before_end = b.accepted
        s.sendall(body[-1:])
        status, _, resp = read_response(s)
        self.assertEqual(status, 200)
        self.assertEqual(resp.decode(), hashlib.sha256(body).hexdigest())
        return b, opened_before_end

    def test_slow_upload_holds_no_upstream_connection(self):
        b, opened = self.slow_upload("")
        self.assertEqual(opened, 0, "an upstream connection was open while the client was still uploading")
        req = b.wait_requests(1)[0]
        self.assertEqual(req.header("content-length"), "150")
        self.assertEqual(b.accepted, 1)

    def test_streamed_upload_holds_upstream_connection(self):
        """The contrast: buffer_requests = no streams the body as it comes."""
        _, opened = self.slow_upload("buffer_requests = no\n")
        self.assertEqual(opened, 1)

    def test_100_mib_upload_spills_to_disk_intact(self):
        d = self.spool_dir()
        seen = []

        class Peek(RecordingBackend):
            def read_request(self, conn, conn_id, reader):
                head = reader.until(b"\r\n\r\n", None)
                seen.append(spool_fds(p, d))  # the body waits in proxyd's temp file now
                reader.buf[0:0] = head
                return super().read_request(conn, conn_id, reader)

        b = self.backend(Peek, response=digest)
        p = self.buffered_proxy(b, temp_dir=d, proxy="max_body_size = 200m")
        size = 100 << 20
        chunk = os.urandom(1 << 20)
        h = hashlib.sha256()
        s = self.connect(p)
        s.sendall(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size >> 20):
            s.sendall(chunk)
            h.update(chunk)
        status, _, resp = read_response(s, timeout=60)
        self.assertEqual(status, 200)
        self.assertEqual(resp.decode(), h.hexdigest())
        req = b.wait_requests(1)[0]
        self.assertEqual(req.header("content-length"), str(size))
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(seen[0]), 1, "no temp file while the body went up: %r" % seen)
        self.no_spool_left(p, d)

    def test_over_max_request_body_413_before_reading(self):
        b = self.backend()
        p = self.buffered_proxy(b, "max_request_body = 1k\n")
        s = self.connect(p)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n")
        head = Reader(s).until(b"\r\n\r\n", time.monotonic() + 5 * SLOW)
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)  # no 100 Continue first
        self.assertEqual(b.accepted, 0)

    def test_over_max_request_body_chunked_413(self):
        b = self.backend()
        p = self.buffered_proxy(b, "max_request_body = 1k\n")
        s = self.connect(p)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        s.sendall(b"400\r\n" + b"a" * 1024 + b"\r\n")
        s.sendall(b"10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n")
        status, _, _ = read_response(s)
        self.assertEqual(status, 413)
        self.assertEqual(b.accepted, 0)

    def test_chunked_upload_goes_up_with_content_length(self):
        b = self.backend(response=digest)
        p = self.buffered_proxy(b)
        s = self.connect(p)
        s.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n")
        status, _, resp = read_response(s)
        self.assertEqual(status, 200)
        req = b.wait_requests(1)[0]
        self.assertFalse(req.chunked, req.head)
        self.assertIsNone(req.header("transfer-encoding"))
        self.assertEqual(req.headers.get_all("content-length"), ["11"])
        self.assertEqual(req.body, b"hello world")

    def test_expect_100_continue_answered_by_proxyd(self):
        b = self.backend(response=digest)
        p = self.buffered_proxy(b)
        s = self.connect(p)
        s.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        r = Reader(s)
        interim = r.until(b"\r\n\r\n", time.monotonic() + 5 * SLOW)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(b.accepted, 0)  # proxyd, not the upstream, said continue
        s.sendall(b"abcde")
        head = r.until(b"\r\n\r\n", time.monotonic() + 5 * SLOW)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        req = b.wait_requests(1)[0]
        self.assertIsNone(req.header("expect"), req.head)
        self.assertEqual(req.body, b"abcde")

    def test_client_leaves_mid_upload_temp_file_closed(self):
        d = self.spool_dir()
        b = self.backend()
        p = self.buffered_proxy(b, "buffer_memory = 64k\n", temp_dir=d)
        s = self.connect(p)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (10 << 20))
        s.sendall(os.urandom(1 << 20))
        self.assertTrue(wait_until(lambda: spool_fds(p, d), 5), "the body did not spill")
        s.close()
        self.no_spool_left(p, d)
        self.assertEqual(b.accepted, 0)

    def test_h2_upload_without_length_goes_up_with_content_length(self):
        b = self.backend(response=digest)
        p = self.proxy(tls_service_config(b))
        c = H2Client(p.https_port)
        self.addCleanup(c.close)
        body = os.urandom(200 * 1024)
        sid = c.request("POST", "/h2", end_stream=False)
        for i in range(0, len(body), 50 * 1024):
            c.send_body(sid, body[i:i + 50 * 1024], end_stream=False)
        c.send_body(sid, b"", end_stream=True)
        st = c.wait_stream(sid)
        self.assertEqual(st.status, 200, st)
        self.assertEqual(bytes(st.data).decode(), hashlib.sha256(body).hexdigest())
        up = b.wait_requests(1)[0]
        self.assertFalse(up.chunked, up.head)
        self.assertEqual(up.headers.get_all("content-length"), [str(len(body))])


    def test_h2_slow_upload_holds_no_upstream_connection(self):
        b = self.backend(response=digest)
        p = self.proxy(tls_service_config(b))
        c = H2Client(p.https_port)
        self.addCleanup(c.close)
        sid = c.request("POST", "/slow", end_stream=False)
        body = b""
        for i in range(60):
            piece = bytes([i]) * 10
            c.send_body(sid, piece, end_stream=False)
            body += piece
            time.sleep(0.01)
        opened_before_end = b.accepted
        c.send_body(sid, b"", end_stream=True)
        st = c.wait_stream(sid)
        self.assertEqual(st.status, 200, st)
        self.assertEqual(bytes(st.data).decode(), hashlib.sha256(body).hexdigest())
        self.assertEqual(opened_before_end, 0)
        self.assertEqual(b.wait_requests(1)[0].header("content-length"), str(len(body)))

    def test_h2_over_max_request_body_413(self):
        b = self.backend()
        p = self.proxy(tls_service_config(b) + "max_request_body = 1k\n")
        c = H2Client(p.https_port)
        self.addCleanup(c.close)
        declared = c.request("POST", "/a", headers=[("content-length", "2000")], end_stream=False)
        self.assertEqual(c.wait_stream(declared).status, 413)
        streamed = c.request("POST", "/b", end_stream=False)
        c.send_body(streamed, b"x" * 1000, end_stream=False)
        c.send_body(streamed, b"y" * 1000, end_stream=True)
        self.assertEqual(c.wait_stream(streamed).status, 413)
        self.assertEqual(b.accepted, 0)


class ResponseBuffering(BufferCase):
    def test_slow_reader_frees_upstream_at_once(self):
        """A client that reads nothing of a 10 MiB response: the upstream
        writes it all, and its connection goes back to the pool (the next
        request reuses it) while the client has read nothing."""
        d = self.spool_dir()
        big = os.urandom(10 << 20)
        done = threading.Event()

        class Big(RecordingBackend):
            def send_items(self, conn, resp):
                ok = super().send_items(conn, resp)
                if resp is not small:
                    done.set()
                return ok

        small = http_response(200, b"small")
        b = self.backend(Big, response=lambda req: small if req.path == "/small" else http_response(200, big))
        p = self.buffered_proxy(b, "buffer_responses = yes\n", proxy="workers = 1", temp_dir=d)
        s = self.connect(p, rcvbuf=4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(done.wait(15 * SLOW), "the upstream could not write its response")
        self.assertEqual(len(spool_fds(p, d)), 1, "the response did not spill to temp_dir")
        s2 = self.connect(p)
        s2.sendall(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(read_response(s2)[2], b"small")
        reqs = b.wait_requests(2)
        self.assertEqual(reqs[1].conn_id, reqs[0].conn_id, "the upstream connection was not back in the pool")
        status, _, body = read_response(s, timeout=30)
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(big).hexdigest())
        self.no_spool_left(p, d)

    def test_h2_slow_reader_frees_upstream_at_once(self):
        """The same over HTTP/2: a stream whose window the client does not
        open (it reads nothing) still frees its upstream."""
        d = self.spool_dir()
        big = os.urandom(10 << 20)
        done = threading.Event()

        class Big(RecordingBackend):
            def send_items(self, conn, resp):
                ok = super().send_items(conn, resp)
                done.set()
                return ok

        b = self.backend(Big, response=http_response(200, big))
        p = self.proxy(tls_service_config(b, extra_proxy="temp_dir = %s\nworkers = 1" % d)
                       + "buffer_responses = yes\n")
        c = H2Client(p.https_port)
        self.addCleanup(c.close)
        sid = c.request("GET", "/big")
        self.assertTrue(done.wait(15 * SLOW), "the upstream could not write its response")
        self.assertEqual(len(spool_fds(p, d)), 1, "the response did not spill to temp_dir")
        st = c.wait_stream(sid, timeout=30)
        self.assertEqual(st.status, 200, st)
        self.assertEqual(hashlib.sha256(bytes(st.data)).hexdigest(), hashlib.sha256(big).hexdigest())
        self.no_spool_left(p, d)

    def test_client_leaves_mid_response_temp_file_closed(self):
        d = self.spool_dir()
        b = self.backend(response=http_response(200, os.urandom(10 << 20)))
        p = self.buffered_proxy(b, "buffer_responses = yes\n", temp_dir=d)
        s = self.connect(p, rcvbuf=4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        s.recv(1000)
        self.assertTrue(wait_until(lambda: spool_fds(p, d), 10), "the response did not spill")
        s.close()
        self.no_spool_left(p, d)

    def test_server_sent_events_pass_event_by_event(self):
        """Each event reaches the client before the upstream sends the next
        (kamal-proxy's response buffering holds them all to the end). Buffered
        or not, proxyd hands bytes on at once; event-stream also keeps the
        upstream's backpressure (test_x_accel_buffering_no_passes_unbuffered)."""
        got = [threading.Event() for _ in range(3)]
        order = []

        class Events(RecordingBackend):
            def serve(self, conn, conn_id, reader):
                self.read_request(conn, conn_id, reader)
                items = chunked_response([], headers=[("Content-Type", "text/event-stream")])
                conn.sendall(items[0])
                for i in range(3):
                    ev = b"data: %d\n\n" % i
                    conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
                    order.append(got[i].wait(5 * SLOW))
                conn.sendall(b"0\r\n\r\n")

        b = self.backend(Events)
        p = self.buffered_proxy(b, "buffer_responses = yes\nbuffer_memory = 0\n")
        s = self.connect(p)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 20 * SLOW
        while not got[2].is_set() and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            for i in range(3):
                if b"data: %d\n\n" % i in data:
                    got[i].set()
        wait_until(lambda: len(order) == 3, 5)
        self.assertEqual(order, [True, True, True], data)

    def test_x_accel_buffering_no_passes_unbuffered(self):
        """X-Accel-Buffering: no on a buffered service: the response streams
        with backpressure, so its upstream connection stays busy (the next
        request needs another one) and nothing goes to temp_dir."""
        self.check_streams_unbuffered(("X-Accel-Buffering", "no"))

    def test_event_stream_passes_unbuffered(self):
        """Content-Type: text/event-stream on a buffered service streams as
        X-Accel-Buffering: no does (an endless stream cannot be spooled).
        Without either header the same response is spooled and frees its
        upstream: test_slow_reader_frees_upstream_at_once."""
        self.check_streams_unbuffered(("Content-Type", "text/event-stream"))

    def check_streams_unbuffered(self, header):
        d = self.spool_dir()
        big = b"v" * (32 << 20)  # more than the kernel buffers on the way can hold
        small = http_response(200, b"small")
        b = self.backend(response=lambda req: small if req.path == "/small" else
                         http_response(200, big, headers=[header]))
        p = self.buffered_proxy(b, "buffer_responses = yes\n", proxy="workers = 1", temp_dir=d)
        s = self.connect(p, rcvbuf=4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        b.wait_requests(1)
        s2 = self.connect(p)
        s2.sendall(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(read_response(s2)[2], b"small")
        reqs = b.wait_requests(2)
        self.assertNotEqual(reqs[1].conn_id, reqs[0].conn_id, "the streaming upstream was given back early")
        self.assertEqual(spool_fds(p, d), [])
        status, _, body = read_response(s, timeout=60)
        self.assertEqual((status, len(body)), (200, len(big)))

    def test_content_length_over_max_response_body_502(self):
        b = self.backend(response=http_response(200, b"x" * 2000))
        p = self.buffered_proxy(b, "buffer_responses = yes\nmax_response_body = 1000\n")
        s = self.connect(p)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(read_response(s)[0], 502)
        self.assertIn("over max_response_body", p.error_log_text())

    def test_chunked_over_max_response_body_cut(self):
        b = self.backend(response=chunked_response([b"y" * 600, b"z" * 600], delay=0.2))
        p = self.buffered_proxy(b, "buffer_responses = yes\nmax_response_body = 1000\n")
        s = self.connect(p)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        self.assertIn(b"y" * 600, data)
        self.assertNotIn(b"z", data.split(b"\r\n\r\n", 1)[1])
        self.assertFalse(data.endswith(b"0\r\n\r\n"), "the cut response looked complete")


def mount_tmpfs(case, size="1m"):
    if os.geteuid() != 0:
        case.skipTest("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="proxyd-full-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", d],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        os.rmdir(d)
        case.skipTest("mount tmpfs: %s" % r.stderr.decode(errors="replace"))
    case.addCleanup(os.rmdir, d)
    case.addCleanup(subprocess.run, ["umount", "-l", d], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return d


def used_bytes(d):
    st = os.statvfs(d)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class FullTempDir(BufferCase):
    def test_full_temp_dir_request_500_and_log(self):
        d = mount_tmpfs(self)
        b = self.backend()
        p = self.buffered_proxy(b, "buffer_memory = 64k\n", temp_dir=d)
        s = self.connect(p)
        size = 4 << 20
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        try:
            for _ in range(size >> 16):
                s.sendall(b"q" * 65536)
        except OSError:
            pass  # proxyd answered and closed before the whole body went
        self.assertEqual(read_response(s)[0], 500)
        self.assertTrue(wait_until(lambda: "cannot buffer it in temp_dir" in p.error_log_text(), 5),
                        p.error_log_text())
        self.assertEqual(b.accepted, 0)
        self.no_spool_left(p, d)
        self.assertTrue(wait_until(lambda: used_bytes(d) == 0, 5), used_bytes(d))

    def test_full_temp_dir_response_cut_and_log(self):
        d = mount_tmpfs(self)
        big = os.urandom(8 << 20)
        b = self.backend(response=http_response(200, big))
        p = self.buffered_proxy(b, "buffer_responses = yes\nbuffer_memory = 64k\n", temp_dir=d)
        s = self.connect(p, rcvbuf=4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(wait_until(lambda: "cannot buffer it in temp_dir" in p.error_log_text(), 10),
                        p.error_log_text())
        got = 0
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except (OSError, Closed):
            pass
        self.assertLess(got, len(big), "the whole response arrived through a full temp_dir")
        self.no_spool_left(p, d)
        self.assertTrue(wait_until(lambda: used_bytes(d) == 0, 5), used_bytes(d))


class DeployFlags(BufferCase):
    def test_deploy_flags_kept_in_state(self):
        b = self.backend(response=digest)
        p = self.proxy("[proxy]\n")
        exe = os.path.join(os.path.dirname(proxyd_path()), "proxyctl")

        def ctl(*args):
            return subprocess.run([exe, "--socket", os.path.join(p.tmp, "control.sock")] + list(args),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30 * SLOW)

        r = ctl("deploy", "web", "--target", b.addr, "--buffer-requests=true", "--buffer-responses",
                "--buffer-memory", "65536", "--max-request-body=1000", "--max-response-body", "5000")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(p.tmp, "state.json")) as f:
            st = json.load(f)
        self.assertEqual(st["services"][0]["buffering"],
                         {"requests": True, "responses": True, "memory": 65536, "max_request_body": 1000,
                          "max_response_body": 5000})
        s = self.connect(p)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n")
        self.assertEqual(read_response(s)[0], 413)
        # a rollback keeps them (as the health-check timings: the last deploy's)
        b2 = self.backend(response=digest)
        self.assertEqual(ctl("deploy", "web", "--target", b2.addr, "--max-request-body=1000").returncode, 0)
        self.assertEqual(ctl("rollback", "web").returncode, 0)
        with open(os.path.join(p.tmp, "state.json")) as f:
            st = json.load(f)
        self.assertEqual(st["services"][0]["active"], [b.addr])
        self.assertEqual(st["services"][0]["buffering"],
                         {"requests": True, "responses": False, "memory": 1 << 20, "max_request_body": 1000,
                          "max_response_body": 0})
        # restored on restart: a new proxyd on the same state file
        p.stop()
        p = self.proxy("[proxy]\nstate_file = %s\n" % os.path.join(p.tmp, "state.json"))
        s = self.connect(p)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n")
        self.assertEqual(read_response(s)[0], 413)
        s = self.connect(p)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789")
        self.assertEqual(read_response(s)[0], 200)
