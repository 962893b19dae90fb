#!/bin/sh
# bench/diff.sh: `ephemeral-root diff` with a baseline (btrfs generation search) against
#   - `btrfs subvolume find-new ROOT GEN` for the baseline's generation (the same kind of search,
#     the floor: it lists changed file extents and nothing else),
#   - `find ROOT -newer STAMP` (a stamp file touched when the baseline was taken),
#   - the seed's "Method 3" (find /var /etc -type f -printf '%T@ %p\n' | sort, before and after,
#     then diff),
# on a btrfs root of N files with C of them changed since the baseline, all on one loop device in
# one run.
#
#   sudo bench/diff.sh [N=1000000] [C=1000] [RUNS=5]
#
# Needs root, losetup, mkfs.btrfs, python3 (to create the files quickly). BIN defaults to the
# release musl build; BIN_OLD (optional) is a second binary measured the same way (before/after
# comparisons). Prints Markdown table rows: cold (page cache dropped before each command, one run)
# and warm (median of RUNS runs, commands interleaved).
set -eu
N=${1:-1000000}
C=${2:-1000}
RUNS=${3:-5}
BIN=${BIN:-target/x86_64-unknown-linux-musl/release/ephemeral-root}
BIN_OLD=${BIN_OLD:-}
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

# N files, 200 per directory, half under /var/lib/<svc>, half under /etc/<x>.
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

# At boot: the baseline (ours), the stamp (find -newer) and the "before" listing (Method 3).
cold; t0=$(ms); find_list >"$work/before"; t1=$(ms); find_before=$((t1 - t0))
t0=$(ms); "$BIN" baseline --device "$dev" --config "$conf" -q; t1=$(ms); baseline_ms=$((t1 - t0))
touch "$work/stamp"
gen=$(btrfs subvolume show "$work/mnt/@snapshots/.baseline" | awk '/Gen at creation/ {print $4}')
sleep 1

# A day of use: C changes spread over the tree, half of them appends to existing files, half new
# files in existing directories (which changes those directories too).
python3 - "$root" "$N" "$C" <<'PY'
import os, sys
root, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for k in range(c):
    i = k * (n // c)
    top = "var/lib" if i % 2 else "etc"
    d = f"{root}/{top}/svc{i // 100000}/d{i // 200}"
    if k % 2:
        with open(f"{d}/f{i}", "a") as f:
            f.write("changed")
    else:
        with open(f"{d}/new{i}", "w") as f:
            f.write("created")
PY
sync

run_tool() { local b=$1; shift; "$b" diff --device "$dev" --config "$conf" --json "$@" >"$work/tool$*.json"; }
run_findnew() { btrfs subvolume find-new "$root" "$gen" >"$work/findnew.txt"; }
run_newer() { find "$root" -newer "$work/stamp" >"$work/newer.txt"; }
run_m3() { find_list >"$work/after"; diff "$work/before" "$work/after" >"$work/find.diff" || true; }

# One measurement in ms: `cold` drops the page cache first.
measure() { [ "$1" = cold ] && cold; shift; t0=$(ms); "$@"; t1=$(ms); echo $((t1 - t0)); }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ctime, full: the walk bcachefs and ZFS use (src/diff/baseline.rs), here on btrfs
# ctime1: the same walk held to one CPU (taskset), which is one thread (src/diff/baseline.rs takes
# one per CPU it may run on): what walking in parallel gains
tools="tool ctime ctime1 full findnew newer m3"
[ -n "$BIN_OLD" ] && tools="old $tools"
run() {
    case $2 in
    tool) measure "$1" run_tool "$BIN" ;;
    ctime) measure "$1" run_tool "$BIN" --compare ctime ;;
    ctime1) measure "$1" taskset -c 0 sh -c 'exec "$0" diff --device "$1" --config "$2" --json --compare ctime >"$3"' "$BIN" "$dev" "$conf" "$work/tool1.json" ;;
    full) measure "$1" run_tool "$BIN" --compare full ;;
    old) measure "$1" run_tool "$BIN_OLD" ;;
    findnew) measure "$1" run_findnew ;;
    newer) measure "$1" run_newer ;;
    m3) measure "$1" run_m3 ;;
    esac
}
for t in $tools; do eval "cold_$t=\$(run cold $t)"; done
for t in $tools; do eval "warm_$t="; done
i=0
while [ $i -lt "$RUNS" ]; do
    for t in $tools; do eval "warm_$t=\"\$warm_$t \$(run warm $t)\""; done
    i=$((i + 1))
done
for t in $tools; do eval "warm_$t=\$(echo \$warm_$t | median)"; done

ratio() { python3 -c "print(f'{$1/max($2,1):.2f}')"; }
echo "| files | changed | cache | ephemeral-root diff | find-new (floor) | diff / find-new | find -newer | Method 3 (after-walk + diff) | walk: --compare ctime | ctime / find -newer | the same on one CPU | walk: --compare full |$( [ -n "$BIN_OLD" ] && echo ' previous diff (BIN_OLD) |')"
echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|$( [ -n "$BIN_OLD" ] && echo '---:|')"
for cache in cold warm; do
    eval "d=\$${cache}_tool f=\$${cache}_findnew n=\$${cache}_newer m=\$${cache}_m3 c=\$${cache}_ctime c1=\$${cache}_ctime1 u=\$${cache}_full"
    extra=
    [ -n "$BIN_OLD" ] && eval "extra=\" \$${cache}_old ms |\""
    echo "| $N | $C | $cache | $d ms | $f ms | $(ratio "$d" "$f") | $n ms | $m ms | $c ms | $(ratio "$c" "$n") | $c1 ms | $u ms |$extra"
done
changed_tool=$(python3 -c "import json; print(json.load(open('$work/tool.json'))['files'])")
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
r = {k: json.load(open(f"{w}/tool{k}.json")) for k in ("", "--compare ctime", "--compare full")}
print("walk:", r["--compare ctime"]["method"])
same = lambda a, b: json.dumps(a["groups"], sort_keys=True) == json.dumps(b["groups"], sort_keys=True)
assert same(r["--compare ctime"], r["--compare full"]), "ctime and full walks differ"
print("the ctime and full walks list the same groups;", "the generation search too" if same(r[""], r["--compare full"]) else "the generation search differs (emptied directories: a walk lists them)")
PY
echo
echo "baseline took ${baseline_ms} ms; diff listed $changed_tool changed files; find-new printed" \
    "$(grep -c '^inode' "$work/findnew.txt" || true) extent lines; find -newer $(wc -l <"$work/newer.txt") paths;" \
    "Method 3 before-walk ${find_before} ms"
# Without a baseline diff walks everything (for reference).
btrfs -q subvolume delete "$work/mnt/@snapshots/.baseline" >/dev/null
cold; t0=$(ms); "$BIN" diff --device "$dev" --config "$conf" --json >/dev/null; t1=$(ms)
echo "diff without a baseline (full walk, cold cache): $((t1 - t0)) ms"
