#!/bin/sh
# The bcachefs engine suite (vm-tests/README.md, "Scenarios"): drives ephemeral-root directly against a real
# bcachefs in the small guest (harness/suites.py), like tests/btrfs_rollback.rs and tests/crash_safety.rs do
# with loop devices on the host. Prints PASS/FAIL lines and a summary; every state check goes through
# `ephemeral-root check --json` (jcheck: an ERJSON block the harness asserts on, checks.py), and so does the
# state after every successful `rollback` (ER).
#   engine.suite=single|two|five|probe   engine.only=REGEX (test groups)
#   ertest.devs=/dev/vda[:/dev/vdb...]   ertest.uuid=UUID (the filesystem's, read from the image by the harness)
echo   # the console's clear-screen escape must not glue onto the first PASS line
. /guest/common.sh
SUITE=$(arg engine.suite)
ONLY=$(arg engine.only)
DEVS=$(arg ertest.devs)
FSUUID=$(arg ertest.uuid)
mkdir -p /mnt

if [ "$SUITE" = probe ]; then
  set -x
  mount -t bcachefs $DEVS /mnt || { echo "0 passed, 1 failed"; exit; }
  B=/mnt
  bchtool create $B/src; echo x > $B/src/f
  for i in 1 2 3; do bchtool create $B/p$i; bchtool snap $B/src $B/p$i/c; bchtool rmtree-timing $B/p$i $B/p$i/c; done
  for i in 4 5 6; do bchtool create $B/p$i; bchtool snap -r $B/src $B/p$i/c; bchtool rmtree-timing $B/p$i $B/p$i/c; done
  for i in 7 8; do bchtool create $B/p$i; bchtool snap $B/src $B/p$i/c; BCHTOOL_SYNCFS=1 bchtool rmtree-timing $B/p$i $B/p$i/c; done
  for i in 9; do bchtool create $B/p$i; bchtool create $B/p$i/c; echo y > $B/p$i/c/g; bchtool isro $B/p$i/c; bchtool rmtree-timing $B/p$i $B/p$i/c; done
  set +x
  echo "ERTEST jchecks=0"
  echo "0 passed, 0 failed"
  umount /mnt
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Real tests. Every scenario works in its own directory $T at the top of the filesystem, with the
# root at $T/@root and the snapshots location at $T/@snapshots (paths relative to the filesystem
# root), so one filesystem hosts all scenarios.
P=0; F=0
pass() { echo "PASS $1"; P=$((P+1)); }
fail() { echo "FAIL $1: $2"; F=$((F+1)); }
want() { [ -z "$ONLY" ] || echo "$1" | grep -qE "$ONLY"; }
B=/mnt
mount -t bcachefs $DEVS $B || { echo "FAIL mount: cannot mount $DEVS"; echo "0 passed, 1 failed"; exit 0; }
DEV=/dev/vda
OUT=/tmp/out
NJ=0
# After every successful rollback: `finish` (what the system's finish unit does after boot: seal the kept
# root, prune; here without the baseline), then check --json must call the state clean (the harness asserts
# it). NOCHECK=1: no check (a test that leaves something foreign on purpose).
autocheck() { NJ=$((NJ + 1)); [ -n "$NOCHECK" ] || jcheck "auto-$NJ-${T}" -- --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" "$@"; }
ER() {
  ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" "$@" >$OUT 2>&1; local rc=$?; cat $OUT >> /tmp/all.log
  if [ $rc -eq 0 ] && [ "$1" = rollback ] && ! is_dry "$@"; then
    ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" finish --no-baseline $(keep_of "$@") >/tmp/fin 2>&1 \
      || fail "finish-after-rollback-$T" "$(tail -2 /tmp/fin | tr '\n' ' ')"
    cat /tmp/fin >> /tmp/all.log
    autocheck $(blank_of "$@")
  fi
  return $rc
}
ERE() { # ER with environment: ERE VAR=VALUE args... (finish with the baseline: its fault points too)
  local e=$1; shift
  # each run stands for a boot: forget that a baseline was taken "this boot" (finish takes it once per
  # boot, marked in /run; this guest never reboots, so without this no baseline fault point is reached)
  rm -f /run/ephemeral-root/baseline-taken
  env "$e" ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" "$@" >$OUT 2>&1; local rc=$?
  if [ $rc -eq 0 ] && [ "$1" = rollback ] && ! is_dry "$@"; then
    env "$e" ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" finish $(keep_of "$@") >>$OUT 2>&1; rc=$?
    [ $rc -eq 0 ] && autocheck $(blank_of "$@")
  fi
  cat $OUT >> /tmp/all.log
  return $rc
}
# jc TAG WANT [KEY=VALUE...]: check --json of this scenario's layout, with WANT old roots (- for any)
jc() { local t=$1 w=$2; shift 2; jcheck "$(echo "$t" | tr ' /' '__')" want=$w "$@" -- --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots"; }
newfs() { # newfs T: fresh scenario directory with @root and @persist
  T=$1; bchtool rmrf $B/$T 2>/dev/null; mkdir -p $B/$T
  bchtool create $B/$T/@root && bchtool create $B/$T/@persist && echo persisted > $B/$T/@persist/keep-me
}
sv() { mkdir -p "$(dirname "$B/$T/$1")" && bchtool create "$B/$T/$1"; }
w() { mkdir -p "$(dirname "$B/$T/$1")" && printf '%s' "$2" > "$B/$T/$1"; }
r() { cat "$B/$T/$1" 2>/dev/null; }
ex() { [ -e "$B/$T/$1" ]; }
olds() { ls "$B/$T/@snapshots" 2>/dev/null | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2}Z(-[0-9]+)?$'; }
nolds() { olds | wc -l | tr -d ' '; }
isro() { bchtool isro "$B/$T/$1" 2>/dev/null; }
nest() { printf '%s' "$1" | sed 's/%/%25/g; s,/,%2F,g'; }   # the encoding of the nested store
# Path of a file inside old root $1 that lives in nested subvolume $2 at relative path $3.
onest() { echo "@snapshots/$1.nested/$(nest "$2")/$3"; }
log_has() { grep -q "$1" $OUT; }
last_lines() { tail -4 $OUT | tr '\n' ' ' | tail -c 500; }
cleanup() { bchtool rmrf $B/$T; }

fill_root() { # fill_root TAG
  w @root/etc/$1.conf "$1"
  sv @root/var/lib/machines; w @root/var/lib/machines/vm/disk "machine $1"
  sv @root/var/lib/machines/inner; w @root/var/lib/machines/inner/data "inner $1"
}

# ---- rollback twice, nested subvolumes kept, fresh root, list --json ---------------------------
if want basic; then
  newfs basic; fill_root boot1
  if ER rollback && log_has "step 1/" && log_has "rollback finished in"; then pass basic-rollback-runs
  else fail basic-rollback-runs "$(tail -3 $OUT)"; fi
  [ -z "$(ls -A $B/$T/@root)" ] && pass basic-root-empty || fail basic-root-empty "$(ls -A $B/$T/@root)"
  [ "$(r @persist/keep-me)" = persisted ] && pass basic-persist || fail basic-persist "lost"
  O1=$(olds)
  [ "$(nolds)" = 1 ] && pass basic-one-old-root || fail basic-one-old-root "$O1"
  isro @snapshots/$O1 && pass basic-old-root-readonly || fail basic-old-root-readonly "$O1 writable"
  touch $B/$T/@snapshots/$O1/x 2>/dev/null && fail basic-write-refused "could write" || pass basic-write-refused
  [ "$(r @snapshots/$O1/etc/boot1.conf)" = boot1 ] && pass basic-old-root-content || fail basic-old-root-content "missing"
  [ "$(r $(onest $O1 var/lib/machines vm/disk))" = "machine boot1" ] && pass basic-nested-kept || fail basic-nested-kept "$(ls $B/$T/@snapshots/$O1.nested)"
  [ "$(r $(onest $O1 var/lib/machines/inner data))" = "inner boot1" ] && pass basic-nested-nested-kept || fail basic-nested-nested-kept "$(ls $B/$T/@snapshots/$O1.nested)"
  isro "$(onest $O1 var/lib/machines '')" && isro "$(onest $O1 var/lib/machines/inner '')" && pass basic-nested-readonly || fail basic-nested-readonly "writable"
  S=$(bchtool subvols $B/$T | sort | tr '\n' ' ')
  WANT="@persist @root @snapshots @snapshots/$O1 @snapshots/$O1.nested/var%2Flib%2Fmachines @snapshots/$O1.nested/var%2Flib%2Fmachines%2Finner "
  [ "$S" = "$WANT" ] && pass basic-subvolumes || fail basic-subvolumes "got [$S] want [$WANT]"
  jc basic-no-leftovers 1   # exactly one old root (and its nested store), nothing else but ours
  # second boot
  sleep 1; w @root/etc/boot2.conf boot2
  ER rollback || fail basic-second-rollback "$(tail -2 $OUT)"
  O2=$(olds | grep -v "^$O1\$")
  [ "$(nolds)" = 2 ] && [ "$(r @snapshots/$O2/etc/boot2.conf)" = boot2 ] && ! ex @snapshots/$O2/etc/boot1.conf && ! ex @snapshots/$O2.nested && ! ex @root/etc/boot2.conf \
    && pass basic-second-rollback || fail basic-second-rollback "olds $(olds | tr '\n' ' ')"
  ER rollback && [ "$(nolds)" = 2 ] && log_has "unchanged since it was created" && pass basic-fresh-root-not-kept || fail basic-fresh-root-not-kept "$(nolds) $(tail -3 $OUT)"
  # the same after a baseline of the fresh root (the finish unit takes one at every boot)
  ER baseline; ER rollback && [ "$(nolds)" = 2 ] && log_has "unchanged since it was created" && pass basic-fresh-root-with-baseline-not-kept || fail basic-fresh-root-with-baseline-not-kept "$(nolds) $(tail -3 $OUT)"
  ER list --json; J=$(cat $OUT)
  echo "$J" | grep -q "\"name\":\"$O1\"" && echo "$J" | grep -q "\"name\":\"$O2\"" && [ "$(echo "$J" | grep -o '"newest":true' | wc -l)" = 1 ] \
    && echo "$J" | grep -q '"nested":\["var/lib/machines","var/lib/machines/inner"\]' && echo "$J" | grep -q '"readonly":true' \
    && pass basic-list-json || fail basic-list-json "$J"
  ER list && grep -q "2 nested" $OUT && pass basic-list-text || fail basic-list-text "$(cat $OUT)"
  ER check && grep -q "check: ok" $OUT && pass basic-check || fail basic-check "$(tail -3 $OUT)"
  cleanup
fi

# ---- audit mode: kept, not wiped; unchanged root not kept twice ------------------------------
if want audit; then
  newfs audit; fill_root a1
  ER rollback --kernel-cmdline "rd.ephemeral_root=audit" && [ "$(nolds)" = 1 ] && [ "$(r @root/etc/a1.conf)" = a1 ] && [ "$(r @root/var/lib/machines/inner/data)" = "inner a1" ] \
    && pass audit-keeps-without-wiping || fail audit-keeps-without-wiping "$(nolds) $(tail -3 $OUT)"
  ER rollback --kernel-cmdline "rd.ephemeral_root=audit" && [ "$(nolds)" = 1 ] && log_has "already kept" \
    && pass audit-unchanged-not-kept-twice || fail audit-unchanged-not-kept-twice "$(nolds) $(tail -3 $OUT)"
  w @root/var/lib/machines/inner/data "inner a2"
  ER rollback --kernel-cmdline "rd.ephemeral_root=audit" && [ "$(nolds)" = 2 ] && olds | grep -q -- '-2$' \
    && pass audit-changed-nested-kept-again || fail audit-changed-nested-kept-again "$(olds | tr '\n' ' ') $(tail -3 $OUT)"
  ER rollback --mode audit && ER rollback && [ "$(nolds)" = 2 ] && [ -z "$(ls -A $B/$T/@root)" ] && pass audit-then-wipe-reuses-keep || fail audit-then-wipe-reuses-keep "$(olds | tr '\n' ' ') $(tail -3 $OUT)"
  cleanup
fi

# ---- restore= and skip -----------------------------------------------------------------------
if want restore; then
  newfs restore; fill_root r1; ER rollback; O1=$(olds)
  sleep 1; w @root/etc/r2.conf r2
  ER rollback --kernel-cmdline "rd.ephemeral_root.restore=$O1"
  [ "$(r @root/etc/r1.conf)" = r1 ] && [ "$(r @root/var/lib/machines/inner/data)" = "inner r1" ] && ! ex @root/etc/r2.conf && [ "$(nolds)" = 2 ] \
    && pass restore-copies-old-root-with-nested || fail restore-copies-old-root-with-nested "$(tail -3 $OUT)"
  ! isro @root && ! isro @root/var/lib/machines/inner && touch $B/$T/@root/var/lib/machines/inner/w && rm $B/$T/@root/var/lib/machines/inner/w \
    && pass restore-writable || fail restore-writable "read-only"
  [ "$(bchtool subvol $B/$T/@root/var/lib/machines/inner)" != "$(bchtool subvol $B/$T/@root/var/lib/machines)" ] && pass restore-nested-are-subvolumes || fail restore-nested-are-subvolumes "not subvolumes"
  ER rollback && [ "$(nolds)" = 2 ] && log_has "unchanged since it was created" && pass restore-unchanged-is-fresh || fail restore-unchanged-is-fresh "$(nolds) $(tail -3 $OUT)"
  ER rollback --kernel-cmdline "rd.ephemeral_root.restore=$O1"; w @root/var/lib/machines/vm/disk changed
  ER rollback && [ "$(nolds)" = 3 ] && pass restore-changed-is-kept || fail restore-changed-is-kept "$(nolds) $(tail -3 $OUT)"
  ER rollback --kernel-cmdline "rd.ephemeral_root.restore=1999-01-01T00-00-00Z"; rc=$?
  [ $rc -ne 0 ] && grep -q "does not exist" $OUT && pass restore-unknown-refused || fail restore-unknown-refused "rc $rc $(tail -2 $OUT)"
  w @root/etc/skip.conf s; N=$(nolds)
  ER rollback --kernel-cmdline "rd.ephemeral_root=skip" && [ "$(r @root/etc/skip.conf)" = s ] && [ "$(nolds)" = $N ] && pass skip-leaves-root || fail skip-leaves-root "$(tail -2 $OUT)"
  cleanup
fi

# ---- blank template ----------------------------------------------------------------------------
if want blank; then
  newfs blank; sv @blank; w @blank/etc/template t; sv @blank/srv; w @blank/srv/s s
  w @root/etc/x x
  ER rollback --blank "$T/@blank" && [ "$(r @root/etc/template)" = t ] && [ "$(r @root/srv/s)" = s ] && [ "$(nolds)" = 1 ] \
    && [ "$(bchtool subvol $B/$T/@root/srv)" != "$(bchtool subvol $B/$T/@root)" ] && pass blank-new-root-from-template || fail blank-new-root-from-template "$(tail -3 $OUT)"
  ER rollback --blank "$T/@blank" && [ "$(nolds)" = 1 ] && pass blank-unchanged-is-fresh || fail blank-unchanged-is-fresh "$(nolds) $(tail -3 $OUT)"
  w @root/srv/new n; ER rollback --blank "$T/@blank" && [ "$(nolds)" = 2 ] && ! ex @root/srv/new && pass blank-changed-nested-is-kept || fail blank-changed-nested-is-kept "$(nolds) $(tail -3 $OUT)"
  cleanup
fi

# ---- retention, gc, pin -------------------------------------------------------------------------
if want retention; then
  newfs retention
  for i in 1 2 3 4; do sleep 1; w @root/etc/n$i n$i; sv @root/srv$i; w @root/srv$i/f f; ER rollback --keep all || fail retention-rollback "$(tail -2 $OUT)"; done
  [ "$(nolds)" = 4 ] && pass retention-keep-all || fail retention-keep-all "$(nolds)"
  OLDEST=$(olds | head -n1)
  ER pin "$OLDEST" && ex "@snapshots/.pins/$OLDEST" && pass retention-pin || fail retention-pin "$(tail -2 $OUT)"
  ER gc --keep 1 --dry-run && [ "$(nolds)" = 4 ] && grep -q "prune" $OUT && pass retention-gc-dry-run || fail retention-gc-dry-run "$(cat $OUT)"
  ER gc --keep 1 && [ "$(nolds)" = 2 ] && ex "@snapshots/$OLDEST/etc/n1" && pass retention-gc-keeps-pinned-and-newest || fail retention-gc-keeps-pinned-and-newest "$(olds | tr '\n' ' ') $(tail -2 $OUT)"
  jc retention-pruned-stores-gone 2
  ER unpin "$OLDEST" && ER gc --keep 1 && [ "$(nolds)" = 1 ] && ! ex "@snapshots/$OLDEST" && pass retention-unpin-gc || fail retention-unpin-gc "$(olds | tr '\n' ' ')"
  ER pin 2001-01-01T00-00-00Z; [ $? -eq 2 ] && pass retention-pin-unknown-usage-error || fail retention-pin-unknown-usage-error "$(cat $OUT)"
  sleep 1; w @root/etc/z z; ER rollback --keep 1 && [ "$(nolds)" = 1 ] && ex "@snapshots/$(olds)/etc/z" && pass retention-rollback-prunes || fail retention-rollback-prunes "$(olds | tr '\n' ' ')"
  S=$(bchtool subvols $B/$T | grep -c '^@snapshots/')
  [ "$S" = 1 ] && pass retention-no-stray-subvolumes || fail retention-no-stray-subvolumes "$(bchtool subvols $B/$T | tr '\n' ' ')"
  cleanup
fi

# ---- guards --------------------------------------------------------------------------------------
if want guards; then
  newfs guards; w @root/etc/g g
  mkdir -p /sysroot; mount --bind $B/$T/@root /sysroot
  ER rollback; rc=$?
  [ $rc -ne 0 ] && grep -q "mounted at /sysroot" $OUT && [ "$(r @root/etc/g)" = g ] && [ "$(nolds)" = 0 ] && pass guard-live-root-refused || fail guard-live-root-refused "rc $rc $(tail -2 $OUT)"
  umount /sysroot
  mkdir -p $B/$T/plain; ephemeral-root --device $DEV --root "$T/plain" --snapshots "$T/@snapshots" rollback >$OUT 2>&1; rc=$?
  [ $rc -ne 0 ] && grep -q "not a subvolume" $OUT && pass guard-root-not-subvolume || fail guard-root-not-subvolume "rc $rc $(tail -2 $OUT)"
  ephemeral-root --device $DEV --root "$T/missing" --snapshots "$T/@snapshots" rollback >$OUT 2>&1; rc=$?
  [ $rc -eq 2 ] && grep -q "not found" $OUT && pass guard-root-missing || fail guard-root-missing "rc $rc $(tail -2 $OUT)"
  ER rollback --fstype btrfs; rc=$?
  [ $rc -ne 0 ] && grep -q "holds bcachefs" $OUT && pass guard-wrong-fstype || fail guard-wrong-fstype "rc $rc $(tail -2 $OUT)"
  ER rollback --dry-run && grep -q "aside to become old root" $OUT && [ "$(nolds)" = 0 ] && pass guard-dry-run-changes-nothing || fail guard-dry-run-changes-nothing "$(cat $OUT)"
  # a plain directory under a doomed name is not ours (docs/protocol.md): foreign, never deleted
  mkdir -p $B/$T/@snapshots/.deleting.x; w @root/etc/g2 g2; NOCHECK=1 ER rollback; rc=$?
  [ -d $B/$T/@snapshots/.deleting.x ] && pass guard-plain-dir-not-deleted || fail guard-plain-dir-not-deleted "rc $rc $(tail -2 $OUT)"
  jc guard-plain-dir-is-foreign - 'expect=foreign_entry_\.deleting\.x'
  rmdir $B/$T/@snapshots/.deleting.x
  cleanup
fi

# ---- member discovery (two devices) ----------------------------------------------------------------
if want devices; then
  newfs devices; w @root/etc/d d
  if [ "$SUITE" = two ]; then
    DEV=/dev/vdb; ER rollback && [ "$(nolds)" = 1 ] && grep -q "/dev/vdb:/dev/vda" $OUT && pass "devices-by-second-member" || fail devices-by-second-member "$(tail -3 $OUT)"
  elif [ "$SUITE" = five ]; then
    # only the fourth member given: the other four found by scanning superblocks
    DEV=/dev/vdd; ER rollback && [ "$(nolds)" = 1 ] && grep -q "/dev/vdd:" $OUT \
      && [ "$(grep -o '/dev/vd[a-e]' $OUT | sort -u | tr '\n' ' ')" = "/dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/vde " ] \
      && pass devices-five-by-one-member || fail devices-five-by-one-member "$(tail -3 $OUT)"
    w @root/etc/d2 d2; sleep 1
    DEV=UUID=$FSUUID; ER rollback && [ "$(nolds)" = 2 ] && pass devices-five-rollback-by-uuid || fail devices-five-rollback-by-uuid "$(tail -3 $OUT)"
  else
    ER rollback && [ "$(nolds)" = 1 ] && pass devices-single || fail devices-single "$(tail -3 $OUT)"
  fi
  U=$FSUUID
  DEV=UUID=$U; ER list && grep -q "$(olds)" $OUT && pass devices-by-uuid || fail devices-by-uuid "$(tail -3 $OUT)"
  DEV=LABEL=nixos; ER list && grep -q "$(olds)" $OUT && pass devices-by-label || fail devices-by-label "$(tail -3 $OUT)"
  DEV=/dev/vda
  cleanup
fi

# ---- crash safety: abort at every fault point, then recover ----------------------------------------
# The invariants of tests/crash_safety.rs, on this backend's layout: exactly one root, fresh and
# writable; nothing half-done left in the snapshots location and the expected number of old roots
# (check --json: jc, asserted by the harness); survivors intact; the root's data in exactly one old
# root, with its nested subvolume; every subvolume under the snapshots location read-only and no stray
# subvolume elsewhere; persisted data intact.
inv_problems() { # inv_problems MARKER TOTAL [SURVIVOR FILE]: prints what is wrong (nothing: all well)
  local marker=$1 total=$2 bad=""
  [ -z "$(ls -A $B/$T/@root 2>&1)" ] || bad="$bad root-not-empty($(ls -A $B/$T/@root 2>&1 | tr '\n' ' '))"
  isro @root && bad="$bad root-readonly"
  local o
  [ "$(nolds)" = "$total" ] || bad="$bad olds:$(olds | tr '\n' ,)"
  if [ -n "$3" ]; then ex "@snapshots/$3/$4" || bad="$bad lost:$3/$4"; fi
  local hold="" n=0
  for o in $(olds); do if ex "@snapshots/$o/$marker"; then hold=$o; n=$((n+1)); fi; done
  [ $n = 1 ] || bad="$bad holding:$n"
  if [ $n = 1 ] && [ "$marker" = etc/now.conf ]; then
    [ "$(r $(onest $hold var/lib/machines/inner data))" = "inner now" ] || bad="$bad nested-lost-in:$hold"
  fi
  local s
  for s in $(bchtool subvols $B/$T); do
    case $s in
      @snapshots/*) isro "$s" || bad="$bad writable:$s" ;;
      @root|@snapshots|@persist) ;;
      *) bad="$bad stray:$s" ;;
    esac
  done
  [ "$(r @persist/keep-me)" = persisted ] || bad="$bad persist"
  echo "$bad"
}
check_inv() { # check_inv CTX MARKER TOTAL [SURVIVOR FILE]
  local ctx=$1 bad; shift
  jc "$ctx" "$2"
  bad=$(inv_problems "$@")
  if [ -z "$bad" ]; then return 0; fi
  fail "$ctx" "$bad"; return 1
}

run_fault() { # run_fault POINT args... ; appends POINT to $HIT if the run aborted there
  local p=$1; shift
  ERE "EPHEMERAL_ROOT_FAULT=$p" "$@"; local rc=$?
  if [ $rc -eq 134 ] || grep -q "fault injection: aborting at $p" $OUT; then
    grep -q "fault injection: aborting at $p" $OUT || { fail "fault-$p" "aborted without the message"; return; }
    echo "$p" >> /tmp/hit
  elif [ $rc -ne 0 ]; then
    fail "fault-run-$p" "rc $rc: $(tail -2 $OUT | tr '\n' ' ')"
  fi
}

fill_now() { w @root/etc/now.conf now; sv @root/var/lib/machines; sv @root/var/lib/machines/inner; w @root/var/lib/machines/inner/data "inner now"; }

if want crash; then
  : > /tmp/hit
  RECOVERY="step:discard discard:child-deleted delete:writable delete:child-deleted new-root:child"
  set -- $RECOVERY; NREC=$#
  i=0; okc=0; tot=0
  for p in $(ephemeral-root fault-points); do
    q=$(echo $RECOVERY | cut -d' ' -f$((i % NREC + 1)))
    # A: the first rollback ever (no snapshots location yet)
    newfs cA; fill_now
    run_fault $p rollback --keep all; run_fault $q rollback --keep all
    ER rollback --keep all || fail "crashA-$p" "final run: $(tail -2 $OUT | tr '\n' ' ')"
    tot=$((tot+1)); check_inv "crashA-$p-then-$q" etc/now.conf 1 && okc=$((okc+1))
    ER rollback --keep all; tot=$((tot+1)); check_inv "crashA-$p-rerun" etc/now.conf 1 && okc=$((okc+1))
    cleanup
    # B: an earlier old root with nested subvolumes is pruned (--keep 1)
    newfs cB; w @root/etc/earlier.conf earlier; sv @root/srv; sv @root/srv/inner; w @root/srv/inner/x x
    ER rollback --keep all; E=$(olds); ER pin $E; ER unpin $E
    fill_now
    run_fault $p rollback --keep 1; run_fault $q rollback --keep 1
    ER rollback --keep 1 || fail "crashB-$p" "final run: $(tail -2 $OUT | tr '\n' ' ')"
    tot=$((tot+1)); check_inv "crashB-$p-then-$q" etc/now.conf 1 && okc=$((okc+1))
    cleanup
    # C: retention keeps everything: the earlier old root must survive
    newfs cC; w @root/etc/earlier.conf earlier; ER rollback --keep all; E=$(olds)
    fill_now
    run_fault $p rollback --keep all
    ER rollback --keep all || fail "crashC-$p" "final run: $(tail -2 $OUT | tr '\n' ' ')"
    tot=$((tot+1)); check_inv "crashC-$p" etc/now.conf 2 "$E" etc/earlier.conf && okc=$((okc+1))
    cleanup
    # D: restore an old root that has nested subvolumes
    newfs cD; w @root/etc/earlier.conf earlier; sv @root/srv; sv @root/srv/inner; w @root/srv/inner/x x
    ER rollback --keep all; E=$(olds)
    w @root/etc/now.conf now
    run_fault $p rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=$E"
    run_fault $q rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=$E"
    ER rollback --keep all --kernel-cmdline "rd.ephemeral_root.restore=$E" || fail "crashD-$p" "final run: $(tail -2 $OUT | tr '\n' ' ')"
    bad=""
    [ "$(r @root/srv/inner/x)" = x ] || bad="$bad nested-not-restored"
    [ "$(r @root/etc/earlier.conf)" = earlier ] || bad="$bad not-restored"
    ex @root/etc/now.conf && bad="$bad now-still-there"
    isro @root/srv/inner && bad="$bad nested-readonly"
    [ "$(nolds)" = 2 ] || bad="$bad olds:$(olds | tr '\n' ,)"
    jc "crashD-$p-then-$q" 2
    [ "$(r $(onest $E srv/inner x))" = x ] || bad="$bad earlier-nested-lost"
    n=0; for o in $(olds); do ex "@snapshots/$o/etc/now.conf" && n=$((n+1)); done
    [ $n = 1 ] || bad="$bad now-in:$n"
    tot=$((tot+1)); if [ -z "$bad" ]; then okc=$((okc+1)); else fail "crashD-$p-then-$q" "$bad"; fi
    cleanup
    # E: audit mode keeps by snapshot; a later wipe of the unchanged root retires it without a
    # second copy (the "already kept" detection). Faults in both runs.
    newfs cE; fill_now
    run_fault $p rollback --mode audit --keep all
    ER rollback --mode audit --keep all || fail "crashE-$p" "audit run: $(tail -2 $OUT | tr '\n' ' ')"
    bad=""
    [ "$(r @root/etc/now.conf)" = now ] || bad="$bad audit-wiped"
    [ "$(r @root/var/lib/machines/inner/data)" = "inner now" ] || bad="$bad audit-wiped-nested"
    [ "$(nolds)" = 1 ] || bad="$bad olds-after-audit:$(olds | tr '\n' ,)"
    [ -z "$bad" ] || fail "crashE-$p-audit" "$bad"
    run_fault $p rollback --keep all
    ER rollback --keep all || fail "crashE-$p" "final run: $(tail -2 $OUT | tr '\n' ' ')"
    tot=$((tot+1)); check_inv "crashE-$p-audit-then-wipe" etc/now.conf 1 && okc=$((okc+1))
    cleanup
    i=$((i+1))
  done
  [ $okc = $tot ] && pass "crash-invariants-hold-after-$tot-recoveries-at-$i-points" || fail crash-invariants "$okc of $tot recoveries held"
  # Every point must be reached, except seal:readonly: bcachefs 6.12 cannot make a subvolume read-only
  # after creating it, so its seal is a read-only snapshot (seal:copied, seal:committed), never a flag.
  missed=""
  for p in $(ephemeral-root fault-points); do
    grep -qxF "$p" /tmp/hit && continue
    echo "NOTE fault point $p not reached on bcachefs"
    case $p in seal:readonly) continue;; esac
    missed="$missed $p"
  done
  [ -z "$missed" ] && pass crash-every-fault-point-reached || fail crash-every-fault-point-reached "never reached:$missed"
fi

# ---- diff, baseline, restore on bcachefs (issue 6) -----------------------------------------------
if want diff; then
  newfs diff
  w @root/etc/machine-id "0123"
  w @root/var/lib/oldsvc/state.db "before the baseline"
  w @root/var/cache/oldsvc/blob "cache"
  sv @root/srv/data; w @root/srv/data/static "s"
  # older than the baseline by more than diff's margin (1 s): diff trusts their change times
  sleep 1.2
  if ER baseline && log_has "baseline taken"; then pass diff-baseline-taken; else fail diff-baseline-taken "$(tail -3 $OUT)"; fi
  isro "@snapshots/.baseline.nested/$(nest srv/data)" && pass diff-baseline-keeps-nested || fail diff-baseline-keeps-nested "$(ls -a $B/$T/@snapshots $B/$T/@snapshots/.baseline.nested 2>&1 | tr '\n' ' ')"
  w @root/srv/data/new "n"
  isro @snapshots/.baseline && pass diff-baseline-readonly || fail diff-baseline-readonly "$(ls -a $B/$T/@snapshots)"
  w @root/var/lib/newsvc/db "after the baseline"
  w @root/root/.bash_history "ls -l"
  ln -s /etc/static/hosts $B/$T/@root/etc/hosts
  if ER diff --json --persist /var/lib/kept; then
    grep -q '"method":"walk, compared with the baseline; entries older than the baseline trusted by their change time' $OUT && pass diff-uses-baseline || fail diff-uses-baseline "$(head -c 300 $OUT)"
    grep -q '"path":"/var/lib/newsvc"' $OUT && grep -q '"path":"/root/.bash_history"' $OUT && pass diff-shows-new-state || fail diff-shows-new-state "$(head -c 600 $OUT)"
    grep -qE '"path":"/(var/lib/oldsvc|etc/hosts)"' $OUT && fail diff-hides-unchanged-and-noise "oldsvc or /etc/hosts listed" || pass diff-hides-unchanged-and-noise
    grep -q '"path":"/srv/data/new"' $OUT && ! grep -q '"path":"/srv/data/static"' $OUT && pass diff-baseline-nested-compared || fail diff-baseline-nested-compared "$(head -c 800 $OUT)"
    grep -q '"rule":"unchanged-since-baseline","description":"[^"]*","entries":4' $OUT && pass diff-counts-unchanged || fail diff-counts-unchanged "$(grep -o '"hidden".*' $OUT | head -c 400)"
  else fail diff-runs "$(tail -3 $OUT)"; fi
  # the change-time walk lists exactly what looking every entry up lists
  ER diff -v --persist /var/lib/kept; grep -v 'walk, compared with the baseline' $OUT > /tmp/d.ctime
  ER diff -v --persist /var/lib/kept --compare full; grep -v 'walk, compared with the baseline' $OUT > /tmp/d.full
  grep -q "every entry looked up (--compare full)" $OUT && [ -s /tmp/d.ctime ] && cmp -s /tmp/d.ctime /tmp/d.full \
    && pass diff-ctime-equals-full || fail diff-ctime-equals-full "$(diff /tmp/d.ctime /tmp/d.full | head -c 600)"
  if ER diff --nix && grep -q 'environment.persistence."/persist"' $OUT && grep -q '"/var/lib/newsvc"' $OUT; then pass diff-nix-block
  else fail diff-nix-block "$(head -c 400 $OUT)"; fi
  ER baseline && ER diff --json && ! grep -q '"path":"/var/lib/newsvc"' $OUT && ! ex @snapshots/.incomplete.baseline \
    && pass diff-baseline-replaced || fail diff-baseline-replaced "$(ls -a $B/$T/@snapshots) $(head -c 300 $OUT)"
  w @root/var/lib/newsvc/db2 "second"
  sv @root/var/lib/machines; w @root/var/lib/machines/vm/disk "machine disk"
  sv @root/var/lib/machines/inner; w @root/var/lib/machines/inner/data "inner data"
  if ER rollback && ! ex @snapshots/.baseline && ! ex @snapshots/.baseline.nested; then pass diff-baseline-goes-with-root; else fail diff-baseline-goes-with-root "$(ls -a $B/$T/@snapshots) $(tail -3 $OUT)"; fi
  O1=$(olds)
  if ER diff "$O1" --json && grep -q '"path":"/var/lib/oldsvc"' $OUT && grep -q '"path":"/var/lib/newsvc"' $OUT; then pass diff-old-root
  else fail diff-old-root "$(head -c 400 $OUT)"; fi
  # Nested subvolumes live beside the old root (<name>.nested/): diff and restore find them there.
  if grep -q '"path":"/var/lib/machines/vm/disk"' $OUT && grep -q '"path":"/var/lib/machines/inner/data"' $OUT; then pass diff-old-root-nested
  else fail diff-old-root-nested "$(head -c 600 $OUT)"; fi
  rm -rf /tmp/rsn; mkdir -p /tmp/rsn
  if ER restore "$O1" /var/lib/machines/inner/data --to /tmp/rsn/data && [ "$(cat /tmp/rsn/data)" = "inner data" ] \
      && ER restore "$O1" /var/lib/machines --to /tmp/rsn/machines && [ "$(cat /tmp/rsn/machines/vm/disk)" = "machine disk" ] \
      && [ "$(cat /tmp/rsn/machines/inner/data)" = "inner data" ]; then pass restore-from-nested
  else fail restore-from-nested "$(tail -3 $OUT) $(ls -R /tmp/rsn | tr '\n' ' ')"; fi
  if ER restore "$O1" /var/lib --to /tmp/rsn/lib && [ "$(cat /tmp/rsn/lib/machines/inner/data)" = "inner data" ] \
      && [ "$(cat /tmp/rsn/lib/newsvc/db2)" = second ]; then pass restore-tree-with-nested-below
  else fail restore-tree-with-nested-below "$(tail -3 $OUT) $(ls -R /tmp/rsn/lib | tr '\n' ' ')"; fi
  ER diff no-such-root; rc=$?
  [ $rc != 0 ] && log_has "does not exist" && [ "$(wc -l < $OUT)" -le 2 ] && pass diff-missing-old-root-one-line || fail diff-missing-old-root-one-line "rc=$rc $(cat $OUT)"
  rm -rf /tmp/rs; mkdir -p /tmp/rs
  if ER restore "$O1" /var/lib/newsvc --to /tmp/rs/newsvc && [ "$(cat /tmp/rs/newsvc/db)" = "after the baseline" ] \
      && [ "$(cat /tmp/rs/newsvc/db2)" = second ]; then pass restore-directory
  else fail restore-directory "$(tail -3 $OUT) $(ls -la /tmp/rs/newsvc)"; fi
  ER restore "$O1" /var/lib/newsvc --to /tmp/rs/newsvc; rc=$?
  [ $rc != 0 ] && log_has "force" && pass restore-no-overwrite || fail restore-no-overwrite "rc=$rc $(tail -2 $OUT)"
  ER restore "$O1" /../../etc --to /tmp/rs/esc; rc=$?
  [ $rc != 0 ] && ! [ -e /tmp/rs/esc ] && pass restore-refuses-escape || fail restore-refuses-escape "rc=$rc $(tail -2 $OUT)"
  if ER restore "$O1" /etc/hosts --to /tmp/rs/hosts && [ "$(readlink /tmp/rs/hosts)" = /etc/static/hosts ]; then pass restore-symlink
  else fail restore-symlink "$(tail -2 $OUT)"; fi
  cleanup
fi

# ---- persist, and check's persistence warnings (issue 15) ---------------------------------------
# A running system whose / is $T/@root and /persist the store $T/@persist (bind mounts at $SY, the binary
# and its config on a tmpfs /run, commands chrooted there), as tests/common/sys.rs makes it on btrfs.
# persist copies a service's state directory into the store: reflinked (same filesystem; FIEMAP must
# show shared extents) and identical entry by entry (content, owner, mode, mtime, hard links, symlink,
# xattrs: bchtool tree), holes kept; then check warns about content hidden under a persisted path's
# bind mount and a critical file missing from the store, exits non-zero, and is quiet once fixed.
if want persist; then
  newfs persist; SY=/tmp/sys; R=$B/$T/@root
  ER rollback || fail persist-first-rollback "$(tail -2 $OUT)"   # the layout a running system has
  mkdir -p $SY $R/persist $R/proc $R/dev $R/sys $R/run $R/var/lib
  # the service's state, made on the root before anyone declared it persistent
  mkdir -p $R/var/lib/foo/sub; dd if=/dev/urandom of=$R/var/lib/foo/db bs=64k count=32 2>/dev/null
  ln $R/var/lib/foo/db $R/var/lib/foo/sub/db-link; ln -s ../db $R/var/lib/foo/sub/sym
  printf 'state' > $R/var/lib/foo/sub/small; truncate -s 64M $R/var/lib/foo/sparse; printf tail >> $R/var/lib/foo/sparse
  bchtool setxattr $R/var/lib/foo/db user.origin "made by foo" && bchtool setxattr $R/var/lib/foo/sub user.dir d
  chown -R 1000:1000 $R/var/lib/foo; chmod 0750 $R/var/lib/foo; chmod 0600 $R/var/lib/foo/sub/small
  # a persisted path whose bind mount hides content the store lacks, and a critical key not in the store
  w @root/var/lib/declared/extra "written before the bind mount"; w @persist/var/lib/declared/base "stored"
  mount --bind $R $SY && mount --bind $B/$T/@persist $SY/persist && mount -t proc proc $SY/proc \
    && mount --bind /dev $SY/dev && mount -t sysfs sysfs $SY/sys && mount -t tmpfs tmpfs $SY/run \
    && mount --bind $SY/persist/var/lib/declared $SY/var/lib/declared \
    && cp "$(command -v ephemeral-root)" $SY/run/er || fail persist-setup "cannot build the system at $SY"
  printf 'device = %s\nroot = %s\nsnapshots = %s\nstore = /persist\npersist = /var/lib/declared /etc/secret.key\ncritical = /etc/secret.key\n' \
    "$DEV" "$T/@root" "$T/@snapshots" > $SY/run/er.conf
  SYS() { chroot $SY /run/er "$@" --config /run/er.conf > $OUT 2>&1; local rc=$?; cat $OUT >> /tmp/all.log; return $rc; }
  bchtool tree $R/var/lib/foo > /tmp/before
  # diff lists the state and warns like check (its exit says a critical file would be lost)
  SYS diff; rc=$?
  if grep -q '/var/lib/foo' $OUT && grep -q 'hidden by the bind mount' $OUT; then pass persist-diff-shows-state-and-warns
  else fail persist-diff-shows-state-and-warns "rc $rc: $(last_lines)"; fi
  SYS check; rc=$?
  if [ $rc -ne 0 ] && grep -q 'var/lib/declared/extra' $OUT && grep -q 'hidden by the bind mount, erased at the next boot' $OUT; then pass persist-check-warns-hidden
  else fail persist-check-warns-hidden "rc $rc: $(last_lines)"; fi
  if grep -q 'error: /etc/secret.key is declared persistent but missing from the store (/persist/etc/secret.key), and it is critical' $OUT; then pass persist-check-missing-critical
  else fail persist-check-missing-critical "$(last_lines)"; fi
  if SYS persist /var/lib/foo && grep -q '# copied /var/lib/foo to /persist/var/lib/foo: ' $OUT \
    && grep -q 'environment.persistence."/persist" = {' $OUT && grep -q '"/var/lib/foo"' $OUT; then pass persist-copies
  else fail persist-copies "$(last_lines)"; fi
  grep -q 'reflinked' $OUT && pass persist-says-reflinked || fail persist-says-reflinked "$(last_lines)"
  bchtool tree $B/$T/@persist/var/lib/foo > /tmp/after
  if [ -s /tmp/before ] && cmp -s /tmp/before /tmp/after; then pass persist-identical-entry-by-entry
  else fail persist-identical-entry-by-entry "$(diff /tmp/before /tmp/after 2>&1 | head -6 | tr '\n' ' ')"; fi
  grep -q 'xattrs=user.origin=' /tmp/after && grep -q 'owner=1000:1000' /tmp/after && grep -q 'link-group=db ' /tmp/after \
    && pass persist-tree-is-not-vacuous || fail persist-tree-is-not-vacuous "$(head -c 400 /tmp/after)"
  sh_=$(bchtool shared $B/$T/@persist/var/lib/foo/db)
  case "$sh_" in *shared=0*|"") fail persist-reflink-shares-extents "$sh_ (store) / $(bchtool shared $R/var/lib/foo/db)";;
    *) pass persist-reflink-shares-extents;; esac
  # the two checks above can fail: a plain copy shares no extent, a changed xattr changes the tree
  cp $R/var/lib/foo/db /tmp/plain-copy; mv /tmp/plain-copy $B/$T/@persist/plain-copy
  case "$(bchtool shared $B/$T/@persist/plain-copy)" in *shared=0*) pass persist-selftest-plain-copy-not-shared;;
    *) fail persist-selftest-plain-copy-not-shared "$(bchtool shared $B/$T/@persist/plain-copy)";; esac
  rm $B/$T/@persist/plain-copy
  bchtool setxattr $B/$T/@persist/var/lib/foo/db user.origin "changed"
  bchtool tree $B/$T/@persist/var/lib/foo | cmp -s /tmp/before - && fail persist-selftest-tree-sees-xattr "a changed xattr went unseen" || pass persist-selftest-tree-sees-xattr
  bchtool setxattr $B/$T/@persist/var/lib/foo/db user.origin "made by foo"
  blocks=$(stat -c %b $B/$T/@persist/var/lib/foo/sparse)
  [ "$blocks" -lt 4096 ] && pass persist-keeps-holes || fail persist-keeps-holes "$blocks blocks of 512 for a 64 MiB sparse file"
  # the root keeps its copy until the next boot; again: already in the store, refused, nothing changed
  cmp -s /tmp/before "$(bchtool tree $R/var/lib/foo > /tmp/root-after; echo /tmp/root-after)" && pass persist-root-untouched || fail persist-root-untouched "root changed"
  if ! SYS persist /var/lib/foo && grep -q 'already exists in the store' $OUT; then pass persist-refuses-twice; else fail persist-refuses-twice "$(last_lines)"; fi
  # the fixes: --merge saves the hidden file, the key goes into the store: check is quiet
  if SYS persist /var/lib/declared --merge && [ "$(r @persist/var/lib/declared/extra)" = "written before the bind mount" ]; then pass persist-merge-saves-hidden
  else fail persist-merge-saves-hidden "$(last_lines)"; fi
  w @persist/etc/secret.key k
  if SYS check && ! grep -qE 'hidden by the bind mount|missing from the store' $OUT; then pass persist-check-quiet-when-fixed
  else fail persist-check-quiet-when-fixed "$(last_lines)"; fi
  # next boot: the rollback erases the root, the store keeps the copy
  umount $SY/var/lib/declared $SY/run $SY/sys $SY/dev $SY/proc $SY/persist $SY
  ER rollback && [ ! -e $R/var/lib/foo ] && bchtool tree $B/$T/@persist/var/lib/foo | cmp -s /tmp/before - \
    && pass persist-kept-after-rollback || fail persist-kept-after-rollback "$(tail -2 $OUT)"
  cleanup
fi

# ---- harness self-test: every check reports its planted violation ------------------------------
# On the real filesystem: plant one violation at a time, then the check must name it (jc ... expect=REGEX:
# the harness fails if check --json calls that state clean; inv_problems: the shell-side invariants).
if want selftest; then
  newfs selftest; w @root/etc/s s; ER rollback; O1=$(olds); X=$B/$T/@snapshots
  jc selftest-control 1
  [ -z "$(inv_problems etc/s 1)" ] && pass selftest-control-inv || fail selftest-control-inv "$(inv_problems etc/s 1)"
  expect_inv() { # expect_inv NAME WORD MARKER TOTAL: inv_problems must report WORD
    local n=$1 word=$2; shift 2
    inv_problems "$@" | grep -q -- "$word" && pass "selftest-inv-$n" || fail "selftest-inv-$n" "not reported: $word"
  }
  bchtool create $X/.kept.x; jc selftest-kept-leftover 1 'expect=\.kept\.x'; bchtool destroy $X/.kept.x
  bchtool create $X/.incomplete.2000-01-01T00-00-00Z; jc selftest-incomplete 1 'expect=leftover_entry'
  bchtool destroy $X/.incomplete.2000-01-01T00-00-00Z
  echo notes > $X/notes.txt; jc selftest-foreign 1 'expect=foreign_entry_notes'; rm $X/notes.txt
  bchtool create $X/2000-01-01T00-00-00Z; jc selftest-writable-old-root - 'expect=old_root_2000-01-01T00-00-00Z_writable'
  expect_inv writable writable: etc/s 2; bchtool destroy $X/2000-01-01T00-00-00Z
  bchtool snap -r $X/$O1 $X/2000-01-01T00-00-00Z; jc selftest-duplicated-old-root 1 'expect=2_old_roots,_want_1'
  expect_inv duplicated holding:2 etc/s 2; bchtool destroy $X/2000-01-01T00-00-00Z
  bchtool snap -r $X/$O1 $X/.keep-aside; bchtool destroy $X/$O1
  jc selftest-lost-old-root 1 'expect=0_old_roots,_want_1'; expect_inv lost holding:0 etc/s 0
  bchtool snap -r $X/.keep-aside $X/$O1; bchtool destroy $X/.keep-aside
  w @root/stale x; jc selftest-root-not-fresh - fresh=1 'expect=not_fresh'; expect_inv not-fresh root-not-empty etc/s 1
  rm $B/$T/@root/stale
  mv $B/$T/@root $B/$T/@root.away; jc selftest-root-missing - 'expect=root_\S+_missing'; mv $B/$T/@root.away $B/$T/@root
  mv $B/$T/@persist/keep-me /tmp/keep-me; expect_inv persist-lost persist etc/s 1; mv /tmp/keep-me $B/$T/@persist/keep-me
  bchtool create $B/$T/@second-root; expect_inv second-root stray:@second-root etc/s 1; bchtool destroy $B/$T/@second-root
  jc selftest-control-after 1
  cleanup
fi

# ---- bench (issue 14 items 2 and 3): NOT part of CI ------------------------------------------------
# Runs only when engine.only names it (engine.only=bench: the harness scenario bcachefs-bench, set "bench"; an
# empty engine.only does not select it). On a root of bench.files files (default 20000; 64 bytes, 200 a directory, half
# below var/lib, half below etc) with a baseline, then bench.changed changes (default 1000: half appends to
# existing files spread over every directory, half new files in every fourth directory): `diff --json`
# against `find -newer` (a stamp touched just before the baseline; bcachefs has no generation search or
# diff of its own), interleaved (the order rotates every round), warm cache, bench.runs rounds (default 5), medians. Then the boot
# path: `rollback` on this layout, bench.runs times (the root written each time; `finish` untimed after each).
# Times from /proc/uptime (10 ms resolution); TIME lines go to the harness's notes (harness/suites.py).
# bench_ms, bench_med, bench_fill, bench_change: guest/common.sh (shared with the ZFS suite)
bench_group() {
  local files changed runs nd t0 r v i order
  files=$(arg bench.files); [ -n "$files" ] || files=20000
  changed=$(arg bench.changed); [ -n "$changed" ] || changed=1000
  runs=$(arg bench.runs); [ -n "$runs" ] || runs=5
  newfs bench
  local R=$B/$T/@root
  t0=$(bench_ms); nd=$(bench_fill "$R" "$files"); sync
  echo "TIME bench-fill $files files in $nd directories: $(( $(bench_ms) - t0 )) ms"
  touch /tmp/bstamp; sleep 1
  if ER baseline && log_has "baseline taken"; then pass bench-baseline; else fail bench-baseline "$(tail -3 $OUT)"; cleanup; return; fi
  sleep 1; bench_change "$R" "$nd" "$changed"; sync
  : > /tmp/bt
  for r in $(seq 0 "$runs"); do
    case $((r % 3)) in 0) order="ours find full" ;; 1) order="find full ours" ;; *) order="full ours find" ;; esac
    for v in $order; do
      t0=$(bench_ms)
      case $v in
        ours) ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" diff --json >/tmp/b.ours 2>/tmp/b.err ;;
        full) ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" diff --json --compare full >/tmp/b.full 2>/tmp/b.err ;;
        find) find "$R" -newer /tmp/bstamp >/tmp/b.find 2>/tmp/b.err ;;
      esac
      i=$?; t1=$(bench_ms)
      [ $i -eq 0 ] || fail "bench-$v-runs" "rc $i: $(tail -c 300 /tmp/b.err)"
      [ "$r" = 0 ] || echo "$v $((t1 - t0))" >> /tmp/bt   # round 0: warm-up, not recorded
    done
  done
  local so sf mo mf
  so=$(grep -o '"files":[0-9]*' /tmp/b.ours | head -n 1 | cut -d: -f2); sf=$(grep -c . /tmp/b.find)
  grep -q '"method":"walk, compared with the baseline; entries older' /tmp/b.ours && [ "${so:-0}" -ge "$changed" ] \
    && pass bench-diff-finds-the-changes || fail bench-diff-finds-the-changes "$so files listed; $(head -c 300 /tmp/b.ours)"
  [ "$(grep -o '"groups".*' /tmp/b.ours | md5sum)" = "$(grep -o '"groups".*' /tmp/b.full | md5sum)" ] \
    && pass bench-diff-ctime-equals-full || fail bench-diff-ctime-equals-full "$(head -c 300 /tmp/b.full)"
  local lk mu
  lk=$(grep -o '[0-9]* of [0-9]* looked up' /tmp/b.ours | head -n 1)
  mu=$(awk '$1 == "full" {print $2}' /tmp/bt | bench_med)
  mo=$(awk '$1 == "ours" {print $2}' /tmp/bt | bench_med); mf=$(awk '$1 == "find" {print $2}' /tmp/bt | bench_med)
  echo "TIME bench-diff bcachefs files=$files changed=$changed runs=$runs cpus=$(nproc): diff ${mo} ms ($so files listed, $lk; --compare full ${mu} ms), find -newer ${mf} ms ($sf paths); samples $(tr '\n' ' ' < /tmp/bt)"
  # the boot path in the small guest: rollback (timed), finish (not)
  : > /tmp/bt
  for r in $(seq 0 "$runs"); do
    w "@root/etc/boot-$r" "boot $r"
    t0=$(bench_ms)
    ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" rollback --keep 3 >$OUT 2>&1; i=$?
    t1=$(bench_ms); cat $OUT >> /tmp/all.log
    [ $i -eq 0 ] || { fail bench-rollback "rc $i: $(tail -3 $OUT)"; break; }
    [ "$r" = 0 ] || echo "$((t1 - t0)) $(sed -n 's/.*rollback finished in \([0-9]*\) ms.*/\1/p' $OUT)" >> /tmp/bt
    ephemeral-root --device "$DEV" --root "$T/@root" --snapshots "$T/@snapshots" finish --no-baseline --keep 3 >/tmp/fin 2>&1 \
      || fail bench-finish "$(tail -2 /tmp/fin | tr '\n' ' ')"
  done
  echo "TIME bench-rollback bcachefs runs=$runs: wall $(cut -d' ' -f1 /tmp/bt | bench_med) ms, program's own $(cut -d' ' -f2 /tmp/bt | bench_med) ms (median; samples wall/own: $(tr ' \n' '/ ' < /tmp/bt))"
  jc bench-after 3
  cleanup
}
if [ -n "$ONLY" ] && want bench; then bench_group; fi

umount $B
# The 6.12 ENOTEMPTY window, as our retry loop logged it.
grep "ENOTEMPTY for" /tmp/all.log | sed 's/.*ENOTEMPTY for \([0-9]*\) ms (\([0-9]*\) attempts.*/\1 \2/' > /tmp/enotempty
echo "ENOTEMPTY-WINDOW: $(wc -l < /tmp/enotempty) waits; max ms: $(sort -n /tmp/enotempty | tail -n1 | cut -d' ' -f1); max attempts: $(sort -k2 -n /tmp/enotempty | tail -n1 | cut -d' ' -f2); deletions total: $(grep -cE '(step|finish) [0-9]+/[0-9]+: delete' /tmp/all.log)"
echo "kernel warnings: $(dmesg | grep -ciE 'error|warn')"; dmesg | grep -iE 'bcachefs.*(error|warn)' | head -5
echo "ERTEST jchecks=$ERJ_N"
echo "$P passed, $F failed"
