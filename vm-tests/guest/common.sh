# Shared guest-side shell (busybox sh): sourced by the small guests' scripts and the dracut initrd's
# /ertest/check-json. BB is the busybox to use ("" = applets on PATH).

# arg NAME: the value of NAME=... on the kernel command line.
arg() { for w in $($BB cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}"; return;; esac; done; }

# erjson TAG [KEY=VALUE...] < JSON: print JSON on the console as an ERJSON block for the harness
# (vm-tests/harness/qemu.py parses it, harness/checks.py asserts on it): one meta line, then the
# base64 text in numbered parts of 600 characters (a /dev/kmsg record holds about 1000).
# ERJSON_OUT: where to write (default: stdout; the dracut initrd uses /dev/kmsg, one record per line).
emit() { if [ -n "$ERJSON_OUT" ]; then echo "$*" > "$ERJSON_OUT"; else echo "$*"; fi; }
erjson() {
  local tag=$1 f=${TMPDIR:-/tmp}/.erjson.$$ n i line
  shift
  { $BB base64 | $BB tr -d '\n' | $BB fold -w 600; echo; } | $BB grep . > $f
  n=$($BB wc -l < $f | $BB tr -d ' ')
  emit "ERJSON $tag meta $* parts=$n"
  i=0
  while read -r line; do
    i=$((i + 1))
    emit "ERJSON $tag $i/$n $line"
  done < $f
  $BB rm -f $f
}

# jcheck TAG [KEY=VALUE...] -- ARGS...: run `ephemeral-root ARGS... check --json` and print the result
# as an ERJSON block with rc=EXIT; stderr's last line goes to the console too.
ERJ_N=0  # how many jcheck calls this script made (the harness compares it with the blocks it parsed)
jcheck() {
  local tag=$1 meta="" rc
  shift
  ERJ_N=$((ERJ_N + 1))
  while [ $# -gt 0 ] && [ "$1" != -- ]; do meta="$meta $1"; shift; done
  [ "$1" = -- ] && shift
  local o=${TMPDIR:-/tmp}/.jcheck
  "${ERBIN:-ephemeral-root}" "$@" check --json > $o.out 2> $o.err; rc=$?
  [ -s $o.err ] && emit "ERTEST check-stderr $tag: $($BB tail -n 1 $o.err)"
  erjson "$tag" rc=$rc$meta < $o.out
  return $rc
}

# keep_of ARGS...: the retention option among a rollback's arguments (`finish` prunes, not `rollback`)
keep_of() { while [ $# -gt 0 ]; do case "$1" in --keep) echo "--keep $2"; return;; --keep=*) echo "$1"; return;; esac; shift; done; }
# is_dry ARGS...: a --dry-run among them
is_dry() { for a in "$@"; do [ "$a" = --dry-run ] && return 0; done; return 1; }
# blank_of ARGS...: the --blank option among a rollback's arguments (check --json must know the template)
blank_of() { while [ $# -gt 0 ]; do case "$1" in --blank) echo "--blank $2"; return;; --blank=*) echo "$1"; return;; esac; shift; done; }

# The suites' bench groups (guest/engine-tests.sh, guest/zfs-tests.sh): milliseconds since boot
# (/proc/uptime), the median of numbers on stdin, a root of FILES small files in directories of 200
# (half under var/lib, half under etc; prints the number of directories), and CHANGED changes to it
# (half appends, half new files).
bench_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
bench_med() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
bench_fill() { # bench_fill DIR FILES
  local d=$1 n=$2 i=0 k=0 j sub
  while [ $i -lt $n ]; do
    if [ $((k % 2)) = 0 ]; then sub=var/lib/svc$k; else sub=etc/x$k; fi
    mkdir -p "$d/$sub"; j=0
    while [ $j -lt 200 ] && [ $i -lt $n ]; do
      echo "file $i of the benchmark root, sixty-four bytes or so......." > "$d/$sub/f$j"; j=$((j + 1)); i=$((i + 1))
    done
    k=$((k + 1))
  done
  echo $k
}
bench_change() { # bench_change DIR DIRS CHANGED
  local d=$1 nd=$2 c=$3 i=0 k sub
  while [ $i -lt $c ]; do
    if [ $((i % 2)) = 0 ]; then k=$(( (i / 2) % nd )); else k=$(( ((i / 2) * 4) % nd )); fi
    if [ $((k % 2)) = 0 ]; then sub=var/lib/svc$k; else sub=etc/x$k; fi
    if [ $((i % 2)) = 0 ]; then echo "appended after the baseline" >> "$d/$sub/f$(( (i / 2 / nd) % 200 ))"
    else echo "new after the baseline" > "$d/$sub/new$i"; fi
    i=$((i + 1))
  done
}
