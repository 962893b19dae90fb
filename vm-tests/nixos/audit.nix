# Audit mode (gradual rollout): every boot keeps a snapshot of the root but does not wipe it.
# rd.ephemeral_root=wipe on the kernel command line forces one wipe.
{ module }:
let t = import ./lib.nix { inherit module; };
in t.mkTest {
  name = "audit";
  fs = "btrfs";
  extraConfig = { boot.ephemeralRoot.mode = "audit"; };
  testScript = ''
    import os

    # Boot 1
    machine.start(allow_reboot=True)
    booted()
    machine.succeed("grep -qx 'mode = audit' /etc/ephemeral-root.conf")
    first = old_roots()
    assert len(first) >= 1, f"no old root after the first boot: {first}"
    write_state("one")
    machine.shutdown()

    # Boot 2: not wiped, but snapshotted (the old root has boot 1's files too).
    machine.start(allow_reboot=True)
    booted()
    machine.succeed("grep -qx one /root/junk-one", "grep -qx one /var/lib/leftover/one", "grep -qx one /persist/kept-one")
    second = old_roots()
    assert len(second) == len(first) + 1, f"expected one more old root: {first} -> {second}"
    machine.succeed(f"ephemeral-root restore {second[-1]} /root/junk-one --to /tmp/junk-one", "grep -qx one /tmp/junk-one")
    write_state("two")
    machine.reboot()

    # Boot 3: still audit.
    machine.start(allow_reboot=True)
    booted()
    machine.succeed("grep -qx two /root/junk-two", "grep -qx one /root/junk-one")
    third = old_roots()
    assert len(third) == len(second) + 1, f"expected one more old root: {second} -> {third}"
    machine.shutdown()

    # Boot 4: rd.ephemeral_root=wipe forces a wipe; the persisted files stay.
    os.environ["QEMU_KERNEL_PARAMS"] = "rd.ephemeral_root=wipe"
    machine.start(allow_reboot=True)
    booted()
    del os.environ["QEMU_KERNEL_PARAMS"]
    machine.fail("test -e /root/junk-one", "test -e /root/junk-two")
    machine.succeed("grep -qx one /persist/kept-one", "grep -qx two /persist/kept-two")
    fourth = old_roots()
    assert len(fourth) == len(third) + 1, f"expected one more old root: {third} -> {fourth}"
    machine.shutdown()
  '';
}
