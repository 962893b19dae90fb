"""Shared basics of the VM harness: paths, logging, failures, subprocess helpers, the per-scenario context."""
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # vm-tests/
REPO = os.path.dirname(HERE)
GUEST = os.path.join(HERE, "guest")
CACHE = os.path.abspath(os.environ.get("EPHEMERAL_ROOT_VM_CACHE") or os.path.join(HERE, "cache"))
WORK = os.path.abspath(os.environ.get("EPHEMERAL_ROOT_VM_WORK") or os.path.join(HERE, "work"))
FIXTURES = os.path.abspath(os.environ.get("EPHEMERAL_ROOT_FIXTURES") or os.path.join(REPO, "tests", "fixtures"))
FIXTURE_SET = os.environ.get("EPHEMERAL_ROOT_FIXTURE_SET") or "bcachefs"
TARGET = "x86_64-unknown-linux-musl"
T0 = time.time()
# The kernel command line every guest starts with. no_timer_check: under a loaded host a TCG guest's
# IO-APIC timer check can fail ("IO-APIC + timer doesn't work", a kernel panic before anything of ours
# runs: seen once in a long run at load 20); a virtual machine's timer needs no such check.
GUEST_CMDLINE = "console=ttyS0 oops=panic panic=-1 nowatchdog no_timer_check"
LOCK = threading.Lock()


def log(msg):
    with LOCK:
        sys.stderr.write("[vm-tests %6.1fs] %s\n" % (time.time() - T0, msg))
        sys.stderr.flush()


class TestFailure(Exception):
    """A check failed: the scenario fails (the message names the check and the serial log)."""


class Skip(Exception):
    """The scenario cannot run here (e.g. the fixture set has no five-device images). Not a pass."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def out(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def sha256_files(paths, extra=""):
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.encode())
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


class Ctx:
    """One scenario run: its name, filesystem, the boots whose stage 2 completed, and counters that go
    into the results table (checks passed, boots, cuts, kernel-bug reruns, tolerated kernel lines)."""

    def __init__(self, name, fs):
        self.name, self.fs = name, fs
        self.completed = []  # boot numbers whose stage 2 wrote its markers (and synced)
        self.checks = 0  # checks that passed
        self.boots = 0
        self.notes = []
        self.stats = {}  # scenario-specific figures for the results table / results.json
        self.kernel_lines = {}  # tolerated kernel lines (known kernel issues): name -> count
        self.kernel_errors = []  # (boot log, line): kernel error lines on normal boots (fail the scenario at its end)
        self.logs = []  # every serial log of this scenario (the known-kernel-bug scan reads them)

    def fail(self, b, msg):
        raise TestFailure("%s: %s (serial log: %s)" % (self.name, msg, b.logfile if b is not None else "-"))

    def expect(self, b, cond, msg):
        if not cond:
            self.fail(b, msg)
        self.checks += 1

    def expect_none(self, b, problems, what):
        """Every string in problems is a failed check of `what`."""
        if problems:
            self.fail(b, "%s: %s" % (what, "; ".join(problems)))
        self.checks += 1

    def note(self, msg):
        self.notes.append(msg)
        log("%s: %s" % (self.name, msg))


class Stage:
    """A directory filled with the files of an initrd overlay, named by their paths in the guest (emptied
    first)."""

    def __init__(self, root):
        self.root = root
        shutil.rmtree(root, ignore_errors=True)

    def _at(self, path):
        p = os.path.join(self.root, path.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def put(self, path, data=None, src=None, mode=0o644):
        """A file: the text `data`, or a copy of the host file `src`."""
        p = self._at(path)
        if src:
            shutil.copyfile(src, p)
        else:
            open(p, "w").write(data)
        os.chmod(p, mode)

    def link(self, path, target):
        os.symlink(target, self._at(path))

