#!/bin/sh
# The ZFS suite (vm-tests/README.md, "Scenarios"), in the small guest (harness/suites.py). zpool/zfs are
# test scaffolding: they create the layout and check results; ephemeral-root itself only talks to /dev/zfs.
# Prints "PASS name" / "FAIL name: reason" and a final "N passed, M failed" line; every state check goes
# through `ephemeral-root check --json` (jc: an ERJSON block the harness asserts on, checks.py), and so does
# the state after every successful `rollback` (ER). (The power cuts are guest/cycle.sh's.)
#   zt.only=REGEX (test groups)  zt.part=K/N (crash points with index % N == K)  zt.scen=ABCDE
. /guest/common.sh
ONLY=$(arg zt.only)
SCEN=$(arg zt.scen)    # crash scenarios to run (default ABCDE)
[ -n "$SCEN" ] || SCEN=ABCDE
sc() { case "$SCEN" in *"$1"*) return 0;; esac; return 1; }
PART=$(sed -n 's/.*zt\.part=\([^ ]*\).*/\1/p' /proc/cmdline)   # K/N: crash points with index % N == K
ln -sf /proc/self/mounts /etc/mtab
mkdir -p /tmp/m /tmp/m2
P=0; F=0
pass() { echo "PASS $1"; P=$((P+1)); }
fail() { echo "FAIL $1: $2"; F=$((F+1)); }
want() { [ -z "$ONLY" ] || echo "$1" | grep -qE "$ONLY"; }
now() { cut -d' ' -f1 /proc/uptime; }
OUT=/tmp/out
NJ=0
# After every successful rollback: `finish` (what the system's finish unit does after boot: seal the kept
# root, prune; here without the baseline), then check --json must call the state clean (the harness asserts it).
autocheck() { NJ=$((NJ + 1)); jcheck "auto-$NJ-$(echo "$T" | tr '/' '_')" -- --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" "$@"; }
ER() {
  ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" "$@" >$OUT 2>&1; rc=$?; cat $OUT >> /tmp/all.log
  if [ $rc -eq 0 ] && [ "$1" = rollback ] && ! is_dry "$@"; then
    ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" finish --no-baseline $(keep_of "$@") >/tmp/fin 2>&1 \
      || fail "finish after rollback ($T)" "$(tail -2 /tmp/fin | tr '\n' ' ')"
    cat /tmp/fin >> /tmp/all.log
    autocheck $(blank_of "$@"); rc=0
  fi
  return $rc
}
ERE() { # ER with environment (finish without the baseline: on ZFS a baseline of the fresh root makes the
  # next rollback keep that root again; "layout" checks that once, instead of every crash scenario)
  e=$1; shift; env "$e" ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" "$@" >$OUT 2>&1; rc=$?
  if [ $rc -eq 0 ] && [ "$1" = rollback ] && ! is_dry "$@"; then
    env "$e" ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" finish --no-baseline $(keep_of "$@") >>$OUT 2>&1; rc=$?
    [ $rc -eq 0 ] && autocheck $(blank_of "$@") && rc=0
  fi
  cat $OUT >> /tmp/all.log
  return $rc
}
# jc TAG WANT [KEY=VALUE...]: check --json of this layout, with WANT old roots (- for any)
jc() { local t=$1 w=$2; shift 2; jcheck "$(echo "$t" | tr ' /:' '___')" want=$w "$@" -- --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots"; }
last() { tr '\n' ' ' < $OUT | tail -c 400; }
S() { echo "$T/local/old-roots"; }
# File helpers; DS is relative to $T.
w() { mount -t zfs "$T/$1" /tmp/m || return 1; mkdir -p "$(dirname "/tmp/m/$2")"; printf '%s' "$3" > "/tmp/m/$2"; umount /tmp/m; }
r() { mount -t zfs -o ro "$T/$1" /tmp/m 2>/dev/null || return 1; cat "/tmp/m/$2" 2>/dev/null; x=$?; umount /tmp/m; return $x; }
ex() { r "$1" "$2" >/dev/null; }
lsd() { mount -t zfs -o ro "$T/$1" /tmp/m || { echo "(cannot mount $T/$1)"; return 1; }; ls -A /tmp/m; umount /tmp/m; }
gp() { zfs get -Hp -o value "$1" "$2" 2>/dev/null; }
olds() { zfs list -H -o name -d 1 "$(S)" 2>/dev/null | sed "s|^$(S)||; s|^/||" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2}Z(-[0-9]+)?$'; }
nolds() { olds | wc -l | tr -d ' '; }
newest() { olds | sort | tail -n1; }
holding() { for o in $(olds); do ex "local/old-roots/$o" "$1" && echo "$o"; done; }
snapshot_state() { zfs list -H -o name -t all -r "$T" | sort; }
layout() { # layout NAME: $T = rpool/NAME with local/root (legacy), safe/persist
  T=rpool/$1
  zfs destroy -r "$T" >/dev/null 2>&1
  zfs create -p -o canmount=off "$T/local" && zfs create -o mountpoint=legacy "$T/local/root" &&
    zfs create -p -o mountpoint=legacy "$T/safe/persist" && w safe/persist keep-me persisted
}
fill_now() {
  w local/root etc/now.conf now
  zfs create -o mountpoint=legacy "$T/local/root/machines" && zfs create "$T/local/root/machines/inner" &&
    w local/root/machines/inner data "inner now"
}
# inv CTX TOTAL MARKER [OLDROOT:FILE...]: one root (fresh, empty, writable), no leftovers and TOTAL old
# roots (check --json, asserted by the harness), MARKER in exactly one, every old-root dataset readonly=on
# canmount=noauto, survivors intact, persisted data intact, no stray datasets.
inv() {
  ctx=$1; total=$2; marker=$3; shift 3
  jc "$ctx" "$total"
  e=$(inv_problems "$total" "$marker" "$@")
  if [ -z "$e" ]; then pass "$ctx"; else fail "$ctx" "$e"; fi
}
inv_problems() { # inv_problems TOTAL MARKER [OLDROOT:FILE...]: what is wrong (nothing: all well)
  total=$1; marker=$2; shift 2; e=""
  if zfs list "$T/local/root" >/dev/null 2>&1; then
    [ -z "$(lsd local/root)" ] || e="$e root not empty ($(lsd local/root | tr '\n' ' '));"
    [ "$(gp readonly "$T/local/root")" = 0 ] || [ "$(gp readonly "$T/local/root")" = off ] || e="$e root readonly;"
    [ "$(gp written "$T/local/root")" = 0 ] || e="$e root written=$(gp written "$T/local/root");"
    l=$(zfs list -H -t snapshot -o name -s createtxg -d 1 "$T/local/root" | tail -n1)
    case "$l" in *@ephemeral-root-fresh.*) ;; *) e="$e root's latest snapshot is '$l';"; esac
  else
    e="$e root missing;"
  fi
  n=$(nolds); [ "$n" = "$total" ] || e="$e $n old roots, want $total ($(olds | tr '\n' ' '));"
  if [ -n "$marker" ]; then
    h=$(holding "$marker" | wc -l | tr -d ' '); [ "$h" = 1 ] || e="$e $marker in $h old roots;"
  fi
  for ds in $(zfs list -H -o name -r "$(S)" | grep -v -x "$(S)" | grep -v "^$(S)/\.template"); do
    ro=$(zfs get -H -o value readonly "$ds"); cm=$(zfs get -H -o value canmount "$ds")
    [ "$ro" = on ] || e="$e $ds readonly=$ro;"
    [ "$cm" = noauto ] || e="$e $ds canmount=$cm;"
  done
  for s in "$@"; do ex "local/old-roots/${s%%:*}" "${s#*:}" || e="$e lost ${s};"; done
  [ "$(r safe/persist keep-me)" = persisted ] || e="$e persisted data lost;"
  stray=$(zfs list -H -o name -r "$T" | grep -v -E "^$T(/local(/root|/old-roots(/.*)?)?|/safe(/persist)?)?$" | tr '\n' ' ')
  [ -z "$stray" ] || e="$e stray datasets $stray;"
  echo "$e"
}
HIT=" "
rf() { # rf POINT ARGS...: run with a fault; an abort there is expected, anything else must succeed
  local fp=$1; shift
  ERE "EPHEMERAL_ROOT_FAULT=$fp" "$@"
  if [ $rc -eq 134 ] || grep -q "fault injection: aborting at $fp" $OUT; then
    grep -q "fault injection: aborting at $fp" $OUT || fail "fault $fp" "rc 134 without the abort message"
    case "$HIT" in *" $fp "*) ;; *) HIT="$HIT$fp ";; esac
  elif [ $rc -ne 0 ]; then
    fail "fault $fp run" "rc $rc: $(last)"
  fi
}
summary() { echo "$P passed, $F failed"; }

import_pool() {
  zpool import -f -N -d /dev rpool >/tmp/imp 2>&1 || { cat /tmp/imp; return 1; }
}
create_pool() {
  t=$(now)
  zpool create -f -o ashift=12 -O mountpoint=none -O canmount=off -O compression=lz4 rpool /dev/vda1 >/tmp/cr 2>&1 ||
    { fail "zpool create" "$(cat /tmp/cr)"; summary; exit 0; }
  echo "TIME zpool-create $(now) (from $t)"
}

# =============================================================================================
create_pool
echo "module version: $(cat /sys/module/zfs/version)"

# --- "erase your darlings" layout: rpool/local/root (legacy) with @blank ---------------------
T=rpool
if want layout; then
  t0=$(now)
  zfs create -p -o canmount=off rpool/local && zfs create -o mountpoint=legacy -o xattr=sa -o acltype=posixacl rpool/local/root &&
    zfs snapshot rpool/local/root@blank && zfs create -p -o canmount=off rpool/safe &&
    zfs create -o mountpoint=legacy rpool/safe/persist && w safe/persist keep-me persisted &&
    w local/root etc/machine-id-from-before abc || fail "layout setup" "zfs create failed"
  created=$(gp creation rpool/local/root)
  ER check; if [ $rc -eq 0 ] && grep -q "move the current root" $OUT; then pass "check prints the plan"; else fail "check" "rc $rc: $(last)"; fi
  ER rollback --dry-run; [ $rc -eq 0 ] && [ "$(nolds)" = 0 ] && pass "dry-run changes nothing" || fail "dry-run" "rc $rc $(last)"
  ER rollback --keep all
  if [ $rc -eq 0 ]; then pass "first rollback on an erase-your-darlings layout"; else fail "first rollback" "rc $rc: $(last)"; fi
  echo "TIME first-rollback $(now) (from $t0); $(grep 'finished in' $OUT)"
  n1=$(newest)
  want_name=$(date -u -d "@$created" +%Y-%m-%dT%H-%M-%SZ 2>/dev/null)
  [ "$n1" = "$want_name" ] && pass "old root named after the root's creation time ($n1)" || fail "old-root name" "got $n1, want $want_name"
  zfs list -H -o name -t snapshot "$(S)/$n1@blank" >/dev/null 2>&1 && pass "@blank travels with the old root" || fail "@blank" "$(zfs list -H -t snapshot -o name -r rpool/local | tr '\n' ' ')"
  ex "local/old-roots/$n1" etc/machine-id-from-before && pass "old root holds the previous root's files" || fail "old root content" "missing"
  [ -z "$(lsd local/root)" ] && pass "new root is empty" || fail "new root empty" "$(lsd local/root)"
  [ "$(zfs get -H -o value,source mountpoint rpool/local/root | tr '\t' ' ')" = "legacy local" ] && pass "new root keeps mountpoint=legacy (local)" || fail "mountpoint" "$(zfs get -H -o value,source mountpoint rpool/local/root)"
  # xattr=sa displays as "on" since 2.2 (same value); compare with the old root instead of a literal.
  [ "$(zfs get -H -o value,source xattr rpool/local/root | tr '\t' ' ')" = "$(zfs get -H -o value xattr "$(S)/$n1") local" ] &&
    [ "$(zfs get -H -o value,source acltype rpool/local/root | tr '\t' ' ')" = "posix local" ] && pass "new root keeps xattr/acltype (local)" ||
    fail "props" "$(zfs get -H -o property,value,source xattr,acltype rpool/local/root "$(S)/$n1" | tr '\n' ' ')"
  [ "$(zfs get -H -o value readonly "$(S)/$n1")" = on ] && [ "$(zfs get -H -o value canmount "$(S)/$n1")" = noauto ] && pass "old root readonly=on canmount=noauto" || fail "old root props" "$(zfs get -H -o property,value readonly,canmount "$(S)/$n1" | tr '\n' ' ')"
  [ "$(zfs get -H -o value mountpoint "$(S)/$n1")" = legacy ] && pass "old root keeps the root's properties" || fail "old root mountpoint" "$(zfs get -H -o value mountpoint "$(S)/$n1")"
  [ "$(zfs get -H -o value canmount "$(S)")" = off ] && [ "$(zfs get -H -o value mountpoint "$(S)")" = none ] && pass "snapshots location created canmount=off mountpoint=none" || fail "snapshots location" "$(zfs get -H -o property,value canmount,mountpoint "$(S)" | tr '\n' ' ')"
  # Boots 1 and 2: write to the root and to /persist, roll back.
  for b in 1 2; do
    w local/root marker-$b $b; w local/root etc/ertest-$b x; w safe/persist p-$b $b
    ER rollback --keep all || fail "rollback boot $b" "rc $rc: $(last)"
    nb=$(newest)
    [ -z "$(lsd local/root)" ] && pass "boot $b: files written to / are gone" || fail "boot $b: root not empty" "$(lsd local/root)"
    [ "$(r local/old-roots/$nb marker-$b)" = "$b" ] && pass "boot $b: present in old root $nb" || fail "boot $b: old root" "marker-$b not in $nb"
    [ "$(r safe/persist p-$b)" = "$b" ] && pass "boot $b: persisted dataset survives" || fail "boot $b: persist" "p-$b lost"
    if mount -t zfs "$(S)/$nb" /tmp/m2 2>/dev/null; then
      if touch /tmp/m2/probe 2>/dev/null; then fail "boot $b: old root writable" "touch succeeded"; else pass "boot $b: old root is read-only (EROFS)"; fi
      umount /tmp/m2
    else fail "boot $b: mount old root" "mount -t zfs $(S)/$nb failed"; fi
  done
  [ "$(nolds)" = 3 ] && pass "three old roots" || fail "old roots" "$(olds | tr '\n' ' ')"
  inv "layout invariants" 3 marker-2
  # A fresh root is not kept again.
  ER rollback --keep all; [ $rc -eq 0 ] && [ "$(nolds)" = 3 ] && grep -q "unchanged since it was created" $OUT && pass "fresh root: nothing to keep" || fail "fresh root" "rc $rc $(nolds) $(last)"

fi

# A fresh root after `finish` took its baseline (as the finish unit does at every boot): nobody wrote to the
# root, so it is still fresh and must not be kept a second time (btrfs and bcachefs do not keep it).
if want freshbaseline; then
  layout fb; w local/root etc/x x; ER rollback --keep all; ER rollback --keep all
  n=$(nolds); ER baseline
  ER rollback --keep all; [ $rc -eq 0 ] && [ "$(nolds)" = "$n" ] && grep -q "unchanged since it was created" $OUT \
    && pass "fresh root with a baseline: nothing to keep" || fail "fresh root with a baseline" "kept again: $n -> $(nolds) old roots"
  zfs destroy -R "$T" >/dev/null 2>&1; T=rpool
fi

if want list; then
  ER list; [ $rc -eq 0 ] && [ "$(grep -c -E '^[0-9]{4}-' $OUT)" = "$(nolds)" ] && grep -q newest $OUT && pass "list" || fail "list" "rc $rc $(last)"
  ER list --json; nb=$(newest)
  [ $rc -eq 0 ] && grep -q "\"name\":\"$nb\"" $OUT && grep -q '"readonly":true' $OUT && ! grep -q '"readonly":false' $OUT && pass "list --json" || fail "list --json" "$(last)"
fi

if want pin; then
  o1=$(olds | head -n1); ER pin "$o1"
  [ $rc -eq 0 ] && [ "$(zfs get -H -o source ephemeral-root:pinned "$(S)/$o1")" = local ] && pass "pin sets ephemeral-root:pinned" || fail "pin" "rc $rc $(last)"
  ER list; grep "^$o1" $OUT | grep -q pinned && pass "list shows the pin" || fail "list pin" "$(last)"
  ER pin 1999-01-01T00-00-00Z; [ $rc -eq 2 ] && pass "pin of a missing old root: usage error" || fail "pin missing" "rc $rc"
  ER gc --keep 1 --dry-run; [ $rc -eq 0 ] && [ "$(nolds)" = 3 ] && pass "gc --dry-run" || fail "gc dry-run" "$(last)"
  ER gc --keep 1
  left=$(olds | tr '\n' ' ')
  [ $rc -eq 0 ] && [ "$(nolds)" = 2 ] && echo "$left" | grep -q "$o1" && pass "gc keeps the pinned and the newest ($left)" || fail "gc" "rc $rc left $left: $(last)"
  jc "gc leaves nothing behind" 2
  ER unpin "$o1"; [ $rc -eq 0 ] && [ "$(zfs get -H -o value ephemeral-root:pinned "$(S)/$o1")" = - ] && pass "unpin" || fail "unpin" "$(last)"
  ER gc --keep 1; [ $rc -eq 0 ] && [ "$(nolds)" = 1 ] && ! olds | grep -q "$o1" && pass "gc prunes it once unpinned" || fail "gc unpinned" "$(olds | tr '\n' ' ') $(last)"
fi

if want audit; then
  # Mounting the root, even read-only, replays/destroys its intent log and changes `written`, so
  # this group checks the root through its guid and the copy, and mounts it only at the end.
  w local/root etc/audited yes
  before=$(nolds); g0=$(gp guid rpool/local/root)
  ER rollback --keep all --kernel-cmdline "quiet rd.ephemeral_root=audit"
  na=$(newest)
  [ $rc -eq 0 ] && [ "$(gp guid rpool/local/root)" = "$g0" ] && [ "$(nolds)" = $((before + 1)) ] && pass "audit: root kept, not replaced" || fail "audit" "rc $rc $(last)"
  [ "$(r local/old-roots/$na etc/audited)" = yes ] && [ "$(zfs get -H -o value readonly "$(S)/$na")" = on ] && pass "audit: read-only copy $na" || fail "audit copy" "$na"
  ER rollback --keep all --kernel-cmdline "rd.ephemeral_root=audit"
  [ $rc -eq 0 ] && [ "$(nolds)" = $((before + 1)) ] && grep -q "already kept" $OUT && pass "audit again, unchanged: no second copy" || fail "audit again" "$(nolds) $(last)"
  ER rollback --keep all
  [ $rc -eq 0 ] && [ "$(nolds)" = $((before + 1)) ] && [ -z "$(lsd local/root)" ] && pass "wipe after audit: retired without a second copy" || fail "wipe after audit" "$(nolds) $(last)"
  [ "$(r local/old-roots/$na etc/audited)" = yes ] && pass "audit copy survives the retired root's deletion (promoted)" || fail "audit copy after wipe" "lost"
  inv "audit invariants" $((before + 1)) etc/audited
  # A root that was only mounted read-only since the audit counts as changed (conservative).
  w local/root etc/audited2 yes
  ER rollback --keep all --kernel-cmdline "rd.ephemeral_root=audit"; n2=$(nolds)
  r local/root etc/audited2 >/dev/null
  ER rollback --keep all --kernel-cmdline "rd.ephemeral_root=audit"
  echo "NOTE audit after a read-only mount: $n2 -> $(nolds) old roots (written=$(gp written rpool/local/root))"
  ER rollback --keep all || fail "rollback after audit" "$(last)"
fi

if want probe; then
  # What changes `written` (informational).
  zfs create -o mountpoint=legacy rpool/probe; zfs snapshot rpool/probe@a
  echo "PROBE after snapshot: written=$(gp written rpool/probe)"
  mount -t zfs -o ro rpool/probe /tmp/m && umount /tmp/m
  echo "PROBE after ro mount of a never-mounted dataset: written=$(gp written rpool/probe)"
  mount -t zfs rpool/probe /tmp/m && umount /tmp/m; zfs snapshot rpool/probe@b
  echo "PROBE after rw mount + snapshot: written=$(gp written rpool/probe)"
  mount -t zfs -o ro rpool/probe /tmp/m && umount /tmp/m
  echo "PROBE after ro mount of a once-mounted dataset: written=$(gp written rpool/probe)"
  zfs destroy -r rpool/probe
fi

if want skip; then
  w local/root etc/skipped yes; st=$(snapshot_state)
  ER rollback --keep all --kernel-cmdline "rd.ephemeral_root=skip"
  [ $rc -eq 0 ] && [ "$(snapshot_state)" = "$st" ] && [ "$(r local/root etc/skipped)" = yes ] && pass "rd.ephemeral_root=skip leaves everything untouched" || fail "skip" "rc $rc $(last)"
  ER rollback --keep all || fail "rollback after skip" "$(last)"
fi

if want restore; then
  w local/root etc/restore-me v1; zfs create "$T/local/root/srv" && w local/root/srv data nested-v1
  ER rollback --keep all; src=$(newest)
  w local/root etc/later v2
  ER rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=$src"
  [ $rc -eq 0 ] && [ "$(r local/root etc/restore-me)" = v1 ] && ! ex local/root etc/later && pass "rd.ephemeral_root.restore=$src boots that old root" || fail "restore" "rc $rc $(last)"
  [ "$(r local/root/srv data)" = nested-v1 ] && case "$(gp readonly "$T/local/root/srv")" in 0|off) true;; *) false;; esac && pass "restore brings the child dataset back, writable" || fail "restore nested" "$(zfs list -H -o name,readonly -r $T/local/root | tr '\n' ' ')"
  [ "$(holding etc/later | wc -l)" = 1 ] && pass "the replaced root is kept" || fail "restore kept" "$(holding etc/later)"
  ER restore "$src" etc/restore-me --to /tmp/restored
  [ $rc -eq 0 ] && [ "$(cat /tmp/restored 2>/dev/null)" = v1 ] && pass "restore command reads the old root (read-only mount)" || fail "restore command" "rc $rc $(last)"
  ER rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=1999-01-01T00-00-00Z"
  [ $rc -eq 2 ] && grep -q "does not exist" $OUT && pass "restore of a missing old root: config error" || fail "restore missing" "rc $rc $(last)"
  # Prune everything, including the restore source (origin of the current root): promote + destroy.
  w local/root etc/x y; ER rollback --keep all
  ER gc --keep 1
  jc "gc prunes the origin" 1
  [ $rc -eq 0 ] && [ "$(nolds)" = 1 ] && pass "gc prunes the origin of a restored root (promote)" || fail "gc origin" "rc $rc $(olds | tr '\n' ' ') $(last)"
  inv "restore invariants" 1 etc/x
fi

if want guards; then
  st=$(snapshot_state)
  ephemeral-root --fstype zfs --root rpool/local/nope --snapshots rpool/local/old-roots rollback >$OUT 2>&1; rc=$?
  [ $rc -eq 2 ] && grep -q "not found" $OUT && [ "$(snapshot_state)" = "$st" ] && pass "missing root: config error, nothing changed" || fail "missing root" "rc $rc $(last)"
  ephemeral-root --fstype zfs --root @root --snapshots @snapshots rollback >$OUT 2>&1; rc=$?
  [ $rc -eq 2 ] && grep -q "dataset name" $OUT && pass "btrfs-style names refused on zfs" || fail "names" "rc $rc $(last)"
  ephemeral-root --fstype zfs --root rpool/local/root --snapshots rpool/local/root/old rollback >$OUT 2>&1; rc=$?
  [ $rc -eq 2 ] && grep -q overlap $OUT && [ "$(snapshot_state)" = "$st" ] && pass "overlap refused" || fail "overlap" "rc $rc $(last)"
  ephemeral-root --fstype btrfs --device /dev/vda1 --root @root --snapshots @snapshots rollback >$OUT 2>&1; rc=$?
  [ $rc -ne 0 ] && grep -q "does not hold a btrfs" $OUT && pass "fstype mismatch refused" || fail "fstype mismatch" "rc $rc $(last)"
  ER rollback --blank rpool/local/root@blank; [ $rc -ne 0 ] && grep -q "snapshot of the root" $OUT && [ "$(snapshot_state)" = "$st" ] && pass "blank = snapshot of the root refused" || fail "blank of root" "rc $rc $(last)"
  mount -t zfs rpool/local/root /tmp/m2
  ER rollback; [ $rc -ne 0 ] && grep -q "is mounted at" $OUT && [ "$(snapshot_state)" = "$st" ] && pass "live (mounted) root refused" || fail "live root" "rc $rc $(last)"
  umount /tmp/m2
  echo "2.3.1-1" > /tmp/fakever; mount --bind /tmp/fakever /sys/module/zfs/version
  ER list; [ $rc -ne 0 ] && grep -q "2.3.1-1.*not supported" $OUT && pass "module version 2.3.1 refused" || fail "version 2.3.1" "rc $rc $(last)"
  echo "2.5.0-1" > /tmp/fakever; ER list; [ $rc -ne 0 ] && grep -q "not supported" $OUT && pass "module version 2.5.0 refused" || fail "version 2.5.0" "rc $rc $(last)"
  umount /sys/module/zfs/version
  # Encrypted: key not loaded → refused; loaded → works (renames stay under one encryption root).
  echo "correct horse battery" | zfs create -o encryption=on -o keyformat=passphrase -o keylocation=prompt -o canmount=off rpool/enc &&
    zfs create -o canmount=off rpool/enc/local && zfs create -o mountpoint=legacy rpool/enc/local/root && zfs create -p -o mountpoint=legacy rpool/enc/safe/persist ||
    fail "encrypted setup" "zfs create failed"
  T=rpool/enc
  w safe/persist keep-me persisted; w local/root etc/secret s
  ER rollback --keep all; [ $rc -eq 0 ] && [ "$(nolds)" = 1 ] && pass "encrypted root (key loaded): rollback works" || fail "encrypted rollback" "rc $rc $(last)"
  w local/root etc/secret2 s
  zfs unload-key -r rpool/enc >/tmp/uk 2>&1 || fail "unload-key" "$(cat /tmp/uk)"
  st=$(snapshot_state)
  ER rollback --keep all
  [ $rc -eq 1 ] && grep -q "key is not loaded" $OUT && [ "$(snapshot_state)" = "$st" ] && [ "$(grep -c . $OUT)" -le 3 ] && pass "encrypted root without its key: refused, nothing changed" || fail "key not loaded" "rc $rc $(last)"
  grep -h "key is not loaded" $OUT | head -n1
  echo "correct horse battery" | zfs load-key rpool/enc >/dev/null 2>&1
  ER rollback --keep all; [ $rc -eq 0 ] && [ "$(nolds)" = 2 ] && inv "encrypted invariants" 2 etc/secret2
  # Its own encryption root: refused.
  echo "correct horse battery" | zfs create -o encryption=on -o keyformat=passphrase -o keylocation=prompt -o mountpoint=legacy rpool/own >/dev/null 2>&1
  ephemeral-root --fstype zfs --root rpool/own --snapshots rpool/own-old rollback >$OUT 2>&1; rc=$?
  [ $rc -eq 1 ] && grep -q "own encryption root" $OUT && pass "root that is its own encryption root: refused" || fail "own encryption root" "rc $rc $(last)"
  zfs destroy -r rpool/own >/dev/null 2>&1; zfs destroy -r rpool/enc >/dev/null 2>&1
  T=rpool
fi

# --- diff / baseline / restore (issue 6) on ZFS -----------------------------------------------
if want diff; then
  layout diffz
  w local/root etc/machine-id 0123; w local/root var/lib/oldsvc/state.db before
  # older than the baseline by more than diff's margin (1 s): diff trusts their change times
  sleep 1.2
  ER baseline
  [ $rc -eq 0 ] && grep -q "baseline taken" $OUT && zfs list -H -t snapshot "$T/local/root@ephemeral-root-baseline" >/dev/null 2>&1 \
    && pass "baseline: snapshot of the root" || fail "baseline" "rc $rc $(last)"
  w local/root var/lib/newsvc/db after; w local/root root/.bash_history "ls -l"
  ER diff --json
  [ $rc -eq 0 ] && grep -q '"method":"walk, compared with the baseline; entries older than the baseline trusted by their change time' $OUT && pass "diff uses the baseline" || fail "diff baseline" "rc $rc $(last)"
  grep -q '"path":"/var/lib/newsvc"' $OUT && grep -q '"path":"/root/.bash_history"' $OUT && ! grep -q '"path":"/var/lib/oldsvc"' $OUT \
    && grep -q '"rule":"unchanged-since-baseline","description":"[^"]*","entries":2' $OUT \
    && pass "diff: new state shown, state unchanged since the baseline hidden and counted" || fail "diff content" "$(head -c 700 $OUT)"
  # the change-time walk lists exactly what looking every entry up lists
  ER diff -v; grep -v 'walk, compared with the baseline' $OUT > /tmp/d.ctime
  ER diff -v --compare full; grep -v 'walk, compared with the baseline' $OUT > /tmp/d.full
  grep -q "every entry looked up (--compare full)" $OUT && [ -s /tmp/d.ctime ] && cmp -s /tmp/d.ctime /tmp/d.full \
    && pass "diff: the change-time walk lists what --compare full lists" || fail "diff ctime = full" "$(diff /tmp/d.ctime /tmp/d.full | head -c 600)"
  ER diff --nix
  [ $rc -eq 0 ] && grep -q 'environment.persistence."/persist"' $OUT && grep -q '"/var/lib/newsvc"' $OUT && pass "diff --nix" || fail "diff --nix" "$(last)"
  ER baseline; ER diff --json
  [ $rc -eq 0 ] && ! grep -q '"path":"/var/lib/newsvc"' $OUT && [ "$(zfs list -H -t snapshot -o name -r "$T/local/root" | grep -c baseline)" = 1 ] \
    && pass "baseline replaced" || fail "baseline replaced" "$(zfs list -H -t snapshot -o name -r "$T/local/root" | tr '\n' ' ') $(last)"
  w local/root var/lib/newsvc/db2 second
  ER rollback --keep all; O1=$(newest)
  [ $rc -eq 0 ] && ! zfs list -H -t snapshot -o name "$T/local/root@ephemeral-root-baseline" >/dev/null 2>&1 \
    && zfs list -H -t snapshot "$(S)/$O1@ephemeral-root-baseline" >/dev/null 2>&1 \
    && pass "the baseline travels with the kept root" || fail "baseline after rollback" "rc $rc $(zfs list -H -t snapshot -o name -r $T | tr '\n' ' ')"
  inv "diff: invariants after rollback" 1 var/lib/newsvc/db2
  ER diff "$O1" --json
  [ $rc -eq 0 ] && grep -q '"path":"/var/lib/oldsvc"' $OUT && grep -q '"path":"/var/lib/newsvc"' $OUT && pass "diff OLD_ROOT" || fail "diff OLD_ROOT" "rc $rc $(last)"
  ER diff 1999-01-01T00-00-00Z; [ $rc -ne 0 ] && grep -q "does not exist" $OUT && [ "$(grep -c . $OUT)" -le 2 ] && pass "diff of a missing old root: one line" || fail "diff missing" "rc $rc $(last)"
  rm -rf /tmp/rs; mkdir -p /tmp/rs
  ER restore "$O1" /var/lib/newsvc --to /tmp/rs/newsvc
  [ $rc -eq 0 ] && [ "$(cat /tmp/rs/newsvc/db)" = after ] && [ "$(cat /tmp/rs/newsvc/db2)" = second ] && pass "restore a directory" || fail "restore dir" "rc $rc $(last)"
  ER restore "$O1" /var/lib/newsvc --to /tmp/rs/newsvc; [ $rc -ne 0 ] && grep -q force $OUT && pass "restore does not overwrite" || fail "restore overwrite" "rc $rc $(last)"
  w local/root etc/b x; ER rollback --keep all; w local/root etc/c x; ER rollback --keep all
  ER gc --keep 1
  [ $rc -eq 0 ] && [ "$(nolds)" = 1 ] && [ -z "$(zfs list -H -t snapshot -o name -r "$T" | grep baseline)" ] \
    && pass "gc destroys an old root with its baseline" || fail "gc baseline" "rc $rc $(zfs list -H -t snapshot -o name -r $T | tr '\n' ' ') $(last)"
  zfs destroy -R "$T" >/dev/null 2>&1; T=rpool
fi

# --- --blank with a permanent template (what the refusal message tells people to make) -----------
if want blank; then
  layout blankz
  w local/root etc/from-template yes; zfs snapshot "$T/local/root@blank"
  w local/root etc/junk x
  ER rollback --keep all --blank "$T/local/root@blank"
  [ $rc -ne 0 ] && grep -q "zfs clone" $OUT && pass "blank = root@blank: refused with the fix" || fail "blank refusal" "rc $rc $(last)"
  zfs create -o canmount=off -o mountpoint=none "$(S)" && zfs clone "$T/local/root@blank" "$(S)/.template" && zfs promote "$(S)/.template" \
    || fail "template setup" "zfs clone/promote failed"
  ER rollback --keep all --blank "$(S)/.template@blank"
  [ $rc -eq 0 ] && [ "$(r local/root etc/from-template)" = yes ] && ! ex local/root etc/junk && [ "$(nolds)" = 1 ] \
    && [ "$(holding etc/junk | wc -l)" = 1 ] && pass "--blank: new root is a clone of the template, old root kept" || fail "blank rollback" "rc $rc $(last)"
  [ "$(gp origin "$T/local/root")" = "$(S)/.template@blank" ] && [ "$(gp mountpoint "$T/local/root")" = legacy ] \
    && pass "--blank: origin is the template, properties kept" || fail "blank origin" "$(gp origin "$T/local/root") $(gp mountpoint "$T/local/root")"
  ER rollback --keep all --blank "$(S)/.template@blank"
  [ $rc -eq 0 ] && [ "$(nolds)" = 1 ] && pass "--blank: an unchanged clone of the template is not kept again" || fail "blank fresh" "rc $rc $(nolds) $(last)"
  w local/root etc/junk2 x; ER rollback --keep all --blank "$(S)/.template@blank"; ER gc --keep 1
  [ $rc -eq 0 ] && [ "$(nolds)" = 1 ] && zfs list "$(S)/.template@blank" >/dev/null 2>&1 && [ "$(r local/root etc/from-template)" = yes ] \
    && pass "--blank: gc never touches the template" || fail "blank gc" "rc $rc $(zfs list -H -o name -t all -r $T | tr '\n' ' ') $(last)"
  zfs destroy -R "$T" >/dev/null 2>&1; T=rpool
fi

# --- crash safety at every fault point --------------------------------------------------------
RECOVERY="step:discard discard:child-deleted delete:writable delete:child-deleted new-root:child"
if want crash; then
  tc=$(now)
  set -- $RECOVERY; nrec=$#
  i=0
  for p in $(ephemeral-root fault-points); do
    i=$((i + 1)); k=$(( (i % nrec) + 1 )); q=$(echo $RECOVERY | cut -d' ' -f$k)
    if [ -n "$PART" ] && [ $((i % ${PART#*/})) -ne "${PART%/*}" ]; then continue; fi
    tp=$(now)
    if sc A; then
    # A: first rollback ever (no snapshots location), root with child datasets.
    layout cA; fill_now
    rf "$p" rollback --keep all; rf "$q" rollback --keep all
    ER rollback --keep all || fail "A $p/$q" "recovery rc $rc: $(last)"
    inv "A fault $p then $q" 1 etc/now.conf
    k1=$(holding etc/now.conf)
    [ "$(r "local/old-roots/$k1/machines/inner" data)" = "inner now" ] || fail "A fault $p: nested" "child dataset data not in $k1"
    ER rollback --keep all; inv "A fault $p then $q, rerun" 1 etc/now.conf
    fi
    if sc B; then
    # B: an earlier old root exists and is pruned (--keep 1).
    layout cB; w local/root etc/earlier.conf earlier; zfs create "$T/local/root/srv"; w local/root/srv x x
    ER rollback --keep all; e1=$(olds); ER pin "$e1"; ER unpin "$e1"
    fill_now
    rf "$p" rollback --keep 1; rf "$q" rollback --keep 1
    ER rollback --keep 1 || fail "B $p" "recovery rc $rc: $(last)"
    inv "B fault $p then $q" 1 etc/now.conf
    fi
    if sc C; then
    # C: retention keeps everything: the earlier old root survives.
    layout cC; w local/root etc/earlier.conf earlier
    ER rollback --keep all; e1=$(olds)
    fill_now
    rf "$p" rollback --keep all
    ER rollback --keep all || fail "C $p" "recovery rc $rc: $(last)"
    inv "C fault $p" 2 etc/now.conf "$e1:etc/earlier.conf"
    fi
    if sc D; then
    # D: restore an old root with a child dataset.
    layout cD; w local/root etc/earlier.conf earlier; zfs create "$T/local/root/srv"; w local/root/srv x x
    ER rollback --keep all; e1=$(olds)
    w local/root etc/now.conf now
    rf "$p" rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=$e1"
    rf "$q" rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=$e1"
    ER rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=$e1" || fail "D $p" "recovery rc $rc: $(last)"
    e=""
    [ "$(r local/root etc/earlier.conf)" = earlier ] || e="$e earlier.conf not restored;"
    [ "$(r local/root/srv x)" = x ] || e="$e child not restored;"
    ex local/root etc/now.conf && e="$e now.conf still in root;"
    [ "$(nolds)" = 2 ] || e="$e $(nolds) old roots;"
    jc "D restore fault $p then $q" 2
    [ "$(holding etc/now.conf | wc -l | tr -d ' ')" = 1 ] || e="$e now.conf in $(holding etc/now.conf | wc -l) old roots;"
    [ "$(r "local/old-roots/$e1/srv" x)" = x ] || e="$e source lost its child;"
    if [ -z "$e" ]; then pass "D restore fault $p then $q"; else fail "D restore fault $p then $q" "$e"; fi
    fi
    if sc E; then
    # E: audit (copy, root stays), then wipe of the unchanged root: no second copy.
    layout cE; fill_now; gE=$(gp guid "$T/local/root")
    rf "$p" rollback --mode audit --keep all
    ER rollback --mode audit --keep all || fail "E $p" "audit recovery rc $rc: $(last)"
    e=""
    [ "$(gp guid "$T/local/root")" = "$gE" ] || e="$e audit replaced the root;"
    o=$(olds)
    [ "$(r "local/old-roots/$o" etc/now.conf)" = now ] || e="$e copy lacks now.conf;"
    [ "$(r "local/old-roots/$o/machines/inner" data)" = "inner now" ] || e="$e copy lacks child data;"
    [ "$(nolds)" = 1 ] || e="$e $(nolds) old roots after audit;"
    if [ -z "$e" ]; then pass "E audit fault $p"; else fail "E audit fault $p" "$e"; fi
    rf "$p" rollback --keep all
    ER rollback --keep all || fail "E $p" "wipe recovery rc $rc: $(last)"
    inv "E audit+wipe fault $p" 1 etc/now.conf
    fi
    echo "TIME point $p $(now) (from $tp)"
  done
  [ -n "$PART" ] || for p in $(ephemeral-root fault-points); do
    case "$HIT" in *" $p "*) ;; *) echo "NOTE fault point $p not reached on zfs";; esac
  done
  echo "TIME crash-suite $(now) (from $tc)"
  zfs destroy -r rpool/cA >/dev/null 2>&1; zfs destroy -r rpool/cB >/dev/null 2>&1
  zfs destroy -r rpool/cC >/dev/null 2>&1; zfs destroy -r rpool/cD >/dev/null 2>&1; zfs destroy -r rpool/cE >/dev/null 2>&1
fi

# ---- persist, and check's persistence warnings (issue 15) ---------------------------------------
# A running system whose / is the root dataset and /persist the store dataset $T/safe/persist (mounted at
# $SY, the binary and its config on a tmpfs /run, commands chrooted there). The store is another dataset:
# persist copies (no reflink across datasets), and the copy must be identical entry by entry (content,
# owner, mode, mtime, hard links, symlink, xattrs: bchtool tree), holes kept; check warns about content
# hidden under a persisted path's bind mount and a critical file missing from the store, and is quiet once
# fixed; after the rollback the root is empty and the store keeps the copy.
if want persist; then
  layout persistz; SY=/tmp/sys
  ER rollback || fail "persist: first rollback" "$(last)"
  mkdir -p $SY && mount -t zfs "$T/local/root" $SY && mkdir -p $SY/persist $SY/proc $SY/dev $SY/sys $SY/run $SY/var/lib \
    && mount -t zfs "$T/safe/persist" $SY/persist || fail "persist: setup" "cannot mount the datasets"
  R=$SY
  mkdir -p $R/var/lib/foo/sub; dd if=/dev/urandom of=$R/var/lib/foo/db bs=64k count=32 2>/dev/null
  ln $R/var/lib/foo/db $R/var/lib/foo/sub/db-link; ln -s ../db $R/var/lib/foo/sub/sym
  printf 'state' > $R/var/lib/foo/sub/small; truncate -s 64M $R/var/lib/foo/sparse; printf tail >> $R/var/lib/foo/sparse
  bchtool setxattr $R/var/lib/foo/db user.origin "made by foo" && bchtool setxattr $R/var/lib/foo/sub user.dir d
  chown -R 1000:1000 $R/var/lib/foo; chmod 0750 $R/var/lib/foo; chmod 0600 $R/var/lib/foo/sub/small
  mkdir -p $R/var/lib/declared $SY/persist/var/lib/declared; printf 'written before the bind mount' > $R/var/lib/declared/extra
  printf stored > $SY/persist/var/lib/declared/base
  mount -t proc proc $SY/proc && mount --bind /dev $SY/dev && mount -t sysfs sysfs $SY/sys && mount -t tmpfs tmpfs $SY/run \
    && mount --bind $SY/persist/var/lib/declared $SY/var/lib/declared \
    && cp "$(command -v ephemeral-root)" $SY/run/er || fail "persist: setup" "cannot build the system at $SY"
  printf 'fstype = zfs\nroot = %s\nsnapshots = %s\nstore = /persist\npersist = /var/lib/declared /etc/secret.key\ncritical = /etc/secret.key\n' \
    "$T/local/root" "$T/local/old-roots" > $SY/run/er.conf
  SYS() { chroot $SY /run/er "$@" --config /run/er.conf > $OUT 2>&1; rc=$?; cat $OUT >> /tmp/all.log; return $rc; }
  bchtool tree $R/var/lib/foo > /tmp/before
  SYS diff
  grep -q '/var/lib/foo' $OUT && grep -q 'hidden by the bind mount' $OUT && pass "persist: diff shows the state and warns" || fail "persist: diff" "rc $rc $(last)"
  SYS check
  [ $rc -ne 0 ] && grep -q 'var/lib/declared/extra' $OUT && grep -q 'hidden by the bind mount, erased at the next boot' $OUT \
    && pass "persist: check warns about hidden content" || fail "persist: check hidden" "rc $rc $(last)"
  grep -q 'error: /etc/secret.key is declared persistent but missing from the store (/persist/etc/secret.key), and it is critical' $OUT \
    && pass "persist: check: critical file missing from the store" || fail "persist: check missing critical" "$(last)"
  SYS persist /var/lib/foo
  [ $rc -eq 0 ] && grep -q '# copied /var/lib/foo to /persist/var/lib/foo: ' $OUT && grep -q 'environment.persistence."/persist" = {' $OUT \
    && pass "persist: copies and prints the lines" || fail "persist: copy" "rc $rc $(last)"
  echo "NOTE zfs persist: $(grep '# copied' $OUT | head -n1)"
  bchtool tree $SY/persist/var/lib/foo > /tmp/after
  [ -s /tmp/before ] && cmp -s /tmp/before /tmp/after && pass "persist: identical entry by entry" \
    || fail "persist: identical" "$(diff /tmp/before /tmp/after 2>&1 | head -6 | tr '\n' ' ')"
  grep -q 'xattrs=user.origin=' /tmp/after && grep -q 'owner=1000:1000' /tmp/after && grep -q 'link-group=db ' /tmp/after \
    && pass "persist: the tree compared is not vacuous" || fail "persist: tree" "$(head -c 400 /tmp/after)"
  bchtool setxattr $SY/persist/var/lib/foo/db user.origin changed
  bchtool tree $SY/persist/var/lib/foo | cmp -s /tmp/before - && fail "persist: selftest" "a changed xattr went unseen" || pass "persist: selftest: the tree sees a changed xattr"
  bchtool setxattr $SY/persist/var/lib/foo/db user.origin "made by foo"
  blocks=$(stat -c %b $SY/persist/var/lib/foo/sparse)
  [ "$blocks" -lt 4096 ] && pass "persist: holes kept" || fail "persist: holes" "$blocks blocks of 512 for a 64 MiB sparse file"
  SYS persist /var/lib/foo
  [ $rc -ne 0 ] && grep -q 'already exists in the store' $OUT && pass "persist: refused when already in the store" || fail "persist: twice" "rc $rc $(last)"
  SYS persist /var/lib/declared --merge
  [ $rc -eq 0 ] && [ "$(cat $SY/persist/var/lib/declared/extra)" = "written before the bind mount" ] && pass "persist --merge saves the hidden file" \
    || fail "persist --merge" "rc $rc $(last)"
  mkdir -p $SY/persist/etc; printf k > $SY/persist/etc/secret.key
  SYS check
  [ $rc -eq 0 ] && ! grep -qE 'hidden by the bind mount|missing from the store' $OUT && pass "persist: check quiet once fixed" || fail "persist: check fixed" "rc $rc $(last)"
  umount $SY/var/lib/declared $SY/run $SY/sys $SY/dev $SY/proc $SY/persist $SY
  ER rollback
  [ $rc -eq 0 ] && ! ex local/root var/lib/foo/db && mount -t zfs -o ro "$T/safe/persist" /tmp/m \
    && bchtool tree /tmp/m/var/lib/foo > /tmp/kept; umount /tmp/m 2>/dev/null
  cmp -s /tmp/before /tmp/kept && pass "persist: kept in the store after the rollback" || fail "persist: after rollback" "rc $rc $(last)"
  zfs destroy -r "$T" >/dev/null 2>&1
fi

# --- harness self-test: every check reports its planted violation -------------------------------
# On the real pool: plant one violation at a time, then the check must name it (jc ... expect=REGEX: the
# harness fails if check --json calls that state clean; inv_problems: the shell-side invariants).
if want selftest; then
  layout selft; w local/root etc/s s; ER rollback --keep all; o1=$(olds)
  jc selftest-control 1
  [ -z "$(inv_problems 1 etc/s)" ] && pass selftest-control-inv || fail selftest-control-inv "$(inv_problems 1 etc/s)"
  expect_inv() { # expect_inv NAME WORDS TOTAL MARKER: inv_problems must report WORDS
    n=$1; words=$2; shift 2
    inv_problems "$@" | grep -q -- "$words" && pass "selftest-inv-$n" || fail "selftest-inv-$n" "not reported: $words"
  }
  zfs create "$(S)/.kept.x"; jc selftest-kept-leftover 1 'expect=\.kept\.x'; zfs destroy "$(S)/.kept.x"
  zfs create "$(S)/.incomplete.2000-01-01T00-00-00Z"; jc selftest-incomplete 1 'expect=leftover_entry'
  zfs destroy "$(S)/.incomplete.2000-01-01T00-00-00Z"
  zfs create "$(S)/notes"; jc selftest-foreign 1 'expect=foreign_entry_notes'; zfs destroy "$(S)/notes"
  zfs set readonly=off "$(S)/$o1"; jc selftest-writable-old-root 1 "expect=old_root_${o1}_writable"
  expect_inv writable readonly=off 1 etc/s; zfs set readonly=on "$(S)/$o1"
  zfs snapshot "$(S)/$o1@dup" && zfs clone -o readonly=on -o canmount=noauto "$(S)/$o1@dup" "$(S)/2000-01-01T00-00-00Z"
  jc selftest-duplicated-old-root 1 'expect=2_old_roots,_want_1'; expect_inv duplicated "etc/s in 2 old roots" 2 etc/s
  zfs destroy "$(S)/2000-01-01T00-00-00Z"; zfs destroy "$(S)/$o1@dup"
  zfs rename "$(S)/$o1" "$T/aside"; jc selftest-lost-old-root 1 'expect=0_old_roots,_want_1'
  expect_inv lost "etc/s in 0 old roots" 0 etc/s; zfs rename "$T/aside" "$(S)/$o1"
  zfs rename "$T/local/root" "$T/local/away"; jc selftest-root-missing - 'expect=root_\S+_missing'
  expect_inv root-missing "root missing" 1 etc/s; zfs rename "$T/local/away" "$T/local/root"
  mount -t zfs "$T/safe/persist" /tmp/m && mv /tmp/m/keep-me /tmp/keep-me && umount /tmp/m
  expect_inv persist-lost "persisted data lost" 1 etc/s
  mount -t zfs "$T/safe/persist" /tmp/m && mv /tmp/keep-me /tmp/m/keep-me && umount /tmp/m
  zfs create -o mountpoint=legacy "$T/local/root2"; expect_inv second-root "stray datasets $T/local/root2" 1 etc/s
  zfs destroy "$T/local/root2"
  w local/root stale x; jc selftest-root-not-fresh - fresh=1 'expect=not_fresh'
  expect_inv not-fresh "root not empty" 1 etc/s
  jc selftest-control-after 1
  zfs destroy -R "$T" >/dev/null 2>&1; T=rpool
fi

# ---- diff of the live root: the root mounted read-write elsewhere, as / is on a running system --------
# ZFS refuses a read-only mount of a dataset mounted read-write (EBUSY); diff must still read it, and must
# leave that mount writable (its own mount is made read-only, not the filesystem).
diffmounted_group() {
  layout diffm; w local/root var/lib/oldsvc/db before
  ER baseline; [ $rc -eq 0 ] || { fail "diff-mounted: baseline" "$(last)"; return; }
  mkdir -p /tmp/lr
  mount -t zfs "$T/local/root" /tmp/lr || { fail "diff-mounted: mount" "cannot mount $T/local/root"; return; }
  mkdir -p /tmp/lr/var/lib/newsvc && echo after > /tmp/lr/var/lib/newsvc/db
  ER diff --json
  [ $rc -eq 0 ] && grep -q '"path":"/var/lib/newsvc"' $OUT && ! grep -q '"path":"/var/lib/oldsvc"' $OUT \
    && pass "diff of the root while it is mounted read-write" || fail "diff-mounted" "rc $rc $(last)"
  echo again > /tmp/lr/var/lib/newsvc/db2 && pass "the root's own mount stays writable after diff" \
    || fail "diff-mounted: root mount became read-only" "$(grep /tmp/lr /proc/mounts)"
  jc diff-mounted 0
  umount /tmp/lr
  zfs destroy -R "$T" >/dev/null 2>&1; T=rpool
}
if want diffmounted; then diffmounted_group; fi

# ---- bench (issue 14 items 2 and 3): NOT part of CI ------------------------------------------------
# Runs only when zt.only names it (zt.only=bench: the harness scenario zfs-bench, set "bench"; an empty
# zt.only does not select it). On a root of zt.files files (default 20000; 64 bytes, 200 a directory, half
# below var/lib, half below etc) with a baseline, then zt.changed changes (default 1000: half appends to
# existing files spread over every directory, half new files in every fourth directory): `diff --json`
# against `zfs diff` (same snapshot, same root) and `find -newer` (a stamp touched just before the baseline),
# interleaved (the order rotates every round), warm ARC, zt.runs rounds (default 3), medians. Then the boot
# path: `rollback` on this layout, zt.runs times (the root written each time; `finish` untimed after each).
# Times from /proc/uptime (10 ms resolution); TIME lines go to the harness's notes (harness/suites.py).
# bench_ms, bench_med, bench_fill, bench_change: guest/common.sh (shared with the bcachefs suite)
bench_group() {
  local files changed runs nd t0 r v i order
  files=$(arg zt.files); [ -n "$files" ] || files=20000
  changed=$(arg zt.changed); [ -n "$changed" ] || changed=1000
  runs=$(arg zt.runs); [ -n "$runs" ] || runs=3   # zfs diff takes minutes under TCG
  layout benchz
  mkdir -p /tmp/broot
  mount -t zfs "$T/local/root" /tmp/broot || { fail bench-mount "cannot mount $T/local/root"; return; }
  t0=$(bench_ms); nd=$(bench_fill /tmp/broot "$files"); sync
  echo "TIME bench-fill $files files in $nd directories: $(( $(bench_ms) - t0 )) ms"
  touch /tmp/bstamp; sleep 1
  ER baseline; [ $rc -eq 0 ] && pass bench-baseline || { fail bench-baseline "$(last)"; umount /tmp/broot; return; }
  sleep 1; bench_change /tmp/broot "$nd" "$changed"; sync
  : > /tmp/bt
  for r in $(seq 0 "$runs"); do
    case $((r % 4)) in 0) order="ours zdiff find full" ;; 1) order="zdiff find full ours" ;; 2) order="find full ours zdiff" ;; *) order="full ours zdiff find" ;; esac
    for v in $order; do
      t0=$(bench_ms)
      case $v in
        ours) ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" diff --json >/tmp/b.ours 2>/tmp/b.err ;;
        full) ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" diff --json --compare full >/tmp/b.full 2>/tmp/b.err ;;
        zdiff) zfs diff -H "$T/local/root@ephemeral-root-baseline" "$T/local/root" >/tmp/b.zdiff 2>/tmp/b.err ;;
        find) find /tmp/broot -newer /tmp/bstamp >/tmp/b.find 2>/tmp/b.err ;;
      esac
      i=$?; t1=$(bench_ms)
      [ $i -eq 0 ] || fail "bench-$v-runs" "rc $i: $(tail -c 300 /tmp/b.err)"
      [ "$r" = 0 ] || echo "$v $((t1 - t0))" >> /tmp/bt   # round 0: warm-up, not recorded
    done
  done
  local so sz sf
  so=$(grep -o '"files":[0-9]*' /tmp/b.ours | head -n 1 | cut -d: -f2)
  sz=$(grep -c . /tmp/b.zdiff); sf=$(grep -c . /tmp/b.find)
  grep -q '"method":"walk, compared with the baseline; entries older' /tmp/b.ours && [ "${so:-0}" -ge "$changed" ] \
    && pass bench-diff-finds-the-changes || fail bench-diff-finds-the-changes "$so files listed; $(head -c 300 /tmp/b.ours)"
  [ "$(grep -o '"groups".*' /tmp/b.ours | md5sum)" = "$(grep -o '"groups".*' /tmp/b.full | md5sum)" ] \
    && pass bench-diff-ctime-equals-full || fail bench-diff-ctime-equals-full "$(head -c 300 /tmp/b.full)"
  local lk mu
  lk=$(grep -o '[0-9]* of [0-9]* looked up' /tmp/b.ours | head -n 1)
  mu=$(awk '$1 == "full" {print $2}' /tmp/bt | bench_med)
  local mo mz mf
  mo=$(awk '$1 == "ours" {print $2}' /tmp/bt | bench_med); mz=$(awk '$1 == "zdiff" {print $2}' /tmp/bt | bench_med)
  mf=$(awk '$1 == "find" {print $2}' /tmp/bt | bench_med)
  echo "TIME bench-diff zfs files=$files changed=$changed runs=$runs cpus=$(nproc): diff ${mo} ms ($so files listed, $lk; --compare full ${mu} ms), zfs diff ${mz} ms ($sz lines), find -newer ${mf} ms ($sf paths); samples $(tr '\n' ' ' < /tmp/bt)"
  umount /tmp/broot
  # the boot path in the small guest: rollback (timed), finish (not)
  : > /tmp/bt
  for r in $(seq 0 "$runs"); do
    w local/root "etc/boot-$r" "boot $r"
    t0=$(bench_ms)
    ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" rollback --keep 3 >$OUT 2>&1; i=$?
    t1=$(bench_ms); cat $OUT >> /tmp/all.log
    [ $i -eq 0 ] || { fail bench-rollback "rc $i: $(last)"; break; }
    [ "$r" = 0 ] || echo "$((t1 - t0)) $(sed -n 's/.*rollback finished in \([0-9]*\) ms.*/\1/p' $OUT)" >> /tmp/bt
    ephemeral-root --fstype zfs --root "$T/local/root" --snapshots "$T/local/old-roots" finish --no-baseline --keep 3 >/tmp/fin 2>&1 \
      || fail bench-finish "$(tail -2 /tmp/fin | tr '\n' ' ')"
  done
  echo "TIME bench-rollback zfs runs=$runs: wall $(cut -d' ' -f1 /tmp/bt | bench_med) ms, program's own $(cut -d' ' -f2 /tmp/bt | bench_med) ms (median; samples wall/own: $(tr ' \n' '/ ' < /tmp/bt))"
  jc bench-after 3
  zfs destroy -R "$T" >/dev/null 2>&1; T=rpool
}
if [ -n "$ONLY" ] && want bench; then bench_group; fi

grep -h "rollback finished in" /tmp/all.log 2>/dev/null | awk '{for (i=1;i<=NF;i++) if ($i=="in") {s+=$(i+1); n++}} END {if (n) printf "TIME rollback: %d runs, mean %.0f ms\n", n, s/n}'
echo "ERTEST jchecks=$ERJ_N"
summary
zpool export rpool >/dev/null 2>&1
