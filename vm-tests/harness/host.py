"""Host side: packages, the guest kernel, our binaries, test helpers, and small initramfs images."""
import glob
import json
import os
import re
import shutil
import subprocess
import threading
import time

from .core import CACHE, GUEST, HERE, REPO, TARGET, WORK, check, log, out, run, sha256_files


def apt_install(pkgs, target=None):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=1200"]
    if target:
        cmd += ["-t", target]
    log("installing %s%s" % (" ".join(pkgs), " from " + target if target else ""))
    run(cmd + pkgs, env=env, stdout=subprocess.DEVNULL)


def apt_suites():
    run(["bash", os.path.join(REPO, ".ci", "apt-suites")], stdout=subprocess.DEVNULL)


def dpkg_installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def qemu_ok():
    try:
        v = out(["qemu-system-x86_64", "--version"])
    except (OSError, subprocess.CalledProcessError):
        return False
    m = re.search(r"version (\d+)\.", v)
    return bool(m) and int(m.group(1)) >= 10


def ensure_packages():
    if os.geteuid() != 0:
        raise SystemExit("vm-tests/run must run as root (loop devices, apt-get)")
    need = [p for p in ["dracut-core", "busybox-static", "btrfs-progs", "zstd", "cpio", "kmod", "udev",
                        "util-linux", "systemd", "xz-utils"] if not dpkg_installed(p)]
    if not qemu_ok() or need:
        apt_suites()
    if not qemu_ok():
        # bookworm's qemu 7.2 crashes TCG guests in ~30% of boots: qemu >= 10 only.
        apt_install(["qemu-system-x86"], target="bookworm-backports")
        check(qemu_ok(), "qemu-system-x86_64 >= 10 is needed (bookworm-backports)")
    if need:
        apt_install(need)
    if shutil.which("rustup") and TARGET not in out(["rustup", "target", "list", "--installed"]):
        run(["rustup", "target", "add", TARGET])


class Kernel:
    def __init__(self, kver, vmlinuz, moddir, origin):
        self.kver, self.vmlinuz, self.moddir, self.origin = kver, vmlinuz, moddir, origin

    def __repr__(self):
        return "%s (%s)" % (self.kver, self.origin)

    def has_module(self, m):
        if glob.glob(os.path.join(self.moddir, "**", m + ".ko*"), recursive=True):
            return True
        b = os.path.join(self.moddir, "modules.builtin")
        return os.path.exists(b) and re.search(r"(^|/)%s\.ko$" % re.escape(m), open(b).read(), re.M) is not None


def kernel_from_tree(d):
    """A kernel given as a directory: DIR/vmlinuz (or DIR/boot/vmlinuz-*) and DIR/lib/modules/KVER/."""
    d = os.path.abspath(d)
    mods = glob.glob(os.path.join(d, "lib", "modules", "*")) + glob.glob(os.path.join(d, "usr", "lib", "modules", "*"))
    check(len(mods) == 1, "kernel tree %s: want exactly one lib/modules/KVER, found %s" % (d, mods))
    kver = os.path.basename(mods[0])
    vm = [p for p in [os.path.join(d, "vmlinuz"), os.path.join(d, "boot", "vmlinuz-" + kver)] if os.path.exists(p)]
    check(vm, "kernel tree %s: no vmlinuz or boot/vmlinuz-%s" % (d, kver))
    if not os.path.exists(os.path.join(mods[0], "modules.dep")):
        run(["depmod", "-b", os.path.dirname(os.path.dirname(os.path.dirname(mods[0]))), kver])
    return Kernel(kver, vm[0], mods[0], "tree " + d)


def default_kernel():
    """The kernel for btrfs and bcachefs: EPHEMERAL_ROOT_VM_KERNEL (a tree), else Debian trixie's 6.12 cloud
    kernel (EPHEMERAL_ROOT_VM_KERNEL_PKG=name[=version] pins another package), downloaded once."""
    if os.environ.get("EPHEMERAL_ROOT_VM_KERNEL"):
        return kernel_from_tree(os.environ["EPHEMERAL_ROOT_VM_KERNEL"])
    kdir = os.path.join(CACHE, "kernel")
    os.makedirs(kdir, exist_ok=True)
    stamp = os.path.join(kdir, "current.json")
    want = os.environ.get("EPHEMERAL_ROOT_VM_KERNEL_PKG", "")
    if os.path.exists(stamp):
        st = json.load(open(stamp))
        if (not want or want in (st["pkg"], st["pkg"] + "=" + st["ver"])) and os.path.exists(st["vmlinuz"]):
            return Kernel(st["kver"], st["vmlinuz"], st["moddir"], "%s=%s" % (st["pkg"], st["ver"]))
    apt_suites()
    if want:
        pkg, _, ver = want.partition("=")
        if not ver:
            ver = re.search(r"^Version: (\S+)", out(["apt-cache", "show", pkg]), re.M).group(1)
    else:
        meta = "linux-image-cloud-amd64"
        ver = None
        for line in out(["apt-cache", "madison", meta]).splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) >= 3 and re.search(r"\strixie/main\s", " " + cols[2] + " "):
                ver = cols[1]
                break
        check(ver, "no trixie %s in apt-cache madison (did .ci/apt-suites run?)" % meta)
        show = out(["apt-cache", "show", "%s=%s" % (meta, ver)])
        dep = re.search(r"^Depends: (linux-image-[^\s,(]+)(?: \(= ([^)]+)\))?", show, re.M)
        pkg, ver = dep.group(1), dep.group(2) or ver
    debs = os.path.join(CACHE, "debs")
    os.makedirs(debs, exist_ok=True)
    found = [d for d in glob.glob(os.path.join(debs, pkg + "_*.deb")) if ver.replace(":", "%3a") in d]
    if not found:
        log("downloading %s=%s" % (pkg, ver))
        run(["apt-get", "download", "-qq", "%s=%s" % (pkg, ver)], cwd=debs, stderr=subprocess.DEVNULL)
        found = [d for d in glob.glob(os.path.join(debs, pkg + "_*.deb")) if ver.replace(":", "%3a") in d]
        check(found, "download of %s failed" % pkg)
    x = os.path.join(kdir, "x")
    shutil.rmtree(x, ignore_errors=True)
    run(["dpkg-deb", "-x", found[0], x])
    kver = os.listdir(os.path.join(x, "usr", "lib", "modules"))[0]
    dest = os.path.join(kdir, kver)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(os.path.join(dest, "lib", "modules"))
    os.rename(os.path.join(x, "usr", "lib", "modules", kver), os.path.join(dest, "lib", "modules", kver))
    os.rename(os.path.join(x, "boot", "vmlinuz-" + kver), os.path.join(dest, "vmlinuz"))
    shutil.rmtree(x)
    run(["depmod", "-b", dest, kver])
    st = dict(pkg=pkg, ver=ver, kver=kver, vmlinuz=os.path.join(dest, "vmlinuz"),
              moddir=os.path.join(dest, "lib", "modules", kver))
    json.dump(st, open(stamp, "w"))
    log("kernel %s (%s=%s)" % (kver, pkg, ver))
    return Kernel(kver, st["vmlinuz"], st["moddir"], "%s=%s" % (pkg, ver))


def build_binary(fault):
    env_name = "EPHEMERAL_ROOT_VM_FAULT_BIN" if fault else "EPHEMERAL_ROOT_VM_BIN"
    if os.environ.get(env_name):
        return os.path.abspath(os.environ[env_name])
    tdir = os.path.join(REPO, "target", "vm-fault" if fault else "vm")
    cmd = ["cargo", "build", "--quiet", "--release", "--target", TARGET, "--target-dir", tdir]
    if fault:
        cmd += ["--features", "fault-injection"]
    log("building ephemeral-root%s" % (" (fault-injection)" if fault else ""))
    run(cmd, cwd=REPO)
    return os.path.join(tdir, TARGET, "release", "ephemeral-root")


def build_initrd_binary(full):
    """The initrd build (no `tools` feature: rollback, finish, check, list, gc, pin, baseline), what the
    initrds hold, as ephemeral-root-initrd ships it: EPHEMERAL_ROOT_VM_INITRD_BIN, or built here. Not the
    full build (`full`) when none is given: its `check` adds the persistence checks, which fail in an
    initrd that has not mounted the store, so a plain `vm-tests/run` would not test what CI tests."""
    if os.environ.get("EPHEMERAL_ROOT_VM_INITRD_BIN"):
        return os.path.abspath(os.environ["EPHEMERAL_ROOT_VM_INITRD_BIN"])
    if os.environ.get("EPHEMERAL_ROOT_VM_BIN"):
        # a prebuilt full tool without an initrd build beside it: keep the two consistent (both given)
        return full
    tdir = os.path.join(REPO, "target", "vm-initrd")
    log("building ephemeral-root (initrd build)")
    run(["cargo", "build", "--quiet", "--release", "--target", TARGET, "--target-dir", tdir, "--no-default-features"],
        cwd=REPO)
    return os.path.join(tdir, TARGET, "release", "ephemeral-root")


def build_testbin(test="crash_safety"):
    """tests/crash_safety.rs as a static test binary (fault-injection, musl) for the small guests
    (guest/crashsafety.sh): the same scenarios and invariants as on the host, on bcachefs and ZFS.
    EPHEMERAL_ROOT_VM_TESTBIN gives a prebuilt one. The path comes from cargo's JSON messages."""
    if os.environ.get("EPHEMERAL_ROOT_VM_TESTBIN"):
        return os.path.abspath(os.environ["EPHEMERAL_ROOT_VM_TESTBIN"])
    tdir = os.path.join(REPO, "target", "vm-fault")
    log("building the %s test binary (static, fault-injection)" % test)
    r = subprocess.run(["cargo", "test", "--quiet", "--release", "--target", TARGET, "--target-dir", tdir,
                        "--features", "fault-injection", "--test", test, "--no-run", "--message-format=json"],
                       cwd=REPO, capture_output=True, text=True)
    check(r.returncode == 0, "cargo test --no-run --test %s failed: %s" % (test, r.stderr[-2000:]))
    exe = None
    for line in r.stdout.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == test and m.get("executable"):
            exe = m["executable"]
    check(exe and os.path.exists(exe), "cargo named no executable for --test %s" % test)
    check("statically linked" in out(["file", "-L", exe]) or "static-pie" in out(["file", "-L", exe]),
          "%s is not static" % exe)
    return exe


def build_bchtool():
    """guest/bchtool.rs: the test-only bcachefs helper (create/snapshot/destroy subvolumes, is-read-only,
    list subvolumes); Debian ships no bcachefs-tools and busybox knows nothing of bcachefs."""
    src = os.path.join(GUEST, "bchtool.rs")
    dst = os.path.join(WORK, "bin", "bchtool-" + sha256_files([src]))
    if not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        run(["rustc", "--edition", "2021", "-O", "-C", "strip=symbols", "-C", "target-feature=+crt-static",
             "--target", TARGET, "-o", dst + ".tmp", src])
        os.rename(dst + ".tmp", dst)
    return dst


def busybox():
    b = "/bin/busybox"
    check("statically linked" in out(["file", "-L", b]) or "static-pie" in out(["file", "-L", b]),
          "%s is not static (apt-get install busybox-static)" % b)
    return b


def module_closure(moddir, names):
    """Modules `names` (without .ko) and everything modules.dep says they need, dependencies first, as
    paths relative to moddir. Built-in modules (modules.builtin) are skipped."""
    dep = {}
    for line in open(os.path.join(moddir, "modules.dep")):
        k, _, v = line.partition(":")
        dep[k.strip()] = v.split()
    builtin = open(os.path.join(moddir, "modules.builtin")).read() if os.path.exists(
        os.path.join(moddir, "modules.builtin")) else ""
    order, seen = [], set()

    def add(p):
        if p in seen:
            return
        seen.add(p)
        for d in dep.get(p, []):
            add(d)
        order.append(p)

    for n in names:
        hits = [k for k in dep if re.search(r"(^|/)%s\.ko(\.xz|\.zst|\.gz)?$" % re.escape(n), k)]
        if not hits:
            check(re.search(r"(^|/)%s\.ko$" % re.escape(n), builtin, re.M), "module %s not in %s" % (n, moddir))
            continue
        add(hits[0])
    return order


def unpack_module(src, dst):
    if src.endswith(".xz"):
        data = subprocess.run(["xz", "-dc", src], check=True, capture_output=True).stdout
    elif src.endswith(".zst"):
        data = subprocess.run(["zstd", "-qdc", src], check=True, capture_output=True).stdout
    elif src.endswith(".gz"):
        data = subprocess.run(["gzip", "-dc", src], check=True, capture_output=True).stdout
    else:
        data = open(src, "rb").read()
    open(dst, "wb").write(data)


def cpio(stage):
    files = out(["find", ".", "-mindepth", "1"], cwd=stage)
    return subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=stage, input=files.encode(),
                          capture_output=True, check=True).stdout


GUEST_INIT = """#!/bin/sh
# /init of the harness's small guests (vm-tests/harness/host.py: busybox_initramfs).
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
ln -sf /proc/self/mounts /etc/mtab
echo "ERTEST guest-boot $(cut -d' ' -f1 /proc/uptime)"
while read -r m; do insmod "/lib/modules/$m" || echo "insmod $m failed"; done < /lib/modules/order
echo "ERTEST guest-modules $(cut -d' ' -f1 /proc/uptime) zfs=$(cat /sys/module/zfs/version 2>/dev/null)"
script=$(sed -n 's/.*ertest\\.script=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
sh "/guest/$script"
echo "ERTEST guest-end $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
"""

BUSYBOX_APPLETS = """sh mount umount mkdir rmdir cat echo ls insmod sleep poweroff sync grep sed tr wc head tail sort uniq
printf test [ cp rm mv find stat date seq awk cut touch ln dd xargs uname true false expr readlink dmesg env cmp
mknod chmod basename dirname diff base64 fold md5sum od truncate """.split()


BUILD_LOCK = threading.Lock()


def busybox_initramfs(name, kernel, modules, binary, extra=None, roots=()):
    with BUILD_LOCK:  # scenarios in parallel share images
        return _busybox_initramfs(name, kernel, modules, binary, extra, roots)


def _busybox_initramfs(name, kernel, modules, binary, extra=None, roots=()):
    """A small initramfs: static busybox, our binary, `modules` (+ dependencies) of `kernel` loaded in order,
    vm-tests/guest/*.sh as /guest/, `extra` {dest: src} files, and `roots` (directories copied to /, e.g.
    zpool/zfs with their libraries). /init runs /guest/$ertest.script. Cached by content."""
    paths = sorted(glob.glob(os.path.join(GUEST, "*.sh"))) + [binary] + list((extra or {}).values())
    mods = module_closure(kernel.moddir, [m for m in modules if not m.endswith(".ko")])
    key = sha256_files(paths, extra=kernel.kver + " ".join(mods) + " ".join(modules) + " ".join(roots) + GUEST_INIT)
    img = os.path.join(WORK, "initrd", "%s-%s.cpio" % (name, key))
    if os.path.exists(img):
        return img
    stage = os.path.join(WORK, "initrd", "stage-%s" % name)
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("bin", "sbin", "dev", "proc", "sys", "run", "mnt", "tmp", "etc", "lib/modules", "guest"):
        os.makedirs(os.path.join(stage, d), exist_ok=True)
    shutil.copyfile(busybox(), os.path.join(stage, "bin", "busybox"))
    os.chmod(os.path.join(stage, "bin", "busybox"), 0o755)
    for a in BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(stage, "bin", a))
    shutil.copyfile(binary, os.path.join(stage, "bin", "ephemeral-root"))
    os.chmod(os.path.join(stage, "bin", "ephemeral-root"), 0o755)
    for dest, src in (extra or {}).items():
        p = os.path.join(stage, dest.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        shutil.copyfile(src, p)
        os.chmod(p, 0o755)
    for s in glob.glob(os.path.join(GUEST, "*.sh")):
        shutil.copyfile(s, os.path.join(stage, "guest", os.path.basename(s)))
    for r in roots:
        run(["cp", "-a", r.rstrip("/") + "/.", stage + "/"])
    order = []
    for rel in mods:
        b = re.sub(r"\.(xz|zst|gz)$", "", os.path.basename(rel))
        unpack_module(os.path.join(kernel.moddir, rel), os.path.join(stage, "lib", "modules", b))
        order.append(b)
    for m in modules:  # prebuilt .ko files (zfs.ko, spl.ko), last, in the order given
        if m.endswith(".ko"):
            shutil.copyfile(m, os.path.join(stage, "lib", "modules", os.path.basename(m)))
            order.append(os.path.basename(m))
    open(os.path.join(stage, "lib", "modules", "order"), "w").write("".join(o + "\n" for o in order))
    open(os.path.join(stage, "init"), "w").write(GUEST_INIT)
    os.chmod(os.path.join(stage, "init"), 0o755)
    t = time.time()
    data = cpio(stage)
    open(img + ".tmp", "wb").write(data)
    os.rename(img + ".tmp", img)
    shutil.rmtree(stage, ignore_errors=True)
    log("initramfs %s: %d MiB in %.0f s (modules: %s)" % (name, len(data) >> 20, time.time() - t, " ".join(order)))
    return img
