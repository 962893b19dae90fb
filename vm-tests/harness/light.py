"""Small guests: a busybox initramfs (host.busybox_initramfs) whose /init runs one script of vm-tests/guest on
the real disks with the real binary. Used by the power-cut cycle (guest/cycle.sh) and the suites
(guest/engine-tests.sh for bcachefs, guest/zfs-tests.sh for ZFS)."""
import os
import re
import shutil
import subprocess

from .core import GUEST_CMDLINE, WORK, check, out
from .host import Kernel, busybox_initramfs
from .qemu import launch

GUEST_TIMEOUT = 150  # qemu CPU seconds for one light boot


def zfs_disk(path, gib=1):
    """A sparse raw disk of `gib` GiB with one MBR partition (sectors 2048..end): the pool lives on vda1."""
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(gib << 30)
        # not bootable, CHS unused, type 0xbf (Solaris/ZFS), LBA start 2048, the rest of the disk
        sectors = ((gib << 30) >> 9) - 2048
        f.seek(446)
        f.write(bytes([0x00, 0xfe, 0xff, 0xff, 0xbf, 0xfe, 0xff, 0xff]) + (2048).to_bytes(4, "little")
                + sectors.to_bytes(4, "little"))
        f.seek(510)
        f.write(b"\x55\xaa")
    return [path]


def guest_image(fs, env, fault=True, extra=None, tag=""):
    """(kernel, initramfs) of the small guest for filesystem fs; extra: {guest path: host file} more."""
    binary = env.fault_binary if fault else env.binary
    if fs.kind == "zfs":
        p = fs.prepare()
        kernel = Kernel(p["KVER"], os.path.join(p["KDIR"], "vmlinuz"), os.path.join(p["KDIR"], "lib", "modules", p["KVER"]),
                        "zfs " + p["ZVER"])
        spl, zfs = os.path.join(p["MODDIR"], "spl.ko"), os.path.join(p["MODDIR"], "zfs.ko")
        deps = set()
        for ko in (spl, zfs):
            deps |= set(x for x in out(["modinfo", "-F", "depends", ko]).strip().split(",") if x)
        deps -= {"spl", "zfs", ""}
        mods = ["virtio_blk"] + sorted(deps) + [spl, zfs]
        img = busybox_initramfs("guest-zfs" + ("-fault" if fault else "") + tag, kernel, mods, binary,
                                extra=dict({"/bin/bchtool": env.bchtool}, **(extra or {})),
                                roots=[os.path.join(p["ULAND"], "root")])
    else:
        kernel = env.kernel
        img = busybox_initramfs("guest-linux" + ("-fault" if fault else "") + tag, kernel,
                                ["virtio_blk", "btrfs", "bcachefs"], binary,
                                extra=dict({"/bin/bchtool": env.bchtool}, **(extra or {})))
    return kernel, img


class LightMachine:
    """A machine of the light power-cut cycle: disks, its initramfs, boot counter."""

    def __init__(self, c, fs, env):
        self.c, self.fs, self.env = c, fs, env
        self.name = c.name
        d = os.path.join(WORK, c.name)
        subprocess.run("umount -l %s/*.mnt 2>/dev/null" % d, shell=True)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        self.dir, self.logdir = d, os.path.join(d, "logs")
        self.disks = zfs_disk(os.path.join(d, "disk.img")) if fs.kind == "zfs" else fs.make_disks(d)
        self.kernel, self.initrd = guest_image(fs, env)
        self.devs = ":".join("/dev/vd" + "abcdefgh"[i] for i in range(len(self.disks)))
        self.boots = 0

    def boot(self, params, label, kill=None, timeout=GUEST_TIMEOUT):
        self.c.boots += 1
        logfile = os.path.join(self.logdir, "%03d-%s.log" % (self.boots, label))
        self.c.logs.append(logfile)
        append = GUEST_CMDLINE + " loglevel=4 " + " ".join(params)
        return launch(self.name, label, logfile, self.kernel.vmlinuz, self.initrd, append, self.disks,
                      mem=self.fs.mem, kill=kill, timeout=timeout)

    def setup(self):
        b = self.boot(["ertest.script=cycle.sh", "ertest.fs=" + self.fs.kind, "ertest.devs=" + self.devs,
                       "ertest.boot=0"], "setup")
        check(b.has(r"ERTEST setup ok"), "%s: setup boot failed (see %s)" % (self.name, b.logfile))
        from . import checks
        probs = checks.clean_problems(b.json("final"))
        check(not probs, "%s: setup boot: check --json: %s (see %s)" % (self.name, probs, b.logfile))
        # old roots before the first boot (ZFS keeps the root `zfs create` made: it has no fresh snapshot)
        self.base = len(checks.old_roots(b.json("final")["obj"]))

    def cycle(self, arm, label, delay_ms=150, kill=None, listall=False):
        self.boots += 1
        self.listed_all = bool(listall or self.fs.kind != "zfs")
        return self.boot(["ertest.script=cycle.sh", "ertest.fs=" + self.fs.kind, "ertest.devs=" + self.devs,
                          "ertest.boot=%d" % self.boots, "ertest.arm=%d" % bool(arm), "ertest.delay=%d" % delay_ms,
                          "ertest.listall=%d" % self.listed_all], label, kill=kill)

    def check(self, c, b, n, oldroots, final=False):
        oldroots += self.base
        """Boot n recovered (rollback rc 0), is clean, lost nothing, and wrote its markers."""
        from .dracut import check_state
        c.expect(b, b.has(r"ERTEST recovery rc=0"), "boot %d: the recovery rollback failed: %s" % (
            n, (re.findall(r"ERTEST recovery rc=\S+|rollback FAILED.*", b.text) or ["no result"])[-1]))
        c.expect(b, b.has(r"ERTEST finish rc=0"), "boot %d: finish failed" % n)
        c.expect(b, b.has(r"ERTEST done boot=%d" % n), "boot %d: did not write its markers" % n)
        listall = final or self.listed_all
        if self.fs.kind == "zfs":
            c.expect(b, b.er.get("zfs-bad") == "", "boot %d: datasets under the snapshots location not readonly=on "
                                                   "canmount=noauto: %s" % (n, b.er.get("zfs-bad")))
            c.expect(b, b.er.get("zfs-stray") == "", "boot %d: stray datasets: %s" % (n, b.er.get("zfs-stray")))
        check_state(c, b, n, oldroots_exact=oldroots, top=self.fs.top, normal=False,
                    recent=None if listall else 3, listed_all=listall)
