"""Full boots: a real systemd initrd built by Debian's dracut with our dracut module, switch-root into the
fresh root, and the tiny OS (guest/stage2-init) that prints what it sees. btrfs and bcachefs."""
import glob
import os
import re
import shutil
import subprocess
import time

from . import checks
from .core import GUEST_CMDLINE, GUEST, REPO, WORK, Stage, check, log, out, run, sha256_files
from .qemu import launch

BOOT_TIMEOUT = 150  # qemu CPU seconds for one boot under TCG (a normal boot takes ~12-27)

BASE_CONF = """# ephemeral-root.conf for the VM tests (installed by the dracut module)
device = /dev/vda
root = @root
snapshots = @snapshots
keep = 3
"""


def conf(keep=3, root="@root", extra="", device="/dev/vda"):
    return "device = %s\nroot = %s\nsnapshots = @snapshots\nkeep = %s\n%s" % (device, root, keep, extra)


def build_initrd(kernel, binary):
    """The systemd initrd, built by Debian's dracut with our dracut module (one per binary and kernel)."""
    mod = os.path.join(REPO, "initrd", "dracut", "90ephemeral-root")
    files = [os.path.join(mod, f) for f in sorted(os.listdir(mod))] + [binary]
    dracut_ver = out(["dpkg-query", "-W", "-f=${Version}", "dracut-core"])
    key = sha256_files(files, extra=kernel.kver + kernel.vmlinuz + dracut_ver + BASE_CONF)
    img = os.path.join(WORK, "initrd", "base-%s.img" % key)
    if os.path.exists(img):
        return img
    os.makedirs(os.path.dirname(img), exist_ok=True)
    base = os.path.join(WORK, "initrd", "dracut-%s" % key)
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree("/usr/lib/dracut", base, symlinks=True)
    shutil.copytree(mod, os.path.join(base, "modules.d", "90ephemeral-root"), symlinks=False)  # cp -rL
    cfile = os.path.join(WORK, "initrd", "ephemeral-root-%s.conf" % key)
    open(cfile, "w").write(BASE_CONF)
    confdir = os.path.join(WORK, "initrd", "empty-confdir")
    os.makedirs(confdir, exist_ok=True)
    env = dict(os.environ, dracutbasedir=base, EPHEMERAL_ROOT_BIN=binary, EPHEMERAL_ROOT_CONF=cfile)
    cmd = ["dracut", "--force", "--quiet", "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode",
           "--no-compress", "--conf", "/dev/null", "--confdir", confdir,
           "--kver", kernel.kver, "--kmoddir", kernel.moddir,
           "--modules", "systemd systemd-initrd dracut-systemd base fs-lib rootfs-block kernel-modules "
                        "udev-rules btrfs ephemeral-root",
           "--add-drivers", "virtio_blk virtio_pci btrfs bcachefs",
           img + ".tmp"]
    log("building the initrd with dracut (%s)" % key)
    t = time.time()
    run(cmd, env=env)
    # The dracut module must have put the binary, the unit (wanted by initrd.target) and the config in.
    listing = out(["lsinitrd", img + ".tmp"], env=env)
    for want in ("usr/bin/ephemeral-root", "usr/lib/systemd/system/ephemeral-root.service",
                 "initrd.target.wants/ephemeral-root.service", "etc/ephemeral-root.conf", "bcachefs.ko",
                 "btrfs.ko", "usr/sbin/btrfs"):
        check(want in listing, "initrd lacks %s" % want)
    # The dracut module turned `device = /dev/vda` into After=/Requires=dev-vda.device.
    dropin = out(["lsinitrd", img + ".tmp", "-f", "usr/lib/systemd/system/ephemeral-root.service.d/devices.conf"], env=env)
    check("Requires=dev-vda.device" in dropin and "After=dev-vda.device" in dropin,
          "initrd: devices.conf drop-in missing or wrong: %r" % dropin)
    os.rename(img + ".tmp", img)
    shutil.rmtree(base, ignore_errors=True)
    log("initrd built in %.0f s (%d MiB)" % (time.time() - t, os.path.getsize(img) >> 20))
    return img


def overlay(name, fs, env, conf=None, fail_closed=False, fault_bin=None, fault_env=None):
    """Test-only files on top of the dracut initrd (a second cpio archive the kernel unpacks after it):
    the OS mounts, the order probe, the check --json probe, the self-test's planter, variant configs."""
    stage = os.path.join(WORK, "overlay", name)
    st = Stage(stage)
    put, link = st.put, st.link

    put("/ertest/busybox", src="/bin/busybox", mode=0o755)
    for f in ("order-probe", "mount-bcachefs-top", "setup-bcachefs", "stage2-init", "check-json", "plant"):
        put("/ertest/" + f, src=os.path.join(GUEST, f), mode=0o755)
    put("/ertest/common.sh", src=os.path.join(GUEST, "common.sh"))
    put("/ertest/bchtool", src=env.bchtool, mode=0o755)
    etc = "/etc/systemd/system/"
    put("/etc/sysctl.d/50-ertest.conf", "kernel.printk = 7 4 1 7\n")
    put(etc + "ephemeral-root.service.d/order-probe.conf", src=os.path.join(GUEST, "units", "order-probe.conf"))
    put(etc + "ephemeral-root.service.d/ertest-check.conf", src=os.path.join(GUEST, "units", "ertest-check.conf"))
    fs.overlay_units(put, link)
    link(etc + "initrd-fs.target.requires/sysroot-nix.mount", "../sysroot-nix.mount")
    if conf is not None:
        put("/etc/ephemeral-root.conf", conf)
    if fail_closed:
        put(etc + "ephemeral-root.service.d/fail-closed.conf", src=os.path.join(REPO, "initrd", "fail-closed.conf"))
        link(etc + "sysroot.mount.requires/ephemeral-root.service", "/usr/lib/systemd/system/ephemeral-root.service")
    if fault_bin:
        put("/usr/bin/ephemeral-root", src=fault_bin, mode=0o755)
    if fault_env:
        put(etc + "ephemeral-root.service.d/fault.conf",
            "[Service]\n" + "".join("Environment=%s=%s\n" % kv for kv in sorted(fault_env.items())))
    from .host import cpio
    return cpio(stage)


def make_initrd(name, base_img, data):
    path = os.path.join(WORK, "initrd", "test-%s.img" % name)
    with open(path, "wb") as f:
        with open(base_img, "rb") as b:
            shutil.copyfileobj(b, f)
        f.write(b"\0" * ((-f.tell()) % 4))
        f.write(data)
    return path


class Machine:
    """One test machine: its filesystem, disk images, initrd and kernel command line."""

    def __init__(self, c, fs, env, disks, initrd, logdir):
        self.c, self.fs, self.env, self.disks, self.initrd, self.logdir = c, fs, env, disks, initrd, logdir
        self.name = c.name
        self.boots = 0
        self.timings = []
        os.makedirs(logdir, exist_ok=True)

    def cmdline(self, boot, extra, ndisks=None):
        # quiet: the kernel's boot messages cost seconds on an emulated serial port; the initrd raises the
        # console log level again (sysctl kernel.printk in the overlay) so info lines from userspace show.
        # nowatchdog: on a busy host the vCPU thread can be descheduled for 20 s; the guest's soft-lockup
        # detector would then print "BUG: soft lockup" although nothing is wrong.
        base = GUEST_CMDLINE.split() + ["printk.devkmsg=on", "quiet",
                "systemd.show_status=1", "rd.udev.log_level=err", "rd.shell=0", "rd.emergency=poweroff",
                "fsck.mode=skip", "rw", "init=/nix/init", "ertest.boot=%s" % boot]
        return " ".join(base + self.fs.dracut_cmdline(ndisks or len(self.disks)) + list(extra))

    def boot(self, extra=(), label=None, initrd=None, kill=None, timeout=BOOT_TIMEOUT, append=None,
             stop_on=None, boot_no=None, disks=None):
        """Boot once. kill(line, elapsed) -> seconds-to-wait-then-SIGKILL or None. Returns a qemu.Boot."""
        self.boots += 1
        self.c.boots += 1
        n = boot_no if boot_no is not None else self.boots
        label = label or "boot%02d" % self.boots
        logfile = os.path.join(self.logdir, "%02d-%s.log" % (self.boots, label))
        disks = self.disks if disks is None else disks
        self.c.logs.append(logfile)
        b = launch(self.name, label, logfile, self.env.kernel.vmlinuz, initrd or self.initrd,
                   append if append is not None else self.cmdline(n, extra, len(disks)), disks,
                   kill=kill, timeout=timeout, stop_on=stop_on)
        self.timings.append((b.seconds, b.cpu, label))
        t = unit_times(b)
        if t:
            self.c.stats.setdefault("rollback_unit", []).append(dict(t, boot=label, load=round(os.getloadavg()[0], 2)))
        return b


def unit_times(b):
    """How long ephemeral-root.service's main process (`rollback`) ran in this boot, as systemd recorded it
    (guest/order-probe prints ExecMainStart/ExecMainExitTimestampMonotonic after it exited): `unit_ms`, the
    unit's run time without the test drop-ins (the `check --json` and probes run before and after it); and
    `self_ms`, the program's own "rollback finished in N ms". None when the boot printed neither (a cut,
    a failed rollback, a `skip` boot: no "rollback finished" line, nothing recorded). Emulated CPU (TCG):
    compare these with each other, not with the host's benchmark."""
    m = re.search(r"ERTEST unit-main ExecMainStartTimestampMonotonic=(\d+) ExecMainExitTimestampMonotonic=(\d+)", b.text)
    f = re.search(r"ephemeral-root: rollback finished in (\d+) ms", b.text)
    if not f:
        return None
    r = {"self_ms": int(f.group(1))}
    if m and int(m.group(1)) > 0 and int(m.group(2)) >= int(m.group(1)):
        r["unit_ms"] = round((int(m.group(2)) - int(m.group(1))) / 1000.0, 1)
    return r


def unit_summary(rows):
    """One line for the results table: medians (min-max) of the rollback unit's run time over the boots."""
    def med(k):
        import statistics
        v = sorted(r[k] for r in rows if k in r)
        if not v:
            return "-"
        return "%.0f ms (%s-%s)" % (statistics.median(v), v[0], v[-1])
    return "rollback unit %s, program's own %s, %d boots, load %.1f-%.1f" % (
        med("unit_ms"), med("self_ms"), len(rows), min(r["load"] for r in rows), max(r["load"] for r in rows))


def machine(c, fs, env, **ov):
    """A fresh machine for scenario c on filesystem fs: new disks, the scenario's initrd overlay."""
    d = os.path.join(WORK, c.name)
    for mnt in glob.glob(os.path.join(d, "*.mnt")):  # left over by an interrupted run
        subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    disks = fs.make_disks(d)
    initrd = make_initrd(c.name, env.base, overlay(c.name, fs, env, **ov))
    m = Machine(c, fs, env, disks, initrd, os.path.join(d, "logs"))
    fs.setup(m)
    return m


def variant(m, name, **ov):
    return make_initrd(m.name + "-" + name, m.env.base, overlay(m.name + "-" + name, m.fs, m.env, **ov))


# ---------------------------------------------------------------------------------------------------
# Checks on what a boot printed (stage 2 listings, console order, check --json) and on the disks
# ---------------------------------------------------------------------------------------------------

def markers(files):
    return set(f for f in files if f.startswith("marker-"))


def check_order(c, b):
    """The unit ran before sysroot.mount: probes in the unit, and the order of the console lines."""
    c.expect(b, b.has(r"ERTEST order start sysroot=not-mounted"), "no order probe at the start of the unit")
    c.expect(b, not b.has(r"ERTEST order (start|end) sysroot=mounted"), "/sysroot was mounted while the unit ran")
    fin = b.index(r"ephemeral-root: rollback finished in \d+ ms")
    # the run's first line names the filesystem; then its steps (none when a recovery finds the fresh root
    # in place: then only `finish N/M:` lines for the work the last boot left), then "finished"
    start = b.index(r"ephemeral-root: .*: root \S+, snapshots \S+, mode ")
    step = b.index(r"ephemeral-root: (step|finish) 1/\d+: ")
    mnt = b.index(r"(Mounting|Mounted) (sysroot\.mount|/sysroot)")
    sw = b.index(r"Switching root|switch-root|Reached target .*Switch Root")
    c.expect(b, start >= 0 and fin > start and (step < 0 or start < step < fin),
             "no 'ephemeral-root: FS DEV: root ...' then steps then 'rollback finished' lines on the console")
    c.expect(b, mnt > fin, "sysroot.mount (line %d) is not after 'rollback finished' (line %d)" % (mnt, fin))
    c.expect(b, sw > mnt, "no switch-root after sysroot.mount")


def check_kernel_lines(c, b):
    """No kernel error line from a filesystem on a normal boot (issue 16); tolerated ones are counted.
    Recorded, not raised: the scenario runs all its other checks and fails at its end (runner.run_one)."""
    errs, tol = checks.kernel_errors(b.lines)
    for k, v in tol.items():
        c.kernel_lines[k] = c.kernel_lines.get(k, 0) + v
    c.kernel_errors += [(os.path.basename(b.logfile), e) for e in errs]
    c.checks += 1


def check_state(c, b, n, keep=None, oldroots_exact=None, oldroots_range=None, fresh=True, top=None, normal=True,
                recent=None, listed_all=True, allow_dup=(), root_allow=()):
    """The state after boot n's successful rollback, as the guest printed it: check --json (post), the
    stage-2 / light-guest listings of root, old roots and /persist, and the kernel log. Appends n to
    c.completed (its markers are written). recent: only the markers of the last `recent` completed boots
    must be found (the guest listed only the newest old roots: listed_all=False). allow_dup: markers that may
    be in two old roots (a restored root is a copy of an old root). root_allow: files the boot itself puts
    into the fresh root before stage 2 (the NixOS-rendered boots: /etc/os-release, as NixOS's activation)."""
    want = oldroots_range if oldroots_range is not None else oldroots_exact
    # after `rollback`: sound, the root fresh, the previous root (if it was worth keeping) waiting as
    # .kept.<name> for `finish`; after `finish`: clean, with the old roots the scenario expects
    c.expect_none(b, checks.clean_problems(b.json("post"), fresh=fresh, pending=3),
                  "boot %d: check --json after the rollback" % n)
    c.expect_none(b, checks.clean_problems(b.json("final"), oldroots=want),
                  "boot %d: check --json after finish" % n)
    j = b.json("final")["obj"]
    olds = checks.old_roots(j)
    root, nondirs = b.list("root-files"), b.list("root-nondirs")
    c.expect(b, root is not None and nondirs is not None, "boot %d: no root listing" % n)
    nondirs = nondirs - set(root_allow)
    c.expect(b, not nondirs and not markers(root), "boot %d: root is not fresh: %s %s" % (n, sorted(root), sorted(nondirs)))
    if top is not None:
        got = b.list("top")
        c.expect(b, got == top, "boot %d: top level is %s, want %s" % (n, sorted(got or []), sorted(top)))
    # every old root check --json names was listed by the guest, and a write into it failed (EROFS)
    listed = set(b.oldroots)
    if listed_all:
        c.expect(b, set(olds) <= listed, "boot %d: old roots %s not listed by the guest" % (n, sorted(set(olds) - listed)))
    olds = [o for o in olds if o in listed]
    for name in olds:
        c.expect(b, b.oldroots[name]["ro"] == "yes", "boot %d: old root %s is writable (a write into it worked)" % (n, name))
    held = {}
    for name in olds:
        for mk in markers(b.oldroots[name]["files"]):
            held.setdefault(mk, []).append(name)
    dup = {mk: v for mk, v in held.items() if len(v) > 1 and mk not in allow_dup}
    c.expect(b, not dup, "boot %d: markers in more than one old root (want exactly one): %s" % (n, dup))
    recent = c.completed[-(recent or keep or len(c.completed) or 1):]
    missing = ["marker-%d" % k for k in recent if "marker-%d" % k not in held]
    c.expect(b, not missing, "boot %d: old roots lack %s" % (n, missing))
    if c.completed and c.completed[-1] == n - 1:
        h = held.get("marker-%d" % (n - 1), [])
        c.expect(b, len(h) == 1, "boot %d: marker-%d is in old roots %s (want exactly one)" % (n, n - 1, h))
        c.expect(b, "etc" in b.oldroots[h[0]]["files"], "boot %d: old root lacks etc/" % n)
    if keep is not None:
        c.expect(b, len(olds) <= keep, "boot %d: %d old roots, keep = %d" % (n, len(olds), keep))
    pers = b.list("persist-files") or set()
    lost = ["p-%d" % k for k in c.completed if "p-%d" % k not in pers]
    c.expect(b, not lost, "boot %d: persisted files lost: %s" % (n, lost))
    bad = b.list("persist-bad")
    c.expect(b, bad is not None and not bad, "boot %d: persisted files changed: %s" % (n, sorted(bad or [])))
    if normal:
        check_kernel_lines(c, b)
    c.completed.append(n)


def check_after_rollback(c, b, n, keep=None, oldroots_exact=None, oldroots_range=None, normal=True, allow_dup=(),
                         root_allow=()):
    """Boot n (a full dracut boot) ran a successful rollback and reached stage 2."""
    c.expect(b, b.completed, "boot %d did not reach the end of stage 2" % n)
    c.expect(b, b.has(r"ephemeral-root: rollback finished in \d+ ms"), "boot %d: no 'rollback finished'" % n)
    c.expect(b, not b.has(r"rollback FAILED"), "boot %d: rollback FAILED" % n)
    check_order(c, b)
    check_state(c, b, n, keep=keep, oldroots_exact=oldroots_exact, oldroots_range=oldroots_range,
                top=c.fs.top, normal=normal, allow_dup=allow_dup, root_allow=root_allow)
