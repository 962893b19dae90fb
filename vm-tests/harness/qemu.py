"""The one qemu launcher (TCG) and what a boot printed on its serial console."""
import base64
import json
import os
import re
import signal
import subprocess
import threading
import time

from .core import log, TestFailure

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
PANIC = re.compile(r"Kernel panic|BUG: |Oops|general protection fault|double fault")
# the guest kernel's hung-task report ("INFO: task txg_sync:191 blocked for more than 120 seconds"): from the
# HUNG_AFTER seconds report on the guest is taken as hung (a stall that long is not TCG being slow)
HUNG = re.compile(r"INFO: task (\S+) blocked for more than (\d+) seconds")
HUNG_AFTER = 240
WALL_TIMEOUT_FACTOR = 6  # a boot may take 6x its qemu CPU limit in wall time (a busy host)


class Boot:
    """One boot: its console lines and what they say."""

    def __init__(self, lines, rc, seconds, cpu, killed, timed_out, logfile, label, kill_at=None, kill_line=None):
        self.lines, self.rc, self.seconds, self.cpu = lines, rc, seconds, cpu
        self.killed, self.timed_out, self.logfile, self.label = killed, timed_out, logfile, label
        self.kill_at = kill_at  # seconds after the trigger line
        self.kill_line = kill_line  # index of the trigger line in lines
        self.text = "\n".join(lines)
        self.er = {}  # ERTEST key=value (stage 2)
        self.oldroots = {}  # stage 2: old-root directory -> {ro: yes|no, files: set}
        self.jsons = []  # ERJSON blocks in order: {tag, meta, obj, error, line}
        parts = {}
        for i, l in enumerate(lines):
            m = re.search(r"ERJSON (\S+) meta ?(.*)$", l)
            if m:
                meta = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
                j = dict(tag=m.group(1), meta=meta, obj=None, error=None, line=i, parts=[], stderr="")
                self.jsons.append(j)
                parts[m.group(1)] = j
                continue
            m = re.search(r"ERJSON (\S+) (\d+)/(\d+) (\S*)$", l)
            if m and m.group(1) in parts:
                parts[m.group(1)]["parts"].append((int(m.group(2)), int(m.group(3)), m.group(4)))
                continue
            m = re.search(r"ERTEST check-stderr (\S+): (.*)$", l)
            if m and m.group(1) in parts:
                parts[m.group(1)]["stderr"] = m.group(2)
                continue
            m = re.search(r"ERTEST (\S+?)=(.*)$", l)
            if not m:
                continue
            k, v = m.group(1), m.group(2).strip()
            if k == "oldroot":
                name, rest = v.split(" ", 1)
                ro = re.search(r"ro=(\S+)", rest).group(1)
                files = re.search(r"files=(\S*)", rest).group(1)
                self.oldroots[name] = dict(ro=ro, files=set(filter(None, files.split(","))))
            else:
                self.er[k] = v
        for j in self.jsons:
            ps = sorted(j.pop("parts"))
            n = ps[0][1] if ps else 0
            if j["meta"].get("parts") == "0":
                j["error"] = "printed nothing (exit status %s; stderr: %s)" % (j["meta"].get("rc"), j["stderr"] or "-")
                continue
            if not ps or [p[0] for p in ps] != list(range(1, n + 1)):
                j["error"] = "incomplete ERJSON block (%d parts)" % len(ps)
                continue
            try:
                raw = base64.b64decode("".join(p[2] for p in ps)).decode("utf-8", "replace")
            except ValueError as e:
                j["error"] = "bad base64: %s" % e
                continue
            j["raw"] = raw
            try:
                j["obj"] = json.loads(raw)
            except ValueError as e:
                j["error"] = "check --json printed no JSON (%s): %r" % (e, raw[:300])

    def has(self, pat):
        return re.search(pat, self.text, re.M) is not None

    def index(self, pat, start=0):
        for i in range(start, len(self.lines)):
            if re.search(pat, self.lines[i]):
                return i
        return -1

    def list(self, key):
        v = self.er.get(key)
        if v is None:
            return None
        return set(x for x in v.split(",") if x)

    def json(self, tag):
        """The last ERJSON block with this tag (or None)."""
        js = [j for j in self.jsons if j["tag"] == tag]
        return js[-1] if js else None

    @property
    def completed(self):
        return self.has(r"ERTEST done boot=")

    def panicked(self):
        return PANIC.search(self.text) is not None


def launch(name, label, logfile, vmlinuz, initrd, append, disks, mem=768, smp=1, kill=None, timeout=150,
           stop_on=None):
    """Boot qemu (TCG) once, console on the serial port, disks as virtio (cache=unsafe: a SIGKILL of qemu
    loses what the guest had not written out, like a power cut).

    kill(line, elapsed) -> seconds to wait and then SIGKILL qemu, or None (watch the next line).
    timeout: qemu CPU seconds (a busy host slows a boot down without anything being wrong; a hung guest
    burns CPU or idles forever, which the wall-clock limit of WALL_TIMEOUT_FACTOR x timeout catches).
    Raises TestFailure on a guest kernel crash or a timeout; returns a Boot."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", os.environ.get("EPHEMERAL_ROOT_VM_CPU", "max"),
           "-m", str(mem), "-smp", str(smp), "-nodefaults", "-display", "none", "-no-reboot",
           "-serial", "stdio", "-monitor", "none", "-kernel", vmlinuz, "-initrd", initrd, "-append", append]
    for d in disks:
        cmd += ["-drive", "file=%s,format=raw,if=virtio,cache=unsafe" % d]
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    t = time.time()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    lines = []
    kill_at = kill_line = None
    timer = [None]
    timed = [False]
    hung = []
    done = threading.Event()

    def do_kill():
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def watchdog():
        tck = os.sysconf("SC_CLK_TCK")
        while not done.wait(2.0):
            try:
                f = open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()
                cpu = (int(f[11]) + int(f[12])) / tck
            except (OSError, IndexError, ValueError):
                return
            if cpu > timeout or time.time() - t > WALL_TIMEOUT_FACTOR * timeout:
                timed[0] = True
                do_kill()
                return

    threading.Thread(target=watchdog, daemon=True).start()
    with open(logfile, "w") as lf:
        lf.write("# %s\n" % " ".join(cmd))
        for raw in p.stdout:
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
            el = time.time() - t
            lines.append(line)
            lf.write("%8.3f %s\n" % (el, line))
            lf.flush()  # long guests (the crash loop): progress readable while they run
            if kill and kill_at is None:
                w = kill(line, el)
                if w is not None:
                    kill_at, kill_line = w, len(lines) - 1
                    lf.write("%8.3f # harness: power cut in %.3f s\n" % (el, w))
                    timer[0] = threading.Timer(w, do_kill)
                    timer[0].start()
            if stop_on and re.search(stop_on, line):
                do_kill()
            h = HUNG.search(line)
            if h and int(h.group(2)) >= HUNG_AFTER and not hung:
                # a hung guest would sit out its whole timeout (hours for the crash loops): stop it, after a
                # few seconds for the stack trace (printed at loglevel 7 and above)
                hung.append("task %s blocked for more than %s s" % (h.group(1), h.group(2)))
                threading.Timer(5.0, do_kill).start()
    _, status, ru = os.wait4(p.pid, 0)
    rc = p.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    if timer[0]:
        timer[0].cancel()
    sec = time.time() - t
    killed = kill_at is not None and rc < 0 and not timed[0]
    b = Boot(lines, rc, sec, ru.ru_utime + ru.ru_stime, killed, timed[0], logfile, label, kill_at, kill_line)
    log("%s: %s %s in %.1f s (qemu cpu %.1f s)" % (
        name, label, "killed" if killed else ("TIMEOUT" if timed[0] else "rc=%d" % rc), sec, b.cpu))
    if b.panicked():
        raise TestFailure("%s %s: guest kernel crashed, see %s" % (name, label, logfile))
    if hung:
        raise TestFailure("%s %s: guest kernel hung (%s), see %s" % (name, label, hung[0], logfile))
    if timed[0]:
        raise TestFailure("%s %s: timed out (%d s of qemu CPU or %d s wall), see %s" % (
            name, label, timeout, WALL_TIMEOUT_FACTOR * timeout, logfile))
    return b
