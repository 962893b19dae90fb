#!/bin/sh
# bench/diff.sh: `ephemeral-root diff` with a baseline (btrfs generation search) against the
# seed's "Method 3" (find /var /etc -type f -printf '%T@ %p\n' | sort, before and after, then
# diff) on a btrfs root of N files with C of them changed since the baseline.
#
#   sudo bench/diff.sh [N=1000000] [C=1000]
#
# Needs root, losetup, mkfs.btrfs, python3 (to create the files quickly). BIN defaults to the
# release musl build. Prints one Markdown table row per measurement (cold: page cache dropped;
# warm: right after a previous run).
set -eu
N=${1:-1000000}
C=${2:-1000}
BIN=${BIN:-target/x86_64-unknown-linux-musl/release/ephemeral-root}
work=$(mktemp -d /tmp/er-bench.XXXXXX)
dev=
cleanup() {
    umount "$work/mnt" 2>/dev/null || true
    [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
truncate -s 30G "$work/disk.img"
mkfs.btrfs -q -f "$work/disk.img"
dev=$(losetup -f --show "$work/disk.img")
mkdir "$work/mnt"
mount -o subvolid=5 "$dev" "$work/mnt"
btrfs -q subvolume create "$work/mnt/@root"
root="$work/mnt/@root"
conf="$work/empty.conf"
: >"$conf"

# N files, 100 per directory, half under /var/lib/<svc>, half under /etc/<x>.
python3 - "$root" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    top = "var/lib" if i % 2 else "etc"
    d = f"{root}/{top}/svc{i // 100000}/d{i // 200}"
    if i % 200 < 2:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i}", "w") as f:
        f.write("x" * 64)
PY
sync

ms() { python3 -c 'import time; print(int(time.time()*1000))'; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
find_list() { (cd "$root" && find var etc -type f -printf '%T@ %p\n' 2>/dev/null | sort -n); }

# At boot: the baseline (ours) and the "before" listing (Method 3).
cold; t0=$(ms); find_list >"$work/before"; t1=$(ms); find_before=$((t1 - t0))
t0=$(ms); "$BIN" baseline --device "$dev" --config "$conf" -q; t1=$(ms); baseline_ms=$((t1 - t0))

# A day of use: change C files spread over the tree.
python3 - "$root" "$N" "$C" <<'PY'
import sys
root, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for k in range(c):
    i = k * (n // c)
    top = "var/lib" if i % 2 else "etc"
    with open(f"{root}/{top}/svc{i // 100000}/d{i // 200}/f{i}", "a") as f:
        f.write("changed")
PY
sync

run_tool() { "$BIN" diff --device "$dev" --config "$conf" --json >"$work/tool.json"; }
run_find() { find_list >"$work/after"; diff "$work/before" "$work/after" >"$work/find.diff" || true; }

echo "| files | changed | cache | ephemeral-root diff (baseline) | find + sort + diff (after-walk only) | find total (before + after) | speed-up |"
echo "|---:|---:|---|---:|---:|---:|---:|"
for cache in cold warm; do
    [ "$cache" = cold ] && cold
    t0=$(ms); run_tool; t1=$(ms); tool=$((t1 - t0))
    [ "$cache" = cold ] && cold
    t0=$(ms); run_find; t1=$(ms); fnd=$((t1 - t0))
    echo "| $N | $C | $cache | $tool ms | $fnd ms | $((fnd + find_before)) ms | $(python3 -c "print(f'{$fnd/max($tool,1):.0f}x')") |"
done
changed_tool=$(python3 -c "import json,sys; print(json.load(open('$work/tool.json'))['files'])")
changed_find=$(grep -c '^>' "$work/find.diff" || true)
echo
echo "baseline took ${baseline_ms} ms; diff listed $changed_tool changed files; find's diff shows $changed_find new lines"
# Without a baseline diff walks everything (for reference).
btrfs -q subvolume delete "$work/mnt/@snapshots/.baseline" >/dev/null
cold; t0=$(ms); "$BIN" diff --device "$dev" --config "$conf" --json >/dev/null; t1=$(ms)
echo "diff without a baseline (full walk, cold cache): $((t1 - t0)) ms"
