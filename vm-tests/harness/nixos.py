"""Boot what NixOS renders (issue 11 item 4): the files the NixOS module puts into the initrd for us, as
vm-tests/nix-eval renders them into vm-tests/nixos-rendered/<sample>/ (our unit, its drop-ins and links,
/etc/ephemeral-root.conf, the root's fstab lines, the crypttab), booted in a plain systemd initrd instead of
our dracut module.

The initrd: Debian trixie's systemd (257) and util-linux (2.41), at least as new as nixos-24.05's (systemd
255, util-linux 2.39; the manifests' `systemd`/`util_linux`), put together by trixie's dracut inside a trixie
debootstrap chroot (the host is bookworm), with the dracut modules for systemd, udev, btrfs, dm-crypt and
systemd-cryptsetup, and *without* dracut-systemd (dracut's own cmdline/root handling) and without our
dracut module. On top of it (a second cpio archive) go the rendered files exactly as the manifest lists
them, our binary at exactly the manifest's store path, PID 1's manager environment
(SYSTEMD_SYSROOT_FSTAB=/etc/initrd-fstab, as NixOS sets it) and `root=fstab` on the kernel command line:
systemd-fstab-generator then makes sysroot.mount, sysroot-nix.mount, sysroot-persist.mount from the
rendered fstab lines, and systemd-cryptsetup-generator the LUKS unit from the rendered crypttab, as on NixOS.

Test scaffolding only (never a rendered file): the harness's probes as drop-ins of ephemeral-root.service
(order probe, check --json before/after, the unit's origin), emergency.service powering the VM off, the
LUKS passphrase as a systemd credential (cryptsetup.passphrase, which systemd-cryptsetup reads before it
would ask), and for the one-device bcachefs sample one udev rule that gives the fixture (whose UUID is its
own) the by-uuid name the rendered sample uses. See vm-tests/README.md, "NixOS-rendered boots"."""
import json
import os
import re
import shutil
import subprocess
import time

from .core import GUEST_CMDLINE, CACHE, GUEST, HERE, WORK, Stage, check, log, out, run, sha256_files
from .dracut import Machine, check_after_rollback
from .fs import Bcachefs, Btrfs

RENDERED = os.path.join(HERE, "nixos-rendered")
TRIXIE = os.path.join(CACHE, "trixie-initrd")
# The test initrd's userland (trixie): systemd 257, util-linux 2.41, dracut 106, cryptsetup 2.7.
TRIXIE_PKGS = ["dracut-core", "systemd", "udev", "systemd-cryptsetup", "cryptsetup-bin", "btrfs-progs", "kmod",
               "util-linux", "mount", "dmsetup"]
# dracut modules: a plain systemd initrd. Not dracut-systemd (dracut's root= handling and hooks), not ours.
DRACUT_MODULES = ("systemd systemd-initrd systemd-sysctl systemd-udevd systemd-journald systemd-tmpfiles "
                  "systemd-cryptsetup systemd-ask-password base fs-lib kernel-modules udev-rules btrfs dm crypt")
# what the setup boots need besides (formatting LUKS + btrfs in the guest: the host has no device-mapper)
SETUP_TOOLS = ["/usr/sbin/cryptsetup", "/usr/sbin/mkfs.btrfs", "/usr/bin/btrfs"]
BASE_VERSION = "2"  # bump when build_base changes in a way its key does not see
LUKS_PASSPHRASE = "ertest-luks-passphrase"  # fixed: the boots are reproducible
MIN_SYSTEMD, MIN_UTIL_LINUX = (255,), (2, 39)  # nixos-24.05's (the manifests say 255.9 / 2.39.4)


def manifest(sample):
    with open(os.path.join(RENDERED, sample, "manifest.json")) as f:
        return json.load(f)


def mirror():
    """The Debian mirror this host's apt uses (never written into a file)."""
    src = "/etc/apt/sources.list.d/debian.sources"
    for line in open(src):
        if line.startswith("URIs:"):
            return line.split()[1]
    raise SystemExit("no URIs: line in %s" % src)


def trixie_root():
    """A Debian trixie chroot with TRIXIE_PKGS (debootstrap once, into the VM cache). Returns (path, versions)."""
    stamp = os.path.join(TRIXIE, "ertest-stamp.json")
    if os.path.exists(stamp):
        st = json.load(open(stamp))
        if st.get("pkgs") == TRIXIE_PKGS:
            return TRIXIE, st["versions"]
    tmp = TRIXIE + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if not shutil.which("debootstrap"):
        from .host import apt_install
        apt_install(["debootstrap"])
    log("debootstrap trixie into %s" % tmp)
    t = time.time()
    run(["debootstrap", "--variant=minbase", "trixie", tmp, mirror()], stdout=subprocess.DEVNULL)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["chroot", tmp, "apt-get", "update", "-qq"], env=env)
    run(["chroot", tmp, "apt-get", "install", "-y", "-q", "--no-install-recommends"] + TRIXIE_PKGS,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    vers = dict(l.split("\t") for l in out(["chroot", tmp, "dpkg-query", "-W", "-f=${Package}\t${Version}\n"]
                                         + TRIXIE_PKGS).splitlines())
    json.dump(dict(pkgs=TRIXIE_PKGS, versions=vers), open(os.path.join(tmp, "ertest-stamp.json"), "w"))
    shutil.rmtree(TRIXIE, ignore_errors=True)
    os.rename(tmp, TRIXIE)
    log("trixie chroot ready in %.0f s: %s" % (time.time() - t, vers))
    return TRIXIE, vers


def version_tuple(s):
    return tuple(int(x) for x in re.findall(r"\d+", s.split("-")[0].split("~")[0])[:3])


def build_base(kernel):
    """The plain systemd initrd (trixie's systemd, util-linux, dracut) for the NixOS-rendered boots."""
    root, vers = trixie_root()
    check(version_tuple(vers["systemd"]) >= MIN_SYSTEMD and version_tuple(vers["util-linux"]) >= MIN_UTIL_LINUX,
          "trixie chroot: systemd %s / util-linux %s older than nixos-24.05's" % (vers["systemd"], vers["util-linux"]))
    key = sha256_files([], extra=kernel.kver + kernel.vmlinuz + json.dumps(vers, sort_keys=True) + DRACUT_MODULES
                       + " ".join(SETUP_TOOLS) + BASE_VERSION)
    img = os.path.join(WORK, "initrd", "nixos-base-%s.img" % key)
    if os.path.exists(img):
        return img, vers
    os.makedirs(os.path.dirname(img), exist_ok=True)
    log("building the NixOS-rendered boots' systemd initrd with trixie's dracut (%s)" % key)
    t = time.time()
    inside = "/tmp/ertest-%s.img" % key
    # a private mount namespace: the kernel's modules bind-mounted into the chroot, /proc and /dev for dracut
    script = """set -e
r=$1 kmod=$2 kver=$3; shift 3
mkdir -p "$r/ertest-kmod/lib/modules/$kver" "$r/ertest-empty-confdir"
mount --bind "$kmod" "$r/ertest-kmod/lib/modules/$kver"
mount -t proc proc "$r/proc"
mount -t sysfs sys "$r/sys"
mount --rbind /dev "$r/dev"
exec chroot "$r" "$@"
"""
    cmd = ["dracut", "--force", "--quiet", "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode",
           "--no-compress", "--conf", "/dev/null", "--confdir", "/ertest-empty-confdir",
           "--kver", kernel.kver, "--kmoddir", "/ertest-kmod/lib/modules/" + kernel.kver,
           "--modules", DRACUT_MODULES, "--omit", "dracut-systemd ephemeral-root",
           "--add-drivers", "virtio_blk virtio_pci btrfs bcachefs dm_crypt",
           "--install", " ".join(SETUP_TOOLS), inside]
    # (its output is systemd-sysusers' "Creating user ..." lines: shown only when dracut fails)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "ertest-dracut", root,
                        kernel.moddir, kernel.kver, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                        "LANG=C.UTF-8"] + cmd, capture_output=True, text=True)
    check(r.returncode == 0, "dracut in %s failed (exit %d):\n%s%s" % (root, r.returncode, r.stdout[-2000:], r.stderr[-3000:]))
    shutil.move(os.path.join(root, inside.lstrip("/")), img + ".tmp")
    # the archive's file lines only (the header repeats dracut's arguments)
    listing = "\n".join(l for l in out(["lsinitrd", img + ".tmp"]).splitlines() if re.match(r"^[-dlcbps][-rwxsStT]{9} ", l))
    for want in ["usr/lib/systemd/systemd", "system-generators/systemd-fstab-generator",
                 "system-generators/systemd-cryptsetup-generator", "usr/lib/systemd/systemd-cryptsetup",
                 "usr/bin/mount", "bcachefs.ko", "btrfs.ko", "dm-crypt.ko", "usr/bin/systemctl"] + \
            [t.lstrip("/") for t in SETUP_TOOLS]:
        check(want in listing, "NixOS-rendered initrd lacks %s" % want)
    for unwanted in ("dracut-cmdline.service", "dracut-rootfs-generator", "ephemeral-root"):
        check(unwanted not in listing, "NixOS-rendered initrd has %s (dracut's root handling or our dracut module)"
              % unwanted)
    os.rename(img + ".tmp", img)
    log("NixOS-rendered initrd built in %.0f s (%d MiB): systemd %s, util-linux %s, dracut %s" % (
        time.time() - t, os.path.getsize(img) >> 20, vers["systemd"], vers["util-linux"], vers["dracut-core"]))
    return img, vers


# ---------------------------------------------------------------------------------------------------
# The filesystems of the samples (disks as the rendered files name them)
# ---------------------------------------------------------------------------------------------------

class NixosMixin:
    """A rendered sample on a filesystem: its manifest, the kernel command line (the manifest's, plus the
    test OS's), no unit of the harness's own for the root (the rendered fstab makes them)."""
    sample = None

    def dracut_cmdline(self, ndisks):
        return list(manifest(self.sample)["kernel_cmdline"]) + ["ertest.top=" + self.top_arg(ndisks)]

    def overlay_units(self, put, link):
        pass

    def extra_files(self, put):
        pass


class NixosBtrfs(NixosMixin, Btrfs):
    """btrfs sample: the filesystem on /dev/vda labelled `nixos` (the rendered device is by-label/nixos)."""
    sample = "btrfs"
    label = "nixos"

    def __init__(self):
        super().__init__()
        self.name = "nixos-btrfs"

    def top_arg(self, ndisks):
        return "btrfs:/dev/vda"


class NixosBcachefs(NixosMixin, Bcachefs):
    def __init__(self, sample, ndev):
        super().__init__(ndev)
        self.sample = sample
        self.name = "nixos-" + ("bcachefs" if ndev == 1 else "bcachefs%d" % ndev)

    def top_arg(self, ndisks):
        return "bcachefs:" + self.devs(ndisks)

    def extra_files(self, put):
        dev = manifest(self.sample)["options"]["device"]
        m = re.match(r"^/dev/disk/by-uuid/(\S+)$", dev)
        if m:
            # The sample names a fixed UUID; the fixture has its own (Debian has no bcachefs-tools to make
            # one with a chosen UUID). One udev rule gives the fixture's filesystem the sample's by-uuid name
            # too (the real by-uuid link stays); the rendered files are used as they are.
            put("/etc/udev/rules.d/99-ertest-nixos-uuid.rules",
                'SUBSYSTEM=="block", ENV{ID_FS_TYPE}=="bcachefs", ENV{ID_FS_UUID}=="%s", SYMLINK+="disk/by-uuid/%s"\n'
                % (self.uuid(), m.group(1)))


class NixosLuksBtrfs(NixosMixin, Btrfs):
    """LUKS2 + btrfs sample: the container gets the UUID the rendered crypttab names; formatted in a setup
    boot of the test initrd (the host has no device-mapper), the passphrase fed as a systemd credential."""
    sample = "luks-btrfs-emergency"

    def __init__(self):
        super().__init__()
        self.name = "nixos-luks-btrfs"

    def luks_uuid(self):
        line = open(os.path.join(RENDERED, self.sample, "files", "etc", "crypttab")).read().split()
        m = re.match(r"^(?:/dev/disk/by-uuid/|UUID=)(\S+)$", line[1])
        check(m, "rendered crypttab: unexpected device %s" % line[1])
        return line[0], m.group(1)

    def top_arg(self, ndisks):
        return "btrfs:/dev/mapper/" + self.luks_uuid()[0]

    def make_disks(self, d):
        path = os.path.join(d, "disk.img")
        with open(path, "wb") as f:
            f.truncate(1 << 30)
        return [path]

    def extra_files(self, put):
        name, _ = self.luks_uuid()
        put("/ertest/luks-passphrase", LUKS_PASSPHRASE)
        # systemd-cryptsetup reads the credential cryptsetup.passphrase before it would ask on the console
        put("/etc/systemd/system/systemd-cryptsetup@%s.service.d/ertest-passphrase.conf" % name,
            "# ertest: the passphrase as a credential (what a user would type)\n[Service]\n"
            "LoadCredential=cryptsetup.passphrase:/ertest/luks-passphrase\n")

    def setup(self, m):
        name, uuid = self.luks_uuid()
        b = m.boot(label="setup", append=GUEST_CMDLINE + " loglevel=4 "
                                         "rdinit=/ertest/setup-luks-btrfs ertest.luks=%s:%s" % (name, uuid))
        mt = re.search(r"ERTEST setup ok top=(\S*)", b.text)
        top = set(filter(None, mt.group(1).split(","))) if mt else None
        check(top is not None and {"@root", "@persist", "@nix"} <= top,
              "%s: LUKS setup boot failed (see %s)" % (m.name, b.logfile))
        m.boots = 0

    def final_check(self, c, m, last, want_oldroots, want_markers=None, allow_dup=()):
        # the host cannot open LUKS (no device-mapper): a checker boot, as for bcachefs
        Bcachefs.final_check(self, c, m, last, want_oldroots, want_markers, allow_dup)


# ---------------------------------------------------------------------------------------------------
# The test initrd: base + rendered files + binary at the store path + the harness's probes
# ---------------------------------------------------------------------------------------------------

PLANTS = {
    # plant -> what it breaks (the self-test shows the scenario's checks catch each)
    "no-binary": "our binary not at the manifest's store path",
    "unit-after-sysroot": "the rendered unit ordered After=sysroot.mount instead of Before=",
    "no-sysroot-fstab": "no SYSTEMD_SYSROOT_FSTAB in PID 1's environment (the rendered fstab unused)",
}


def overlay(name, fs, env, plant=None):
    mf = manifest(fs.sample)
    stage = os.path.join(WORK, "overlay", name)
    st = Stage(stage)
    put, link = st.put, st.link

    # 1. the rendered files, as the manifest lists them
    base = os.path.join(RENDERED, fs.sample)
    for f in mf["files"]:
        if f["symlink"] is not None:
            link(f["path"], f["symlink"])
            continue
        data = open(os.path.join(base, f["file"])).read()
        if plant == "unit-after-sysroot" and f["path"] == "/etc/systemd/system/ephemeral-root.service":
            check("Before=sysroot.mount " in data, "rendered unit has no Before=sysroot.mount")
            data = data.replace("Before=sysroot.mount ", "After=sysroot.mount\nBefore=")
        put(f["path"], data, mode=int(f["mode"], 8))
    # 2. our binary at exactly the store path the unit runs
    bpath = mf["binary"]["path"]
    if plant != "no-binary":
        put(bpath, src=env.initrd_binary, mode=int(mf["binary"]["mode"], 8))
    # 3. PID 1's environment (NixOS: ManagerEnvironment= in /etc/systemd/system.conf)
    menv = dict(mf["manager_environment"])
    if plant == "no-sysroot-fstab":
        menv.pop("SYSTEMD_SYSROOT_FSTAB")
    if menv:
        put("/etc/systemd/system.conf.d/ertest-nixos.conf",
            "[Manager]\nManagerEnvironment=%s\n" % " ".join("%s=%s" % kv for kv in sorted(menv.items())))
    # 4. the harness's probes and the test OS (as the dracut boots have them)
    put("/ertest/busybox", src="/bin/busybox", mode=0o755)
    for f in ("order-probe", "setup-bcachefs", "setup-luks-btrfs", "stage2-init", "check-json", "plant",
              "nixos-probe"):
        put("/ertest/" + f, src=os.path.join(GUEST, f), mode=0o755)
    put("/ertest/common.sh", src=os.path.join(GUEST, "common.sh"))
    put("/ertest/bchtool", src=env.bchtool, mode=0o755)
    etc = "/etc/systemd/system/"
    put("/etc/sysctl.d/50-ertest.conf", "kernel.printk = 7 4 1 7\n")
    put(etc + "ephemeral-root.service.d/order-probe.conf", src=os.path.join(GUEST, "units", "order-probe.conf"))
    chk = open(os.path.join(GUEST, "units", "ertest-check.conf")).read()
    check("/usr/bin/ephemeral-root" in chk, "guest/units/ertest-check.conf no longer copies /usr/bin/ephemeral-root")
    put(etc + "ephemeral-root.service.d/ertest-check.conf",
        chk.replace("/usr/bin/ephemeral-root", bpath) + "Environment=ERBIN=%s\n" % bpath)
    put(etc + "ephemeral-root.service.d/ertest-nixos-probe.conf",
        "# ertest: print where the unit, sysroot.mount and the LUKS unit came from, and the versions\n"
        "[Service]\nExecStartPre=-/ertest/nixos-probe\n")
    # emergency mode powers the VM off (NixOS would stop there with its emergency shell; a test must not
    # wait for its timeout). dracut without its emergency module has emergency.target but no emergency.service.
    put(etc + "emergency.service",
        "# ertest: emergency.target's service in the test initrd: say so and power the VM off\n"
        "[Unit]\nDescription=ertest: emergency mode (powers the VM off)\nDefaultDependencies=no\n"
        "Conflicts=shutdown.target\nBefore=shutdown.target\n\n[Service]\nType=oneshot\n"
        "ExecStart=/ertest/emergency\n")
    put("/ertest/emergency", EMERGENCY, mode=0o755)
    # switch-root as NixOS does it (nixos/modules/system/boot/systemd/initrd.nix: initrd-switch-root.service
    # runs `systemctl --no-block switch-root /sysroot "$NEW_INIT"`, NEW_INIT = the init= parameter when it is
    # not a NixOS system, as here: the test OS's /nix/init)
    put(etc + "initrd-switch-root.service.d/ertest-nixos.conf",
        "# ertest: NixOS's ExecStart (init= given: the test OS)\n[Service]\nExecStart=\n"
        "ExecStart=systemctl --no-block switch-root /sysroot /nix/init\n")
    # NixOS's initrd-nixos-activation.service runs the system's activation into /sysroot before switch-root
    # (it writes /etc, among it /etc/os-release, which systemd >= 254's switch-root requires). The test OS
    # has no activation: this stand-in writes only /etc/os-release (ROOT_ALLOW: the one file the fresh
    # root may hold in stage 2).
    put(etc + "ertest-nixos-activation.service", ACTIVATION)
    link(etc + "initrd.target.requires/ertest-nixos-activation.service", "../ertest-nixos-activation.service")
    fs.extra_files(put)
    from .host import cpio
    return cpio(stage)


ACTIVATION = """# ertest: stand-in for NixOS's initrd-nixos-activation.service (see harness/nixos.py)
[Unit]
Description=ertest: stand-in for the NixOS activation (writes /sysroot/etc/os-release)
DefaultDependencies=no
Requires=initrd-fs.target
After=initrd-fs.target
Before=initrd.target

[Service]
Type=oneshot
ExecStart=/ertest/busybox sh -c 'mkdir -p /sysroot/etc && printf "ID=nixos\\nNAME=ertest\\n" > /sysroot/etc/os-release'
"""
ROOT_ALLOW = ("/etc/os-release",)

EMERGENCY = """#!/ertest/busybox sh
# ertest: emergency mode in the test initrd: print what failed and the last journal lines, power off
B=/ertest/busybox
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "ERTEST emergency mode" > /dev/kmsg
{ systemctl --failed --no-legend --no-pager; journalctl -b -p warning -n 25 --no-pager -o cat; } 2>&1 |
  while read -r l; do echo "ERTEST emergency: $l" > /dev/kmsg; done
$B sync
$B poweroff -f
"""


class NixosMachine(Machine):
    def cmdline(self, boot, extra, ndisks=None):
        base = GUEST_CMDLINE.split() + ["printk.devkmsg=on", "quiet",
                "systemd.show_status=1", "rd.udev.log_level=err", "fsck.mode=skip", "rw", "init=/nix/init",
                "ertest.boot=%s" % boot]
        return " ".join(base + self.fs.dracut_cmdline(ndisks or len(self.disks)) + list(extra))


def nixos_machine(c, fs, env, plant=None):
    import glob
    from .dracut import make_initrd
    d = os.path.join(WORK, c.name)
    for mnt in glob.glob(os.path.join(d, "*.mnt")):
        subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    disks = fs.make_disks(d)
    initrd = make_initrd(c.name, env.nixos_base, overlay(c.name, fs, env, plant=plant))
    m = NixosMachine(c, fs, env, disks, initrd, os.path.join(d, "logs"))
    fs.setup(m)
    return m


def check_rendered(c, b, fs, n):
    """What only the NixOS-rendered boot has: the unit that ran is the rendered one running the store path,
    sysroot.mount came from the rendered fstab, systemd/util-linux new enough, the mounts as rendered."""
    mf = manifest(fs.sample)
    er = b.er
    c.expect(b, er.get("nixos-unit-fragment") == "/etc/systemd/system/ephemeral-root.service",
             "boot %d: ephemeral-root.service came from %s, not the rendered unit" % (n, er.get("nixos-unit-fragment")))
    c.expect(b, mf["binary"]["path"] in er.get("nixos-unit-exec", ""),
             "boot %d: the unit ran %r, not %s" % (n, er.get("nixos-unit-exec"), mf["binary"]["path"]))
    fstab = [l.split() for l in open(os.path.join(RENDERED, fs.sample, "files", "etc", "initrd-fstab"))
             if l.strip() and not l.startswith("#")]
    want_src = mf["manager_environment"]["SYSTEMD_SYSROOT_FSTAB"]
    for what, where, _typ, _opts in (l[:4] for l in fstab):
        unit = "sysroot" if where == "/" else "sysroot" + where.replace("/", "-")
        got = er.get("nixos-mount-%s" % unit, "")
        c.expect(b, ("source=%s " % want_src) in got + " " and ("what=%s " % what) in got + " ",
                 "boot %d: %s.mount is not the one generated from %s's line for %s: %s" % (n, unit, want_src, where, got))
    # stage 2 (after switch-root): / and /nix are the rendered lines' filesystems (and subvolume, on btrfs)
    for what, where, typ, opts in (l[:4] for l in fstab):
        key = {"/": "root-mount", "/nix": "nix-mount"}.get(where)
        if key is None:
            continue
        got = er.get(key, "").split()
        fstype = got[1] if key == "root-mount" and len(got) > 1 else (got[0] if got else "")
        c.expect(b, fstype == typ, "boot %d: %s is %r in stage 2, the rendered line says %s" % (n, where, fstype, typ))
        sub = [o for o in opts.split(",") if o.startswith("subvol=")]
        if sub:
            want = "subvol=/" + sub[0].split("=", 1)[1].lstrip("/")
            c.expect(b, want in (got[-1].split(",") if got else []),
                     "boot %d: %s mounted with %s, the rendered line says %s" % (n, where, got[-1:] , sub[0]))
    sd = version_tuple(er.get("nixos-systemd", "0"))
    ul = version_tuple((er.get("nixos-util-linux") or "0").split()[0])
    c.expect(b, sd >= MIN_SYSTEMD and ul >= MIN_UTIL_LINUX,
             "boot %d: systemd %s / util-linux %s in the initrd, older than nixos-24.05's" % (n, sd, ul))
    if os.path.exists(os.path.join(RENDERED, fs.sample, "files", "etc", "crypttab")):
        name = open(os.path.join(RENDERED, fs.sample, "files", "etc", "crypttab")).read().split()[0]
        got = er.get("nixos-crypt", "")
        c.expect(b, "source=/etc/crypttab" in got, "boot %d: systemd-cryptsetup@%s.service not from /etc/crypttab: %s" % (n, name, got))


def sc_nixos(c, fs, env, boots=3):
    """Boot the NixOS-rendered initrd files `boots` times: every check of a dracut boot, plus check_rendered."""
    mf = manifest(fs.sample)
    keep = int(mf["options"]["keep"].split()[0])
    m = nixos_machine(c, fs, env)
    for n in range(1, boots + 1):
        b = m.boot()
        check_after_rollback(c, b, n, keep=keep, oldroots_exact=min(n - 1, keep), root_allow=ROOT_ALLOW)
        check_rendered(c, b, fs, n)
    if mf["options"]["failureAction"] == "emergency":
        sc_nixos_emergency(c, fs, env, m, boots + 1)
    fs.final_check(c, m, boots, min(boots - 1, keep), ["marker-%d" % k for k in range(max(1, boots - keep), boots)])
    walls = [t[0] for t in m.timings]
    cpus = [t[1] for t in m.timings]
    c.stats.update(wall_total=round(sum(walls), 1), cpu_total=round(sum(cpus), 1),
                   per_boot=[dict(label=t[2], wall=round(t[0], 1), cpu=round(t[1], 1)) for t in m.timings])
    c.note("%d boots (incl. setup/checker): wall %.0f s, qemu cpu %.0f s; per boot %s" % (
        len(walls), sum(walls), sum(cpus), ", ".join("%s %.0f/%.0f" % (t[2], t[0], t[1]) for t in m.timings)))


def prepare(env):
    """Before the NixOS-rendered scenarios run: the trixie initrd and the binary for the store path."""
    if not getattr(env, "initrd_binary", None):
        from .host import build_initrd_binary
        env.initrd_binary = build_initrd_binary(env.binary)
    env.nixos_base, env.nixos_versions = build_base(env.kernel)


def sc_nixos_emergency(c, fs, env, m, n):
    """failureAction = emergency (the LUKS sample): with the binary gone from its store path the rendered
    unit fails; its OnFailure= and the rendered sysroot.mount.requires link stop the boot in emergency mode
    before the old root is mounted."""
    from .dracut import make_initrd
    from .scenarios import fail_closed_boot
    initrd = make_initrd(c.name + "-nobin", env.nixos_base, overlay(c.name + "-nobin", fs, env, plant="no-binary"))
    b = m.boot(initrd=initrd, label="emergency-no-binary", boot_no=n)
    c.expect(b, not b.has(r"ephemeral-root: rollback finished"), "emergency boot: the rollback ran without its binary")
    c.expect(b, b.has(r"ERTEST emergency mode"), "emergency boot: emergency.service did not run")
    # fail_closed_boot wants the binary's own 'rollback FAILED' line; here the binary is missing: systemd says it
    c.expect(b, b.has(r"ephemeral-root\.service.*(Failed|failed)|Failed to start.*[Ee]phemeral"),
             "emergency boot: systemd did not report the unit failed")
    c.expect(b, not b.has(r"ERTEST stage2"), "emergency boot: stage 2 ran")
    c.expect(b, b.has(r"Dependency failed for .*(/sysroot|sysroot\.mount)"), "emergency boot: sysroot.mount did not fail on the dependency")
    c.expect(b, not b.has(r"Mounted (/sysroot|sysroot\.mount)"), "emergency boot: the old root was mounted at /sysroot")
    c.expect(b, b.rc == 0 and not b.killed, "emergency boot: the machine did not power off by itself (rc %d)" % b.rc)
    return b


# plant -> (the check that must report it, regex its failure must match)
SELFTEST = {
    "no-binary": ("boot", r"no 'rollback finished'"),
    # (check_order's first check already fails: its probe said `mounted`, not `not-mounted`, at the start)
    "unit-after-sysroot": ("order", r"no order probe at the start of the unit|/sysroot was mounted while the unit ran"),
    "no-sysroot-fstab": ("rendered", r"sysroot\.mount is not the one generated from /etc/initrd-fstab"),
}


def sc_nixos_selftest(c, fs, env, plants=None):
    """Each plant (PLANTS) on a fresh machine, one boot: the check SELFTEST names must fail with its
    message; a control machine without a plant must pass every check."""
    from .core import TestFailure
    from .dracut import check_order

    def run_checks(b):
        res = {}
        for name, fn in (("boot", lambda: check_after_rollback(c, b, 1, keep=5, oldroots_exact=0,
                                                               root_allow=ROOT_ALLOW)),
                         ("order", lambda: check_order(c, b)),
                         ("rendered", lambda: check_rendered(c, b, fs, 1))):
            c.completed = []
            try:
                fn()
                res[name] = None
            except TestFailure as e:
                res[name] = str(e)
        return res

    results = {}
    for plant in [None] + list(plants or SELFTEST):
        m = nixos_machine(c, fs, env, plant=plant)
        b = m.boot(label=plant or "control", stop_on=r"ERTEST emergency mode|Failed to switch root")
        res = run_checks(b)
        if plant is None:
            c.expect(b, all(v is None for v in res.values()), "control boot (nothing planted) failed: %s" % res)
            continue
        if plant == "unit-after-sysroot":  # the plant took effect: the unit really ran with /sysroot mounted
            c.expect(b, b.has(r"ERTEST order start sysroot=mounted"), "plant %s: the unit did not run after sysroot.mount" % plant)
        which, pat = SELFTEST[plant]
        err = res[which]
        ok = err is not None and re.search(pat, err) is not None
        results[plant] = err.split(" (serial log")[0] if err else "passed"
        log("%s: planted %s (%s): the %s check says: %s" % (c.name, plant, PLANTS[plant], which, results[plant]))
        c.expect(b, ok, "planted %s: the %s check did not report it (want /%s/, got: %s)" % (plant, which, pat, err or "no failure"))
    c.stats["plants"] = results
