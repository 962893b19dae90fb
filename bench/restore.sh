#!/usr/bin/env bash
# Benchmark: `ephemeral-root restore` of a directory of N small files (default 200,000, in
# directories of 1,000) from an old root on a loop-device btrfs, to two destinations:
#   - btrfs: another subvolume of the same filesystem (the usual case: the running root), where
#     file data can be reflinked;
#   - ext4: a directory on /var/tmp (another filesystem: data copied).
# Peer: GNU `cp -a --reflink=auto` of the same directory from a read-only mount of the old root
# (content, modes, owners, times, links, xattrs; no fsync), the floor a careful copy can reach.
# If BEFORE_BIN is set (e.g. a build of an older commit), it is measured in the same run, on the
# same old root, with the same cache treatment. Ratios are against `after`.
# Page cache dropped before every run; the destination is removed between runs (untimed).
#
# Usage: sudo [BEFORE_BIN=path] [EPHEMERAL_ROOT_BIN=path] bench/restore.sh [N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=${1:-200000}
command -v mkfs.btrfs >/dev/null || apt-get install -y -qq btrfs-progs >/dev/null
after=${EPHEMERAL_ROOT_BIN:-$("$here/../scripts/build-static")}
before=${BEFORE_BIN:-}
work=$(mktemp -d /var/tmp/er-bench-restore.XXXXXX)
loop=""
cleanup() {
  umount "$work/old" 2>/dev/null || true
  umount "$work/live" 2>/dev/null || true
  umount "$work/top" 2>/dev/null || true
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/top" "$work/live" "$work/ext4"
truncate -s 8G "$work/img"
mkfs.btrfs -q -f "$work/img" >/dev/null
loop=$(losetup -f --show "$work/img")
mount -o subvolid=5 "$loop" "$work/top"
btrfs -q subvolume create "$work/top/@root"
btrfs -q subvolume create "$work/top/@live"
python3 - "$work/top/@root/srv/data" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i}"), "w") as f:
        f.write("small file %d\n" % i)
PY
umount "$work/top"
echo > "$work/none.conf"
common=(--device "$loop" --config "$work/none.conf")
"$after" rollback --kernel-cmdline "" --keep all "${common[@]}" 2>/dev/null
"$after" finish --no-baseline --keep all "${common[@]}" 2>/dev/null
old=$("$after" list "${common[@]}" | awk 'NR==2 {print $1}')
mount -o subvol=@live "$loop" "$work/live"
mkdir -p "$work/old"
mount -o ro,subvol="@snapshots/$old" "$loop" "$work/old"

ms() { echo $(( ($2 - $1) / 1000000 )); }
# run BIN DEST_DIR: prints milliseconds (BIN "cp": the peer)
run() {
  local bin=$1 dest=$2
  rm -rf "$dest/data"
  sync
  echo 3 > /proc/sys/vm/drop_caches
  local t0 t1
  t0=$(date +%s%N)
  if [ "$bin" = cp ]; then
    cp -a --reflink=auto "$work/old/srv/data" "$dest/data" && sync -f "$dest"
  else
    "$bin" restore "$old" /srv/data --to "$dest/data" "${common[@]}" >/dev/null 2>"$work/err" \
      || { cat "$work/err" >&2; exit 1; }
  fi
  t1=$(date +%s%N)
  [ "$(find "$dest/data" -type f | wc -l)" -eq "$n" ] || { echo "incomplete copy" >&2; exit 1; }
  ms "$t0" "$t1"
}

ratio() { awk -v b="$1" -v a="$2" 'BEGIN { printf "%.2f", b / a }'; }
printf '%-6s %-8s %12s\n' dest what ms
for dest in btrfs ext4; do
  dir=$([ "$dest" = btrfs ] && echo "$work/live" || echo "$work/ext4")
  a=$(run "$after" "$dir")
  printf '%-6s %-8s %12s\n' "$dest" after "$a"
  c=$(run cp "$dir")
  printf '%-6s %-8s %12s   (after / cp -a: %s)\n' "$dest" "cp -a" "$c" "$(ratio "$a" "$c")"
  if [ -n "$before" ]; then
    b=$(run "$before" "$dir")
    printf '%-6s %-8s %12s   (before / after: %s)\n' "$dest" before "$b" "$(ratio "$b" "$a")"
  fi
  rm -rf "$dir/data"
done
