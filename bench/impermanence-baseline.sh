#!/usr/bin/env bash
# The peer for bench/rollback.sh: our own shell rendering of the btrfs rollback that the
# nix-community/impermanence README (README.org, "BTRFS subvolumes") recommends for
# boot.initrd.postResumeCommands, step for step and with the same tools, so it costs what that
# script costs:
#   - mount the filesystem (no options: its default subvolume, the top level);
#   - if `root` exists: `mkdir -p old_roots`, name it after its directory mtime with
#     `date "+%Y-%m-%-d_%H:%M:%S"` and `mv` it to old_roots/<that name> (the README has no guard
#     against that name existing; bench/rollback.sh renews the root's mtime before every run);
#   - for every entry of old_roots/ that `find -maxdepth 1 -mtime +30` returns, delete it
#     recursively: first each subvolume `btrfs subvolume list -o` lists below it (paths cut from
#     field 9 on, with IFS set to a newline, as the README does, for the rest of the script), then
#     itself, with `btrfs subvolume delete` (which does not wait for a commit);
#   - `btrfs subvolume create` a new, empty root; unmount.
# Old roots stay writable; nothing is synced beyond what the unmount commits.
# Usage: impermanence-baseline.sh DEVICE
set -euo pipefail
dev=$1
top=$(mktemp -d /tmp/impermanence-top.XXXXXX)
mount "$dev" "$top"
if [[ -e $top/root ]]; then
  mkdir -p "$top/old_roots"
  when=$(date --date="@$(stat -c %Y "$top/root")" "+%Y-%m-%-d_%H:%M:%S")
  mv "$top/root" "$top/old_roots/$when"
fi
delete_subvolume_recursively() {
  IFS=$'\n'
  for sub in $(btrfs subvolume list -o "$1" | cut -f 9- -d ' '); do
    delete_subvolume_recursively "$top/$sub"
  done
  btrfs subvolume delete "$1"
}
for old in $(find "$top/old_roots/" -maxdepth 1 -mtime +30); do
  delete_subvolume_recursively "$old"
done
btrfs subvolume create "$top/root"
umount "$top"
rmdir "$top"
