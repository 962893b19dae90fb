#!/usr/bin/env bash
# Baseline for the benchmark: our own shell rendering of the rollback that the
# nix-community/impermanence README recommends for btrfs (mount the top level, move the root to
# old_roots/<timestamp of the root>, delete old roots older than 30 days recursively with
# `btrfs subvolume list -o`, create a fresh root, unmount). Usage: impermanence-baseline.sh DEVICE
set -euo pipefail
dev=$1
top=$(mktemp -d /tmp/baseline-top.XXXXXX)
mount -o subvolid=5 "$dev" "$top"
if [ -e "$top/root" ]; then
  mkdir -p "$top/old_roots"
  stamp=$(date --date="@$(stat -c %Y "$top/root")" "+%Y-%m-%d_%H:%M:%S")
  n=0; dest="$top/old_roots/$stamp"
  while [ -e "$dest" ]; do n=$((n + 1)); dest="$top/old_roots/$stamp.$n"; done
  mv "$top/root" "$dest"
fi
delete_tree() {
  local child
  while IFS= read -r child; do
    [ -n "$child" ] && delete_tree "$top/$child"
  done < <(btrfs subvolume list -o "$1" | cut -f 9- -d ' ')
  btrfs -q subvolume delete "$1"
}
while IFS= read -r old; do
  delete_tree "$old"
done < <(find "$top/old_roots/" -mindepth 1 -maxdepth 1 -mtime +30)
btrfs -q subvolume create "$top/root"
umount "$top"
rmdir "$top"
