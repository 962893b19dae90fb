# ZFS ("erase your darlings" layout): rpool/local/root is replaced on every boot, after
# zfs-import-rpool.service; rpool/local/nix and rpool/safe/persist stay.
{ module }:
let t = import ./lib.nix { inherit module; };
in t.mkTest {
  name = "zfs";
  fs = "zfs";
  testScript = t.wipeScript { } + ''
    machine.start(allow_reboot=True)
    booted()
    machine.succeed("findmnt -n -o SOURCE / | grep -qx rpool/local/root")
    machine.succeed("grep -qx 'root = rpool/local/root' /etc/ephemeral-root.conf")
    machine.succeed("grep -qx 'snapshots = rpool/local/snapshots' /etc/ephemeral-root.conf")
    machine.succeed("zfs list -H -o name rpool/local/snapshots")
    machine.shutdown()
  '';
}
