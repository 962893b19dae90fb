#!/usr/bin/env bash
# The physical floor of a btrfs rollback, for bench/rollback.sh: only what must happen before the
# root is mounted, as a shell script with the stock tools. Mount the top level (subvolid=5),
# `btrfs subvolume create` the next root, two renames (the root aside, the next root in place),
# unmount (which commits). No checks, no sealing, no pruning, no explicit sync.
# Usage: floor.sh DEVICE [ROOT] [SNAPSHOTS]   (default @root @snapshots; the root goes to
# SNAPSHOTS/.floor-aside, which must not exist)
set -euo pipefail
dev=$1 root=${2:-@root} snaps=${3:-@snapshots}
top=$(mktemp -d /tmp/floor-top.XXXXXX)
mount -o subvolid=5 "$dev" "$top"
btrfs -q subvolume create "$top/$snaps/.new-root"
mv -T "$top/$root" "$top/$snaps/.floor-aside"
mv -T "$top/$snaps/.new-root" "$top/$root"
umount "$top"
rmdir "$top"
