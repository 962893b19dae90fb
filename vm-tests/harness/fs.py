"""One class per filesystem: its disks, kernel command line, initrd pieces, kernel modules for the small
guests, and its final check (on the host for btrfs; a checker boot in the guest for bcachefs and ZFS)."""
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid

from . import checks
from .core import GUEST_CMDLINE, FIXTURES, FIXTURE_SET, GUEST, HERE, Skip, TestFailure, check, log, out, run

HOST_FS_LOCK = threading.Lock()


class Loop:
    """Mount an image on the host through a loop device (btrfs only; the host has no bcachefs)."""

    def __init__(self, img, mnt, ro=True):
        self.img, self.mnt, self.ro = img, mnt, ro

    def __enter__(self):
        HOST_FS_LOCK.acquire()  # one host-side mount at a time (parallel scenarios)
        self.dev = out(["losetup", "--find", "--show"] + (["--read-only"] if self.ro else []) + [self.img]).strip()
        os.makedirs(self.mnt, exist_ok=True)
        try:
            run(["mount", "-t", "btrfs", "-o", "ro" if self.ro else "rw", self.dev, self.mnt])
        except Exception:
            run(["losetup", "-d", self.dev])
            HOST_FS_LOCK.release()
            raise
        return self.mnt

    def __exit__(self, *a):
        try:
            for i in range(20):
                if subprocess.run(["umount", self.mnt], stderr=subprocess.DEVNULL).returncode == 0:
                    break
                time.sleep(0.5)  # a forked child of another thread may hold a file here for a moment
            else:
                run(["umount", self.mnt])
            subprocess.run(["losetup", "-d", self.dev])
        finally:
            HOST_FS_LOCK.release()
        try:
            os.rmdir(self.mnt)
        except OSError:
            pass


def host_check_json(binary, dev_args):
    """Run check --json on the host; returns a block like qemu.Boot.jsons entries."""
    r = subprocess.run([binary] + dev_args + ["check", "--json"], capture_output=True, text=True)
    block = dict(tag="host", meta=dict(rc=str(r.returncode)), obj=None, error=None, raw=r.stdout)
    try:
        block["obj"] = json.loads(r.stdout)
    except ValueError as e:
        block["error"] = "check --json printed no JSON (%s): %r; stderr %r" % (e, r.stdout[:200], r.stderr[-300:])
    return block


class Filesystem:
    kind = None
    top = None  # the filesystem's expected top level (stage 2 lists it)
    mem = 768

    def __init__(self, name):
        self.name = name

    def available(self):
        """Raise Skip when this filesystem cannot be tested here (missing fixture set member)."""


class Btrfs(Filesystem):
    kind = "btrfs"
    top = {"@nix", "@persist", "@root", "@snapshots"}
    light_modules = ["virtio_blk", "btrfs"]
    label = "ertest"

    def __init__(self):
        super().__init__("btrfs")

    def make_disks(self, d):
        path = os.path.join(d, "disk.img")
        with open(path, "wb") as f:
            f.truncate(1 << 30)
        run(["mkfs.btrfs", "-q", "-L", self.label, path])
        with Loop(path, path + ".mnt", ro=False) as mnt:
            for sv in ("@root", "@persist", "@nix"):
                run(["btrfs", "-q", "subvolume", "create", os.path.join(mnt, sv)], stdout=subprocess.DEVNULL)
            shutil.copyfile("/bin/busybox", os.path.join(mnt, "@nix", "busybox"))
            shutil.copyfile(os.path.join(GUEST, "stage2-init"), os.path.join(mnt, "@nix", "init"))
            os.chmod(os.path.join(mnt, "@nix", "busybox"), 0o755)
            os.chmod(os.path.join(mnt, "@nix", "init"), 0o755)
        return [path]

    def dracut_cmdline(self, ndisks):
        return ["root=/dev/vda", "rootfstype=btrfs", "rootflags=subvol=@root", "ertest.top=btrfs:/dev/vda"]

    def overlay_units(self, put, link):
        put("/etc/systemd/system/sysroot-nix.mount", src=os.path.join(GUEST, "units", "btrfs-sysroot-nix.mount"))

    def setup(self, m):
        pass

    def final_check(self, c, m, last, want_oldroots, want_markers, allow_dup=()):
        """After the boots: the image on the host, read-only: check --json, then the listing."""
        img = m.disks[0]
        # check --json on a copy of the image (sparse: cheap), so the image itself is untouched whatever
        # the check does when it mounts the filesystem
        copy = img + ".check"
        run(["cp", "--sparse=always", img, copy])
        lo = out(["losetup", "--find", "--show", copy]).strip()
        try:
            block = host_check_json(m.env.binary, ["--device", lo])
        finally:
            subprocess.run(["losetup", "-d", lo])
            os.unlink(copy)
        c.expect_none(None, checks.clean_problems(block, oldroots=want_oldroots), "host: check --json")
        pre = "%s: host: " % c.name
        with Loop(img, img + ".mnt") as mnt:
            top = set(os.listdir(mnt))
            c.expect(None, top == self.top, pre + "top level %s" % sorted(top))
            subs = out(["btrfs", "subvolume", "list", "-o", mnt])
            c.expect(None, len(re.findall(r"path @root$", subs, re.M)) == 1, pre + "not exactly one @root:\n%s" % subs)
            root = set(os.listdir(os.path.join(mnt, "@root")))
            c.expect(None, "marker-%d" % last in root, pre + "@root lacks the last boot's marker (%s)" % sorted(root))
            c.expect(None, not [x for x in root if x.startswith("marker-") and x != "marker-%d" % last],
                     pre + "@root holds older markers: %s" % sorted(root))
            snaps = os.path.join(mnt, "@snapshots")
            olds = checks.old_roots(block["obj"])
            have = {}
            for o in olds:
                p = os.path.join(snaps, o)
                ro = out(["btrfs", "property", "get", "-ts", p, "ro"]).strip()
                c.expect(None, ro == "ro=true", pre + "old root %s is not read-only (%s)" % (o, ro))
                for mk in os.listdir(p):
                    if mk.startswith("marker-"):
                        have.setdefault(mk, []).append(o)
            dup = {k: v for k, v in have.items() if len(v) > 1 and k not in allow_dup}
            c.expect(None, not dup, pre + "markers in more than one old root: %s" % dup)
            c.expect(None, set(want_markers) <= set(have), pre + "old roots lack %s" % sorted(set(want_markers) - set(have)))
            pers = set(os.listdir(os.path.join(mnt, "@persist")))
            lost = ["p-%d" % k for k in c.completed if "p-%d" % k not in pers]
            c.expect(None, not lost, pre + "persisted files lost: %s" % lost)
            for k in c.completed:
                data = open(os.path.join(mnt, "@persist", "p-%d" % k)).read()
                c.expect(None, data == "persisted in boot %d\n" % k, pre + "p-%d has %r" % (k, data))


def fixture_files(ndev):
    """The fixture images of a bcachefs filesystem with ndev members, from the fixture set."""
    if ndev == 1:
        return ["%s-blank-512M.img.zst" % FIXTURE_SET]
    return ["%s-%ddev-%s-512M.img.zst" % (FIXTURE_SET, ndev, x) for x in "abcdefgh"[:ndev]]


def image_uuid(path):
    """The external UUID in the bcachefs superblock of a fixture image (byte 4096 + 0x38)."""
    head = subprocess.run("zstd -dc '%s' | head -c 8192" % path, shell=True, check=True, capture_output=True).stdout
    check(len(head) == 8192, "%s: cannot read its superblock" % path)
    return str(uuid.UUID(bytes=head[4096 + 0x38:4096 + 0x48]))


class Bcachefs(Filesystem):
    kind = "bcachefs"
    top = Btrfs.top | {"lost+found"}
    light_modules = ["virtio_blk", "bcachefs"]

    def __init__(self, ndev=1):
        super().__init__("bcachefs" if ndev == 1 else "bcachefs%d" % ndev)
        self.ndev = ndev

    def fixtures(self):
        return [os.path.join(FIXTURES, n) for n in fixture_files(self.ndev)]

    def available(self):
        missing = [f for f in self.fixtures() if not os.path.exists(f)]
        if missing:
            raise Skip("fixture set %s in %s has no %s" % (FIXTURE_SET, FIXTURES, ", ".join(os.path.basename(f) for f in missing)))

    def uuid(self):
        return image_uuid(self.fixtures()[0])

    def make_disks(self, d):
        disks = []
        for i, src in enumerate(self.fixtures()):
            dst = os.path.join(d, "disk-%s.img" % "abcdefgh"[i])
            run(["zstd", "-q", "-d", "-f", src, "-o", dst])
            disks.append(dst)
        return disks

    @staticmethod
    def devs(n):
        return ":".join("/dev/vd" + "abcdefgh"[i] for i in range(n))

    def dracut_cmdline(self, ndisks):
        devs = self.devs(ndisks)
        return ["root=/dev/vda", "rootfstype=bcachefs", "ertest.bcachefs=" + devs, "ertest.top=bcachefs:" + devs]

    def overlay_units(self, put, link):
        etc = "/etc/systemd/system/"
        put(etc + "bcachefs-top.service", src=os.path.join(GUEST, "units", "bcachefs-top.service"))
        put(etc + "sysroot.mount", src=os.path.join(GUEST, "units", "bcachefs-sysroot.mount"))
        put(etc + "sysroot-nix.mount", src=os.path.join(GUEST, "units", "bcachefs-sysroot-nix.mount"))
        link(etc + "initrd-root-fs.target.requires/sysroot.mount", "../sysroot.mount")

    def setup(self, m):
        """The host cannot mount bcachefs: a setup boot (no systemd) makes @root, @persist and @nix."""
        b = m.boot(label="setup", append=GUEST_CMDLINE + " loglevel=4 "
                                         "rdinit=/ertest/setup-bcachefs ertest.bcachefs=" + self.devs(len(m.disks)))
        mt = re.search(r"ERTEST setup ok top=(\S*)", b.text)
        top = set(filter(None, mt.group(1).split(","))) if mt else None
        check(top is not None and {"@root", "@persist", "@nix"} <= top,
              "%s: bcachefs setup boot failed (see %s)" % (m.name, b.logfile))
        m.boots = 0  # the setup boot ran no stage 2: boot numbers (markers) start at 1

    def final_check(self, c, m, last, want_oldroots, want_markers=None, allow_dup=()):
        """A checker boot (rollback skipped, nothing written) prints the state: check --json and listings."""
        b = m.boot(extra=["rd.ephemeral_root=skip", "ertest.mode=check"], label="check", boot_no="check")
        c.expect(b, b.completed, "checker boot did not complete")
        c.expect_none(b, checks.clean_problems(b.json("post"), oldroots=want_oldroots), "checker: check --json")
        olds = checks.old_roots(b.json("post")["obj"])
        root = b.list("root-files") or set()
        c.expect(b, {x for x in root if x.startswith("marker-")} == {"marker-%d" % last},
                 "checker: @root holds %s" % sorted(root))
        c.expect(b, "etc" in root, "checker: @root lacks etc/")
        have = {}
        for o in olds:
            c.expect(b, b.oldroots.get(o, {}).get("ro") == "yes", "checker: old root %s writable or not listed" % o)
            for mk in b.oldroots.get(o, {}).get("files", ()):
                if mk.startswith("marker-"):
                    have.setdefault(mk, []).append(o)
        dup = {k: v for k, v in have.items() if len(v) > 1 and k not in allow_dup}
        c.expect(b, not dup, "checker: markers in more than one old root: %s" % dup)
        want = want_markers if want_markers is not None else []
        c.expect(b, set(want) <= set(have), "checker: old roots lack %s" % sorted(set(want) - set(have)))
        pers = b.list("persist-files") or set()
        c.expect(b, all("p-%d" % k in pers for k in c.completed), "checker: persisted files lost")
        c.expect(b, not b.list("persist-bad"), "checker: persisted files changed: %s" % b.list("persist-bad"))
        c.expect(b, b.list("top") == self.top, "checker: top level %s" % b.list("top"))
        from .dracut import check_kernel_lines
        check_kernel_lines(c, b)


class Zfs(Filesystem):
    """OpenZFS in the small guests (no dracut): its own kernel (the one zfs.ko was built for), zfs.ko/spl.ko
    built once from zfs-dkms, and zpool/zfs as test scaffolding (vm-tests/zfs/prepare)."""
    kind = "zfs"
    mem = 1536

    def __init__(self):
        super().__init__("zfs")
        self._prep = None
        self._lock = threading.Lock()

    def prepare(self):
        """KDIR KVER MODDIR ULAND ZVER from vm-tests/zfs/prepare (packages, kernel, module build, userland;
        everything cached in EPHEMERAL_ROOT_VM_CACHE)."""
        with self._lock:
            if self._prep is None:
                o = out(["bash", os.path.join(HERE, "zfs", "prepare")])
                self._prep = dict(re.findall(r"^(\w+)=(.*)$", o, re.M))
                log("zfs: OpenZFS %s, kernel %s" % (self._prep["ZVER"], self._prep["KVER"]))
            return self._prep
