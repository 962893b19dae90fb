# Sample NixOS configurations for vm-tests/nix-eval: `good` ones must evaluate and render the expected
# unit; `bad` ones must be rejected by an assertion whose message contains `expect`.
{ repo, impermanence ? null }:
let
  module = repo + "/nixos-module";
  persistenceModule = if impermanence == null then ./impermanence-standin.nix else impermanence + "/nixos.nix";

  base = { lib, ... }: {
    imports = [ module ];
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
    zfs = { imports = [ base zfsLayout ]; boot.ephemeralRoot.mode = "audit"; boot.ephemeralRoot.blank = "rpool/local/blank"; };
    luks-btrfs-emergency = {
      imports = [ base (btrfsLayout "/dev/mapper/cryptroot") ];
      boot.initrd.luks.devices.cryptroot.device = "/dev/disk/by-uuid/11111111-2222-3333-4444-555555555555";
      boot.ephemeralRoot.failureAction = "emergency";
      boot.ephemeralRoot.persistentPaths = [ "/var/lib/postgresql" ];
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
    persist-on-root = {
      expect = "the persistent storage location /persist (environment.persistence) is on the root";
      config = {
        imports = [ base seedPersistence ];
        fileSystems."/" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@root" ]; };
        fileSystems."/nix" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@nix" ]; };
      };
    };
  };
}
