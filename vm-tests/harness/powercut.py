"""The one power-cut loop: SIGKILL qemu at a random moment while `rollback` runs (the fault-injection build
sleeps EPHEMERAL_ROOT_FAULT_DELAY_MS at every fault point, which widens the window), then check that the
next boot recovers and that nothing was lost.

Where each cut landed is read from the cut boot's own console (the last `step N/M: ...` line the armed
rollback printed before qemu died; lines after the cut cannot exist) and from the next boot's check --json
*before* its recovery runs (what the cut left on disk: pending/leftover entries, root missing) - never from
the recovery's own steps.

Two guest flavours drive the same loop:
  DracutCuts  full dracut boots (btrfs, bcachefs): a cut boot (the fault build in the initrd, armed at
              its first `step 1/`), then a normal recovery boot that must pass every check of a boot.
  LightCuts   small guests (guest/cycle.sh; btrfs, bcachefs, ZFS): each boot recovers (pre-check,
              `rollback`, post-check, listing), writes its markers, syncs, then starts a slow rollback
              and is cut. Cheap (a few seconds per cut) but the same binary on the same real kernel and
              disks, from a real boot: the long runs use it.
"""
import os
import random
import re
import time

from . import checks
from .core import WORK, check, log


# the first step line of a rollback: where both drivers start the clock of a cut
STEP1 = r"ephemeral-root: step 1/"


def stamps(lines, pattern):
    """The serial log's own timestamps (first column) of the lines matching pattern."""
    return [float(l.split()[0]) for l in lines if re.search(pattern, l)]


def step_of(line):
    """'ephemeral-root: step 4/5: move ... 2026-...Z' -> 'rollback 4/5 move ... NAME'; `finish N/M:` lines
    (finish, or finish's work done by rollback) -> 'finish N/M ...'."""
    m = re.search(r"ephemeral-root: (step|finish|gc) (\d+)/(\d+): (.*)$", line)
    if not m:
        return None
    what = re.sub(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ(-\d+)?", "NAME", m.group(4)).split(",")[0]
    what = re.sub(r"\.(retired-root|deleting|kept|incomplete)\.\S+", r".\1.X", what).strip()
    return "%s %s/%s %s" % ("rollback" if m.group(1) == "step" else m.group(1), m.group(2), m.group(3), what)


def where_cut(b):
    """Where the armed rollback was when qemu died: the last step line after the trigger, or before/after."""
    if b.kill_line is None:
        return "not cut"
    tail = b.lines[b.kill_line:]
    if any(re.search(r"ERTEST not-cut", l) for l in tail) or \
            (not any("ERTEST phase finish" in l for l in tail) and any("rollback finished in" in l for l in tail)):
        return "after the rollback"
    steps = [s for s in (step_of(l) for l in tail) if s]
    if any("ERTEST phase finish" in l for l in tail):  # the light guest's armed finish
        fin = tail.index(next(l for l in tail if "ERTEST phase finish" in l))
        steps = ["finish" + s[len("finish"):] if s.startswith("finish") else s
                 for s in (step_of(l) for l in tail[fin:]) if s] or ["between rollback and finish"]
    return steps[-1] if steps else "before step 1"


def state_left(block):
    """What a cut left on disk, from the next boot's pre-recovery check --json."""
    if block is None or block.get("obj") is None:
        return "no pre-check (%s)" % ((block or {}).get("error") or "missing")
    j = block["obj"]
    kinds = sorted({e.get("kind") for e in j.get("entries", []) if e.get("kind") not in checks.CLEAN_KINDS})
    parts = []
    if not j.get("root", {}).get("present"):
        parts.append("root missing")
    parts += kinds
    return "+".join(parts) if parts else "clean"


# cuts between two measurements of the window (EPHEMERAL_ROOT_VM_RECALIBRATE: to try it on a short run)
RECALIBRATE = int(os.environ.get("EPHEMERAL_ROOT_VM_RECALIBRATE") or 25)


def run_loop(c, driver, cuts, seed=None):
    seed = int(seed if seed is not None else (os.environ.get("EPHEMERAL_ROOT_VM_SEED") or time.time()))
    rnd = random.Random(seed)
    c.note("seed %d, %d cuts" % (seed, cuts))
    c.stats["planned_cuts"] = cuts
    driver.start(c)
    window = driver.calibrate(c)
    log("%s: rollback window %.2f s" % (c.name, window))
    windows = [round(window, 3)]
    steps, states, detail = {}, {}, []
    t0 = time.time()

    def left(i, b):
        st = state_left(b.json("pre"))
        states[st] = states.get(st, 0) + 1
        detail[i - 1]["left"] = st
        log("%s: cut %d at +%.2f s: %s; left: %s" % (c.name, i, detail[i - 1]["at"], detail[i - 1]["step"], st))

    for i in range(1, cuts + 1):
        if i > 1 and (i - 1) % RECALIBRATE == 0:
            # the window grows with the old roots a long run keeps (finish reads every one of them):
            # measured once, it would be outgrown and the cuts would pile up at its start
            window = driver.calibrate(c)
            windows.append(round(window, 3))
            log("%s: rollback window %.2f s (after %d cuts)" % (c.name, window, i - 1))
        at = rnd.uniform(0, window)
        b = driver.cut(c, at, i)
        if driver.light and i > 1:
            left(i - 1, b)  # this boot first recovered from the previous cut: its pre-check is what that cut left
        where = where_cut(b)
        steps[where] = steps.get(where, 0) + 1
        detail.append(dict(cut=i, at=round(at, 3), step=where, log=os.path.basename(b.logfile)))
        stopped = b.killed or (b.has(r"ERTEST not-cut") if driver.light else b.completed)
        c.expect(b, stopped, "cut %d: the machine stopped by itself" % i)
        if not driver.light:
            left(i, driver.recover(c, i))
    rate = cuts / max(1e-9, (time.time() - t0) / 60)
    last = driver.finish(c)
    if driver.light and cuts:
        left(cuts, last)
    c.stats.update(cuts=cuts, cuts_per_minute=round(rate, 2), steps=steps, left=states, seed=seed, detail=detail,
                   windows=windows)
    during = cuts - steps.get("after the rollback", 0) - steps.get("before step 1", 0)  # finish counts too
    c.note("%d cuts (%.2f per minute): %d during the rollback; by step: %s; left on disk: %s" % (
        cuts, rate, during, steps, states))
    check(during >= cuts // 2, "%s: only %d of %d cuts landed during the rollback" % (c.name, during, cuts))
    return steps


class DracutCuts:
    light = False

    def __init__(self, fs, env, delay_ms=150):
        self.fs, self.env, self.delay_ms = fs, env, delay_ms

    def start(self, c):
        from .dracut import check_after_rollback, conf, machine, variant
        self.keep = 1000
        self.m = machine(c, self.fs, self.env, conf=conf(keep=self.keep))
        self.fault = variant(self.m, "fault", conf=conf(keep=self.keep), fault_bin=self.env.fault_binary,
                             fault_env={"EPHEMERAL_ROOT_FAULT_DELAY_MS": str(self.delay_ms)})
        self.check = check_after_rollback
        self.after_cuts = 0
        self.check(c, self.m.boot(), 1, keep=self.keep, oldroots_exact=0)  # a root for the next rollback to keep

    def calibrate(self, c):
        """One full boot with the slow build: how long the rollback takes, step 1 to 'finished'."""
        n = self.m.boots + 1
        b = self.m.boot(initrd=self.fault, label="calibrate")
        # after cuts, as many more old roots as cuts landed after the rollback (see cut())
        self.check(c, b, n, keep=self.keep, oldroots_range=self.want(c))
        st = stamps(open(b.logfile).read().splitlines()[1:], STEP1 + "|rollback finished in")
        # 0.95: a little short of the end, so nearly every cut lands mid-rollback
        return max(0.3, 0.95 * (st[-1] - st[0])) if len(st) >= 2 else 3.0

    def want(self, c):
        return (len(c.completed), len(c.completed) + self.after_cuts)

    def cut(self, c, at, i):
        def trigger(line, el):
            return at if re.search(STEP1, line) else None
        b = self.m.boot(initrd=self.fault, kill=trigger, label="cut%02d" % i)
        if b.completed:  # the kill came too late: this boot counts as a normal one
            self.check(c, b, self.m.boots, keep=self.keep, oldroots_range=self.want(c))
        elif b.has(r"rollback finished in"):
            # cut after the rollback, before stage 2 wrote its marker: its root (with whatever systemd
            # wrote into it) may be kept as one more old root
            self.after_cuts += 1
        return b

    def recover(self, c, i):
        n = self.m.boots + 1
        b = self.m.boot(label="recover%02d" % i)
        self.check(c, b, n, keep=self.keep, oldroots_range=self.want(c), normal=False)
        return b

    def finish(self, c):
        last = c.completed[-1]
        self.fs.final_check(c, self.m, last, (len(c.completed) - 1, len(c.completed) - 1 + self.after_cuts),
                            ["marker-%d" % k for k in c.completed if k != last])


class LightCuts:
    """Power cuts in the small guest (guest/cycle.sh), for every filesystem."""
    light = True

    def __init__(self, fs, env, delay_ms=150):
        self.fs, self.env, self.delay_ms = fs, env, delay_ms

    def start(self, c):
        from .light import LightMachine
        self.cuts = int(c.stats.get("planned_cuts", 0))
        self.m = LightMachine(c, self.fs, self.env)
        self.m.setup()
        b = self.m.cycle(arm=False, label="boot01")  # recover (nothing to do), markers of boot 1
        self.m.check(c, b, 1, oldroots=0)

    def calibrate(self, c):
        """One armed boot that is not cut: how long the slow rollback and finish take from the armed
        rollback's `step 1/` line to their end (its start-up before step 1 reads the disks only, and
        grows with every old root a long run keeps: drawn from there, cuts would miss the steps)."""
        n = self.m.boots + 1
        b = self.m.cycle(arm=True, delay_ms=self.delay_ms, label="calibrate%03d" % n)
        self.m.check(c, b, n, oldroots=len(c.completed))
        lines = open(b.logfile).read().splitlines()[1:]
        armed = next((k for k, l in enumerate(lines) if "ERTEST armed" in l), len(lines))
        step1, end = stamps(lines[armed:], STEP1), stamps(lines[armed:], "ERTEST not-cut")
        check(step1 and end, "%s: calibration boot did not finish its armed rollback (see %s)" % (c.name, b.logfile))
        return max(0.3, 0.95 * (end[0] - step1[0]))

    def cut(self, c, at, i):
        armed = [False]

        def trigger(line, el):
            armed[0] = armed[0] or "ERTEST armed" in line
            return at if armed[0] and re.search(STEP1, line) else None
        n = self.m.boots + 1
        listall = i % 10 == 0 or self.cuts <= 20  # ZFS lists the newest 3 old roots otherwise (each is a mount)
        b = self.m.cycle(arm=True, delay_ms=self.delay_ms, kill=trigger, label="cut%03d" % i, listall=listall)
        # this boot first recovered from the previous cut (its pre-check is what that cut left)
        self.m.check(c, b, n, oldroots=len(c.completed))
        return b

    def finish(self, c):
        n = self.m.boots + 1
        b = self.m.cycle(arm=False, label="final", listall=True)
        self.m.check(c, b, n, oldroots=len(c.completed), final=True)
        return b
