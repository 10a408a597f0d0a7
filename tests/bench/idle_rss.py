#!/usr/bin/env python3
"""Resident memory of an idle TLS proxy after its first request.

usage: idle_rss.py [--acme] [PROXYD ...]   (default build/proxyd)
For each binary: proxyd with 1 worker, listen_https on a loopback ephemeral
port with certs-dev's certificate, one backend (python http.server), no
[acme] (--acme: enabled, its CA a closed loopback port); one curl request through it; then VmRSS and VmHWM from
/proc/PID/status, and whether libcurl is mapped (/proc/PID/maps). Run from
a built checkout after `make certs-dev`. Bounded: 20 s per binary."""
import os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def status(pid):
    with open("/proc/%d/status" % pid) as f:
        t = f.read()
    return {k: int(re.search(k + r":\s+(\d+)", t).group(1)) for k in ("VmRSS", "VmHWM")}


def measure(proxyd, acme):
    certs = os.path.join(ROOT, "certs-dev")
    with tempfile.TemporaryDirectory() as tmp:
        backend = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                                    "--directory", tmp], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        proxy = None
        try:
            line = backend.stdout.readline()
            bport = int(re.search(r"port (\d+)", line).group(1))
            log = os.path.join(tmp, "error.log")
            with open(os.path.join(tmp, "p.ini"), "w") as f:
                f.write("[proxy]\nworkers = 1\nlisten_https = 127.0.0.1:0\n%scontrol_socket = %s/c.sock\n"
                        "state_file = %s/s.json\naccess_log = off\nerror_log = %s\n"
                        "[tls]\ncertificate = %s/localhost.crt\ncertificate_key = %s/localhost.key\n"
                        "[service web]\ntargets = 127.0.0.1:%d\n"
                        % ("listen_http = 127.0.0.1:0\n" if acme else "", tmp, tmp, log, certs, certs, bport))
                if acme:
                    f.write("[acme]\nenabled = yes\ndirectory = https://127.0.0.1:9/dir\ndomains = example.test\n"
                            "config_dir = %s/le\nretry_interval = 1h\n" % tmp)
            proxy = subprocess.Popen([proxyd, "-c", os.path.join(tmp, "p.ini")], stdin=subprocess.DEVNULL)
            port, deadline = None, time.monotonic() + 20
            while port is None and time.monotonic() < deadline:
                time.sleep(0.05)
                m = os.path.exists(log) and re.search(r"listening https 127.0.0.1:(\d+)", open(log).read())
                port = int(m.group(1)) if m else None
            if port is None:
                raise RuntimeError("proxyd did not start (see its stderr)")
            subprocess.run(["curl", "-sS", "-o", "/dev/null", "--cacert", certs + "/ca.crt", "--resolve",
                            "localhost:%d:127.0.0.1" % port, "https://localhost:%d/" % port], check=True, timeout=10)
            time.sleep(0.5)
            st = status(proxy.pid)
            with open("/proc/%d/maps" % proxy.pid) as f:
                curl = "libcurl" in f.read()
            return st, curl
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait(10)
            backend.terminate()
            backend.wait(10)


args = sys.argv[1:]
acme = "--acme" in args
args = [a for a in args if a != "--acme"]
for binary in args or [os.path.join(ROOT, "build", "proxyd")]:
    st, curl = measure(binary, acme)
    print("%s: VmRSS %.1f MiB, VmHWM %.1f MiB, libcurl mapped: %s"
          % (binary, st["VmRSS"] / 1024, st["VmHWM"] / 1024, "yes" if curl else "no"))
