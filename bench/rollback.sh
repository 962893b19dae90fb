#!/usr/bin/env bash
# Benchmark of the boot path (issue 14, item 2): `ephemeral-root rollback` against the physical
# floor and against the impermanence README's script, on loop-device btrfs, all in one run.
#
# For every configuration {FILES} x {DUE} x {NESTED} (default {10k, 1M files in the root} x
# {0, 46 old roots due for pruning} x {3, 100 nested subvolumes in the root}) there is ONE btrfs
# image on ONE loop device, and every variant runs on it:
#   floor_sh   (a)  bench/floor.sh: mount the top level, `btrfs subvolume create` the next root,
#                   two `mv`, umount: the unavoidable, with the stock tools
#   floor_c    (a0) bench/floor.c: the same system calls from one static program (no shell, no
#                   process per step): the kernel's floor
#   rb_initrd  (b)  `ephemeral-root rollback`, the initrd build (scripts/build-static --initrd): the
#                   boot path as it runs in the initrd; `finish` ran after the previous boot
#   rb_full    (b)  the same with the full build (scripts/build-static)
#   backlog    (b') `ephemeral-root rollback` (initrd build) when `finish` did NOT run after the
#                   previous boot: its unsealed root (with NESTED nested subvolumes) is pending and
#                   the due old roots were not pruned, so rollback does that work too
#   readme     (c)  bench/impermanence-baseline.sh
#   finish     (d)  `ephemeral-root finish --no-baseline` (full build), timed right after each
#                   rb_initrd and rb_full run: not on the boot path
# The state before every timed run is the same for every variant (bench/rollback-state.py puts it
# back and compares the list of subvolumes and read-only flags with the one recorded first): the
# root (N files, NESTED nested subvolumes, built once per image and moved back after each run),
# 5 recent old roots and DUE old roots 40+ days old with 3 nested subvolumes each, in both
# layouts (ephemeral-root's @snapshots, read-only; the README's old_roots, writable). Retention:
# ours `--keep 30d`, the README's `find -mtime +30`. Both keep the recent ones, prune the due ones.
# With FRESH=1 every timed run starts from a fresh copy of the configuration's prepared image
# instead (copied into a new directory in RUNDIR, default /dev/shm, with its own loop device; after the run the copy is
# checked as above and deleted): byte for byte the same filesystem before every run. Putting the
# state back by deleting and recreating subvolumes ages the image: in the 46-due configurations,
# 2 x 46 old roots with their nested subvolumes are deleted and recreated after every run that
# pruned them, and the kernel floor (a0) there grew round after round (10.2, 25.6, 34.6, 32.2,
# 30.7 ms at 1M/46/100, while it stayed at 7-9 ms without old roots due; bench/RESULTS-rollback.md).
# RUNDIR on tmpfs means the loop devices' flushes reach no disk.
# The variants alternate (their order rotates every round), configurations too, so machine load
# hits all alike; each cell is the median of RUNS runs, after one warm-up round that is not
# recorded. Timings are wall-clock from fork to exit. Results: bench/RESULTS-rollback.md.
#
# Usage: sudo bench/rollback.sh            (RUNS=15 FILES="10000 1000000" DUE="0 46" NESTED="3 100")
#   WORK=DIR    keep images there (default: a new /var/tmp/er-rollback.XXXXXX, removed at the end);
#               with KEEP=1 the base images (the slow part: 1M files) are kept and reused
#   EPHEMERAL_ROOT_BIN / EPHEMERAL_ROOT_INITRD_BIN   use these binaries instead of building
#   QUIET=LOAD  before each configuration's turn in a round, wait (up to 5 min, and up to
#               QUIET_BUDGET seconds in all, default 3600) until the 1-minute load average is
#               below LOAD: on a shared machine, measure in its quieter moments (all variants of
#               one configuration and round still run back to back)
#   FRESH=1     a fresh copy of the prepared image for every timed run (above); RUNDIR=DIR for the
#               copies (default /dev/shm: each copy is up to ~1 GB with 1M files)
#   CANDIDATE="[VAR=VALUE…] BINARY"   also time this build's rollback (variant rb_candidate, with
#               `finish` of the full build after it), to measure a change in the same run
# Prints the table (markdown) on stdout; raw samples in $WORK/samples.tsv (kept with KEEP=1,
# or copied to $OUT if set).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
runs=${RUNS:-15}
read -r -a files_l <<<"${FILES:-10000 1000000}"
read -r -a due_l <<<"${DUE:-0 46}"
read -r -a nested_l <<<"${NESTED:-3 100}"
[ "$(id -u)" = 0 ] || { echo "rollback.sh: run as root (loop devices, mounts)" >&2; exit 1; }
for t in mkfs.btrfs btrfstune btrfs cc python3 losetup; do
  command -v "$t" >/dev/null || { echo "rollback.sh: $t is missing (apt-get install btrfs-progs gcc python3)" >&2; exit 1; }
done
state="$here/rollback-state.py"

full=${EPHEMERAL_ROOT_BIN:-$("$repo/scripts/build-static")}
initrd=${EPHEMERAL_ROOT_INITRD_BIN:-$("$repo/scripts/build-static" --initrd)}
work=${WORK:-$(mktemp -d /var/tmp/er-rollback.XXXXXX)}
mkdir -p "$work"
cc -O2 -static -o "$work/floor" "$here/floor.c"

fresh=${FRESH:-0}
loops=()
# FRESH=1: the copies go into a directory of our own (RUNDIR is usually the world-writable
# /dev/shm, where a fixed name could be someone's symlink); run_dev is the copy being measured.
run_img= run_dev=
if [ "$fresh" = 1 ]; then
  run_img=$(mktemp -d "${RUNDIR:-/dev/shm}/er-rollback.XXXXXX")/run.img
fi
cleanup() {
  for l in "${loops[@]}" $run_dev; do
    umount "$work/top" 2>/dev/null || true
    losetup -d "$l" 2>/dev/null || true
  done
  [ -z "$run_img" ] || rm -rf "$(dirname "$run_img")"
  if [ "${KEEP:-0}" != 1 ]; then
    [ -z "${OUT:-}" ] || cp "$work/samples.tsv" "$OUT" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT
mkdir -p "$work/top"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# base N: an image with the root of N files and the recent old roots (reused with KEEP=1)
base() {
  local n=$1 img="$work/base-$1.img"
  if [ -f "$img" ] && [ -f "$work/base-$n.json" ]; then return; fi
  log "building the base image with $n files"
  rm -f "$img"; truncate -s 16G "$img"; mkfs.btrfs -q -f "$img" >/dev/null
  local l; l=$(losetup -f --show "$img")
  mount -o subvolid=5 "$l" "$work/top"
  python3 "$state" base "$work/top" "$n" "$work/base-$n.json.tmp"
  umount "$work/top"; losetup -d "$l"
  mv "$work/base-$n.json.tmp" "$work/base-$n.json"
}

declare -A dev
cfgs=()
# configure N D K: a copy of the base image (its own filesystem id), its own loop device
configure() {
  local n=$1 d=$2 k=$3 c="$1-$2-$3"
  log "configuration $c: copying the base image, $k nested subvolumes, $d old roots due"
  cp --sparse=always "$work/base-$n.img" "$work/cfg-$c.img"
  btrfstune -m "$work/cfg-$c.img" >/dev/null
  local l; l=$(losetup -f --show "$work/cfg-$c.img"); dev[$c]=$l
  [ "$fresh" = 1 ] || loops+=("$l")
  mount -o subvolid=5 "$l" "$work/top"
  python3 "$state" configure "$work/top" "$work/base-$n.json" "$d" "$k" "$work/cfg-$c.json"
  python3 "$state" restore "$work/top" "$work/cfg-$c.json" >/dev/null
  umount "$work/top"
  cfgs+=("$c")
  if [ "$fresh" = 1 ]; then # the image stays as prepared; runs use copies
    btrfs device scan --forget "$l" 2>/dev/null || true
    losetup -d "$l"
  fi
}

# pruned C VARIANT: how many old roots VARIANT must have pruned on C (@snapshots old_roots): all
# due old roots in its own layout, none in the other.
pruned() {
  local d=${1#*-}; d=${d%-*}
  case $2 in
    rb_initrd | rb_full | rb_candidate | backlog) echo "$d 0" ;; # (+ finish for rb_*)
    readme) echo "0 $d" ;;
    *) echo "0 0" ;;
  esac
}

# put_back C VARIANT [readme|backlog]: the prepared state again on C's device (untimed), plus what
# the next variant needs; checks that VARIANT, which ran last on it, pruned what it had to, so no
# variant is timed doing less than its work.
put_back() {
  local c=$1 want; want=$(pruned "$1" "$2")
  mount -o subvolid=5 "${dev[$c]}" "$work/top"
  local got; got=$(python3 "$state" restore "$work/top" "$work/cfg-$c.json" "${3:-}")
  umount "$work/top"
  if [ "$got" != "$want" ]; then
    echo "rollback.sh: after ${2:-setup} on $c, old roots pruned (@snapshots old_roots): $got, expected $want" >&2
    exit 1
  fi
}

# restore C [readme|backlog]: before a timed run. By default the variant that ran last on C is
# undone on the same image; with FRESH=1, C's device is a new copy of the prepared image (the last
# run's copy was checked and deleted by done_with).
declare -A last
restore() {
  local c=$1
  if [ "$fresh" != 1 ]; then
    put_back "$c" "${last[$c]:-}" "${2:-}"
    return
  fi
  cp --sparse=always "$work/cfg-$c.img" "$run_img"
  run_dev=$(losetup -f --show "$run_img"); dev[$c]=$run_dev
  put_back "$c" "" "${2:-}"
}
# done_with C VARIANT: after a timed run (and `finish`). With FRESH=1: check the copy, delete it.
done_with() {
  last[$1]=$2
  [ "$fresh" = 1 ] || return 0
  put_back "$1" "$2"
  btrfs device scan --forget "$run_dev" 2>/dev/null || true
  losetup -d "$run_dev"; run_dev=
  rm -f "$run_img"
}

us() { local t=${1/./}; echo "${t#0}"; }
# timed C VARIANT CMD...: run CMD, append the wall time to the samples
timed() {
  local c=$1 v=$2; shift 2
  local t0=$EPOCHREALTIME
  if ! "$@" >/dev/null 2>"$work/err"; then
    echo "rollback.sh: $v on $c failed:" >&2; cat "$work/err" >&2; exit 1
  fi
  local t1=$EPOCHREALTIME
  [ "$round" -gt 0 ] || return 0 # the warm-up round is not recorded
  printf '%s\t%s\t%s\t%s\n' "${c//-/$'\t'}" "$v" "$round" \
    "$(awk -v a="$(us "$t0")" -v b="$(us "$t1")" 'BEGIN { printf "%.1f", (b - a) / 1000 }')" \
    >>"$work/samples.tsv"
}

ours() { # BIN COMMAND C [ARGS]
  "$1" "$2" --device "${dev[$3]}" --keep 30d --config /dev/null -q "${@:4}"
}

run_variant() { # C VARIANT
  local c=$1
  case $2 in
    floor_sh) restore "$c"; timed "$c" floor_sh "$here/floor.sh" "${dev[$c]}" ;;
    floor_c) restore "$c"; timed "$c" floor_c "$work/floor" "${dev[$c]}" ;;
    rb_initrd | rb_full)
      local bin=$initrd; [ "$2" = rb_full ] && bin=$full
      restore "$c"
      timed "$c" "$2" ours "$bin" rollback "$c" --kernel-cmdline ""
      timed "$c" finish ours "$full" finish "$c" --no-baseline
      ;;
    rb_candidate)
      restore "$c"
      # shellcheck disable=SC2086 # CANDIDATE is a command prefix
      timed "$c" rb_candidate env $CANDIDATE rollback --device "${dev[$c]}" --keep 30d \
        --config /dev/null -q --kernel-cmdline ""
      ours "$full" finish "$c" --no-baseline >/dev/null
      ;;
    backlog)
      restore "$c" backlog
      timed "$c" backlog ours "$initrd" rollback "$c" --kernel-cmdline ""
      ;;
    readme) restore "$c" readme; timed "$c" readme "$here/impermanence-baseline.sh" "${dev[$c]}" ;;
  esac
  done_with "$c" "$2"
}

machine() {
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src || echo ' (src modified)')"
  echo "- kernel $(uname -r), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- $(btrfs --version), loop devices on $(df -T "$work" | awk 'NR==2 {print $2}') image files"
  echo "- binaries: full $(stat -c %s "$full") bytes, initrd $(stat -c %s "$initrd") bytes"
}

log "work directory $work"
machine >"$work/machine.md"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/machine.md"
for n in "${files_l[@]}"; do base "$n"; done
for n in "${files_l[@]}"; do for d in "${due_l[@]}"; do for k in "${nested_l[@]}"; do
  configure "$n" "$d" "$k"
done; done; done
: >"$work/samples.tsv"
: >"$work/load"
variants=(floor_sh floor_c rb_initrd rb_full backlog readme)
[ -z "${CANDIDATE:-}" ] || variants+=(rb_candidate)
budget=${QUIET_BUDGET:-3600}
quiet() {
  [ -n "${QUIET:-}" ] || return 0
  local waited=0
  while awk -v q="$QUIET" '{ exit !($1 >= q) }' /proc/loadavg && [ "$waited" -lt 300 ] \
    && [ "$budget" -gt 0 ]; do
    sleep 10; waited=$((waited + 10)); budget=$((budget - 10))
  done
}
for round in $(seq 0 "$runs"); do
  log "round $round of $runs$([ "$round" -gt 0 ] || echo ' (warm-up, not recorded)'), load average $(cut -d' ' -f1 /proc/loadavg)"
  for c in "${cfgs[@]}"; do
    quiet
    [ "$round" -eq 0 ] || cut -d' ' -f1 /proc/loadavg >>"$work/load"
    for i in "${!variants[@]}"; do
      run_variant "$c" "${variants[$(( (i + round) % ${#variants[@]} ))]}"
    done
  done
done
[ "$fresh" = 1 ] || for c in "${cfgs[@]}"; do restore "$c"; done
echo "- state before every timed run: $([ "$fresh" = 1 ] && echo "a fresh copy of the prepared image, in $(dirname "$run_img") ($(df -T "$(dirname "$run_img")" | awk 'NR==2 {print $2}'))" || echo "the same image, the last variant's work undone")" >>"$work/machine.md"
echo "- load average at end: $(cut -d' ' -f1-3 /proc/loadavg); 1-minute load average when each configuration's turn began: $(sort -n "$work/load" | sed -n '1p;$p' | paste -sd- ) (median $(sort -n "$work/load" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'))${QUIET:+, waiting for it to be below $QUIET (up to 5 min a turn, $((${QUIET_BUDGET:-3600} - budget)) s waited in all)}" >>"$work/machine.md"
cat "$work/machine.md"
echo
python3 - "$work/samples.tsv" <<'PY'
# Medians per variant; ratios are medians of the per-round ratios (the variants of one round ran
# back to back on the same device, so each ratio compares runs made under the same load).
import statistics, sys
from collections import defaultdict
s = defaultdict(list)  # (n, d, k, variant) -> [ms]
per = defaultdict(dict)  # (n, d, k, round) -> {variant: ms} (the first sample of the round)
for line in open(sys.argv[1]):
    n, d, k, v, r, ms = line.split("\t")
    c = (int(n), int(d), int(k))
    s[c + (v,)].append(float(ms))
    per[c + (int(r),)].setdefault(v, float(ms))
cells = sorted({key[:3] for key in s})
med = lambda c, v: statistics.median(s[c + (v,)])
def ratio(c, x, y):
    return statistics.median(p[x] / p[y] for key, p in per.items() if key[:3] == c)
def diff(c, x, y):
    return statistics.median(p[x] - p[y] for key, p in per.items() if key[:3] == c)
def f(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
print("| files | due | nested | (a) floor, shell | (a0) floor, syscalls | (b) rollback | (b)/(a) | (b)/(a0) | (b)−(a0) | (b') backlog | (c) README script | (c)/(b) | (d) finish |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
b, a0, over = [], [], []
for c in cells:
    m = {v: med(c, v) for v in ("floor_sh", "floor_c", "rb_initrd", "backlog", "readme", "finish")}
    b.append(m["rb_initrd"]); a0.append(m["floor_c"]); over.append(diff(c, "rb_initrd", "floor_c"))
    print(f"| {c[0]:,} | {c[1]} | {c[2]} | {f(m['floor_sh'])} | {f(m['floor_c'])} | {f(m['rb_initrd'])} "
          f"| {ratio(c, 'rb_initrd', 'floor_sh'):.2f} | {ratio(c, 'rb_initrd', 'floor_c'):.2f} | {over[-1]:+.1f} "
          f"| {f(m['backlog'])} | {f(m['readme'])} | {ratio(c, 'readme', 'rb_initrd'):.1f}× | {f(m['finish'])} |")
print()
print(f"Milliseconds: medians of {min(len(x) for x in s.values())} runs; ratios and (b)−(a0): medians of "
      f"the per-round ratios and differences. (b) is the initrd build. Across the table: (b) max/min = "
      f"{max(b):.1f}/{min(b):.1f} = {max(b)/min(b):.2f}; the floor (a0) itself {max(a0):.1f}/{min(a0):.1f} = "
      f"{max(a0)/min(a0):.2f}; (b)−(a0) from {min(over):+.1f} to {max(over):+.1f} ms.")
print()
print("Every variant, min–median–max (ms):")
print()
vs = [v for v in ("floor_sh", "floor_c", "rb_initrd", "rb_full", "rb_candidate", "backlog", "readme", "finish")
      if any(k[3] == v for k in s)]
print("| files | due | nested | " + " | ".join(vs) + " |")
print("|---:|---:|---:|" + "---|" * len(vs))
for c in cells:
    row = []
    for v in vs:
        x = s[c + (v,)]
        row.append(f"{f(min(x))}–{f(statistics.median(x))}–{f(max(x))}")
    print(f"| {c[0]:,} | {c[1]} | {c[2]} | " + " | ".join(row) + " |")
if "rb_candidate" in vs:
    print()
    print("Candidate build (CANDIDATE), per-round medians: " + "; ".join(
        f"{c[0]:,}/{c[1]}/{c[2]}: {f(med(c, 'rb_candidate'))} ms, /(a0) {ratio(c, 'rb_candidate', 'floor_c'):.2f}, "
        f"−(a0) {diff(c, 'rb_candidate', 'floor_c'):+.1f}" for c in cells))
PY
