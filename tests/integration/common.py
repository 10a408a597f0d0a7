"""Shared by the harness modules: where the build is, the SLOW scale for
every timing bound, bounded polling, ports, and the parent-death signal for
child processes. Part of harness.py (see its docstring)."""

import ctypes
import hashlib
import os
import signal
import socket
import time


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


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_issued = set()
_rand = __import__("random").SystemRandom()


def free_port():
    """A loopback port with nothing listening on it (bound, then released).

    Picked at random below the kernel's ephemeral range, never twice by one
    process: a port the kernel hands out (bind to 0, outgoing connections,
    a proxy told 127.0.0.1:0, the other suite CI runs beside this one) is
    taken from that range, so between this check and the test's own bind
    nothing else can pick it by chance; a port from bind(0) could be."""
    hi = _ephemeral_low()
    lo = max(10000, hi - 12000)
    for _ in range(500):
        port = _rand.randrange(lo, hi)
        if port in _issued:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _issued.add(port)
        return port
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
