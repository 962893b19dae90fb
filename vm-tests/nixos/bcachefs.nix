# bcachefs: the root is the subvolume @root mounted with X-mount.subdir= (bcachefs has no subvol=).
{ module }:
let t = import ./lib.nix { inherit module; };
in t.mkTest {
  name = "bcachefs";
  fs = "bcachefs";
  testScript = t.wipeScript { } + ''
    machine.start(allow_reboot=True)
    booted()
    # The subvolume is the root, not the top level of the filesystem.
    machine.fail("test -e /@root", "test -e /@nix", "test -e /@snapshots")
    machine.succeed("findmnt -n -o FSTYPE / | grep -qx bcachefs")
    machine.succeed("grep -qx 'fstype = bcachefs' /etc/ephemeral-root.conf")
    machine.shutdown()
  '';
}
