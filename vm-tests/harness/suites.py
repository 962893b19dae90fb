"""Suites that drive the binary directly inside one small guest: the bcachefs engine suite
(guest/engine-tests.sh) and the ZFS suite (guest/zfs-tests.sh). The guest prints `PASS name` /
`FAIL name: reason` for its own checks and a final `N passed, M failed`; every state check goes through
`check --json` (ERJSON blocks) and is asserted here, by checks.clean_problems, like everywhere else."""
import os
import re

from . import checks
from .core import GUEST_CMDLINE, TestFailure, WORK
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


def run_suite(c, fs, env, script, params, label="suite", min_json=1, cpus=1):
    """One guest running a suite script on fresh disks, with `cpus` vCPUs."""
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
               GUEST_CMDLINE + " loglevel=4 ertest.script=%s %s %s" % (
                   script, " ".join(extra), " ".join(params)),
               disks, mem=1024 if fs.kind != "zfs" else fs.mem, smp=cpus, timeout=SUITE_TIMEOUT)
    for dsk in disks:
        os.unlink(dsk)
    p, f = verdict(c, b, min_json=min_json)
    for line in b.lines:
        if re.match(r"^(ENOTEMPTY-WINDOW|TIME |NOTE |kernel warnings)", line.strip()):
            c.note(line.strip())
    c.note("%d PASS lines, %d check --json blocks, kernel %s" % (p, len(b.jsons), kernel))
    return b


def testbin_verdict(c, b, test, loop=None):
    """The test binary's own verdict: exit status 0, one "test result: ok. 1 passed; 0 failed; 0 ignored"
    line, nothing skipped; for the crash loop, at least `loop` recoveries and no root kept twice."""
    text = "\n".join(l.rstrip() for l in b.lines)
    rc = b.er.get("crashsafety-rc")
    res = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored", text)
    problems = []
    if rc != "0":
        problems.append("the test binary exited with %s" % rc)
    if len(res) != 1 or res[0][0] != "ok" or res[0][1:] != ("1", "0", "0"):
        problems.append("test result lines %s (want exactly: ok, 1 passed, 0 failed, 0 ignored)" % res)
    if re.search(r"SKIPPED", text):
        problems.append("a test was skipped")
    if not re.search(r"^running 1 test$", text, re.M) or not re.search(r"^test %s \.\.\. " % re.escape(test), text, re.M):
        problems.append("the test binary did not run test %s (and only it)" % test)
    m = re.findall(r"crash loop on (\S+): (\d+) recoveries \((\d+) runs aborted at their fault point\), (\d+) roots kept "
                   r"twice, (\d+) other failures, (\d+) s", text)
    if loop is not None:
        if not m:
            problems.append("no crash loop summary")
        else:
            fsk, rec, ab, dup, oth, sec = m[-1]
            c.stats.update(recoveries=int(rec), aborted=int(ab), duplicates=int(dup), other_failures=int(oth),
                           loop_seconds=int(sec))
            c.note("crash loop on %s: %s recoveries, %s aborted runs, %s roots kept twice, %s other failures, %s s" % m[-1])
            if int(rec) < loop:
                problems.append("%s recoveries, want %d" % (rec, loop))
        dups = re.findall(r"crash loop: .*DUPLICATE.*", text)
        if dups:
            problems.append("%d roots kept twice, e.g. %s" % (len(dups), dups[0].strip()))
    for line in re.findall(r"crash safety on .*", text):
        c.note(line.strip())
    st = re.search(r"ERTEST crashsafety-start (\S+)", text)
    en = re.search(r"ERTEST crashsafety-end (\S+)", text)
    if st and en:
        c.stats["test_seconds_in_guest"] = round(float(en.group(1)) - float(st.group(1)), 1)
    c.stats["qemu_cpu"] = round(b.cpu, 1)
    c.stats["wall"] = round(b.seconds, 1)
    if problems:
        fails = [l.strip() for l in b.lines if re.search(r"panicked at|FAILED|DUPLICATE", l)][:4]
        raise TestFailure("%s: %s; %s (serial log: %s)" % (c.name, " | ".join(problems), " | ".join(fails), b.logfile))
    c.checks += 1


def run_testbin(c, fs, env, test, scen="", loop=None, timeout=SUITE_TIMEOUT):
    """One guest running the static crash-safety test binary (host.build_testbin) on fresh disks of fs
    (guest/crashsafety.sh); EPHEMERAL_ROOT_VM_SUBJECT_BIN puts an older build under test. The crash loops'
    kernels log at loglevel 7: a hung task's stack trace reaches the serial log (qemu.HUNG stops the guest)."""
    d = os.path.join(WORK, c.name)
    os.makedirs(d, exist_ok=True)
    if fs.kind == "zfs":
        from .light import zfs_disk
        # 4 GiB (sparse): a crash loop creates and destroys datasets by the thousand, and ZFS frees
        # destroyed datasets' blocks in the background
        disks = zfs_disk(os.path.join(d, "disk.img"), gib=4)
    else:
        disks = fs.make_disks(d)
    extra = {"/bin/crash_safety": env.testbin}
    subject = os.environ.get("EPHEMERAL_ROOT_VM_SUBJECT_BIN")
    if subject:
        extra["/bin/er-subject"] = os.path.abspath(subject)
        c.note("binary under test: %s (judged by today's check --json)" % subject)
    kernel, initrd = guest_image(fs, env, extra=extra, tag="-testbin")
    devs = ":".join("/dev/vd" + "abcdefgh"[i] for i in range(len(disks)))
    params = ["ertest.devs=" + devs, "cs.fs=" + fs.kind, "cs.test=" + test]
    if scen:
        params.append("cs.scen=" + scen)
    if loop:
        params.append("cs.loop=%d" % loop)
    logfile = os.path.join(d, "logs", "%s.log" % test)
    c.logs.append(logfile)
    c.boots += 1
    b = launch(c.name, test, logfile, kernel.vmlinuz, initrd,
               GUEST_CMDLINE + " loglevel=%d ertest.script=crashsafety.sh " % (7 if loop else 4) + " ".join(params),
               disks, mem=1024 if fs.kind != "zfs" else fs.mem, timeout=timeout)
    for dsk in disks:
        os.unlink(dsk)
    testbin_verdict(c, b, test, loop)
    c.note("qemu cpu %.0f s, wall %.0f s, kernel %s" % (b.cpu, b.seconds, kernel))
    return b
