# Shared pieces of the NixOS VM tests (one file per scenario beside this one).
#
# Every scenario boots a VM whose only disk (/dev/vda) starts blank. On the first boot an initrd
# service (test-make-layout) creates the layout the README tells users to create: the root, /nix and
# /persist as separate subvolumes/datasets. Then boot.ephemeralRoot does its work on every boot,
# exactly as on a real machine (no bootloader: qemu starts the kernel and initrd directly).
#
# mkTest returns a test module for pkgs.testers.runNixOSTest.
{ module }:
let
  rootDevice = luks: if luks then "/dev/mapper/cryptroot" else "/dev/vda";

  layouts = {
    btrfs = dev: {
      # Programs the layout script runs by store path: each must be copied into the initrd
      # (boot.initrd.systemd.storePaths below; make-initrd-ng adds their libraries).
      tools = pkgs: [ "${pkgs.btrfs-progs}/bin/mkfs.btrfs" "${pkgs.btrfs-progs}/bin/btrfs" ];
      fileSystems = {
        "/" = { device = dev; fsType = "btrfs"; options = [ "subvol=@root" ]; };
        "/nix" = { device = dev; fsType = "btrfs"; options = [ "subvol=@nix" ]; };
        "/persist" = { device = dev; fsType = "btrfs"; options = [ "subvol=@persist" ]; neededForBoot = true; };
      };
      make = pkgs: ''
        ${pkgs.btrfs-progs}/bin/mkfs.btrfs -f -L nixos ${dev}
        mkdir -p /run/layout
        mount -t btrfs ${dev} /run/layout
        for sub in @root @nix @persist; do ${pkgs.btrfs-progs}/bin/btrfs subvolume create /run/layout/$sub; done
        umount /run/layout
      '';
    };
    bcachefs = dev: {
      tools = pkgs: [ "${pkgs.bcachefs-tools}/bin/bcachefs" ];
      # bcachefs has no subvol= mount option: util-linux mounts the subvolume with X-mount.subdir=.
      fileSystems = {
        "/" = { device = dev; fsType = "bcachefs"; options = [ "X-mount.subdir=@root" ]; };
        "/nix" = { device = dev; fsType = "bcachefs"; options = [ "X-mount.subdir=@nix" ]; };
        "/persist" = { device = dev; fsType = "bcachefs"; options = [ "X-mount.subdir=@persist" ]; neededForBoot = true; };
      };
      make = pkgs: ''
        ${pkgs.bcachefs-tools}/bin/bcachefs format -f -L nixos ${dev}
        mkdir -p /run/layout
        mount -t bcachefs ${dev} /run/layout
        for sub in @root @nix @persist; do ${pkgs.bcachefs-tools}/bin/bcachefs subvolume create /run/layout/$sub; done
        umount /run/layout
      '';
    };
    zfs = dev: {
      # zpool and zfs: the initrd's /bin has them (nixos/modules/tasks/filesystems/zfs.nix)
      tools = pkgs: [ ];
      # "erase your darlings" layout: rpool/local is disposable, rpool/safe is kept.
      fileSystems = {
        "/" = { device = "rpool/local/root"; fsType = "zfs"; };
        "/nix" = { device = "rpool/local/nix"; fsType = "zfs"; };
        "/persist" = { device = "rpool/safe/persist"; fsType = "zfs"; neededForBoot = true; };
      };
      make = pkgs: ''
        modprobe zfs
        zpool create -f -O mountpoint=none -O atime=off -O compression=on rpool ${dev}
        zfs create -p -o mountpoint=legacy rpool/local/root
        zfs create -p -o mountpoint=legacy rpool/local/nix
        zfs create -p -o mountpoint=legacy rpool/safe/persist
      '';
    };
  };
in
rec {
  # Python shared by all scenarios (prepended to each testScript).
  helpers = ''
    import re

    OLD_ROOT = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ(?:-\d+)?\b")


    def old_roots():
        """Names of the old roots, oldest first (the names sort by time)."""
        out = machine.succeed("ephemeral-root list")
        return sorted(set(OLD_ROOT.findall(out)))


    def booted(expect_wipe=True):
        """Wait for the boot and check the initrd step ran before the root was mounted."""
        machine.wait_for_unit("multi-user.target")
        assert "(initrd)" in machine.succeed("systemd-analyze"), "not a systemd stage 1"
        log = machine.succeed("journalctl -b -o cat")
        assert "ephemeral-root: rollback finished" in log, "the initrd step did not finish"
        assert "rollback FAILED" not in log, "the initrd step failed"
        machine.succeed("test -f /etc/ephemeral-root.conf", "ephemeral-root check")
        # finish (after multi-user.target) seals the root the initrd moved aside, prunes and takes
        # the baseline: the old roots counted below are sealed only once it has run.
        machine.wait_for_unit("ephemeral-root-finish.service")


    def write_state(tag):
        """Something on the root (must vanish in wipe mode) and something persisted (must stay)."""
        machine.succeed(
            f"echo {tag} > /root/junk-{tag}",
            f"mkdir -p /var/lib/leftover && echo {tag} > /var/lib/leftover/{tag}",
            f"echo {tag} > /persist/kept-{tag}",
            "sync",
        )
  '';

  mkTest =
    { name
    , fs ? "btrfs"
    , luks ? false
    , extraConfig ? { }
    , testScript
    }:
    let
      dev = rootDevice luks;
      layout = layouts.${fs} dev;
    in
    {
      name = "ephemeral-root-${name}";

      nodes.machine = { config, lib, pkgs, ... }: {
        imports = [ module extraConfig ];

        boot.ephemeralRoot.enable = true;

        boot.initrd.systemd.enable = true;
        boot.initrd.systemd.emergencyAccess = true;

        boot.supportedFilesystems = [ fs ];
        boot.initrd.supportedFilesystems = [ fs ];
        networking.hostId = "deadbeef"; # ZFS
        boot.zfs.devNodes = "/dev/disk/by-uuid"; # no /dev/disk/by-id for virtio disks without serial

        virtualisation.useDefaultFilesystems = false;
        virtualisation.rootDevice = dev;
        virtualisation.diskSize = 2048;
        virtualisation.memorySize = 1536;
        virtualisation.fileSystems = layout.fileSystems;

        boot.initrd.luks.devices = lib.mkIf luks {
          cryptroot.device = "/dev/vda";
        };

        # The initrd holds only listed store paths (and what they link to); systemd's util-linux there
        # is a minimal build. Every program the test services below run by store path is listed, or
        # `! blkid` would be true on every boot and the disk reformatted (vm-tests/nix-eval checks this).
        boot.initrd.systemd.storePaths = [ "${pkgs.util-linux}/bin/blkid" ] ++ layout.tools pkgs
          ++ lib.optional luks "${pkgs.cryptsetup}/bin/cryptsetup";

        # First boot only: the disk is blank, create the layout (LUKS container first when asked).
        boot.initrd.systemd.services.test-make-layout = {
          description = "Test: create the disk layout on the blank disk";
          wantedBy = [ "initrd.target" ];
          requires = [ "dev-vda.device" ];
          after = [ "dev-vda.device" ] ++ lib.optional luks "systemd-cryptsetup@cryptroot.service";
          before = [ "ephemeral-root.service" "sysroot.mount" ]
            ++ lib.optional (fs == "zfs") "zfs-import-rpool.service";
          unitConfig.DefaultDependencies = false;
          serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
          script = ''
            set -eux
            if [ ! -e /dev/vda.layout-done ] && ! ${pkgs.util-linux}/bin/blkid -p ${dev} >/dev/null 2>&1; then
              ${layout.make pkgs}
              touch /dev/vda.layout-done
            fi
          '';
        };
        # LUKS: the container is made before systemd-cryptsetup asks for the passphrase.
        boot.initrd.systemd.services.test-make-luks = lib.mkIf luks {
          description = "Test: create the LUKS container on the blank disk";
          wantedBy = [ "initrd.target" ];
          requires = [ "dev-vda.device" ];
          after = [ "dev-vda.device" ];
          before = [ "systemd-cryptsetup@cryptroot.service" ];
          unitConfig.DefaultDependencies = false;
          serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
          script = ''
            set -eux
            if ! ${pkgs.cryptsetup}/bin/cryptsetup isLuks /dev/vda; then
              echo -n supersecret | ${pkgs.cryptsetup}/bin/cryptsetup luksFormat -q --pbkdf pbkdf2 --iter-time=1 /dev/vda -
            fi
          '';
        };
      };

      testScript = helpers + testScript;
    };

  # allow_reboot: machine.reboot() restarts the VM instead of ending QEMU; start() is a no-op while
  # the VM runs, so the same boot code serves after shutdown() and after reboot().
  defaultBoot = "machine.start(allow_reboot=True)\nbooted()\n";

  # The scenario most tests share: three boots, root state vanishes, persisted state stays, the old
  # roots accumulate. `boot` is the Python that starts the machine and waits for it (LUKS types the
  # passphrase).
  wipeScript = { boot ? defaultBoot }: ''
    def boot_and_check():
    ${indent boot}

    # Boot 1: the layout is created, the (empty) root is kept as the first old root.
    boot_and_check()
    first = old_roots()
    assert len(first) >= 1, f"no old root after the first boot: {first}"
    write_state("one")
    machine.shutdown()

    # Boot 2: the root is fresh; the old root holds what boot 1 wrote.
    boot_and_check()
    machine.fail("test -e /root/junk-one", "test -e /var/lib/leftover/one")
    machine.succeed("grep -qx one /persist/kept-one")
    second = old_roots()
    assert len(second) == len(first) + 1, f"expected one more old root: {first} -> {second}"
    newest = second[-1]
    machine.succeed(f"ephemeral-root restore {newest} /root/junk-one --to /tmp/junk-one")
    machine.succeed("grep -qx one /tmp/junk-one")
    write_state("two")
    machine.reboot()

    # Boot 3 (after a reboot from the running system): again fresh, both persisted files stay.
    boot_and_check()
    machine.fail("test -e /root/junk-two", "test -e /root/junk-one")
    machine.succeed("grep -qx one /persist/kept-one", "grep -qx two /persist/kept-two")
    third = old_roots()
    assert len(third) == len(second) + 1, f"expected one more old root: {second} -> {third}"
    assert third[:len(second)] == second, "an old root vanished"
    machine.shutdown()
  '';

  indent = text: builtins.concatStringsSep "\n"
    (map (l: if l == "" then l else "    " + l) (builtins.filter builtins.isString (builtins.split "\n" text)));
}
