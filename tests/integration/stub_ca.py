"""A stub ACME CA for what pebble will not do: issue a certificate that is
not the one ordered. RFC 8555 only as far as proxyd's client needs it: every
authorization is already valid (no challenge), the order is ready at once,
finalize signs the CSR's key with the openssl CLI for `san` (a subjectAltName
value, "DNS:site.test"), valid `days` from `start_days` (negative: in the
past). HTTPS on 127.0.0.1 with a CA of its own (`ca_crt`, for ca_bundle);
served from a thread of the test; `close()` stops it and removes its files."""

import base64
import http.server
import json
import os
import shutil
import socketserver
import ssl
import subprocess
import tempfile
import threading


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   stdin=subprocess.DEVNULL, timeout=60)


def _b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class StubCA:
    def __init__(self, names):
        self.names = list(names)  # the order's identifiers
        self.san = ",".join("DNS:" + n for n in self.names)
        self.start_days, self.days = 0, 60
        self.dir = tempfile.mkdtemp(prefix="proxyd-stubca-")
        d = self.dir
        self.ca_crt = os.path.join(d, "ca.crt")
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", d + "/ca.key", "-subj", "/CN=stub-ca", "-days", "30", "-out", self.ca_crt)
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", d + "/srv.key", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-CA", self.ca_crt, "-CAkey", d + "/ca.key", "-days", "30", "-out", d + "/srv.crt")
        self.issued = None
        self.nonce = 0
        ca = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, body, ctype="application/json", extra=()):
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                ca.nonce += 1
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Replay-Nonce", "nonce%d" % ca.nonce)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.send(200, b"")

            def do_GET(self):
                self.route(b"")

            def do_POST(self):
                self.route(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def route(self, body):
                ca.route(self, body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d + "/srv.crt", d + "/srv.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.base = "https://127.0.0.1:%d" % self.server.server_address[1]
        self.directory = self.base + "/dir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def route(self, h, body):
        b, p = self.base, h.path
        order = {"status": "ready", "expires": "2099-01-01T00:00:00Z",
                 "identifiers": [{"type": "dns", "value": n} for n in self.names],
                 "authorizations": [b + "/authz/%d" % i for i in range(len(self.names))], "finalize": b + "/finalize"}
        if p == "/dir":
            return h.send(200, {"newNonce": b + "/nonce", "newAccount": b + "/acct", "newOrder": b + "/order"})
        if p == "/nonce":
            return h.send(200, b"")
        if p == "/acct":
            return h.send(201, {"status": "valid"}, extra=[("Location", b + "/acct/1")])
        if p == "/order":
            self.issued = None
            return h.send(201, order, extra=[("Location", b + "/order/1")])
        if p.startswith("/authz/"):
            n = self.names[int(p.rsplit("/", 1)[1])]
            return h.send(200, {"status": "valid", "identifier": {"type": "dns", "value": n},
                                "challenges": [{"type": "http-01", "url": b + "/ch", "token": "x" * 43,
                                                "status": "valid"}]})
        if p == "/finalize":
            self.issue(_b64(json.loads(_b64(json.loads(body)["payload"]))["csr"]))
        if p in ("/finalize", "/order/1"):
            if self.issued is not None:
                order.update(status="valid", certificate=b + "/cert")
            return h.send(200, order)
        if p == "/cert":
            with open(self.ca_crt, "rb") as f:
                return h.send(200, self.issued + f.read(), "application/pem-certificate-chain")
        h.send(404, {"type": "urn:ietf:params:acme:error:malformed"}, "application/problem+json")

    def issue(self, csr_der):
        d = self.dir
        with open(d + "/csr.der", "wb") as f:
            f.write(csr_der)
        with open(d + "/ext", "w") as f:
            f.write("subjectAltName=%s\n" % self.san)
        # openssl x509 -req has no notBefore option: a tiny CA config does
        _openssl("req", "-inform", "DER", "-in", d + "/csr.der", "-out", d + "/csr.pem")
        with open(d + "/ca.cnf", "w") as f:
            f.write("[ca]\ndefault_ca = c\n[c]\ndatabase = %s/index\nnew_certs_dir = %s\nserial = %s/serial\n"
                    "default_md = sha256\npolicy = p\ncopy_extensions = none\n[p]\ncommonName = optional\n"
                    % (d, d, d))
        open(d + "/index", "w").close()
        with open(d + "/serial", "w") as f:
            f.write("%04X\n" % (self.nonce + 1))
        import datetime
        now = datetime.datetime.now(datetime.timezone.utc)
        fmt = lambda t: t.strftime("%Y%m%d%H%M%SZ")
        _openssl("ca", "-batch", "-config", d + "/ca.cnf", "-cert", self.ca_crt, "-keyfile", d + "/ca.key",
                 "-in", d + "/csr.pem", "-out", d + "/issued.pem", "-notext", "-extfile", d + "/ext",
                 "-startdate", fmt(now + datetime.timedelta(days=self.start_days)),
                 "-enddate", fmt(now + datetime.timedelta(days=self.start_days + self.days)))
        with open(d + "/issued.pem", "rb") as f:
            self.issued = f.read()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, True)
