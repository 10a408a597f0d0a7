#!/usr/bin/env python3
"""The demo app of compose.yaml: answers its COLOR on every path.
/up is the health check proxyd's deploy waits for; /slow?ms=N answers after N ms
(at most 60 s: a request in flight while proxyd drains)."""
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COLOR = os.environ.get("COLOR", "blue")


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(min(max(ms, 0), 60000) / 1000)
        body = ("%s\n" % COLOR).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("", int(os.environ.get("PORT", "3000"))), App).serve_forever()
