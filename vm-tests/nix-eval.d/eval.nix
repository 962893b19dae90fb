# Evaluated by vm-tests/nix-eval (nix-instantiate --eval --strict --json, and nix-instantiate -A).
#   nixpkgs: a nixpkgs tree; repo: this repository (a copy with Cargo.lock); impermanence: optional
{ nixpkgs, repo, impermanence ? null, system ? "x86_64-linux" }:
let
  pkgs = import nixpkgs { inherit system; config = { }; overlays = [ ]; };
  inherit (pkgs) lib;
  configs = import ./configs.nix { inherit repo impermanence; };

  evalConfig = module: import (nixpkgs + "/nixos/lib/eval-config.nix") {
    inherit system;
    modules = [ module ];
  };

  failedAssertions = config: map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);

  describeGood = _: module:
    let
      c = (evalConfig module).config;
      initrd = c.boot.initrd.systemd;
      unitName = "ephemeral-root.service";
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
      binary = "${c.boot.ephemeralRoot.package}/bin/ephemeral-root";
      storePaths = map toString initrd.storePaths;
      inSystemPackages = builtins.elem c.boot.ephemeralRoot.package c.environment.systemPackages;
      baselineUnit = c.systemd.units."ephemeral-root-baseline.service".text;
      baselineWantedBy = c.systemd.units."ephemeral-root-baseline.service".wantedBy;
      sysrootDropin = initrd.contents."/etc/systemd/system/sysroot.mount.d/ephemeral-root-bcachefs.conf".text or null;
      options = {
        inherit (c.boot.ephemeralRoot) fsType device root snapshots blank keep mode failureAction persistentPaths;
      };
    };

  describeBad = _: bad:
    let c = (evalConfig bad.config).config;
    in { inherit (bad) expect; failedAssertions = failedAssertions c; };
in
{
  # nix-instantiate --eval --strict --json -A report
  report = {
    generic = builtins.readFile (repo + "/initrd/ephemeral-root.service");
    failClosed = builtins.readFile (repo + "/initrd/fail-closed.conf");
    good = lib.mapAttrs describeGood configs.good;
    bad = lib.mapAttrs describeBad configs.bad;
    nixpkgsVersion = lib.version;
    tests = builtins.attrNames (import (repo + "/vm-tests/nixos") { inherit pkgs; });
  };

  # nix-instantiate -A toplevel.<name> (must succeed for good, fail with the message for bad)
  toplevel = lib.mapAttrs (_: m: (evalConfig m).config.system.build.toplevel) configs.good
    // lib.mapAttrs' (n: b: lib.nameValuePair "bad-${n}" (evalConfig b.config).config.system.build.toplevel) configs.bad;

  # nix-instantiate -A driver.<scenario>
  driver = lib.mapAttrs (_: t: t.driver) (import (repo + "/vm-tests/nixos") { inherit pkgs; });

  # nix-instantiate -A package
  package = pkgs.pkgsStatic.callPackage (repo + "/nixos-module/package.nix") { };
}
