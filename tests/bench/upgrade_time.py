#!/usr/bin/env python3
"""How long a binary upgrade takes, and the memory of both processes meanwhile.

usage: upgrade_time.py [--conns N] [--runs R] [PROXYD [PROXYCTL]]   (default build/, 1000 conns, 3 runs)
proxyd with 2 workers on a loopback ephemeral port in front of a small
backend (python http.server); N keep-alive connections each make one request
and then stay idle. Then `proxyctl upgrade`, timing: the command's answer
(the new process serves) and the old process's exit (it closed its idle
connections and drained). VmRSS of both processes is sampled every 5 ms
from the command to the old one's exit; the peak of each, and of the two
together, is printed. Bounded: 60 s per run."""
import os, re, resource, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            m = re.search(r"VmRSS:\s+(\d+)", f.read())
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise RuntimeError("timed out")


def run(proxyd, proxyctl, nconns, tmp):
    log = os.path.join(tmp, "error.log")
    pidf = os.path.join(tmp, "proxyd.pid")
    sock = os.path.join(tmp, "c.sock")
    backend = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                                "--directory", tmp], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proxy, conns, last = None, [], None
    try:
        bport = int(re.search(r"port (\d+)", backend.stdout.readline()).group(1))
        with open(os.path.join(tmp, "p.ini"), "w") as f:
            f.write("[proxy]\nworkers = 2\nlisten_http = 127.0.0.1:0\ncontrol_socket = %s\nstate_file = %s/s.json\n"
                    "access_log = off\nerror_log = %s\npid_file = %s\nkeepalive_timeout = 5m\n"
                    "max_connections = 10000\n[service web]\ntargets = 127.0.0.1:%d\n"
                    % (sock, tmp, log, pidf, bport))
        proxy = subprocess.Popen([proxyd, "-c", os.path.join(tmp, "p.ini")], stdin=subprocess.DEVNULL)
        port = int(wait_for(lambda: os.path.exists(log) and
                            re.search(r"listening http 127.0.0.1:(\d+)", open(log).read()), 20).group(1))
        wait_for(lambda: os.path.exists(pidf), 10)
        req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(nconns):  # one request each, one at a time: idle keep-alive afterwards
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(req)
            conns.append(s)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            n = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            while len(body) < n:
                body += s.recv(65536)
        time.sleep(0.3)
        old = proxy.pid
        before = rss_kb(old)
        t0 = time.monotonic()
        ctl = subprocess.Popen([proxyctl, "--socket", sock, "--json", "upgrade"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        peak_old = peak_new = peak_sum = 0
        new = None
        t_ready = None
        while time.monotonic() - t0 < 60:
            if t_ready is None and ctl.poll() is not None:
                t_ready = time.monotonic() - t0
                if ctl.returncode != 0:
                    raise RuntimeError("upgrade failed: %s" % ctl.stderr.read().decode())
                new = int(re.search(r'"pid":\s*(\d+)', ctl.stdout.read().decode()).group(1))
                last = new
            ro = rss_kb(old) if alive(old) else 0
            rn = rss_kb(new) if new else 0
            peak_old, peak_new, peak_sum = max(peak_old, ro), max(peak_new, rn), max(peak_sum, ro + rn)
            if t_ready is not None and proxy.poll() is not None:
                break
            time.sleep(0.005)
        t_exit = time.monotonic() - t0
        return dict(before=before, ready_ms=t_ready * 1000, exit_ms=t_exit * 1000, peak_old=peak_old,
                    peak_new=peak_new, peak_sum=peak_sum, new_after=rss_kb(new))
    finally:
        for s in conns:
            s.close()
        if last and alive(last):
            os.kill(last, 15)
            wait_for(lambda: not alive(last), 20)
        if proxy is not None and proxy.poll() is None:
            proxy.terminate()
        if proxy is not None:
            proxy.wait(20)
        backend.terminate()
        backend.wait(10)


def main():
    args = sys.argv[1:]
    nconns, runs = 1000, 3
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--conns":
            nconns = int(args.pop(0))
        elif opt == "--runs":
            runs = int(args.pop(0))
    proxyd = os.path.abspath(args[0] if args else os.path.join(ROOT, "build", "proxyd"))
    proxyctl = os.path.abspath(args[1] if len(args) > 1 else os.path.join(ROOT, "build", "proxyctl"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, nconns * 2 + 256)), hard))
    print("%d idle keep-alive connections, 2 workers" % nconns)
    for i in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            r = run(proxyd, proxyctl, nconns, tmp)
        print("run %d: new serves after %.0f ms, old exited after %.0f ms; RSS before %d kB, peak old %d kB, "
              "peak new %d kB, peak both %d kB, new after %d kB"
              % (i + 1, r["ready_ms"], r["exit_ms"], r["before"], r["peak_old"], r["peak_new"], r["peak_sum"],
                 r["new_after"]))


if __name__ == "__main__":
    main()
