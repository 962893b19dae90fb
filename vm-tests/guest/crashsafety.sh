#!/bin/sh
# The crash-safety scenarios of tests/crash_safety.rs in the small guest (harness/suites.py: run_testbin):
# the same test binary as on the host (built static with the fault-injection feature, /bin/crash_safety),
# on a real bcachefs or ZFS instead of btrfs loop devices (tests/common/testfs.rs). The verdict is the
# test binary's: its exit status (ERTEST crashsafety-rc=) and its "test result:" line.
#   cs.fs=bcachefs|zfs  cs.test=TEST (exact name)  cs.scen=ABC...  cs.loop=N (recoveries of scenario C)
#   ertest.devs=/dev/vda[:/dev/vdb...]
echo
. /guest/common.sh
FS=$(arg cs.fs)
TEST=$(arg cs.test)
SCEN=$(arg cs.scen)
LOOP=$(arg cs.loop)
DEVS=$(arg ertest.devs)
export EPHEMERAL_ROOT_TEST_BIN=/bin/ephemeral-root
if [ -x /bin/er-subject ]; then
  # an older build under test (EPHEMERAL_ROOT_VM_SUBJECT_BIN); today's binary judges with check --json
  export EPHEMERAL_ROOT_TEST_BIN=/bin/er-subject EPHEMERAL_ROOT_TEST_CHECK_BIN=/bin/ephemeral-root
  echo "ERTEST subject=/bin/er-subject"
fi
case "$FS" in
  bcachefs)
    mkdir -p /mnt
    mount -t bcachefs "$DEVS" /mnt || { echo "ERTEST crashsafety-rc=mount-failed"; exit 0; }
    export EPHEMERAL_ROOT_TESTFS=bcachefs:/mnt:/dev/vda ;;
  zfs)
    zpool create -f -o ashift=12 -O mountpoint=none -O canmount=off -O compression=lz4 rpool /dev/vda1 ||
      { echo "ERTEST crashsafety-rc=zpool-create-failed"; exit 0; }
    zfs create -o canmount=off rpool/t
    export EPHEMERAL_ROOT_TESTFS=zfs:rpool/t ;;
  *) echo "ERTEST crashsafety-rc=unknown-fs-$FS"; exit 0 ;;
esac
[ -n "$SCEN" ] && export EPHEMERAL_ROOT_CRASH_SCENARIOS="$SCEN"
[ -n "$LOOP" ] && export EPHEMERAL_ROOT_CRASH_LOOP="$LOOP"
export TMPDIR=/tmp RUST_BACKTRACE=1
echo "ERTEST crashsafety-start $(cut -d' ' -f1 /proc/uptime)"
/bin/crash_safety --exact "$TEST" --test-threads=1 --nocapture 2>&1
rc=$?
echo "ERTEST crashsafety-end $(cut -d' ' -f1 /proc/uptime)"
echo "ERTEST crashsafety-rc=$rc"
sync
case "$FS" in
  bcachefs) umount /mnt ;;
  zfs) zpool export rpool ;;
esac
