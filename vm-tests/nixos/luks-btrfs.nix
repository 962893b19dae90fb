# LUKS + btrfs: the root device exists only after the passphrase is typed; ephemeral-root must wait
# for it (After=cryptsetup.target and the device unit) instead of failing or touching the raw disk.
{ module }:
let t = import ./lib.nix { inherit module; };
in t.mkTest {
  name = "luks-btrfs";
  fs = "btrfs";
  luks = true;
  testScript = ''
    import time


    def check_order():
        """The first rollback step is logged after the LUKS container was opened."""
        lines = machine.succeed("journalctl -b -o short-monotonic --no-hostname").splitlines()
        unlocked = [i for i, l in enumerate(lines)
                    if re.search(r"Finished .*(systemd-cryptsetup@cryptroot|Cryptography Setup for cryptroot)", l)]
        steps = [i for i, l in enumerate(lines) if "ephemeral-root: step" in l]
        assert unlocked and steps, "missing journal lines for the unlock or the rollback"
        assert unlocked[0] < steps[0], "ephemeral-root ran before the LUKS container was opened"


  '' + t.wipeScript {
    boot = ''
      machine.start(allow_reboot=True)
      machine.wait_for_console_text("Please enter passphrase for disk cryptroot")
      time.sleep(5)  # hold the passphrase back: nothing may run the rollback meanwhile
      machine.send_console("supersecret\n")
      booted()
      check_order()
    '';
  } + ''
    machine.start(allow_reboot=True)
    machine.wait_for_console_text("Please enter passphrase for disk cryptroot")
    machine.send_console("supersecret\n")
    booted()
    machine.succeed("findmnt -n -o SOURCE / | grep -q '^/dev/mapper/cryptroot'")
    machine.shutdown()
  '';
}
