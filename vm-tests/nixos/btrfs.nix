# btrfs: @root is replaced on every boot, @nix and @persist stay; three boots.
{ module }:
let t = import ./lib.nix { inherit module; };
in t.mkTest {
  name = "btrfs";
  fs = "btrfs";
  testScript = t.wipeScript { } + ''
    machine.start(allow_reboot=True)
    booted()
    machine.succeed("findmnt -n -o FSTYPE,OPTIONS / | grep -E '^btrfs .*subvol=/@root'")
    machine.succeed("grep -qx 'root = @root' /etc/ephemeral-root.conf", "grep -qx 'fstype = btrfs' /etc/ephemeral-root.conf")
    # rd.ephemeral_root=skip leaves this boot's root alone: no new old root, state survives.
    before = old_roots()
    write_state("skipped")
    machine.shutdown()
    import os
    os.environ["QEMU_KERNEL_PARAMS"] = "rd.ephemeral_root=skip"
    machine.start(allow_reboot=True)
    machine.wait_for_unit("multi-user.target")
    del os.environ["QEMU_KERNEL_PARAMS"]
    machine.succeed("grep -qx skipped /root/junk-skipped")
    assert old_roots() == before, "skip made an old root"
    machine.shutdown()
  '';
}
