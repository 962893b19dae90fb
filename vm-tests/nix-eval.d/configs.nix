# Sample NixOS configurations for vm-tests/nix-eval: `good` ones must evaluate and render the expected
# unit; `bad` ones must be rejected by an assertion whose message contains `expect`.
#   module: the NixOS module under test; impermanence, preservation, homeManager: checkouts of the
#   real projects or null (then the impermanence samples use ./impermanence-standin.nix and the
#   preservation and Home Manager samples are left out: nix-eval says so).
{ lib, repo, module ? repo + "/nixos-module", impermanence ? null, preservation ? null, homeManager ? null, extraModules ? [ ] }:
let
  persistenceModule = if impermanence == null then ./impermanence-standin.nix else impermanence + "/nixos.nix";
  # impermanence since 2025 (commit 1b02741): its NixOS module imports the Home Manager module itself
  # and collects home.persistence (storage path without the home directory); before, users import
  # home-manager.nix into Home Manager and the storage path includes the home directory.
  newHomeManagerInterface = impermanence != null && builtins.pathExists (impermanence + "/submodule-options.nix");

  base = { lib, ... }: {
    imports = [ module ] ++ extraModules;
    boot.loader.grub.enable = false;
    boot.initrd.systemd.enable = true;
    system.stateVersion = "24.05";
    boot.ephemeralRoot.enable = true;
    documentation.enable = false;
  };

  btrfsLayout = dev: {
    fileSystems."/" = { device = dev; fsType = "btrfs"; options = [ "subvol=/@root" "compress=zstd" "noatime" ]; };
    fileSystems."/nix" = { device = dev; fsType = "btrfs"; options = [ "subvol=@nix" "noatime" ]; };
    fileSystems."/persist" = { device = dev; fsType = "btrfs"; options = [ "subvol=@persist" ]; neededForBoot = true; };
    fileSystems."/boot" = { device = "/dev/disk/by-label/BOOT"; fsType = "vfat"; };
  };

  bcachefsLayout = {
    fileSystems."/" = { device = "/dev/disk/by-uuid/0a1b2c3d-0000-4000-8000-000000000001"; fsType = "bcachefs"; options = [ "X-mount.subdir=@root" ]; };
    fileSystems."/nix" = { device = "/dev/disk/by-uuid/0a1b2c3d-0000-4000-8000-000000000001"; fsType = "bcachefs"; options = [ "X-mount.subdir=@nix" ]; };
    fileSystems."/persist" = { device = "/dev/disk/by-uuid/0a1b2c3d-0000-4000-8000-000000000001"; fsType = "bcachefs"; options = [ "X-mount.subdir=@persist" ]; neededForBoot = true; };
  };

  zfsLayout = {
    networking.hostId = "deadbeef";
    fileSystems."/" = { device = "rpool/local/root"; fsType = "zfs"; };
    fileSystems."/nix" = { device = "rpool/local/nix"; fsType = "zfs"; };
    fileSystems."/persist" = { device = "rpool/safe/persist"; fsType = "zfs"; neededForBoot = true; };
  };

  preservationLayout = {
    imports = [ (preservation + "/module.nix") ];
    users.users.josh = { isNormalUser = true; home = "/home/josh"; };
    preservation.preserveAt."/persist" = {
      directories = [ "/var/lib/nixos" { directory = "/var/lib/tailscale"; mode = "0700"; } "/var/log" ];
      files = [ { file = "/etc/machine-id"; inInitrd = true; how = "symlink"; } "/etc/ssh/ssh_host_ed25519_key" ];
      users.josh = {
        directories = [ ".ssh" { directory = ".gnupg"; mode = "0700"; } ];
        files = [ ".bash_history" ];
      };
    };
  };

  # The seed user's impermanence setup (shape of environment.persistence from seeds/000).
  seedPersistence = {
    imports = [ persistenceModule ];
    users.users.josh = { isNormalUser = true; home = "/home/josh"; };
    environment.persistence."/persist" = {
      hideMounts = true;
      directories = [
        "/var/log"
        "/var/lib/nixos"
        "/var/lib/systemd"
        { directory = "/var/lib/tailscale"; mode = "0700"; }
        "/etc/NetworkManager/system-connections"
      ];
      files = [ "/etc/machine-id" { file = "/etc/ssh/ssh_host_ed25519_key"; } ];
      users.josh = {
        directories = [ ".ssh" { directory = ".gnupg"; mode = "0700"; } "projects" "VirtualBox VMs" ];
        files = [ ".bash_history" ];
      };
    };
  };
in
{
  good = {
    btrfs = { imports = [ base (btrfsLayout "/dev/disk/by-label/nixos") seedPersistence ]; };
    bcachefs = { imports = [ base bcachefsLayout ]; boot.ephemeralRoot.keep = "3 2w"; };
    # Two members named explicitly: the unit waits for both devices.
    bcachefs-two-devices = {
      imports = [ base ];
      fileSystems."/" = { device = "/dev/vda:/dev/vdb"; fsType = "bcachefs"; options = [ "X-mount.subdir=@root" ]; };
      fileSystems."/nix" = { device = "/dev/vda:/dev/vdb"; fsType = "bcachefs"; options = [ "X-mount.subdir=@nix" ]; };
    };
    zfs = {
      imports = [ base zfsLayout ];
      boot.ephemeralRoot.mode = "audit";
      boot.ephemeralRoot.blank = "rpool/local/blank@blank";
      boot.ephemeralRoot.baseline = false; # finish --no-baseline
      # Metrics for node-exporter, into a directory whose name needs shell quoting.
      boot.ephemeralRoot.metrics = { enable = true; directory = "/var/lib/node exporter/text'files"; interval = "5min"; };
      # No persistence module: plain bind mounts, a store named here, a critical key file.
      boot.ephemeralRoot.store = "/persist";
      boot.ephemeralRoot.critical = [ "/etc/zfs/keys/rpool.key" ];
    };
    luks-btrfs-emergency = {
      imports = [ base (btrfsLayout "/dev/mapper/cryptroot") ];
      boot.ephemeralRoot.critical = [ "/boot/keyfile_nvme0n1p1" ];
      boot.initrd.luks.devices.cryptroot.device = "/dev/disk/by-uuid/11111111-2222-3333-4444-555555555555";
      boot.ephemeralRoot.failureAction = "emergency";
      boot.ephemeralRoot.persistentPaths = [ "/var/lib/postgresql" ];
    };
  } // lib.optionalAttrs (impermanence != null && homeManager != null) {
    # Home Manager's home.persistence (impermanence's Home Manager module), beside the seed's
    # environment.persistence.
    btrfs-home-manager = { lib, ... }: {
      imports = [ base (btrfsLayout "/dev/disk/by-label/nixos") seedPersistence (homeManager + "/nixos") ];
      home-manager.useGlobalPkgs = true;
      home-manager.sharedModules = lib.optional (!newHomeManagerInterface) (impermanence + "/home-manager.nix");
      home-manager.users.josh = {
        home.stateVersion = "24.05";
        home.persistence = if newHomeManagerInterface then {
          "/persist" = { directories = [ "Downloads" { directory = ".local/share/direnv"; } ]; files = [ ".zsh_history" ]; };
        } else {
          "/persist/home/josh" = { directories = [ "Downloads" { directory = ".local/share/direnv"; method = "symlink"; } ]; files = [ ".zsh_history" ]; allowOther = false; };
        };
      };
    };
  } // lib.optionalAttrs (preservation != null) {
    # nix-community/preservation instead of impermanence.
    btrfs-preservation = {
      imports = [ base (btrfsLayout "/dev/disk/by-label/nixos") preservationLayout ];
      preservation.enable = true;
    };
    # Declared but preservation.enable = false: nothing is persisted, nothing is hidden.
    btrfs-preservation-disabled = { lib, ... }: {
      imports = [ base (btrfsLayout "/dev/disk/by-label/nixos") preservationLayout ];
      preservation.enable = lib.mkForce false;
    };
  };

  bad = {
    # The classic mistake: only / on btrfs, so /nix lives in the root subvolume.
    erase-nix = {
      expect = "there is no fileSystems.\"/nix\", so /nix lives on the root";
      config = {
        imports = [ base ];
        fileSystems."/" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@root" ]; };
      };
    };
    nix-inside-root = {
      expect = "fileSystems.\"/nix\" is inside the root @root";
      config = {
        imports = [ base ];
        fileSystems."/" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@root" ]; };
        fileSystems."/nix" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@root/nix" ]; };
      };
    };
    zfs-nix-child-dataset = {
      expect = "fileSystems.\"/nix\" is inside the root rpool/local/root";
      config = { lib, ... }: {
        imports = [ base zfsLayout ];
        fileSystems."/nix" = lib.mkForce { device = "rpool/local/root/nix"; fsType = "zfs"; };
      };
    };
    scripted-initrd = {
      expect = "set boot.initrd.systemd.enable = true;";
      config = { lib, ... }: {
        imports = [ base (btrfsLayout "/dev/vda") ];
        boot.initrd.systemd.enable = lib.mkForce false;
      };
    };
    ext4-root = {
      expect = "fileSystems.\"/\".fsType is \"ext4\"";
      config = {
        imports = [ base ];
        fileSystems."/" = { device = "/dev/vda1"; fsType = "ext4"; };
        fileSystems."/nix" = { device = "/dev/vda2"; fsType = "ext4"; };
      };
    };
    btrfs-subvol-mismatch = {
      expect = "has subvol=@root. Set fileSystems.\"/\".options = [ \"subvol=@ephemeral\" ];";
      config = {
        imports = [ base (btrfsLayout "/dev/vda") ];
        boot.ephemeralRoot.root = "@ephemeral";
      };
    };
    btrfs-no-subvol = {
      expect = "has no subvol= option";
      config = {
        imports = [ base ];
        fileSystems."/" = { device = "/dev/vda"; fsType = "btrfs"; };
        fileSystems."/nix" = { device = "/dev/vdb"; fsType = "ext4"; };
      };
    };
    bcachefs-subvol-option = {
      expect = "bcachefs has no subvol= mount option";
      config = { lib, ... }: {
        imports = [ base bcachefsLayout ];
        fileSystems."/".options = lib.mkForce [ "subvol=@root" ];
      };
    };
    zfs-device-mismatch = {
      expect = "fileSystems.\"/\".device is \"rpool/local/root\"";
      config = {
        imports = [ base zfsLayout ];
        boot.ephemeralRoot.root = "rpool/ephemeral/root";
      };
    };
    snapshots-inside-root = {
      expect = "must not be inside the root \"@root\"";
      config = {
        imports = [ base (btrfsLayout "/dev/vda") ];
        boot.ephemeralRoot.snapshots = "@root/.snapshots";
      };
    };
    persist-not-needed-for-boot = {
      expect = "fileSystems.\"/persist\".neededForBoot = true;";
      config = { lib, ... }: {
        imports = [ base (btrfsLayout "/dev/vda") seedPersistence ];
        fileSystems."/persist".neededForBoot = lib.mkForce false;
      };
    };
    # One entry overrides its location's persistentStoragePath with a directory on the root.
    persist-entry-on-root = {
      expect = "the persistent storage location /scratch (environment.persistence, home.persistence or preservation.preserveAt) is on the root";
      config = {
        imports = [ base (btrfsLayout "/dev/vda") seedPersistence ];
        environment.persistence."/persist".directories = [ { directory = "/var/lib/docker"; persistentStoragePath = "/scratch"; } ];
      };
    };
    zfs-snapshots-other-pool = {
      expect = "snapshots (\"tank/old-roots\", pool tank) must be in the root's pool rpool";
      config = { imports = [ base zfsLayout ]; boot.ephemeralRoot.snapshots = "tank/old-roots"; };
    };
    zfs-blank-other-pool = {
      expect = "blank (\"tank/blank@blank\", pool tank) must be in the root's pool rpool";
      config = { imports = [ base zfsLayout ]; boot.ephemeralRoot.blank = "tank/blank@blank"; };
    };
    zfs-blank-not-a-snapshot = {
      expect = "on ZFS, blank must be a snapshot (dataset@snapshot)";
      config = { imports = [ base zfsLayout ]; boot.ephemeralRoot.blank = "rpool/local/blank"; };
    };
    store-on-root = {
      expect = "boot.ephemeralRoot.store = \"/scratch\" is on the root filesystem, which every boot erases";
      config = { imports = [ base (btrfsLayout "/dev/vda") ]; boot.ephemeralRoot.store = "/scratch"; };
    };
    store-relative = {
      expect = "boot.ephemeralRoot.store = \"persist\" is not absolute";
      config = { imports = [ base (btrfsLayout "/dev/vda") ]; boot.ephemeralRoot.store = "persist"; };
    };
    store-dot-dot = {
      expect = "boot.ephemeralRoot.store = \"/persist/../etc\" has a \".\" or \"..\" component";
      config = { imports = [ base (btrfsLayout "/dev/vda") ]; boot.ephemeralRoot.store = "/persist/../etc"; };
    };
    store-is-root = {
      expect = "boot.ephemeralRoot.store = \"/\" is the root itself";
      config = { imports = [ base (btrfsLayout "/dev/vda") ]; boot.ephemeralRoot.store = "/"; };
    };
    critical-not-absolute = {
      expect = "boot.ephemeralRoot.critical: \"boot/keyfile\", \"/var/lib/my key\" must be absolute paths without whitespace";
      config = { imports = [ base (btrfsLayout "/dev/vda") ]; boot.ephemeralRoot.critical = [ "/etc/ok" "boot/keyfile" "/var/lib/my key" ]; };
    };
    persist-on-root = {
      expect = "the persistent storage location /persist (environment.persistence, home.persistence or preservation.preserveAt) is on the root";
      config = {
        imports = [ base seedPersistence ];
        fileSystems."/" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@root" ]; };
        fileSystems."/nix" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@nix" ]; };
      };
    };
  };

  # The persistence keys of the config file: `conf` = its store / persist_format / critical lines,
  # in order; `warn` = a warning that must fire (else none of ours may).
  store = {
    # impermanence with two locations: no default store, a warning names both and the option.
    impermanence-two-locations = {
      conf = [ "persist_format = impermanence" ];
      warn = "several persistent storage locations are declared (/persist, /persist/cache)";
      config = {
        imports = [ base (btrfsLayout "/dev/vda") seedPersistence ];
        environment.persistence."/persist/cache".directories = [ "/var/cache/fwupd" ];
      };
    };
    # ... and the option picks one: no warning.
    impermanence-two-locations-store-set = {
      conf = [ "store = /persist" "persist_format = impermanence" ];
      config = {
        imports = [ base (btrfsLayout "/dev/vda") seedPersistence ];
        environment.persistence."/persist/cache".directories = [ "/var/cache/fwupd" ];
        boot.ephemeralRoot.store = "/persist";
      };
    };
    # One entry with its own persistentStoragePath is a second location too.
    impermanence-entry-location = {
      conf = [ "persist_format = impermanence" ];
      warn = "several persistent storage locations are declared (/persist, /persist/big)";
      config = {
        imports = [ base (btrfsLayout "/dev/vda") seedPersistence ];
        environment.persistence."/persist".directories = [ { directory = "/var/lib/docker"; persistentStoragePath = "/persist/big"; } ];
      };
    };
    # A declared location without entries still counts (and is the store).
    impermanence-empty-location = {
      conf = [ "store = /state" "persist_format = impermanence" ];
      config = {
        imports = [ base (btrfsLayout "/dev/vda") persistenceModule ];
        fileSystems."/state" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@state" ]; neededForBoot = true; };
        environment.persistence."/state" = { };
      };
    };
    # No persistence module: no store unless set, fstab lines; critical paths in order.
    fstab-critical = {
      conf = [ "store = /persist" "persist_format = fstab" "critical = /boot/keyfile_nvme0n1p1" "critical = /var/lib/sbctl/keys" ];
      config = {
        imports = [ base (btrfsLayout "/dev/vda") ];
        boot.ephemeralRoot.store = "/persist";
        boot.ephemeralRoot.critical = [ "/boot/keyfile_nvme0n1p1" "/var/lib/sbctl/keys" ];
      };
    };
    fstab-no-store = {
      conf = [ "persist_format = fstab" ];
      config = { imports = [ base (btrfsLayout "/dev/vda") ]; };
    };
    # The format can be chosen whatever is imported.
    format-override = {
      conf = [ "store = /persist" "persist_format = fstab" ];
      config = { imports = [ base (btrfsLayout "/dev/vda") seedPersistence ]; boot.ephemeralRoot.persistFormat = "fstab"; };
    };
  } // lib.optionalAttrs (preservation != null) {
    # preservation with two locations.
    preservation-two-locations = {
      conf = [ "persist_format = preservation" ];
      warn = "several persistent storage locations are declared (/persist, /persist/cache)";
      config = {
        imports = [ base (btrfsLayout "/dev/vda") preservationLayout ];
        preservation.enable = true;
        preservation.preserveAt."/persist/cache".directories = [ "/var/cache/fwupd" ];
      };
    };
    # Both modules imported, only preservation used: preservation's lines.
    preservation-and-empty-impermanence = {
      conf = [ "store = /persist" "persist_format = preservation" ];
      config = {
        imports = [ base (btrfsLayout "/dev/vda") preservationLayout persistenceModule ];
        preservation.enable = true;
      };
    };
  };

  # Configurations that evaluate but must warn at build time.
  warn = {
    zfs-2-3-1 = {
      expect = "OpenZFS 2.3.1 (boot.zfs.package) is not one this ephemeral-root knows";
      config = { pkgs, ... }: { imports = [ base zfsLayout ]; boot.zfs.package = pkgs.zfs.overrideAttrs (_: { version = "2.3.1"; }); };
    };
    zfs-2-1 = {
      expect = "OpenZFS 2.1.16 (boot.zfs.package) is not one this ephemeral-root knows";
      config = { pkgs, ... }: { imports = [ base zfsLayout ]; boot.zfs.package = pkgs.zfs.overrideAttrs (_: { version = "2.1.16"; }); };
    };
  };
}
