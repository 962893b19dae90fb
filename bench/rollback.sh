#!/usr/bin/env bash
# Benchmark: `ephemeral-root rollback` vs. the impermanence README's shell rollback
# (bench/impermanence-baseline.sh), on loop-device btrfs, for roots of 10k / 100k / 1M files with
# 3 nested subvolumes and 50 old roots (each with 3 nested subvolumes) spread over 50 days.
# Both sides prune what is older than 30 days (ours with --keep 30d).
#
# Each measured run starts from the same prepared state (untimed): the root is a writable snapshot
# of a template holding N files, plus 3 nested subvolumes. Reports the first run (which prunes 20
# old roots) and the median of the following steady-state runs.
#
# Usage: sudo bench/rollback.sh [SIZES...]   (default: 10000 100000 1000000; RUNS=7)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000 1000000)
runs=${RUNS:-7}
command -v mkfs.btrfs >/dev/null || apt-get install -y -qq btrfs-progs >/dev/null
bin=${EPHEMERAL_ROOT_BIN:-$("$here/../scripts/build-static")}
work=$(mktemp -d /var/tmp/er-bench.XXXXXX)
loops=()
cleanup() {
  for m in "$work"/*/top; do umount "$m" 2>/dev/null || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

fill() { # DIR N: N small files in directories of 1000
  python3 - "$1" "$2" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, "usr", f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i}"), "w") as f:
        f.write("x")
PY
}

# setup KIND N: KIND is "ours" (@root, @snapshots) or "base" (root, old_roots)
setup() {
  local kind=$1 n=$2 dir="$work/$1-$2"
  mkdir -p "$dir/top"
  truncate -s 16G "$dir/img"
  mkfs.btrfs -q -f "$dir/img" >/dev/null
  local l; l=$(losetup -f --show "$dir/img"); loops+=("$l"); echo "$l" > "$dir/dev"
  mount -o subvolid=5 "$l" "$dir/top"
  local t="$dir/top"
  btrfs -q subvolume create "$t/template"
  fill "$t/template" "$n"
  for s in machines portables containers; do
    btrfs -q subvolume create "$t/nested-$s"; echo "$s" > "$t/nested-$s/data"
  done
  btrfs -q subvolume create "$t/small"; echo small > "$t/small/f"
  mkdir -p "$t/small/var/lib"
  for s in machines portables containers; do btrfs -q subvolume create "$t/small/var/lib/$s"; done
  local snaps=$([ "$kind" = ours ] && echo "@snapshots" || echo "old_roots")
  [ "$kind" = ours ] && btrfs -q subvolume create "$t/$snaps" || mkdir -p "$t/$snaps"
  local now; now=$(date +%s)
  for i in $(seq 1 50); do
    local ts=$((now - i * 86400 - 3600))
    if [ "$kind" = ours ]; then
      local name; name=$(date -u -d "@$ts" +%Y-%m-%dT%H-%M-%SZ)
      btrfs -q subvolume snapshot -r "$t/small" "$t/$snaps/.tmp"
      mv "$t/$snaps/.tmp" "$t/$snaps/$name"
      # nested subvolumes inside the old root, read-only, as rollback keeps them
      btrfs property set -ts "$t/$snaps/$name" ro false
      for s in machines portables containers; do
        rmdir "$t/$snaps/$name/var/lib/$s"
        btrfs -q subvolume snapshot -r "$t/small/var/lib/$s" "$t/$snaps/$name/var/lib/$s"
      done
      btrfs property set -ts "$t/$snaps/$name" ro true
    else
      local name; name=$(date -d "@$ts" "+%Y-%m-%d_%H:%M:%S")
      btrfs -q subvolume snapshot "$t/small" "$t/$snaps/$name"
      for s in machines portables containers; do
        rmdir "$t/$snaps/$name/var/lib/$s"
        btrfs -q subvolume snapshot "$t/small/var/lib/$s" "$t/$snaps/$name/var/lib/$s"
      done
      touch -d "@$ts" "$t/$snaps/$name"
    fi
  done
  sync; umount "$t"
}

# prepare KIND N: put a full root in place (untimed)
prepare() {
  local kind=$1 n=$2 dir="$work/$1-$2" t="$work/$1-$2/top"
  local root=$([ "$kind" = ours ] && echo "@root" || echo "root")
  mount -o subvolid=5 "$(cat "$dir/dev")" "$t"
  btrfs -q subvolume snapshot "$t/template" "$t/$root"
  mkdir -p "$t/$root/var/lib"
  for s in machines portables containers; do
    btrfs -q subvolume snapshot "$t/nested-$s" "$t/$root/var/lib/$s"
  done
  date > "$t/$root/boot-marker"
  sync; umount "$t"; sync
}

run_ours() { "$bin" rollback --device "$(cat "$work/ours-$1/dev")" --keep 30d --kernel-cmdline "" --config /dev/null -q; }
run_base() { "$here/impermanence-baseline.sh" "$(cat "$work/base-$1/dev")"; }

echo "| files in root | ephemeral-root first run (ms) | baseline first run (ms) | ephemeral-root steady median (ms) | baseline steady median (ms) | ratio (steady) |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
  setup ours "$n"; setup base "$n"
  declare -A first=(); : > "$work/ours.t"; : > "$work/base.t"
  for i in $(seq 1 "$runs"); do
    for kind in ours base; do
      prepare "$kind" "$n"
      t0=$(date +%s%N); "run_$kind" "$n"; t1=$(date +%s%N)
      d=$(ms "$t0" "$t1")
      if [ "$i" = 1 ]; then first[$kind]=$d; else echo "$d" >> "$work/$kind.t"; fi
    done
  done
  mo=$(median < "$work/ours.t"); mb=$(median < "$work/base.t")
  ratio=$(awk -v a="$mb" -v b="$mo" 'BEGIN { if (b < 1) b = 1; printf "%.1f×", a / b }')
  echo "| $n | ${first[ours]} | ${first[base]} | $mo | $mb | $ratio |"
done
