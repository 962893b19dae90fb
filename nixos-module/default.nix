# NixOS module: boot.ephemeralRoot
#
#   boot.ephemeralRoot.enable = true;
#
# keeps the old root as a read-only snapshot and starts every boot from a fresh root, from the systemd
# initrd (btrfs, bcachefs, ZFS). Everything else is read from fileSystems."/". See docs/contract.md.
#
# Works with nixpkgs 24.05 and later; uses no option introduced after 24.05 without an `options ? …`
# guard. Imported by the flake (nixosModules.default, which also sets `package` to the flake's static
# build) or directly: imports = [ /path/to/ephemeral-root/nixos-module ];
{ config, lib, pkgs, options, utils, ... }:

let
  inherit (lib)
    mkOption mkEnableOption mkIf mkMerge types literalExpression
    optional optionals optionalAttrs optionalString
    concatStringsSep concatMap filter hasPrefix removePrefix
    attrValues mapAttrsToList unique head last splitString;

  cfg = config.boot.ephemeralRoot;
  unit = import ./unit.nix { inherit lib; };

  supportedFsTypes = [ "btrfs" "bcachefs" "zfs" ];

  rootFs = config.fileSystems."/" or null;
  rootFsType = if rootFs == null then "none" else rootFs.fsType;

  fsDevice = fs:
    if fs.device or null != null then fs.device
    else if fs.label or null != null then "/dev/disk/by-label/${fs.label}"
    else null;

  # The value of the last `prefix…` mount option, without a leading "/", or null.
  optionValue = prefix: fs:
    let found = filter (hasPrefix prefix) (fs.options or [ ]);
    in if found == [ ] then null else removePrefix "/" (removePrefix prefix (last found));

  # btrfs: subvol=; bcachefs has no subvol= mount option, the subvolume is mounted with util-linux's
  # X-mount.subdir= (mount the filesystem privately, bind-mount the subdirectory); ZFS: the dataset.
  volumeOf = fs:
    if fs.fsType == "btrfs" then optionValue "subvol=" fs
    else if fs.fsType == "bcachefs" then optionValue "X-mount.subdir=" fs
    else if fs.fsType == "zfs" then fs.device
    else null;
  volumeOption = { btrfs = "subvol="; bcachefs = "X-mount.subdir="; }.${cfg.fsType} or "subvol=";

  isInside = parent: name: name != null && (name == parent || hasPrefix "${parent}/" name);

  # One member of the device (a multi-device bcachefs is "a:b"), UUID=/LABEL= as /dev/disk paths.
  memberPath = m:
    if hasPrefix "UUID=" m then "/dev/disk/by-uuid/${removePrefix "UUID=" m}"
    else if hasPrefix "LABEL=" m then "/dev/disk/by-label/${removePrefix "LABEL=" m}"
    else if hasPrefix "PARTUUID=" m then "/dev/disk/by-partuuid/${removePrefix "PARTUUID=" m}"
    else m;
  # The unit waits for every listed member (not only the one initrd-root-device.target waits for).
  deviceUnits =
    if cfg.device == null then [ ]
    else map (p: "${utils.escapeSystemdPath p}.device")
      (filter (hasPrefix "/dev/") (map memberPath (splitString ":" cfg.device)));

  zfsPool = head (splitString "/" cfg.root);

  # Units that depend on this configuration, on top of the generic unit's ordering.
  extraAfter =
    deviceUnits
    ++ optional (cfg.fsType == "zfs") "zfs-import-${zfsPool}.service"
    # bcachefs.nix unlocks an encrypted root in the initrd with this unit (name from its mount point)
    ++ optional (cfg.fsType == "bcachefs") "unlock-bcachefs-${utils.escapeSystemdPath "/"}.service";
  extraRequires =
    deviceUnits
    ++ optional (cfg.fsType == "zfs") "zfs-import-${zfsPool}.service";

  # ---- nix-community/impermanence: environment.persistence ---------------------------------------
  hasImpermanence = options ? environment.persistence;
  persistenceLocations =
    if hasImpermanence
    then filter (loc: loc.enable or true) (attrValues config.environment.persistence)
    else [ ];
  normalize = p: let s = builtins.replaceStrings [ "//" ] [ "/" ] p; in if s == p then p else normalize s;
  # Entries are coerced to attrsets with `directory`/`file` and the computed dirPath/filePath (home
  # prefix included for users.<name>); older impermanence versions and plain strings are handled too.
  entryPath = kind: home: e:
    normalize (
      if builtins.isString e then (if home != null then "${home}/${e}" else e)
      else if e ? "${kind}Path" then e."${kind}Path"
      else
        let h = if e.home or null != null then e.home else home;
        in if h != null then "${h}/${e.${kind}}" else e.${kind});
  locationPaths = home: loc:
    map (entryPath "dir" home) (loc.directories or [ ])
    ++ map (entryPath "file" home) (loc.files or [ ]);
  userHome = name: config.users.users.${name}.home or "/home/${name}";
  impermancePaths = lib.sort builtins.lessThan (unique (concatMap
    (loc: locationPaths null loc
      ++ concatMap (name: locationPaths (userHome name) loc.users.${name}) (builtins.attrNames (loc.users or { })))
    persistenceLocations));
  persistentStorageRoots = unique (map (loc: loc.persistentStoragePath) persistenceLocations);

  # The fileSystems entry a path lives on (longest mount point that is a prefix of it).
  mountOf = path:
    let
      covering = filter (fs: fs.mountPoint == "/" || path == fs.mountPoint || hasPrefix "${fs.mountPoint}/" path)
        (attrValues config.fileSystems);
      longest = builtins.foldl' (best: fs: if best == null || builtins.stringLength fs.mountPoint > builtins.stringLength best.mountPoint then fs else best) null covering;
    in longest;

  # ---- the config file: ONE rendered string for the initrd and the running system ------------------
  hasSpace = p: builtins.match ".*[[:space:]].*" p != null;
  persistable = filter (p: !hasSpace p) cfg.persistentPaths;
  unpersistable = filter hasSpace cfg.persistentPaths;
  configText = concatStringsSep "\n" ([
    "# ${unit.configPath}: written by the NixOS module (boot.ephemeralRoot). The same file is in the"
    "# initrd and in the running system, so the commands after boot see this boot's settings."
    "fstype = ${cfg.fsType}"
  ]
  ++ optional (cfg.device != null) "device = ${cfg.device}"
  ++ [
    "root = ${cfg.root}"
    "snapshots = ${cfg.snapshots}"
  ]
  ++ optional (cfg.blank != null) "blank = ${cfg.blank}"
  ++ [
    "keep = ${cfg.keep}"
    "mode = ${cfg.mode}"
  ]
  ++ map (p: "persist = ${p}") persistable) + "\n";

  bin = "${cfg.package}/bin/ephemeral-root";
  etcName = removePrefix "/etc/" unit.configPath;

  otherFileSystems = filter (fs: fs.mountPoint != "/") (attrValues config.fileSystems);
  sameFilesystem = fs:
    fs.fsType == cfg.fsType
    && (cfg.fsType == "zfs" || fsDevice fs == null || cfg.device == null || fsDevice fs == cfg.device);
  # Mounts whose data lives inside the root subvolume/dataset: every boot would erase them.
  mountsInsideRoot = filter (fs: sameFilesystem fs && isInside cfg.root (volumeOf fs)
    # no subvol= on btrfs/bcachefs mounts the top level (or the default subvolume), not the root
    && volumeOf fs != null) otherFileSystems;

  nixFs = config.fileSystems."/nix" or null;
  nixOnOwnFs = nixFs != null && !(sameFilesystem nixFs && isInside cfg.root (volumeOf nixFs));

  layoutHint =
    if cfg.fsType == "zfs" then ''
      zfs create -o mountpoint=legacy ${zfsPool}/nix
        fileSystems."/nix" = { device = "${zfsPool}/nix"; fsType = "zfs"; neededForBoot = true; };''
    else ''
      mount ${if cfg.device == null then "<device>" else cfg.device} /mnt && ${if cfg.fsType == "bcachefs" then "bcachefs" else "btrfs"} subvolume create /mnt/@nix
        fileSystems."/nix" = { device = "${if cfg.device == null then "<device>" else cfg.device}"; fsType = "${cfg.fsType}"; options = [ "${volumeOption}@nix" ]; neededForBoot = true; };'';

  persistAssertions = concatMap (path:
    let fs = mountOf path; in [
      {
        assertion = fs != null && fs.mountPoint != "/";
        message = ''
          boot.ephemeralRoot: the persistent storage location ${path} (environment.persistence) is on the root
          filesystem, which every boot erases. Put it on its own subvolume/dataset and declare it, e.g.
            fileSystems."${path}" = { device = ...; fsType = ...; neededForBoot = true; };'';
      }
      {
        assertion = fs == null || fs.mountPoint == "/" || utils.fsNeededForBoot fs;
        message = ''
          boot.ephemeralRoot: the filesystem at ${if fs == null then path else fs.mountPoint} holds the persistent storage
          location ${path}, but it is mounted too late: set
            fileSystems."${if fs == null then path else fs.mountPoint}".neededForBoot = true;'';
      }
    ]) persistentStorageRoots;
in
{
  options.boot.ephemeralRoot = {
    enable = mkEnableOption ''
      ephemeral-root: on every boot, keep the old root as a read-only snapshot and start from a fresh,
      empty root (from the systemd initrd, before sysroot.mount)'';

    package = mkOption {
      type = types.package;
      default = pkgs.pkgsStatic.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.pkgsStatic.callPackage ./package.nix { } (the flake's module: packages.\${system}.default)";
      description = "The ephemeral-root package. A static binary: it is copied into the initrd alone.";
    };

    fsType = mkOption {
      type = types.enum (supportedFsTypes ++ [ "unsupported" ]);
      default = if builtins.elem rootFsType supportedFsTypes then rootFsType else "unsupported";
      defaultText = literalExpression ''config.fileSystems."/".fsType'';
      description = "Filesystem of the root: btrfs, bcachefs or zfs. Taken from fileSystems.\"/\".";
    };

    device = mkOption {
      type = types.nullOr types.str;
      default = if cfg.fsType == "zfs" || rootFs == null then null else fsDevice rootFs;
      defaultText = literalExpression ''config.fileSystems."/".device (null for ZFS)'';
      example = "/dev/disk/by-label/nixos";
      description = ''
        Device holding the root filesystem (a path, UUID=… or LABEL=…; for bcachefs the first member is
        used for the unit ordering). Not used for ZFS. The initrd unit is ordered after (and requires) its
        .device unit.'';
    };

    root = mkOption {
      type = types.str;
      default =
        let v = if rootFs == null then null else volumeOf rootFs;
        in if v != null then v else "@root";
      defaultText = literalExpression ''
        btrfs: the subvol= option of fileSystems."/" (leading "/" stripped); bcachefs: its X-mount.subdir=
        option; ZFS: fileSystems."/".device (the dataset); "@root" when none is set'';
      example = "rpool/local/root";
      description = "The root subvolume (btrfs, bcachefs; relative to the top level) or dataset (ZFS) to replace on every boot.";
    };

    snapshots = mkOption {
      type = types.str;
      default =
        if cfg.fsType == "zfs"
        then (if lib.hasInfix "/" cfg.root then "${builtins.dirOf cfg.root}/snapshots" else "${cfg.root}-snapshots")
        else "@snapshots";
      defaultText = literalExpression ''"@snapshots"; ZFS: a "snapshots" dataset beside the root dataset'';
      example = "rpool/local/snapshots";
      description = "Where old roots are kept: a subvolume of the top level (btrfs, bcachefs) or a dataset (ZFS). Must not be inside the root.";
    };

    blank = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "@blank";
      description = "A subvolume/snapshot to copy new roots from. null: new roots are empty.";
    };

    keep = mkOption {
      type = types.str;
      default = "5 4w 12m";
      description = "Retention policy for old roots: the 5 newest, one a week for 4 weeks, one a month for 12 months.";
    };

    mode = mkOption {
      type = types.enum [ "wipe" "audit" ];
      default = "wipe";
      description = ''
        "wipe": start every boot from a fresh root. "audit": only snapshot the root and keep using it, to
        see with `ephemeral-root diff` what a wipe would lose before turning it on.'';
    };

    failureAction = mkOption {
      type = types.enum [ "continue" "emergency" ];
      default = "continue";
      description = ''
        What a failed rollback does. "continue": log loudly and boot the untouched old root (fail open).
        "emergency": stop in the initrd's emergency shell (fail closed; initrd/fail-closed.conf).'';
    };

    persistentPaths = mkOption {
      type = types.listOf types.str;
      default = impermancePaths;
      defaultText = literalExpression ''
        the directories and files (users.<name> ones under the user's home) of
        environment.persistence when nix-community/impermanence is imported, else [ ]'';
      example = [ "/var/log" "/var/lib/nixos" "/etc/machine-id" ];
      description = ''
        Paths on the root that are persisted elsewhere (bind mounts, symlinks). `ephemeral-root diff`
        hides them. Written to the config file as `persist = …` lines (paths with whitespace cannot be
        written and are left out with a warning).'';
    };

    baseline = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Take `ephemeral-root baseline` (a read-only snapshot of the fresh root) once multi-user.target is
        reached, so `ephemeral-root diff` shows only what accumulated while the system ran.'';
    };

    configText = mkOption {
      type = types.str;
      readOnly = true;
      internal = true;
      description = "The rendered ${unit.configPath} (the initrd and the running system get this same text).";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      boot.ephemeralRoot.configText = configText;

      assertions = [
        {
          assertion = config.boot.initrd.systemd.enable;
          message = ''
            boot.ephemeralRoot runs in the systemd initrd: set boot.initrd.systemd.enable = true;
            (and drop any old rollback script from boot.initrd.postDeviceCommands / postResumeCommands).'';
        }
        {
          assertion = builtins.elem rootFsType supportedFsTypes && cfg.fsType == rootFsType;
          message = ''
            boot.ephemeralRoot needs the root on a btrfs or bcachefs subvolume or a ZFS dataset, but
            fileSystems."/".fsType is "${rootFsType}"${optionalString (cfg.fsType != rootFsType && cfg.fsType != "unsupported") " while boot.ephemeralRoot.fsType is \"${cfg.fsType}\""}.
            Move the root to one (see the README's disk layout), or use a tmpfs root, which needs no rollback.'';
        }
        {
          assertion = cfg.fsType != "btrfs" || (rootFs != null && volumeOf rootFs == cfg.root);
          message = ''
            boot.ephemeralRoot: the root is the btrfs subvolume "${cfg.root}", but fileSystems."/".options
            ${if rootFs != null && volumeOf rootFs != null then "has subvol=${volumeOf rootFs}" else "has no subvol= option (the top level would be mounted, not the subvolume)"}.
            Set fileSystems."/".options = [ "subvol=${cfg.root}" ]; or boot.ephemeralRoot.root to the subvolume you mount.'';
        }
        {
          assertion = cfg.fsType != "bcachefs" || (rootFs != null && volumeOf rootFs == cfg.root);
          message = ''
            boot.ephemeralRoot: the root is the bcachefs subvolume "${cfg.root}", but fileSystems."/".options
            ${if rootFs != null && volumeOf rootFs != null then "has X-mount.subdir=${volumeOf rootFs}" else "has no X-mount.subdir= option"}.
            bcachefs has no subvol= mount option: the subvolume is mounted as a bind mount of a directory of
            the filesystem, which util-linux does with
              fileSystems."/".options = [ "X-mount.subdir=${cfg.root}" ];'';
        }
        {
          assertion = cfg.fsType != "bcachefs" || rootFs == null || optionValue "subvol=" rootFs == null;
          message = ''
            boot.ephemeralRoot: bcachefs has no subvol= mount option (mounting fails or mounts the top level).
            Replace "subvol=${toString (optionValue "subvol=" rootFs)}" in fileSystems."/".options with "X-mount.subdir=${cfg.root}".'';
        }
        {
          assertion = cfg.fsType != "zfs" || (rootFs != null && rootFs.device == cfg.root);
          message = ''
            boot.ephemeralRoot: the root dataset is "${cfg.root}", but fileSystems."/".device is "${toString (rootFs.device or null)}".
            Set fileSystems."/".device = "${cfg.root}"; (with mountpoint=legacy on the dataset) or boot.ephemeralRoot.root to the mounted dataset.'';
        }
        {
          assertion = cfg.fsType == "unsupported" || nixOnOwnFs;
          message = ''
            boot.ephemeralRoot would erase /nix: ${if nixFs == null then "there is no fileSystems.\"/nix\", so /nix lives on the root" else "fileSystems.\"/nix\" is inside the root ${cfg.root}"}.
            The Nix store and database must be on their own subvolume/dataset, e.g.
              ${layoutHint}'';
        }
        {
          assertion = mountsInsideRoot == [ ];
          message = ''
            boot.ephemeralRoot: these mounts are inside the root "${cfg.root}" and would be erased on every boot:
            ${concatStringsSep ", " (map (fs: "${fs.mountPoint} (${toString (volumeOf fs)})") mountsInsideRoot)}.
            Give each its own subvolume/dataset beside the root (e.g. ${if cfg.fsType == "zfs" then "${zfsPool}/safe/home" else "@home"}).'';
        }
        {
          assertion = !(isInside cfg.root cfg.snapshots) && (cfg.blank == null || !(isInside cfg.root cfg.blank));
          message = ''
            boot.ephemeralRoot: snapshots ("${cfg.snapshots}")${optionalString (cfg.blank != null) " and blank (\"${cfg.blank}\")"} must not be inside the root "${cfg.root}":
            set boot.ephemeralRoot.snapshots to a subvolume/dataset beside it (e.g. "@snapshots", "rpool/local/snapshots").'';
        }
      ] ++ persistAssertions;

      warnings = optional (unpersistable != [ ]) ''
        boot.ephemeralRoot: persistent paths with whitespace cannot be written to ${unit.configPath} and are
        not hidden by `ephemeral-root diff`: ${concatStringsSep ", " unpersistable}'';

      # --- the initrd ------------------------------------------------------------------------------
      boot.initrd.systemd.storePaths = [ bin ];
      boot.initrd.systemd.contents.${unit.configPath}.text = configText;

      boot.initrd.systemd.services.ephemeral-root = {
        description = unit.description;
        wantedBy = unit.wantedBy;
        after = unit.after ++ extraAfter;
        before = unit.before;
        wants = unit.wants;
        requires = unit.requires ++ extraRequires;
        # Fail closed: sysroot.mount requires this unit, so a failed rollback never mounts the old
        # root (the link initrd/fail-closed.conf asks for).
        requiredBy = optionals (cfg.failureAction == "emergency") [ "sysroot.mount" ];
        unitConfig = unit.unitConfig
          // optionalAttrs (cfg.failureAction == "emergency") ({
            OnFailure = concatStringsSep " " unit.failClosedOnFailure;
          } // unit.failClosedUnitConfig);
        serviceConfig = unit.serviceConfig // {
          ExecStart = unit.execStartFor bin;
        };
      };

      # --- the running system ----------------------------------------------------------------------
      environment.etc.${etcName}.text = configText;
      environment.systemPackages = [ cfg.package ];

      systemd.services.ephemeral-root-baseline = mkIf cfg.baseline {
        description = "Ephemeral root: baseline snapshot of this boot's fresh root (for ephemeral-root diff)";
        wantedBy = [ "multi-user.target" ];
        after = [ "multi-user.target" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${bin} baseline --config ${unit.configPath}";
        };
      };
    }

    (mkIf (cfg.fsType == "bcachefs") {
      # util-linux runs the filesystem's mount helper (mount.bcachefs) and then skips X-mount.subdir
      # (util-linux#2834: the whole filesystem ends up on /sysroot). The plain mount(2) path applies it.
      boot.initrd.systemd.contents."/etc/systemd/system/sysroot.mount.d/ephemeral-root-bcachefs.conf".text = ''
        [Mount]
        Environment=LIBMOUNT_FORCE_MOUNT2=always
      '';
    })
  ]);
}
