"""The one definition of a clean state, as every harness asserts it: through `ephemeral-root check --json`.

The binary is the one source of truth for what is in the snapshots location (docs/contract.md, "On-disk
names"): `check --json` prints one object

    {"clean": bool, "filesystem": str, "root": {"name": str, "present": bool, "fresh": bool|null},
     "entries": [{"name": str, "kind": KIND, "readonly": bool, "pinned": bool, "belongs_to": str}],
     "problems": [str]}

and exits 0 when there are no problems. Clean: the root is present; every entry is an old root (read-only),
the baseline, the pins, the program's state or a template; nothing pending, left over or foreign; no
problems. `clean_problems` checks that, and that the binary's own "clean" and exit status agree with it.

Guests print the object as an ERJSON block (guest/common.sh: erjson), parsed by qemu.Boot.
Also here: kernel log lines caused by us (issue 16), and the one known bcachefs 6.12 kernel bug.
"""
import re

CLEAN_KINDS = {"old-root", "baseline", "pins", "state", "template"}
ALL_KINDS = CLEAN_KINDS | {"pending", "leftover", "foreign"}


def old_roots(obj):
    """Names of the old roots (not their parts) in a check --json object."""
    return sorted(e["name"] for e in obj.get("entries", []) if e.get("kind") == "old-root" and not e.get("belongs_to"))


def clean_problems(block, oldroots=None, fresh=None, pending=0):
    """Problems with the state an ERJSON block (from qemu.Boot.jsons) describes; [] when it is clean.

    oldroots: the number of old roots wanted (int) or a (lo, hi) range, or None (any).
    fresh: True: the root must be fresh (not written since it was made; null = cannot tell, accepted).
    pending: how many `pending` entries are allowed: between `rollback` and `finish` the previous root waits
    as `.kept.<name>` (a root with nothing worth keeping as `.retired-root.<id>`), and the baseline of the
    replaced root as `.deleting.baseline`; docs/protocol.md."""
    if block is None:
        return ["no check --json output on the console"]
    if block.get("error"):
        return ["check --json: %s" % block["error"]]
    j = block["obj"]
    if not isinstance(j, dict):
        return ["check --json printed %r, not an object" % (j,)]
    probs = []
    for k, t in (("clean", bool), ("filesystem", str), ("root", dict), ("entries", list), ("problems", list)):
        if not isinstance(j.get(k), t):
            probs.append("check --json: key %r missing or not a %s" % (k, t.__name__))
    if probs:
        return probs
    root = j["root"]
    if root.get("present") is not True:
        probs.append("root %s missing" % root.get("name"))
    if fresh and root.get("fresh") is False:
        probs.append("root %s not fresh" % root.get("name"))
    names = {e.get("name") for e in j["entries"]}
    npending = 0
    for e in j["entries"]:
        n, kind = e.get("name"), e.get("kind")
        if kind == "pending" and not e.get("belongs_to") and npending < pending \
                and re.match(r"^\.(kept\.|retired-root\.|deleting\.baseline$)", n or ""):
            npending += 1
            continue
        if kind == "pending" and e.get("belongs_to") and pending:
            continue  # a part (bcachefs <name>.nested) of an allowed pending entry
        if kind not in ALL_KINDS:
            probs.append("entry %s: unknown kind %r" % (n, kind))
        elif kind not in CLEAN_KINDS:
            probs.append("%s entry %s" % (kind, n))
        if kind == "old-root" and not e.get("belongs_to") and e.get("readonly") is not True:
            probs.append("old root %s writable" % n)
        if e.get("belongs_to") and e["belongs_to"] not in names:
            probs.append("entry %s belongs to %s, which is missing" % (n, e["belongs_to"]))
    for p in j["problems"]:
        probs.append("binary: %s" % p)
    rc = block["meta"].get("rc")
    if j["clean"] != (not probs and not npending):
        probs.append("check --json says clean=%s but: %s" % (str(j["clean"]).lower(), "; ".join(probs) or "nothing wrong"))
    if rc is not None and (rc == "0") != (not j["problems"]):
        probs.append("check --json exited %s with %d problems" % (rc, len(j["problems"])))
    if oldroots is not None:
        lo, hi = oldroots if isinstance(oldroots, tuple) else (oldroots, oldroots)
        olds = old_roots(j)
        if not lo <= len(olds) <= hi:
            probs.append("%d old roots, want %s: %s" % (len(olds), oldroots, " ".join(olds)))
    return probs


# --- kernel log lines ------------------------------------------------------------------------------
# A kernel line from a filesystem that says something went wrong. On a normal boot none may appear: a tool
# that runs at every boot must not put an error into the kernel log when nothing is wrong (issue 16).
# (bcachefs >= 6.15-ish logs every failed ioctl: "bch2_ioctl_subvolume_create(): error (null) EEXIST".)
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] (.*)$")
FS_ERROR = re.compile(r"^(?:bcachefs|BTRFS|btrfs|ZFS|zfs|SPL)\b.*\b(?:error|ERROR|err|warning|WARNING|corrupt\w*|"
                      r"emergency read.only|E[A-Z]{3,})\b|\bbch2_\w+\(\): error")
# Known kernel-side lines that are not ours, each with the reason; counted per scenario, never silent.
TOLERATED = [
]


def kernel_errors(lines):
    """(errors, tolerated): kernel lines from a filesystem reporting an error; tolerated ones by name."""
    errs, tol = [], {}
    for l in lines:
        m = KERNEL_LINE.match(l.strip())
        if not m or not FS_ERROR.search(m.group(1)):
            continue
        for name, pat, _ in TOLERATED:
            if re.search(pat, m.group(1)):
                tol[name] = tol.get(name, 0) + 1
                break
        else:
            errs.append(m.group(1))
    return errs, tol


def selftest():
    """The kernel-line pattern catches the lines issue 16 names and lets ordinary ones through."""
    bad = ["[    9.478810] bcachefs (vda): bch2_delete_dead_snapshots(): error erofs_trans_commit",
           "[    1.000000] bcachefs (vda): bch2_ioctl_subvolume_create(): error (null) EEXIST",
           "[    2.000000] BTRFS error (device vda): bad tree block start",
           "[    3.000000] BTRFS warning (device vda): csum failed root 5 ino 257",
           "[    4.000000] bcachefs (vda): emergency read only at seq 12"]
    good = ["[    9.316723] bcachefs (vda): starting version 1.13: inode_has_child_snapshots",
            "[    9.317467] bcachefs (vda): recovering from unclean shutdown",
            "[    1.5] BTRFS info (device vda): first mount of filesystem 8c5f",
            "[    1.5] BTRFS: device label ertest devid 1 transid 12 /dev/vda (254:0) scanned by mount (250)",
            "[    2.1] ZFS: Loaded module v2.3.2-2~bpo12+2, ZFS pool version 5000, ZFS filesystem version 5",
            "ERTEST oldroot=x ro=yes files=a,b", "ephemeral-root: rollback finished in 40 ms"]
    errs, _ = kernel_errors(bad + good)
    assert len(errs) == len(bad), "kernel line pattern: %s" % errs
    # a hung guest is stopped from its second hung-task report on (qemu.launch)
    from .qemu import HUNG, HUNG_AFTER
    hung = [int(m.group(2)) for m in (HUNG.search(l) for l in (
        "[ 1209.49] INFO: task txg_sync:191 blocked for more than 120 seconds.",
        "[ 1330.32] INFO: task zfs:7178 blocked for more than 241 seconds.",
        "ephemeral-root: step 1/4: build the next root (empty)")) if m]
    assert [h >= HUNG_AFTER for h in hung] == [False, True], "hung-task pattern: %s" % hung
    zfs_hang = "\n".join([
        "[ 1209.689154] INFO: task txg_sync:193 blocked for more than 120 seconds.",
        "[ 1209.695340]  zio_wait+0x13e/0x2c0 [zfs]", "[ 1209.695774]  dsl_pool_sync+0x454/0x510 [zfs]"])
    other_hang = zfs_hang.replace("txg_sync:193", "umount:7080")
    dead = "bcachefs (vda): bch2_delete_dead_snapshots(): error EROFS\nbcachefs (vda): emergency read only at seq 9"
    found = [known_kernel_bug(t) for t in (zfs_hang, other_hang, dead, "\n".join(good))]
    assert found == ["ZFS txg_sync hang", None, "bcachefs 6.12 dead-snapshot deletion", None], \
        "known kernel bugs: %s" % found


# --- known kernel bugs (issue 12 item 6) -----------------------------------------------------------
# Kernel failures that are not ours. A scenario that fails with one of them in one of its serial logs is
# run once more (runner.run_one), loudly, and the count is in the results (kernel_bug_reruns, by name).
# - Linux 6.12's bcachefs sometimes trips over its own background deletion of dead snapshots ("key in
#   missing snapshot ... bch2_delete_dead_snapshots(): error ...") and goes emergency read-only; every
#   later step then fails. We only issue SUBVOLUME_CREATE/DESTROY.
# - ZFS 2.3.2 in the TCG guests ("ZFS txg_sync hang"): after 15-20 minutes of the crash loop (thousands
#   of dataset creates, destroys and mounts) txg_sync waits forever in zio_wait() under dsl_pool_sync()
#   for a write that never completes (qemu has no request in flight, the disk image is no longer
#   written), and every ZFS call behind it hangs (umount in zil_close -> txg_wait_synced). Seen 2 times
#   in about 3 guest-hours of crash loops on 2026-12-01; our program was not running at that moment
#   (the test's own umount was).
KNOWN_KERNEL_BUGS = (
    ("bcachefs 6.12 dead-snapshot deletion",
     lambda t: ("bch2_delete_dead_snapshots(): error" in t or "missing snapshot" in t)
     and re.search(r"emergency read.only", t) is not None),
    # ZFS's sync thread hung is never our doing (we only issue ioctls and mounts); the stack (loglevel 7, as
    # the crash loops run) shows where: so far always zio_wait under dsl_pool_sync
    ("ZFS txg_sync hang",
     lambda t: re.search(r"INFO: task txg_sync:\d+ blocked for more than", t) is not None),
)


def known_kernel_bug(text):
    """The name of the known kernel failure in this serial log, or None."""
    return next((name for name, hit in KNOWN_KERNEL_BUGS if hit(text)), None)
