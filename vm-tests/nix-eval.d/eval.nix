# Evaluated by vm-tests/nix-eval (nix-instantiate --eval --strict --json, and nix-instantiate -A).
#   nixpkgs: a nixpkgs tree; repo: this repository (a copy with Cargo.lock);
#   impermanence, preservation, homeManager: optional checkouts of those projects (the real modules);
#   module: the NixOS module to evaluate (default: repo's; nix-eval points it at an older copy to show
#   that a check fails on it).
{ nixpkgs, repo, impermanence ? null, preservation ? null, homeManager ? null, module ? null, zfsVersionsToCheck ? "[]", system ? "x86_64-linux" }:
let
  pkgs = import nixpkgs { inherit system; config = { }; overlays = [ ]; };
  inherit (pkgs) lib;

  # ---- shims: the smallest additions that let today's impermanence and preservation evaluate on an
  # older nixpkgs. Each is added only when nixpkgs lacks it (README.md, "NixOS": which and why).
  # lib.modules.importApply (nixpkgs 24.11): today's impermanence builds its submodules with it.
  # lib.types.attrsWith (nixpkgs 25.05): preservation's attribute sets; only elemType and lazy
  #   change the merge semantics, placeholder only changes documentation.
  # (conditions on the original lib: the extension's attribute names must not depend on `prev`)
  shimmedLib = lib.extend (final: prev:
    lib.optionalAttrs (!(lib.modules ? importApply)) {
      modules = prev.modules // {
        importApply = modulePath: staticArg: final.setDefaultModuleLocation modulePath (import modulePath staticArg);
      };
      importApply = final.modules.importApply;
    }
    // lib.optionalAttrs (!(lib.types ? attrsWith)) {
      types = prev.types // {
        attrsWith = { elemType, lazy ? false, placeholder ? "name" }:
          if lazy then prev.types.lazyAttrsOf elemType else prev.types.attrsOf elemType;
      };
    });
  shims = lib.attrNames (lib.filterAttrs (_: v: v) {
    "lib.importApply, lib.modules.importApply" = !(lib.modules ? importApply);
    "lib.types.attrsWith" = !(lib.types ? attrsWith);
    "boot.initrd.systemd.tmpfiles (option declared, value ignored)" = needsTmpfilesShim;
  });
  # boot.initrd.systemd.tmpfiles (nixpkgs 24.11): preservation writes its initrd tmpfiles rules there.
  # On 24.05 the option is declared and its value ignored: nothing checked here reads it.
  needsTmpfilesShim = preservation != null && lib.versionOlder lib.version "24.11";
  tmpfilesShim = { lib, ... }: {
    options.boot.initrd.systemd.tmpfiles.settings = lib.mkOption {
      type = lib.types.attrsOf (lib.types.attrsOf (lib.types.attrsOf lib.types.anything));
      default = { };
      description = "nix-eval shim for nixpkgs < 24.11 (value ignored)";
    };
  };

  configs = import ./configs.nix {
    inherit lib repo impermanence preservation homeManager;
    module = if module == null then repo + "/nixos-module" else module;
    extraModules = lib.optional needsTmpfilesShim tmpfilesShim;
  };

  evalConfig = m: import (nixpkgs + "/nixos/lib/eval-config.nix") {
    inherit system;
    lib = shimmedLib;
    modules = [ m ];
  };

  failedAssertions = config: map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);

  # boot.initrd.systemd.storePaths entries: strings (24.05) or { source, target, ... } (24.11 and
  # later, where contents are folded into storePaths too).
  storeEntry = p:
    if builtins.isAttrs p && p ? source
    then { object = toString p.source; symlink = if p.target or null == null then null else toString p.target; enable = p.enable or true; }
    else { object = toString p; symlink = null; enable = true; };

  # The two builds of nixos-module/package.nix, as the module's default `package` makes them: the
  # full tool and its `initrd` attribute (no default features). The checks compare what the samples
  # put into the initrd and the system against these, not against the module's own options.
  # (With an older package.nix that has no `initrd` attribute, the initrd build is null: the checks
  # that need it fail.)
  builtPackages =
    let full = pkgs.pkgsStatic.callPackage (repo + "/nixos-module/package.nix") { };
    in { inherit full; initrd = full.initrd or null; };

  # Fixed packages for the rendered files (vm-tests/nixos-rendered): their store paths depend
  # neither on this repository's sources nor on nixpkgs, so the committed files change only when
  # what the module renders changes. Never built (the builder fails). The full tool carries the
  # initrd build as `initrd`, as package.nix's does.
  placeholder = name: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" "echo placeholder for vm-tests/nixos-rendered, never built; exit 1" ];
  };
  renderInitrdPackage = placeholder "ephemeral-root-initrd";
  renderPackage = placeholder "ephemeral-root" // { initrd = renderInitrdPackage; };

  packagesInfo = expected: {
    full = outPathOf expected.full;
    initrd = if expected.initrd == null then null else outPathOf expected.initrd;
    # `cargo build --no-default-features` for the initrd build only (buildRustPackage's
    # buildNoDefaultFeatures becomes the derivation attribute cargoBuildNoDefaultFeatures).
    fullNoDefaultFeatures = expected.full.cargoBuildNoDefaultFeatures or null;
    initrdNoDefaultFeatures = if expected.initrd == null then null else expected.initrd.cargoBuildNoDefaultFeatures or null;
    # the names of the build inputs (the rustc wrapper's carries the compiler's version)
    fullBuildInputs = map (d: d.name or "") (expected.full.nativeBuildInputs or [ ]);
    initrdBuildInputs = if expected.initrd == null then [ ] else map (d: d.name or "") (expected.initrd.nativeBuildInputs or [ ]);
  };

  outPathOf = p: if builtins.isAttrs p && p ? outPath then toString p.outPath else toString p;

  describeGood = name: m: describeWith builtPackages name m;
  describeWith = expected: name: m:
    let
      c = (evalConfig m).config;
      initrd = c.boot.initrd.systemd;
      unitName = "ephemeral-root.service";
      # (an older module has no initrdUnits option: then the service only)
      ours = c.boot.ephemeralRoot.initrdUnits or [ unitName ];
      finishName = "ephemeral-root-finish.service";
      systemPackagePaths = map outPathOf c.environment.systemPackages;
    in
    {
      failedAssertions = failedAssertions c;
      warnings = c.warnings;
      unitText = initrd.units.${unitName}.text;
      unitWantedBy = initrd.units.${unitName}.wantedBy;
      unitRequiredBy = initrd.units.${unitName}.requiredBy;
      initrdConf = initrd.contents."/etc/ephemeral-root.conf".text;
      etcConf = c.environment.etc."ephemeral-root.conf".text;
      configText = c.boot.ephemeralRoot.configText;
      # The binaries the checks expect: the initrd build in the initrd, the full tool in the system.
      initrdBinary = if expected.initrd == null then null else "${expected.initrd}/bin/ephemeral-root";
      systemBinary = "${expected.full}/bin/ephemeral-root";
      packages = packagesInfo expected;
      storePaths = map (p: (storeEntry p).object) initrd.storePaths;
      binDirs = map (p: "${lib.getBin p}/bin") initrd.initrdBin ++ lib.attrValues initrd.extraBin;
      # What make-initrd-ng receives: contents (24.05: a separate list) and storePaths.
      initrdEntries =
        lib.mapAttrsToList (_: v: { object = toString v.source; symlink = toString v.target; enable = v.enable; }) initrd.contents
        ++ map storeEntry initrd.storePaths;
      fullInSystemPackages = builtins.elem (outPathOf expected.full) systemPackagePaths;
      initrdInSystemPackages = expected.initrd != null && builtins.elem (outPathOf expected.initrd) systemPackagePaths;
      # The system units whose name mentions ephemeral-root (the finish service, and no other).
      systemUnitNames = builtins.filter (n: lib.hasPrefix "ephemeral-root" n) (builtins.attrNames c.systemd.units);
      finishUnit = if c.systemd.units ? ${finishName} then {
        text = c.systemd.units.${finishName}.text;
        wantedBy = c.systemd.units.${finishName}.wantedBy;
        enable = c.systemd.units.${finishName}.enable;
      } else null;
      baselineOption = c.boot.ephemeralRoot.baseline;
      # boot.ephemeralRoot.metrics (an older module has none: reported as off).
      metrics = let
        m = c.boot.ephemeralRoot.metrics or { enable = false; directory = null; interval = null; };
        svc = c.systemd.services.ephemeral-root-metrics or null;
        tmr = c.systemd.timers.ephemeral-root-metrics or null;
      in {
        inherit (m) enable directory interval;
        script = if svc == null then null else svc.script;
        serviceType = if svc == null then null else svc.serviceConfig.Type or null;
        timer = if tmr == null then null else { inherit (tmr) wantedBy timerConfig; };
      };
      # Every initrd unit the module defines (the service and the drop-ins), as generateUnits sees them.
      ourUnits = lib.genAttrs ours (n:
        let u = initrd.units.${n}; in {
          text = u.text;
          overrideStrategy = u.overrideStrategy or "asDropinIfExists";
          wantedBy = u.wantedBy or [ ];
          requiredBy = u.requiredBy or [ ];
          upheldBy = u.upheldBy or [ ];
          aliases = u.aliases or [ ];
          enable = u.enable;
        });
      initrdUnitNames = builtins.attrNames initrd.units;
      fstab = initrd.managerEnvironment.SYSTEMD_SYSROOT_FSTAB.text or null;
      managerEnvironmentKeys = builtins.attrNames initrd.managerEnvironment;
      crypttab = initrd.contents."/etc/crypttab".source.text or null;
      kernelParams = c.boot.kernelParams;
      utilLinuxVersion = initrd.package.util-linux.version or null;
      systemdVersion = initrd.package.version or null;
      zfsVersion = if c.boot.ephemeralRoot.fsType == "zfs" then c.boot.zfs.package.version else null;
      options = {
        inherit (c.boot.ephemeralRoot) fsType device root snapshots blank keep mode failureAction persistentPaths;
        # (an older module has none of these: "(no option)")
        store = c.boot.ephemeralRoot.store or "(no option)";
        persistFormat = c.boot.ephemeralRoot.persistFormat or "(no option)";
        critical = c.boot.ephemeralRoot.critical or "(no option)";
      };
    };

  describeBad = _: bad:
    let c = (evalConfig bad.config).config;
    in { inherit (bad) expect; failedAssertions = failedAssertions c; warnings = c.warnings; };

  describeWarn = _: w:
    let c = (evalConfig w.config).config;
    in { inherit (w) expect; failedAssertions = failedAssertions c; warnings = c.warnings; };

  # Samples for the persistence keys of the config file (store, persist_format, critical).
  describeStore = _: t:
    let c = (evalConfig t.config).config;
    in {
      inherit (t) conf;
      warn = t.warn or null;
      failedAssertions = failedAssertions c;
      warnings = c.warnings;
      configText = c.boot.ephemeralRoot.configText;
    };

  # The files the initrd holds for us, for vm-tests/nixos-rendered/<sample>: the same evaluation
  # with the fixed package above.
  # Rendered with the impermanence stand-in whatever IMPERMANENCE says, so the files do not depend on
  # which impermanence is at hand (impermanence up to 5f42ef6 adds its bind mounts of /var/log and
  # /var/lib/nixos to the initrd fstab; today's mounts them with units).
  renderConfigs = import ./configs.nix {
    inherit lib repo;
    module = if module == null then repo + "/nixos-module" else module;
  };
  describeRendered = name: m: describeWith { full = renderPackage; initrd = renderInitrdPackage; } name
    { imports = [ m ]; boot.ephemeralRoot.package = renderPackage; };
  renderSamples = [ "btrfs" "bcachefs" "bcachefs-two-devices" "luks-btrfs-emergency" ];
in
{
  # nix-instantiate --eval --strict --json -A report
  report = {
    generic = builtins.readFile (repo + "/initrd/ephemeral-root.service");
    genericFinish = builtins.readFile (repo + "/initrd/ephemeral-root-finish.service");
    packages = packagesInfo builtPackages;
    failClosed = builtins.readFile (repo + "/initrd/fail-closed.conf");
    good = lib.mapAttrs describeGood configs.good;
    bad = lib.mapAttrs describeBad configs.bad;
    warn = lib.mapAttrs describeWarn configs.warn;
    store = lib.mapAttrs describeStore configs.store;
    nixpkgsVersion = lib.version;
    inherit shims;
    modules = {
      impermanence = impermanence != null;
      preservation = preservation != null;
      homeManager = homeManager != null;
    };
    zfsRule = let z = import (repo + "/nixos-module/zfs-versions.nix") { inherit lib; }; in {
      inherit (z) major minors patchBelow excluded text;
    };
    tests = builtins.attrNames (import (repo + "/vm-tests/nixos") { inherit pkgs; });
  };

  # nix-instantiate --eval --strict --json -A rendered
  rendered = {
    nixpkgsVersion = lib.version;
    # the binary the rendered initrd unit runs: the initrd build's placeholder
    package = "${renderInitrdPackage}";
    samples = lib.genAttrs renderSamples (n: describeRendered n renderConfigs.good.${n});
  };

  # nix-instantiate --eval --strict --json -A zfsSupported --argstr zfsVersionsToCheck '["2.2.0", ...]'
  zfsSupported =
    let z = import (repo + "/nixos-module/zfs-versions.nix") { inherit lib; };
    in map (v: { version = v; supported = z.supported v; }) (builtins.fromJSON zfsVersionsToCheck);

  # nix-instantiate -A toplevel.<name> (must succeed for good, fail with the message for bad)
  toplevel = lib.mapAttrs (_: m: (evalConfig m).config.system.build.toplevel) configs.good
    // lib.mapAttrs' (n: b: lib.nameValuePair "bad-${n}" (evalConfig b.config).config.system.build.toplevel) configs.bad;

  # The NixOS VM tests' initrd services: their scripts, and what the initrd holds (storePaths and the
  # packages whose bin/ is linked into /bin), for the check that every store path a script runs is
  # copied into the initrd.
  testInitrds = lib.mapAttrs
    (_: t:
      let c = t.nodes.machine; i = c.boot.initrd.systemd; in {
        scripts = lib.mapAttrs (_: s: s.script or "") (lib.filterAttrs (n: s: lib.hasPrefix "test-" n && s.enable) i.services);
        storePaths = map (p: (storeEntry p).object) i.storePaths;
        binDirs = map (p: "${lib.getBin p}/bin") i.initrdBin ++ lib.attrValues i.extraBin;
      })
    (import (repo + "/vm-tests/nixos") { inherit pkgs; });

  # Synthetic storePaths of both shapes (24.05: strings; 24.11+: attrsets), for the normalizer check.
  storeEntryTest = map storeEntry [ "/nix/store/aaaa-x/bin/x" { source = "/nix/store/bbbb-y"; target = "/etc/y"; enable = true; } { source = "/nix/store/cccc-z"; target = null; } ];

  # nix-instantiate -A driver.<scenario>
  driver = lib.mapAttrs (_: t: t.driver) (import (repo + "/vm-tests/nixos") { inherit pkgs; });

  # nix-instantiate -A package / -A packageInitrd
  package = builtPackages.full;
  packageInitrd = builtPackages.initrd;
}
