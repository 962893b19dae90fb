"""Selecting scenarios, preparing what they need, running them (in parallel), the one verdict and results table."""
import concurrent.futures
import json
import os
import time

from . import checks
from .core import FIXTURE_SET, FIXTURES, T0, WORK, Ctx, Skip, TestFailure, log
from .dracut import build_initrd
from .host import build_bchtool, build_binary, build_initrd_binary, build_testbin, default_kernel, ensure_packages
from .scenarios import E, SCENARIOS, sc_crashloop, sc_crashsafety, sc_powercut_light, sc_engine, sc_zfs

SETS = ("ci", "long", "zfs-crash", "zfs-crashloop", "bench", "all")


def select(names):
    sel = []
    for a in names or ["ci"]:
        if a == "all":
            sel += list(SCENARIOS)
        elif a in SETS:
            sel += [k for k, s in SCENARIOS.items() if a in s.sets]
        elif a in SCENARIOS:
            sel.append(a)
        else:
            raise SystemExit("unknown scenario or set %s (see: vm-tests/run list)" % a)
    return list(dict.fromkeys(sel))


def run_one(name):
    """Run a scenario; once more if it failed on a known kernel bug (checks.known_kernel_bug)."""
    s = SCENARIOS[name]
    reruns = 0
    while True:
        c = Ctx(name, s.fs)
        t = time.time()
        try:
            s.fs.available()
            s(c)
            res, msg = "PASS", ""
            if c.kernel_errors:
                res = "FAIL"
                msg = "%d kernel error line(s) on normal boots (issue 16), e.g. %s: %s" % (
                    len(c.kernel_errors), c.kernel_errors[0][0], c.kernel_errors[0][1])
        except Skip as e:
            res, msg = "SKIP", str(e)
        except TestFailure as e:
            res, msg = "FAIL", str(e)
        except Exception as e:  # a harness error is a failure too
            res, msg = "ERROR", "%s: %s" % (type(e).__name__, e)
        if res in ("FAIL", "ERROR") and reruns == 0:
            bug = [(checks.known_kernel_bug(open(l, errors="replace").read()), l) for l in c.logs if os.path.exists(l)]
            bug = [b for b in bug if b[0]]
            if bug:
                log("%s: KNOWN KERNEL BUG (%s) in %s: running the scenario once more" % (name, bug[0][0], bug[0][1]))
                reruns += 1
                kept = []
                for l in dict.fromkeys(c.logs):  # the rerun writes the same log names: keep the first's
                    if os.path.exists(l):
                        os.replace(l, l + ".first-attempt")
                        kept.append(l + ".first-attempt")
                first = (bug[0][0], msg, kept)
                continue
        c.stats["kernel_bug_reruns"] = reruns
        if reruns:
            c.stats["kernel_bug"], c.stats["kernel_bug_failure"], c.stats["kernel_bug_logs"] = first
        c.stats["kernel_error_lines"] = len(c.kernel_errors)
        r = dict(result=res, seconds=round(time.time() - t, 1), message=msg, fs=s.fs.name, boots=c.boots,
                 checks=c.checks, notes=c.notes, stats=c.stats, tolerated_kernel_lines=c.kernel_lines)
        log("%s: %s in %.0f s (%d boots, %d checks) %s" % (name, res, r["seconds"], c.boots, c.checks, msg))
        return r


def prepare(sel):
    ensure_packages()
    os.makedirs(WORK, exist_ok=True)
    scs = [SCENARIOS[n] for n in sel]
    linux = [s for s in scs if s.fs.kind != "zfs"]
    dracut = [s for s in linux if s.fn not in (sc_powercut_light, sc_engine, sc_crashsafety, sc_crashloop)
              and not getattr(s.fs, "sample", None)]
    E.binary = build_binary(False)
    if any(s.fault or s.fs.kind == "zfs" for s in scs):
        E.fault_binary = build_binary(True)
    if any(s.testbin for s in scs):
        E.testbin = build_testbin()
    # the guests' test helper (bcachefs subvolumes; xattrs, trees and FIEMAP on any filesystem)
    E.bchtool = build_bchtool()
    if linux:
        E.kernel = default_kernel()
        log("kernel %s; fixtures %s (set %s)" % (E.kernel, FIXTURES, FIXTURE_SET))
    if dracut:
        # The dracut initrd holds the initrd build (rollback, finish, check: what ephemeral-root-initrd
        # ships; host.build_initrd_binary); the guests' tools (diff, restore in the suites) use the full build.
        E.initrd_binary = build_initrd_binary(E.binary)
        E.base = build_initrd(E.kernel, E.initrd_binary)
    if any(getattr(s.fs, "sample", None) for s in scs):
        from .nixos import prepare as nixos_prepare  # the NixOS-rendered boots' trixie initrd
        nixos_prepare(E)
    zfs = [s for s in scs if s.fs.kind == "zfs"]
    if zfs:
        zfs[0].fs.prepare()


def weight(name):
    s = SCENARIOS[name]
    return -(s.params.get("cuts", 0) * 3 + (60 if s.fn in (sc_engine, sc_zfs, sc_crashsafety) else 0)
             + (1000 if s.fn is sc_crashloop else 0) + 10)


def main(args):
    if args and args[0] == "list":
        for k, s in SCENARIOS.items():
            print("%-20s %-10s %-15s %s" % (k, s.fs.name, ",".join(sorted(s.sets)) or "-",
                                             s.desc or (s.fn.__doc__ or "").strip().split("\n")[0]))
        return 0
    sel = select(args)
    checks.selftest()
    prepare(sel)
    jobs = int(os.environ.get("EPHEMERAL_ROOT_VM_JOBS") or (2 if (os.cpu_count() or 1) >= 2 else 1))
    if any("bench" in SCENARIOS[n].sets for n in sel) and jobs > 1:
        # a benchmark shares the machine with nothing the harness starts (its guests have 2 vCPUs)
        log("a benchmark is selected: scenarios run one at a time")
        jobs = 1
    log("scenarios: %s (%d in parallel)" % (" ".join(sel), jobs))
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        for n, r in zip(sorted(sel, key=weight), ex.map(run_one, sorted(sel, key=weight))):
            results[n] = r
    total = time.time() - T0
    print("\nVM test results (total %.0f s, load %.1f):" % (total, os.getloadavg()[0]))
    print("  %-20s %-10s %-5s %6s %6s %7s  %s" % ("scenario", "fs", "", "time", "boots", "checks", "notes"))
    for n in sel:
        r = results.get(n) or dict(result="ERROR", seconds=0, boots=0, checks=0, message="did not run", stats={})
        extra = []
        st = r.get("stats", {})
        if st.get("cuts"):
            extra.append("%d cuts, %.1f/min, by step %s" % (st["cuts"], st["cuts_per_minute"],
                                                           ", ".join("%s: %d" % kv for kv in sorted(st["steps"].items()))))
        if st.get("rollback_unit"):
            from .dracut import unit_summary
            extra.append(unit_summary(st["rollback_unit"]))
        if st.get("kernel_bug_reruns"):
            extra.append("rerun after a known kernel bug (%s)" % st.get("kernel_bug", ["?"])[0])
        if r.get("tolerated_kernel_lines"):
            extra.append("tolerated kernel lines %s" % r["tolerated_kernel_lines"])
        print("  %-20s %-10s %-5s %5.0fs %6d %7d  %s" % (n, r.get("fs", ""), r["result"], r["seconds"], r["boots"],
                                                        r["checks"], "; ".join(extra + ([r["message"]] if r["message"] else []))))
    bugs = sum(r.get("stats", {}).get("kernel_bug_reruns", 0) for r in results.values())
    for name, _ in checks.KNOWN_KERNEL_BUGS:
        print("  known kernel bug (%s) hit: %d time(s)" % (name, sum(
            1 for r in results.values() if (r.get("stats", {}).get("kernel_bug") or [None])[0] == name)))
    json.dump(dict(total_seconds=round(total, 1), results=results, kernel_bug_reruns=bugs),
              open(os.path.join(WORK, "results.json"), "w"), indent=1, default=str)
    return 0 if all(results.get(n, {}).get("result") == "PASS" for n in sel) else 1
