"""Suites that drive the binary directly inside one small guest: the bcachefs engine suite
(guest/engine-tests.sh) and the ZFS suite (guest/zfs-tests.sh). The guest prints `PASS name` /
`FAIL name: reason` for its own checks and a final `N passed, M failed`; every state check goes through
`check --json` (ERJSON blocks) and is asserted here, by checks.clean_problems, like everywhere else."""
import os
import re

from . import checks
from .core import TestFailure, WORK
from .light import guest_image
from .qemu import launch

SUITE_TIMEOUT = 1500  # qemu CPU seconds (the crash groups run hundreds of rollbacks)


def verdict(c, b, expect_summary=1, min_json=1):
    """Fail on any FAIL line, any ERJSON block that is not clean (or, with meta expect=REGEX, a planted
    violation the check did not report), a missing summary, or a crashed guest. Returns (pass, fail)."""
    fails = [l.strip() for l in b.lines if re.match(r"^FAIL ", l.strip())]
    passes = [l for l in b.lines if re.match(r"^PASS ", l.strip())]
    jfail = []
    for j in b.jsons:
        meta = j["meta"]
        want = meta.get("want")
        want = None if want in (None, "", "-") else int(want)
        probs = checks.clean_problems(j, oldroots=want, fresh=meta.get("fresh") == "1")
        if meta.get("expect"):
            pat = meta["expect"].replace("_", " ")
            if not any(re.search(pat, p) for p in probs):
                jfail.append("FAIL json:%s: planted violation not reported (want /%s/, got %s)" % (j["tag"], pat, probs))
            else:
                c.checks += 1
        elif probs:
            jfail.append("FAIL json:%s: %s" % (j["tag"], "; ".join(probs)))
        else:
            c.checks += 1
    c.checks += len(passes)
    summaries = [l for l in b.lines if re.match(r"^\d+ passed, \d+ failed$", l.strip())]
    c.stats.setdefault("json_checks", 0)
    c.stats["json_checks"] += len(b.jsons)
    c.stats.setdefault("pass_lines", 0)
    c.stats["pass_lines"] += len(passes)
    errs, tol = checks.kernel_errors(b.lines)
    c.stats.setdefault("kernel_error_lines", 0)
    c.stats["kernel_error_lines"] += len(errs)  # informational: the suites provoke errors on purpose
    problems = fails + jfail
    made = b.er.get("jchecks")
    if made is None or int(made) != len(b.jsons) or len(b.jsons) < min_json:
        problems.append("the guest ran %s check --json, the console holds %d blocks (want >= %d)" % (
            made, len(b.jsons), min_json))
    if len(summaries) < expect_summary:
        problems.append("%d of %d summary lines (the guest crashed, hung or timed out; rc %d)" % (
            len(summaries), expect_summary, b.rc))
    if problems:
        raise TestFailure("%s: %d failed: %s%s (serial log: %s)" % (
            c.name, len(problems), " | ".join(problems[:6]), " ..." if len(problems) > 6 else "", b.logfile))
    return len(passes), len(fails)


def run_suite(c, fs, env, script, params, label="suite", min_json=1):
    """One guest running a suite script on fresh disks."""
    d = os.path.join(WORK, c.name)
    os.makedirs(d, exist_ok=True)
    if fs.kind == "zfs":
        from .light import zfs_disk
        disks = zfs_disk(os.path.join(d, "disk.img"))
    else:
        disks = fs.make_disks(d)
    kernel, initrd = guest_image(fs, env)
    devs = ":".join("/dev/vd" + "abcdefgh"[i] for i in range(len(disks)))
    extra = ["ertest.devs=" + devs]
    if fs.kind == "bcachefs":
        extra.append("ertest.uuid=" + fs.uuid())
    logfile = os.path.join(d, "logs", "%s.log" % label)
    c.logs.append(logfile)
    c.boots += 1
    b = launch(c.name, label, logfile, kernel.vmlinuz, initrd,
               "console=ttyS0 oops=panic panic=-1 nowatchdog loglevel=4 ertest.script=%s %s %s" % (
                   script, " ".join(extra), " ".join(params)),
               disks, mem=1024 if fs.kind != "zfs" else fs.mem, timeout=SUITE_TIMEOUT)
    for dsk in disks:
        os.unlink(dsk)
    p, f = verdict(c, b, min_json=min_json)
    for line in b.lines:
        if re.match(r"^(ENOTEMPTY-WINDOW|TIME |NOTE |kernel warnings)", line.strip()):
            c.note(line.strip())
    c.note("%d PASS lines, %d check --json blocks, kernel %s" % (p, len(b.jsons), kernel))
    return b
