# One boot of the light power-cut cycle (vm-tests/harness/light.py, powercut.py: LightCuts), busybox sh.
# No systemd: /init loaded the modules; this runs the real binary (fault-injection build) on the real disks.
#   ertest.fs=btrfs|bcachefs|zfs  ertest.devs=/dev/vda[:/dev/vdb...]  ertest.boot=N (0: set up the disks)
#   ertest.arm=1                  after the checks and this boot's writes, start a slow rollback
#                                 (EPHEMERAL_ROOT_FAULT_DELAY_MS=ertest.delay) for the harness to cut
#   ertest.listall=1              ZFS: list every old root (default: the newest 3; each is a mount)
# Every boot: check --json before the recovery (what the last cut left), `rollback` (the recovery), check
# --json after it, `finish` (as the system's finish unit would), check --json again, the listings stage 2
# prints in the full boots (root, top level, /persist, old roots), then marker-N (+ etc/ertest-N) into the
# root and p-N into /persist, synced. Armed: the next boot's `rollback` and `finish`, slowed down.
. /guest/common.sh
fs=$(arg ertest.fs); devs=$(arg ertest.devs); boot=$(arg ertest.boot)
arm=$(arg ertest.arm); delay=$(arg ertest.delay); listall=$(arg ertest.listall)
dev1=${devs%%:*}
join() { tr '\n' ',' | sed 's/,$//'; }
out() { echo "ERTEST $*"; }
if [ "$fs" = zfs ]; then
  ER_ARGS="--fstype zfs --root rpool/local/root --snapshots rpool/local/old-roots --keep all"
else
  ER_ARGS="--device $dev1 --root @root --snapshots @snapshots --keep all"
fi
M=/mnt
mkdir -p $M

if [ "$boot" = 0 ]; then
  case $fs in
    btrfs) ok=1 ;;  # made on the host (mkfs.btrfs, @root @persist @nix)
    bcachefs) mount -t bcachefs "$devs" $M && bchtool create $M/@root $M/@persist $M/@nix && sync && umount $M && ok=1 ;;
    zfs) zpool create -f -o ashift=12 -O mountpoint=none -O canmount=off -O compression=lz4 rpool /dev/vda1 &&
         zfs create -p -o canmount=off rpool/local && zfs create -o mountpoint=legacy rpool/local/root &&
         zfs create -p -o mountpoint=legacy rpool/safe/persist && zpool export rpool && ok=1 ;;
  esac
  # a first rollback (on ZFS the root `zfs create` made is not one of ours: it is kept as an old root)
  if [ "$fs" = zfs ]; then zpool import -f -N -d /dev rpool || ok=; fi
  ephemeral-root $ER_ARGS rollback || ok=
  # (no baseline: on ZFS a snapshot of the root would make the fresh root look written to)
  ephemeral-root $ER_ARGS finish --no-baseline || ok=
  jcheck final -- $ER_ARGS
  [ "$fs" = zfs ] && zpool export rpool
  if [ -n "$ok" ]; then out "setup ok"; else out "setup FAILED"; fi
  exit 0
fi

if [ "$fs" = zfs ]; then
  zpool import -f -N -d /dev rpool > /tmp/imp 2>&1 || { out "import FAILED: $(tr '\n' ' ' < /tmp/imp)"; exit 0; }
fi
jcheck pre -- $ER_ARGS
ephemeral-root $ER_ARGS rollback; out "recovery rc=$?"
jcheck post -- $ER_ARGS
# what the system's ephemeral-root-finish.service does after boot
ephemeral-root $ER_ARGS finish; out "finish rc=$?"
jcheck final -- $ER_ARGS

# the listings (same ERTEST lines as stage2-init prints in the full boots)
case $fs in
  btrfs) mount -t btrfs -o subvolid=5 "$dev1" $M; R=$M/@root; P=$M/@persist; S=$M/@snapshots ;;
  bcachefs) mount -t bcachefs "$devs" $M; R=$M/@root; P=$M/@persist; S=$M/@snapshots ;;
  zfs) mkdir -p /z/root /z/persist /z/o; mount -t zfs rpool/local/root /z/root; mount -t zfs rpool/safe/persist /z/persist
       R=/z/root; P=/z/persist ;;
esac
out "root-files=$(ls -A $R | sort | join)"
out "root-nondirs=$(find $R -mindepth 1 ! -type d | sed "s|^$R||" | sort | join)"
[ "$fs" = zfs ] || out "top=$(ls -A $M | sort | join)"
out "persist-files=$(ls -A $P | sort | join)"
out "persist-bad=$(for f in $P/p-*; do [ -f "$f" ] || continue; k=${f##*/p-}; [ "$(cat "$f")" = "persisted in boot $k" ] || echo "p-$k"; done | join)"
probe() { if touch "$1/.ertest-probe" 2>/dev/null; then rm -f "$1/.ertest-probe"; echo no; else echo yes; fi; }
if [ "$fs" = zfs ]; then
  # every dataset below the snapshots location read-only and not mounted automatically; no stray datasets
  out "zfs-bad=$(zfs list -H -o name,readonly,canmount -r rpool/local/old-roots | awk 'NR > 1 && ($2 != "on" || $3 != "noauto") {print $1}' | join)"
  out "zfs-stray=$(zfs list -H -o name -r rpool | grep -v -E '^rpool(/local(/root|/old-roots(/.*)?)?|/safe(/persist)?)?$' | join)"
  names=$(zfs list -H -o name -d 1 rpool/local/old-roots 2>/dev/null | sed 's|^rpool/local/old-roots/\{0,1\}||' | grep -v '^$' | grep -v '^\.' | sort)
  [ "$listall" = 1 ] || names=$(echo "$names" | tail -n 3)
  for d in $names; do
    mount -t zfs "rpool/local/old-roots/$d" /z/o || { out "oldroot=$d ro=unmountable files="; continue; }
    out "oldroot=$d ro=$(probe /z/o) files=$(ls -A /z/o | sort | join)"
    umount /z/o
  done
else
  for d in $(ls $S 2>/dev/null | sort); do
    [ -d "$S/$d" ] || continue
    out "oldroot=$d ro=$(probe "$S/$d") files=$(ls -A "$S/$d" | sort | join)"
  done
fi
echo "written in boot $boot" > $R/marker-$boot && mkdir -p $R/etc && echo "boot $boot" > $R/etc/ertest-$boot
echo "persisted in boot $boot" > $P/p-$boot
sync
out "wrote boot=$boot root=$(ls -A $R | sort | join)"
case $fs in
  zfs) umount /z/root; umount /z/persist ;;
  *) umount $M ;;
esac
sync
out "done boot=$boot"
if [ "$arm" = 1 ]; then
  # the next boot's rollback, then its finish, both slowed down: the harness cuts the power somewhere in them
  out "armed"
  EPHEMERAL_ROOT_FAULT_DELAY_MS=$delay ephemeral-root $ER_ARGS rollback; rc=$?
  out "phase finish"
  # without the baseline: on ZFS a baseline snapshot makes the next root count as written to (kept again);
  # the baseline's own fault points are the suites' (ERE)
  EPHEMERAL_ROOT_FAULT_DELAY_MS=$delay ephemeral-root $ER_ARGS finish --no-baseline
  out "not-cut rc=$rc/$?"
fi
[ "$fs" = zfs ] && zpool export rpool
exit 0
