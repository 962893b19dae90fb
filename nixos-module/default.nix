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
    attrValues mapAttrsToList unique head last splitString escapeShellArg;

  cfg = config.boot.ephemeralRoot;
  unit = import ./unit.nix { inherit lib; };
  zfsVersions = import ./zfs-versions.nix { inherit lib; };

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
    else if hasPrefix "PARTLABEL=" m then "/dev/disk/by-partlabel/${removePrefix "PARTLABEL=" m}"
    else m;
  # The unit waits for every listed member (not only the one initrd-root-device.target waits for).
  deviceUnits =
    if cfg.device == null then [ ]
    else map (p: "${utils.escapeSystemdPath p}.device")
      (filter (hasPrefix "/dev/") (map memberPath (splitString ":" cfg.device)));

  poolOf = ds: head (splitString "/" (head (splitString "@" ds)));
  zfsPool = poolOf cfg.root;
  # The userspace package's version; nixpkgs builds the kernel module from the same source
  # (boot.zfs.package.kernelModuleAttribute), and the binary checks /sys/module/zfs/version.
  zfsVersion = if cfg.fsType == "zfs" then config.boot.zfs.package.version or null else null;

  # bcachefs unlock units for the root, in both shapes nixpkgs has had: one service per mount point
  # (nixos/modules/tasks/filesystems/bcachefs.nix: unlock-bcachefs-<escaped mount point>, 23.11 to
  # today) and the template rework (a generator writes bcachefs-unlock@<escaped device>.service for
  # each bcachefs fstab entry, instance named after the fs_spec turned into a /dev path). Ordering
  # after a unit that does not exist is a no-op, so the unit names both; whichever exists unlocks
  # the root before the rollback opens it.
  specPath = memberPath;
  bcachefsUnlockUnits = optionals (cfg.fsType == "bcachefs") ([
    "unlock-bcachefs-${utils.escapeSystemdPath "/"}.service"
  ] ++ optional (rootFs != null && rootFs.device or null != null && hasPrefix "/" (specPath rootFs.device))
    "bcachefs-unlock@${utils.escapeSystemdPath (specPath rootFs.device)}.service");

  # Units that depend on this configuration, on top of the generic unit's ordering.
  extraAfter =
    deviceUnits
    ++ optional (cfg.fsType == "zfs") "zfs-import-${zfsPool}.service"
    ++ bcachefsUnlockUnits;
  extraRequires =
    deviceUnits
    ++ optional (cfg.fsType == "zfs") "zfs-import-${zfsPool}.service";

  # ---- bcachefs X-mount.subdir= in the initrd (see the drop-in below) ----------------------------
  initrdUtilLinuxVersion = config.boot.initrd.systemd.package.util-linux.version or null;
  needsForceMount2 = initrdUtilLinuxVersion == null || builtins.compareVersions initrdUtilLinuxVersion "2.40.2" < 0;
  subdirMounts = filter
    (fs: fs.fsType == "bcachefs" && utils.fsNeededForBoot fs && optionValue "X-mount.subdir=" fs != null)
    (attrValues config.fileSystems);
  initrdMountUnit = fs: "${utils.escapeSystemdPath ("/sysroot" + (if fs.mountPoint == "/" then "" else fs.mountPoint))}.mount";
  subdirDropins = lib.optionalAttrs needsForceMount2 (lib.listToAttrs (map
    (fs: lib.nameValuePair (initrdMountUnit fs) {
      overrideStrategy = "asDropin";
      text = ''
        [Mount]
        Environment=LIBMOUNT_FORCE_MOUNT2=always
      '';
    })
    subdirMounts));

  # ---- what impermanence, Home Manager and preservation declare as persisted -------------------
  # Each source yields { path; storage; } entries: the path on the root that is persisted, and the
  # persistent storage location it lives in (an entry's own persistentStoragePath when it overrides
  # its location's). vm-tests/nix-eval evaluates this against the real modules.
  normalize = p: let s = builtins.replaceStrings [ "//" ] [ "/" ] p; in if s == p then p else normalize s;
  userHome = name: config.users.users.${name}.home or "/home/${name}";
  entryOf = storage: path: { path = normalize path; storage = normalize storage; };

  # nix-community/impermanence, environment.persistence.<storage> (system and users.<name>).
  # Entries are attrsets with `directory`/`file` and the computed dirPath/filePath (home prefix
  # included for users.<name>); older versions and plain strings are handled too.
  hasImpermanence = options ? environment.persistence;
  impermanenceEntry = kind: home: loc: e:
    let
      path =
        if builtins.isString e then (if home != null then "${home}/${e}" else e)
        else if e ? "${kind}Path" then e."${kind}Path"
        else
          let h = if e.home or null != null then e.home else home;
          in if h != null then "${h}/${e.${if kind == "dir" then "directory" else "file"}}"
          else e.${if kind == "dir" then "directory" else "file"};
      storage = if builtins.isAttrs e && e.persistentStoragePath or null != null then e.persistentStoragePath else loc.persistentStoragePath;
    in entryOf storage path;
  locationEntries = home: loc:
    map (impermanenceEntry "dir" home loc) (loc.directories or [ ])
    ++ map (impermanenceEntry "file" home loc) (loc.files or [ ]);
  impermanenceEntries = optionals hasImpermanence (concatMap
    (loc: locationEntries null loc
      ++ concatMap (name: locationEntries (userHome name) (loc // loc.users.${name})) (builtins.attrNames (loc.users or { })))
    (filter (loc: loc.enable or true) (attrValues config.environment.persistence)));

  # Home Manager: home-manager.users.<name>.home.persistence.<storage>, from impermanence's Home
  # Manager module (today's: entries carry dirPath/filePath like the NixOS ones and the NixOS module
  # mounts them; before 2025: strings or { directory/file } relative to the home directory, and
  # the location name includes the home directory).
  hasHomeManager = options ? home-manager.users;
  homeManagerEntries = optionals hasHomeManager (concatMap
    (name:
      let
        hm = config.home-manager.users.${name};
        home = hm.home.homeDirectory or (userHome name);
      in
      concatMap (loc: locationEntries home loc)
        (filter (loc: loc.enable or true) (attrValues (hm.home.persistence or { }))))
    (builtins.attrNames config.home-manager.users));

  # nix-community/preservation: preservation.preserveAt.<storage> (directories, files, and
  # users.<name> whose entries its module already made absolute under the user's home); only
  # when preservation.enable.
  hasPreservation = options ? preservation.preserveAt;
  preservationEntries = optionals (hasPreservation && config.preservation.enable or false) (concatMap
    (loc:
      let
        storage = loc.persistentStoragePath or "/";
        one = e: entryOf storage (if builtins.isString e then e else e.directory or e.file);
        lists = l: map one (l.directories or [ ]) ++ map one (l.files or [ ]);
      in
      lists loc ++ concatMap lists (attrValues (loc.users or { })))
    (attrValues config.preservation.preserveAt));

  persistedEntries = impermanenceEntries ++ homeManagerEntries ++ preservationEntries;
  impermancePaths = lib.sort builtins.lessThan (unique (map (e: e.path) persistedEntries));
  persistentStorageRoots = unique (map (e: e.storage) persistedEntries);

  # The persistent storage locations declared (enabled environment.persistence.<storage> and
  # preservation.preserveAt.<storage>, even without entries) or used by an entry (its own
  # persistentStoragePath, Home Manager's home.persistence): `store` defaults to the one location
  # when there is exactly one; with several, there is no default (a warning asks for the option).
  declaredLocations =
    optionals hasImpermanence (map (loc: normalize loc.persistentStoragePath)
      (filter (loc: loc.enable or true) (attrValues config.environment.persistence)))
    ++ optionals (hasPreservation && config.preservation.enable or false)
      (map (loc: normalize (loc.persistentStoragePath or "/")) (attrValues config.preservation.preserveAt));
  storageLocations = lib.sort builtins.lessThan (unique (declaredLocations ++ persistentStorageRoots));
  defaultStore = if builtins.length storageLocations == 1 then head storageLocations else null;

  # The form `persist`, `lost` and `report` print configuration lines in: the module that declares
  # the persisted paths. impermanence when it is imported (unless it declares nothing and an enabled
  # preservation is used instead), preservation when it is imported and enabled, else plain
  # fileSystems bind mounts.
  usesPreservation = hasPreservation && config.preservation.enable or false;
  defaultPersistFormat =
    if hasImpermanence && (impermanenceEntries ++ homeManagerEntries != [ ] || !usesPreservation) then "impermanence"
    else if usesPreservation then "preservation"
    else "fstab";

  # What the binary's config parser accepts for `store` (src/config.rs store_path): an absolute
  # path, not "/", without "." or ".." components, on one line, without surrounding whitespace.
  storeProblem = s:
    let comps = filter (c: c != "") (splitString "/" s); in
    if !(hasPrefix "/" s) then "is not absolute"
    else if comps == [ ] then "is the root itself"
    else if builtins.elem "." comps || builtins.elem ".." comps then "has a \".\" or \"..\" component"
    else if builtins.match "[[:space:]].*|.*[[:space:]]" s != null || builtins.match ".*[\n\r].*" s != null then "has a line break or whitespace at an end"
    else null;

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
  # critical paths: absolute, one word each (the binary splits the value at whitespace).
  badCritical = filter (p: !(hasPrefix "/" p) || hasSpace p) cfg.critical;
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
  ++ map (p: "persist = ${p}") persistable
  ++ optional (cfg.store != null) "store = ${cfg.store}"
  ++ [ "persist_format = ${cfg.persistFormat}" ]
  ++ map (p: "critical = ${p}") (filter (p: !(builtins.elem p badCritical)) cfg.critical)) + "\n";

  # THE place where the binaries are chosen: the initrd unit runs the initrd build (rollback,
  # finish, check, list, gc, pin, baseline: no default features), the running system gets the full
  # tool (diff, restore, status too), which also runs `finish` after boot.
  initrdBin = "${cfg.initrdPackage}/bin/ephemeral-root";
  systemPackage = cfg.package;
  systemBin = "${systemPackage}/bin/ephemeral-root";
  # `ephemeral-root finish` after boot: seal the kept root, prune, and take the baseline (unless
  # baseline = false).
  finishExecStart = unit.finish.execStartFor systemBin + optionalString (!cfg.baseline) " --no-baseline";
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
          boot.ephemeralRoot: the persistent storage location ${path} (environment.persistence, home.persistence or preservation.preserveAt) is on the root
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
      description = ''
        The full ephemeral-root tool (default features: also diff, restore, status), for the running
        system: it is put into environment.systemPackages and runs `ephemeral-root finish` after boot.
        Its `initrd` attribute, when it has one, is the default of initrdPackage.'';
    };

    initrdPackage = mkOption {
      type = types.package;
      default = cfg.package.initrd or cfg.package;
      defaultText = literalExpression "config.boot.ephemeralRoot.package.initrd or config.boot.ephemeralRoot.package";
      description = ''
        The ephemeral-root build that goes into the initrd: a static binary built without default
        features (rollback, finish, check, list, gc, pin, baseline), copied into the initrd alone.
        nixos-module/package.nix gives it as the `initrd` attribute of the full package; a package
        without that attribute is used in the initrd as it is (the full tool works there too, it
        is only larger).'';
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
        every directory and file declared persistent by the modules that are imported:
        nix-community/impermanence's environment.persistence (system and users.<name>), Home
        Manager's home-manager.users.<name>.home.persistence, and nix-community/preservation's
        preservation.preserveAt.<path> (directories, files, users.<name>; when preservation.enable);
        else [ ]'';
      example = [ "/var/log" "/var/lib/nixos" "/etc/machine-id" ];
      description = ''
        Paths on the root that are persisted elsewhere (bind mounts, symlinks). `ephemeral-root diff`
        hides them. Written to the config file as `persist = …` lines (paths with whitespace cannot be
        written and are left out with a warning).'';
    };

    store = mkOption {
      type = types.nullOr types.str;
      default = defaultStore;
      defaultText = literalExpression ''
        the persistent storage location when exactly one is declared: impermanence's
        environment.persistence.<location> (with Home Manager's home.persistence and entries'
        own persistentStoragePath) or preservation's preservation.preserveAt.<location>;
        null when there is none or several (several also give a warning)'';
      example = "/persist";
      description = ''
        The persistent store as seen from the running system, written to the config file as
        `store = …`. `ephemeral-root persist PATH` copies PATH into <store>/PATH; `check` and `diff`
        compare persisted paths against it (hidden data under a bind mount, declared paths missing
        from it, stray entries in it). With several storage locations set it to the one `persist`
        should copy into (the checks then look for every persisted path in that one). null: no
        `store =` line; `persist` then needs --store and the checks are skipped with a note.'';
    };

    persistFormat = mkOption {
      type = types.enum [ "impermanence" "preservation" "fstab" ];
      default = defaultPersistFormat;
      defaultText = literalExpression ''
        "impermanence" when nix-community/impermanence is imported (unless it declares nothing and
        an enabled nix-community/preservation does), "preservation" when preservation is imported
        and enabled, else "fstab"'';
      description = ''
        The form in which `ephemeral-root persist`, `lost` and `report` print the configuration lines
        that keep a path (`persist_format = …` in the config file): impermanence's
        environment.persistence, preservation's preservation.preserveAt, or plain fileSystems bind
        mounts.'';
    };

    critical = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/etc/secrets/initrd/ssh_host_ed25519_key" "/var/lib/sbctl/keys" ];
      description = ''
        Persisted paths whose absence from the store is an error (`ephemeral-root check` exits
        non-zero, before the reboot that would lose them), on top of those the tool always treats as
        critical (/etc/machine-id, ssh host keys, files under /boot, files named like a key or
        keyfile). Written as `critical = …` lines; each must be absolute and without whitespace.'';
    };

    baseline = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether `ephemeral-root finish` (ephemeral-root-finish.service, after multi-user.target) also
        takes the baseline, a read-only snapshot of the fresh root, so `ephemeral-root diff` shows
        only what accumulated while the system ran. false: `finish --no-baseline` (it still seals
        the kept root and prunes old roots).'';
    };

    metrics = {
      enable = mkEnableOption ''
        writing `ephemeral-root status --prometheus` (root age, old roots, the last rollback's
        result, unpersisted, hidden and missing state) for node-exporter's textfile collector, on a
        timer (ephemeral-root-metrics.timer). Point node-exporter at the directory:
        services.prometheus.exporters.node.enabledCollectors = [ "textfile" ]; and
        extraFlags = [ "--collector.textfile.directory=<directory>" ]; alert rules are in
        contrib/prometheus/ephemeral-root.rules.yml'';

      directory = mkOption {
        type = types.path;
        default = "/var/lib/prometheus-node-exporter-text-files";
        description = ''
          node-exporter's textfile directory (`--collector.textfile.directory`). The metrics go to
          <directory>/ephemeral-root.prom, written to a temporary name there and renamed into place,
          so the collector never reads half a file.'';
      };

      interval = mkOption {
        type = types.str;
        default = "15min";
        example = "5min";
        description = ''
          How often the metrics are written (systemd.time(7) span; the first time 2 minutes after
          boot). `status` walks the root unless a btrfs baseline makes it cheap: keep this at minutes.'';
      };
    };

    initrdUnits = mkOption {
      type = types.listOf types.str;
      readOnly = true;
      internal = true;
      description = "Names of the boot.initrd.systemd.units this module defines (the service and its drop-ins); read by vm-tests/nix-eval.";
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
      boot.ephemeralRoot.initrdUnits = [ "ephemeral-root.service" ] ++ builtins.attrNames subdirDropins;

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
        {
          # nixos/modules/tasks/filesystems/zfs.nix imports in the initrd only the pools of
          # neededForBoot filesystems (the root's pool among them), and the binary renames the old
          # root into the snapshots location and clones new roots from blank: one pool, the root's.
          assertion = cfg.fsType != "zfs" || (poolOf cfg.snapshots == zfsPool && (cfg.blank == null || poolOf cfg.blank == zfsPool));
          message = ''
            boot.ephemeralRoot: ${concatStringsSep " and " (optional (poolOf cfg.snapshots != zfsPool) "snapshots (\"${cfg.snapshots}\", pool ${poolOf cfg.snapshots})" ++ optional (cfg.blank != null && poolOf cfg.blank != zfsPool) "blank (\"${toString cfg.blank}\", pool ${poolOf (toString cfg.blank)})")}
            must be in the root's pool ${zfsPool}: the initrd imports only the pools of neededForBoot
            filesystems, and a dataset can only be renamed or cloned within its pool.
            Use datasets of ${zfsPool}, e.g. snapshots = "${zfsPool}/local/snapshots"; blank = "${zfsPool}/local/blank@blank";'';
        }
        {
          assertion = cfg.fsType != "zfs" || cfg.blank == null || builtins.match "[^@/][^@]*@[^@/]+" cfg.blank != null;
          message = ''
            boot.ephemeralRoot: on ZFS, blank must be a snapshot (dataset@snapshot), e.g.
            "${zfsPool}/local/blank@blank"; got "${toString cfg.blank}".'';
        }
        {
          assertion = cfg.store == null || storeProblem cfg.store == null;
          message = ''
            boot.ephemeralRoot.store = "${toString cfg.store}" ${toString (if cfg.store == null then "" else storeProblem cfg.store)}: give the persistent store as
            an absolute path on the running system, e.g. boot.ephemeralRoot.store = "/persist";'';
        }
        {
          assertion = cfg.store == null || storeProblem cfg.store != null
            || (let fs = mountOf cfg.store; in fs != null && fs.mountPoint != "/");
          message = ''
            boot.ephemeralRoot.store = "${toString cfg.store}" is on the root filesystem, which every boot erases:
            what `ephemeral-root persist` copies there would be lost at the next boot. Point it at the
            persistent filesystem's mount point, e.g. "/persist" with fileSystems."/persist" declared.'';
        }
        {
          assertion = badCritical == [ ];
          message = ''
            boot.ephemeralRoot.critical: ${concatStringsSep ", " (map (p: "\"${p}\"") badCritical)} must be absolute paths without
            whitespace, as they appear on the running system (e.g. "/etc/secrets/initrd/ssh_host_ed25519_key").'';
        }
      ] ++ persistAssertions;

      warnings = optional (zfsVersion != null && !zfsVersions.supported zfsVersion) ''
        boot.ephemeralRoot: OpenZFS ${zfsVersion} (boot.zfs.package) is not one this ephemeral-root knows
        the kernel interface of (${zfsVersions.text}): the initrd step will refuse to run and the
        machine will boot its old root without erasing it. Use a supported boot.zfs.package or an
        ephemeral-root release that supports ${zfsVersion}.''
      ++ optional (cfg.store == null && builtins.length storageLocations > 1) ''
        boot.ephemeralRoot: several persistent storage locations are declared (${concatStringsSep ", " storageLocations}),
        so there is no default store: `ephemeral-root persist` needs --store and `check` does not compare
        persisted paths with a store. Set boot.ephemeralRoot.store to the one to copy into, e.g.
          boot.ephemeralRoot.store = "${head storageLocations}";''
      ++ optional (unpersistable != [ ]) ''
        boot.ephemeralRoot: persistent paths with whitespace cannot be written to ${unit.configPath} and are
        not hidden by `ephemeral-root diff`: ${concatStringsSep ", " unpersistable}'';

      # --- the initrd ------------------------------------------------------------------------------
      boot.initrd.systemd.storePaths = [ initrdBin ];
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
          ExecStart = unit.execStartFor initrdBin;
        };
      };

      # --- the running system ----------------------------------------------------------------------
      environment.etc.${etcName}.text = configText;
      environment.systemPackages = [ systemPackage ];

      # `ephemeral-root finish`: the work that need not happen before sysroot.mount (seal the root
      # that the initrd step moved aside as .kept.<name>, delete retired roots, prune by `keep`, take
      # the baseline), rendered from the generic initrd/ephemeral-root-finish.service. If it never
      # runs, the next boot's rollback does the same work after its own (docs/protocol.md).
      #
      # Two NixOS additions, so that it runs once per boot: every `nixos-rebuild switch` starts all
      # active targets again (switch-to-configuration: "Start all active targets"), which would run
      # a finished oneshot unit wanted by multi-user.target once more, and restarts changed units
      # (a new package is a changed ExecStart). Running `finish` again mid-session would take the
      # baseline again, and `diff` would lose what changed between boot and the switch.
      # RemainAfterExit keeps the unit active after it ran; restartIfChanged = false leaves it
      # alone on a switch. `systemctl restart ephemeral-root-finish` runs it again by hand.
      systemd.services.ephemeral-root-finish = {
        description = unit.finish.description;
        wantedBy = unit.finish.wantedBy;
        after = unit.finish.after;
        before = unit.finish.before;
        wants = unit.finish.wants;
        requires = unit.finish.requires;
        unitConfig = unit.finish.unitConfig;
        serviceConfig = unit.finish.serviceConfig // {
          ExecStart = finishExecStart;
          RemainAfterExit = true;
        };
        restartIfChanged = false;
      };
    }

    (mkIf cfg.metrics.enable {
      # `status --prometheus` into <directory>/ephemeral-root.prom for node-exporter's textfile
      # collector: written beside it under a name the collector ignores (not *.prom), then renamed
      # over it, so a scrape sees the old file or the new one, never a partial one; a failed run
      # leaves the previous file (whose age node_textfile_mtime_seconds shows) and fails the unit.
      systemd.services.ephemeral-root-metrics = {
        description = "Write ephemeral-root metrics for node-exporter's textfile collector";
        after = [ "ephemeral-root-finish.service" ];
        serviceConfig = {
          Type = "oneshot";
          UMask = "0022";
          Nice = 19;
          IOSchedulingClass = "idle";
        };
        script = ''
          set -eu
          dir=${escapeShellArg cfg.metrics.directory}
          mkdir -p "$dir"
          tmp="$dir/.ephemeral-root.prom.$$"
          trap 'rm -f "$tmp"' EXIT
          ${systemBin} status --prometheus --config ${unit.configPath} > "$tmp"
          mv -f "$tmp" "$dir/ephemeral-root.prom"
        '';
      };
      systemd.timers.ephemeral-root-metrics = {
        description = "Write ephemeral-root metrics periodically";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = "2min";
          OnUnitActiveSec = cfg.metrics.interval;
        };
      };
    })

    (mkIf (subdirDropins != { }) {
      # util-linux 2.39.0 to 2.40.1 (libmount's fd-based mount API) skip X-mount.subdir= when a
      # mount.<type> helper runs: hook_subdir.c finds no tree fd (EBADF) and the whole filesystem
      # ends up on the mount point (util-linux#2834). The NixOS initrd has mount.bcachefs in /sbin,
      # so every bcachefs mount with X-mount.subdir= is hit, /sysroot and the others alike.
      # Fixed by util-linux PR #3075 (commit 2a684833, backported as c399bc79), first released in
      # 2.40.2. LIBMOUNT_FORCE_MOUNT2=always makes libmount use mount(2), whose subdir path works.
      # A drop-in (units.<name>.overrideStrategy = "asDropin": /etc/systemd/system/<name>.d/
      # overrides.conf inside the units directory); a contents entry below /etc/systemd/system
      # would break the initrd build (that directory is one link into the store).
      boot.initrd.systemd.units = subdirDropins;
    })
  ]);
}
