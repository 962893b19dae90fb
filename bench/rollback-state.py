#!/usr/bin/env python3
"""State keeping for bench/rollback.sh: build the prepared filesystem of one configuration and put
it back, identically, after every measured run, whichever variant ran.

Every subcommand takes the top level of the filesystem, mounted (subvolid=5), as TOP.

The prepared state ("canonical"):
  @root                 the root: N files (built once per image), K nested subvolumes, a marker
                        file .bench-root (how the root is found wherever a variant left it)
  @snapshots/           ephemeral-root's snapshots location: 5 recent old roots (1..5 days old,
                        read-only, 3 nested read-only subvolumes each) and D old roots due for
                        pruning (40.. days old, likewise)
  old_roots/            the impermanence README script's: the same 5 recent and D due old roots,
                        writable (as that script leaves them), dated by their directory mtime
  bench-stash           the previous boot's root that `finish` did not seal, for the backlog
                        variant only (moved to @snapshots/.kept.<name> just before it runs); K
                        nested subvolumes; a marker file .bench-stash

`restore` prints how many old roots it had to recreate in @snapshots and in old_roots (what the
variant that ran last pruned), finds the root and the stash wherever a variant put them (by their marker), makes them
writable again, moves them home, deletes the empty roots the variants built, recreates the due old
roots that a variant pruned, renews the root's marker (so the root is a root that was used, and its
directory mtime is new), waits for btrfs to finish cleaning deleted subvolumes, and then compares
the list of subvolumes and their read-only flags with the one recorded the first time: a state
that differs stops the benchmark.
"""
import fcntl
import json
import os
import struct
import subprocess
import sys
import time

ROOT, SNAPS, README_ROOT, OLD, STASH = "@root", "@snapshots", "root", "old_roots", "bench-stash"
ROOT_MARK, STASH_MARK = ".bench-root", ".bench-stash"
RECENT, DUE_FIRST_DAY = 5, 40
OLD_NESTED = ["var/lib/machines", "var/lib/portables", "var/lib/containers"]

# linux/btrfs.h
IOC_SUBVOL_CREATE = 0x5000940E  # _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
IOC_SNAP_DESTROY = 0x5000940F  # _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
IOC_SUBVOL_GETFLAGS = 0x80089419  # _IOR(0x94, 25, __u64)
IOC_SUBVOL_SETFLAGS = 0x4008941A  # _IOW(0x94, 26, __u64)
IOC_SYNC = 0x9408  # _IO(0x94, 8): commit, and wake the cleaner
SUBVOL_RDONLY = 1 << 1


def die(msg):
    print(f"rollback-state: {msg}", file=sys.stderr)
    sys.exit(1)


def vol_args(name):
    # a mutable buffer: fcntl.ioctl copies immutable ones into 1,024 bytes, this struct has 4,096
    return bytearray(struct.pack("q4088s", 0, name.encode()))


def subvol_create(path):
    parent, name = os.path.split(path)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, IOC_SUBVOL_CREATE, vol_args(name))
    finally:
        os.close(fd)


def subvol_destroy(path):
    parent, name = os.path.split(path)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, IOC_SNAP_DESTROY, vol_args(name))
    finally:
        os.close(fd)


def is_subvol(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.st_ino == 256 and (st.st_mode & 0o170000) == 0o040000


def set_ro(path, ro):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, IOC_SUBVOL_GETFLAGS, buf)
        flags = struct.unpack("Q", buf)[0]
        new = (flags | SUBVOL_RDONLY) if ro else (flags & ~SUBVOL_RDONLY)
        if new != flags:  # each change is a transaction commit
            fcntl.ioctl(fd, IOC_SUBVOL_SETFLAGS, struct.pack("Q", new))
    finally:
        os.close(fd)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def nested_paths(k):
    """K nested subvolumes: systemd's three, then container layers like docker's btrfs driver."""
    extra = [f"var/lib/docker/btrfs/subvolumes/layer{i:03d}" for i in range(1, k - 2)]
    return (OLD_NESTED + extra)[:k]


def ours_name(t):
    return time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(t))


def readme_name(t):
    # the README's `date "+%Y-%m-%-d_%H:%M:%S"`, local time
    return time.strftime("%Y-%m-%-d_%H:%M:%S", time.localtime(t))


def old_times(meta, which):
    t0 = meta["t0"]
    if which == "recent":
        return [t0 - d * 86400 - 3600 for d in range(1, RECENT + 1)]
    return [t0 - (DUE_FIRST_DAY + i) * 86400 - 3600 for i in range(meta["due"])]


def add_nested(base, paths):
    for p in paths:
        os.makedirs(os.path.join(base, os.path.dirname(p)), exist_ok=True)
        subvol_create(os.path.join(base, p))
        write(os.path.join(base, p, "data"), p + "\n")


def make_ours_old(top, name):
    """An old root as ephemeral-root's finish leaves it: read-only, nested read-only."""
    p = os.path.join(top, SNAPS, name)
    subvol_create(p)
    write(os.path.join(p, "etc-hostname"), "old\n")
    add_nested(p, OLD_NESTED)
    for n in reversed(OLD_NESTED):
        set_ro(os.path.join(p, n), True)
    set_ro(p, True)


def make_readme_old(top, name, t):
    """An old root as the README script leaves it: writable, dated by its mtime."""
    p = os.path.join(top, OLD, name)
    subvol_create(p)
    write(os.path.join(p, "etc-hostname"), "old\n")
    add_nested(p, OLD_NESTED)
    os.utime(p, (t, t))


def fill(root, n):
    """N one-byte files in directories of 1,000."""
    for i in range(n):
        if i % 1000 == 0:
            d = os.path.join(root, "usr", f"d{i // 1000:04d}")
            os.makedirs(d)
        fd = os.open(os.path.join(d, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x")
        os.close(fd)


def cmd_base(top, n, meta_path):
    """A new filesystem: the root with N files, both snapshots locations with the recent roots."""
    t0 = int(time.time())
    subvol_create(os.path.join(top, ROOT))
    write(os.path.join(top, ROOT, ROOT_MARK), "the benchmark's root\n")
    fill(os.path.join(top, ROOT), n)
    subvol_create(os.path.join(top, SNAPS))
    os.mkdir(os.path.join(top, OLD))
    meta = {"t0": t0, "files": n}
    for t in old_times(meta, "recent"):
        make_ours_old(top, ours_name(t))
        make_readme_old(top, readme_name(t), t)
    write(meta_path, json.dumps(meta))


def cmd_configure(top, base_meta, due, k, meta_path):
    """One configuration of a copy of the base filesystem: K nested subvolumes in the root, the
    backlog's unsealed previous root, D old roots due (created by the first restore)."""
    meta = json.load(open(base_meta))
    meta.update(due=due, nested=k)
    add_nested(os.path.join(top, ROOT), nested_paths(k))
    st = os.path.join(top, STASH)
    subvol_create(st)
    write(os.path.join(st, STASH_MARK), "the previous boot's root\n")
    add_nested(st, nested_paths(k))
    # The previous boot began two hours before the root did (same day or the day before: either
    # way the oldest of its day, so the retention policy keeps it).
    meta["pending"] = ours_name(meta["t0"] - 7200)
    write(meta_path, json.dumps(meta))


def find_marked(top, mark):
    cands = [ROOT, README_ROOT, STASH]
    for d in (SNAPS, OLD):
        cands += [f"{d}/{e}" for e in sorted(os.listdir(os.path.join(top, d)))]
    found = [c for c in cands if is_subvol(os.path.join(top, c)) and os.path.exists(os.path.join(top, c, mark))]
    if len(found) != 1:
        die(f"{mark}: expected exactly one subvolume holding it, found {found}")
    return found[0]


def settle(top):
    """Commit and wait until btrfs has cleaned every deleted subvolume, so that no variant pays
    for another's deletions. (`btrfs subvolume sync` alone waits for the cleaner's next wake-up,
    up to the 30 s commit interval, and polls once a second.)"""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, IOC_SYNC, 0)
    finally:
        os.close(fd)
    deadline = time.time() + 300
    while True:
        out = subprocess.run(["btrfs", "subvolume", "list", "-d", top], check=True,
                             capture_output=True, text=True).stdout
        if not out.strip():
            return
        if time.time() > deadline:
            die(f"deleted subvolumes not cleaned after 300 s: {out[:200]}")
        time.sleep(0.05)


def subvolumes(top):
    """(path, read-only) of every subvolume, sorted: the fingerprint of the state."""
    def paths(*args):
        out = subprocess.run(["btrfs", "subvolume", "list", *args, top], check=True,
                             capture_output=True, text=True).stdout
        return {line.split(" path ", 1)[1] for line in out.splitlines() if " path " in line}
    allp, ro = paths(), paths("-r")
    return sorted([p, p in ro] for p in allp)


def cmd_restore(top, meta_path, then):
    meta = json.load(open(meta_path))
    k = nested_paths(meta["nested"])
    # The root and the stash, wherever a variant left them, writable and home again.
    for mark, home in ((ROOT_MARK, ROOT), (STASH_MARK, STASH)):
        at = find_marked(top, mark)
        if at == home:
            continue
        p = os.path.join(top, at)
        for n in k:
            set_ro(os.path.join(p, n), False)
        set_ro(p, False)
        if home == ROOT:
            # the empty root a variant put in its place (no nested subvolume can be in it)
            for new in (ROOT, README_ROOT):
                q = os.path.join(top, new)
                if os.path.lexists(q) and new != at:
                    if not is_subvol(q) or os.listdir(q):
                        die(f"{new} is not the empty root a variant built: {os.listdir(q)[:5]}")
                    subvol_destroy(q)
        if os.path.lexists(os.path.join(top, home)):
            die(f"{home} exists; cannot move {at} back")
        os.rename(p, os.path.join(top, home))
    # Both snapshots locations: exactly the recent and due old roots; recreate the pruned ones.
    want_ours = {ours_name(t): t for t in old_times(meta, "recent") + old_times(meta, "due")}
    want_readme = {readme_name(t): t for t in old_times(meta, "recent") + old_times(meta, "due")}
    recreated = []
    for d, want, make in ((SNAPS, want_ours, lambda n, t: make_ours_old(top, n)),
                          (OLD, want_readme, lambda n, t: make_readme_old(top, n, t))):
        have = set(os.listdir(os.path.join(top, d)))
        extra = have - set(want)
        if extra:
            die(f"{d} holds what no variant should leave: {sorted(extra)}")
        missing = [n for n in sorted(want) if n not in have]
        for n in missing:
            make(n, want[n])
        recreated.append(len(missing))
    # A used root: a new marker (the directory's mtime is now, as after a boot).
    m = os.path.join(top, ROOT, "bench-marker")
    if os.path.exists(m):
        os.unlink(m)
    write(m, f"{time.time()}\n")
    settle(top)
    fp = subvolumes(top)
    if "fingerprint" not in meta:
        meta["fingerprint"] = fp
        write(meta_path, json.dumps(meta))
    elif fp != meta["fingerprint"]:
        a, b = {tuple(x) for x in fp}, {tuple(x) for x in meta["fingerprint"]}
        die(f"state differs from the recorded one: now also {sorted(a - b)[:5]}, missing {sorted(b - a)[:5]}")
    # How many old roots the last variant pruned, in each layout (the caller checks it did its work).
    print(*recreated)
    # What the next variant needs on top of the prepared state (a rename each).
    if then == "readme":
        os.rename(os.path.join(top, ROOT), os.path.join(top, README_ROOT))
    elif then == "backlog":
        os.rename(os.path.join(top, STASH), os.path.join(top, SNAPS, ".kept." + meta["pending"]))


def main():
    a = sys.argv[1:]
    if a[:1] == ["base"] and len(a) == 4:
        cmd_base(a[1], int(a[2]), a[3])
    elif a[:1] == ["configure"] and len(a) == 6:
        cmd_configure(a[1], a[2], int(a[3]), int(a[4]), a[5])
    elif a[:1] == ["restore"] and len(a) in (3, 4):
        cmd_restore(a[1], a[2], a[3] if len(a) == 4 else "")
    else:
        die("usage: base TOP N META | configure TOP BASE_META DUE K META | restore TOP META [readme|backlog]")


if __name__ == "__main__":
    main()
