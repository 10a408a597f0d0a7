#!/usr/bin/env python3
"""A tiny application for `make run`: /up -> 200 "up"; anything else -> a
short text page showing the method, path and the forwarding headers it got.
`?delay=S` (up to 10 s) answers after S seconds: a slow request, to watch a
graceful stop or a drain finish it.

    python3 tests/demo_backend.py [--host 127.0.0.1] [--port 3000]
"""

import argparse
import html
import socket
import sys
import time
from urllib.parse import parse_qs, urlsplit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHOWN = ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP",
         "X-Request-ID", "X-Request-Start")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive with the proxy
    server_version = "demo-backend"

    def setup(self):
        super().setup()
        # head and body leave in two writes: without TCP_NODELAY the body
        # waits for the ACK of the head, which the proxy delays (~40 ms), as
        # any app server that forgets it would (gunicorn and puma set it)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body_in(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _reply(self, status, text, ctype="text/plain; charset=utf-8"):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        body = self._body_in()
        if self.path.split("?", 1)[0] == "/up":
            return self._reply(200, "up\n")
        delay = parse_qs(urlsplit(self.path).query).get("delay")
        if delay:
            try:
                time.sleep(min(max(float(delay[0]), 0.0), 10.0))
            except ValueError:
                pass
        rows = ["%-18s %s" % (h + ":", self.headers.get(h, "-")) for h in SHOWN]
        page = ("<!doctype html><title>proxyd demo</title><h1>proxyd demo backend</h1><pre>%s</pre>\n" %
                html.escape("\n".join(["%s %s" % (self.command, self.path), ""] + rows +
                                      (["", "body: %d bytes" % len(body)] if body else []))))
        self._reply(200, page, "text/html; charset=utf-8")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-backend: %s\n" % (fmt % args))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3000)
    args = ap.parse_args()
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    sys.stderr.write("demo-backend: listening on %s:%d\n" % (args.host, args.port))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
