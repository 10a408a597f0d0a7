#!/usr/bin/env python3
"""proxyd test-suite runner.

    python3 tests/run.py [--build DIR] [-k SUBSTR] [--unit-only | --integration-only]

1. Runs every BUILD/tests/test_* unit binary. Each prints "ok - NAME" or
   "not ok - NAME: ..." per test; a binary that crashes, times out or exits
   non-zero without a "not ok" line counts as one failure named after it.
2. Runs every tests/integration/test_*.py (unittest). Each module runs in a
   child process with a time limit, so a hung or crashed module cannot stall
   the suite; each test method counts once, errors count as failures.

Prints "ok - NAME" / "not ok - NAME: first line" as it goes, the full
reports of the failures at the end, and as the very last line
"N passed, N failed". Exit status 1 if anything failed or nothing ran.
"""

import argparse
import atexit
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
INTEGRATION = os.path.join(HERE, "integration")
MODULE_TIMES = []  # (seconds, module) of each integration module run
MARK = "@@RESULT "  # child -> parent: one JSON object per finished test


def slow_factor(build):
    if "PROXYD_TEST_SLOW" in os.environ:
        return float(os.environ["PROXYD_TEST_SLOW"])
    return 3.0 if "asan" in os.path.basename(build.rstrip("/")) else 1.0


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def first_line(text, limit=300):
    text = (text or "").strip().splitlines()
    s = text[0] if text else ""
    return s if len(s) <= limit else s[:limit] + "..."


# --------------------------------------------------------------------------
# unit binaries
# --------------------------------------------------------------------------

def run_unit(build, pattern, slow, failures):
    tdir = os.path.join(build, "tests")
    if not os.path.isdir(tdir):
        return 0, 0
    passed = failed = 0
    for name in sorted(os.listdir(tdir)):
        path = os.path.join(tdir, name)
        if not name.startswith("test_") or not os.path.isfile(path) or not os.access(path, os.X_OK):
            continue
        t0 = time.monotonic()
        try:
            proc = subprocess.run([path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
                                  stdin=subprocess.DEVNULL, timeout=120 * slow)
            out, rc, why = proc.stdout.decode("utf-8", "replace"), proc.returncode, None
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout or b"").decode("utf-8", "replace"), None
            why = "timed out after %.0fs" % (120 * slow)
        matched = not pattern or pattern in name
        saw_not_ok = False
        for line in out.splitlines():
            for prefix, ok in (("ok - ", True), ("not ok - ", False)):
                if line.startswith(prefix):
                    rest = line[len(prefix):]
                    test, _, msg = rest.partition(": ")
                    full = "%s.%s" % (name, test)
                    if pattern and pattern not in full:
                        break
                    matched = True
                    if ok:
                        passed += 1
                        emit("ok - " + full)
                    else:
                        saw_not_ok = True
                        failed += 1
                        emit("not ok - %s: %s" % (full, msg))
                        failures.append((full, line))
                    break
        if matched and (why or (rc != 0 and not saw_not_ok)):
            if why is None:
                why = ("killed by signal %d" % -rc) if rc < 0 else "exit status %d" % rc
            failed += 1
            emit("not ok - %s: %s" % (name, why))
            failures.append((name, "%s: %s (%.1fs)\n%s" % (name, why, time.monotonic() - t0, out[-6000:])))
    return passed, failed


# --------------------------------------------------------------------------
# integration tests: parent side
# --------------------------------------------------------------------------

def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def discover():
    sys.path.insert(0, INTEGRATION)
    loader = unittest.TestLoader()
    suite = loader.discover(INTEGRATION, pattern="test_*.py", top_level_dir=INTEGRATION)
    return list(iter_tests(suite))


def run_integration(build, pattern, slow, failures):
    tests = discover()
    by_module = {}
    passed = failed = 0
    for t in tests:
        tid = t.id()
        if tid.startswith("unittest.loader._FailedTest"):  # a module that does not import
            name = tid.split(".")[-1]
            failed += 1
            err = getattr(t, "_exception", None)
            emit("not ok - %s: cannot import: %s" % (name, first_line(str(err))))
            failures.append((name, str(err)))
            continue
        if pattern and pattern not in tid:
            continue
        by_module.setdefault(tid.split(".")[0], []).append(tid)
    for module, ids in by_module.items():
        m0 = time.monotonic()
        p, f = run_module(module, ids, build, slow, failures)
        MODULE_TIMES.append((time.monotonic() - m0, module))
        passed += p
        failed += f
    return passed, failed


def run_module(module, ids, build, slow, failures):
    limit = float(os.environ.get("PROXYD_TEST_MODULE_TIMEOUT") or min(60 + 20 * len(ids), 300) * slow)
    env = dict(os.environ, PROXYD_BUILD=build, PROXYD_TEST_SLOW=str(slow), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-u", os.path.abspath(__file__), "--child", "--build", build]
                            + ids, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
    lines = queue.Queue()

    def pump():
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    done = {}
    deadline = time.monotonic() + limit
    timed_out = False
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            timed_out = True
            break
        if line is None:
            break
        if line.startswith(MARK):
            r = json.loads(line[len(MARK):])
            done[r["id"]] = r
            if r["ok"]:
                emit("ok - %s%s" % (r["id"], " # skip " + r["skip"] if r.get("skip") else ""))
            else:
                emit("not ok - %s: %s" % (r["id"], r["msg"]))
                failures.append((r["id"], r["report"]))
        else:
            sys.stdout.write("    " + line if line.strip() else line)  # stray output from a test
            sys.stdout.flush()
        if time.monotonic() > deadline:
            timed_out = True
            break
    if timed_out:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rc = proc.wait()
    why = ("module timed out after %.0fs" % limit) if timed_out else "no result (child exited with %s)" % rc
    for tid in ids:
        if tid not in done:
            emit("not ok - %s: %s" % (tid, why))
            failures.append((tid, why))
            done[tid] = {"ok": False}
    passed = sum(1 for tid in ids if done[tid]["ok"])
    return passed, len(ids) - passed


# --------------------------------------------------------------------------
# integration tests: child side (one module)
# --------------------------------------------------------------------------

class LineResult(unittest.TestResult):
    """Reports each test once, as a JSON line for the parent."""

    def __init__(self):
        super().__init__()
        self.current = {}

    def startTest(self, test):
        super().startTest(test)
        self.current = {"id": test.id(), "ok": True, "t0": time.monotonic()}

    def _fail(self, test, err, case=None):
        if not self.current.get("ok", True):
            return  # report the first failure of a test
        case = case or test
        report = self._exc_info_to_string(err, case)
        if getattr(test, "_subDescription", None):
            report = "in subtest %s\n%s" % (test._subDescription(), report)
        for p in getattr(case, "_proxies", []):
            log = p.error_log_text()
            if log:
                report += "\n--- proxyd error log (%s), last lines ---\n%s" % (
                    p.config_path, "\n".join(log.splitlines()[-30:]))
        exc = traceback.format_exception_only(err[0], err[1])[-1].strip()
        msg = first_line(exc)
        if getattr(test, "_subDescription", None):
            msg = "%s: %s" % (test._subDescription(), msg)
        self.current.update(ok=False, msg=msg, report=report)

    def addError(self, test, err):
        super().addError(test, err)
        if not isinstance(test, unittest.suite._ErrorHolder):  # class fixtures: reported at the end
            self._fail(test, err)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail(subtest, err, case=test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.current["skip"] = reason

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.current.update(ok=False, msg="unexpected success", report="unexpected success")

    def stopTest(self, test):
        super().stopTest(test)
        r = self.current
        r["secs"] = round(time.monotonic() - r.pop("t0", time.monotonic()), 2)
        sys.stdout.write(MARK + json.dumps(r) + "\n")
        sys.stdout.flush()


def child_main(ids):
    sys.path.insert(0, INTEGRATION)

    import harness  # noqa: E402  (after sys.path)

    def stop_everything():
        harness.kill_all()
        if "pebble" in sys.modules:  # the ACME tests' CA, by PID
            sys.modules["pebble"].kill_all()

    def on_term(signum, frame):  # the runner's time limit: stop our proxies, leave at once
        stop_everything()
        sys.stdout.flush()
        os._exit(3)

    signal.signal(signal.SIGTERM, on_term)
    atexit.register(harness.close_all)
    atexit.register(lambda: "pebble" in sys.modules and sys.modules["pebble"].kill_all())
    loader = unittest.TestLoader()
    result = LineResult()
    for tid in ids:
        try:
            test = loader.loadTestsFromName(tid)
        except Exception as e:  # noqa: BLE001
            sys.stdout.write(MARK + json.dumps({"id": tid, "ok": False, "msg": "cannot load: %s" % e,
                                                "report": traceback.format_exc()}) + "\n")
            continue
        test.run(result)
    # class/module fixtures errors are reported through errors on _ErrorHolder
    for holder, err in result.errors:
        if isinstance(holder, unittest.suite._ErrorHolder):
            sys.stdout.write(MARK + json.dumps({"id": holder.id(), "ok": False,
                                                "msg": first_line(err.strip().splitlines()[-1]),
                                                "report": err}) + "\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build", help="build directory (default: build)")
    ap.add_argument("-k", dest="pattern", default=None, help="only tests whose name contains SUBSTR")
    ap.add_argument("--unit-only", action="store_true")
    ap.add_argument("--integration-only", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("ids", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    os.environ["PROXYD_BUILD"] = build
    if args.child:
        return child_main(args.ids)

    slow = slow_factor(build)
    t0 = time.monotonic()
    failures = []
    passed = failed = 0
    if not args.integration_only:
        p, f = run_unit(build, args.pattern, slow, failures)
        passed, failed = passed + p, failed + f
    if not args.unit_only:
        p, f = run_integration(build, args.pattern, slow, failures)
        passed, failed = passed + p, failed + f
    if failures:
        emit("")
        emit("=" * 70)
        emit("FAILURES")
        for name, report in failures:
            emit("=" * 70)
            emit(name)
            emit("-" * 70)
            emit(report.rstrip())
        emit("=" * 70)
    if passed + failed == 0:
        emit("nothing ran (build dir %s)" % build)
    if MODULE_TIMES:
        slowest = sorted(MODULE_TIMES, reverse=True)[:8]
        emit("slowest modules: " + ", ".join("%s %.0fs" % (m, t) for t, m in slowest))
    emit("suite took %.1fs (build %s)" % (time.monotonic() - t0, build))
    emit("%d passed, %d failed" % (passed, failed))
    return 1 if failed or passed + failed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
