# rd.ephemeral_root.restore=NAME: the next root is a writable copy of old root NAME (undo a wipe);
# the boot after that is fresh again.
{ module }:
let t = import ./lib.nix { inherit module; };
in t.mkTest {
  name = "restore-cmdline";
  fs = "btrfs";
  testScript = ''
    import os

    # Boot 1: leave a marker on the root.
    machine.start(allow_reboot=True)
    booted()
    machine.succeed("echo precious > /root/marker", "sync")
    machine.shutdown()

    # Boot 2: wiped; the newest old root holds the marker.
    machine.start(allow_reboot=True)
    booted()
    machine.fail("test -e /root/marker")
    roots = old_roots()
    with_marker = roots[-1]
    machine.shutdown()

    # Boot 3: restore that old root from the kernel command line.
    os.environ["QEMU_KERNEL_PARAMS"] = f"rd.ephemeral_root.restore={with_marker}"
    machine.start(allow_reboot=True)
    booted()
    del os.environ["QEMU_KERNEL_PARAMS"]
    machine.succeed("grep -qx precious /root/marker")
    machine.succeed("echo writable >> /root/marker")  # a writable copy, not the read-only old root
    assert with_marker in old_roots(), "the restored old root must still be kept"
    assert len(old_roots()) == len(roots) + 1, "the root of boot 2 must be kept as an old root"
    machine.reboot()

    # Boot 4: fresh again.
    machine.start(allow_reboot=True)
    booted()
    machine.fail("test -e /root/marker")
    machine.shutdown()
  '';
}
