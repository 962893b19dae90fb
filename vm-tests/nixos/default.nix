# All NixOS VM test scenarios, as derivations (pkgs.testers.runNixOSTest). Used by the flake's
# `checks` and instantiated (not built) by vm-tests/nix-eval.
#   module: the NixOS module to test (the flake passes nixosModules.default; nix-eval ../../nixos-module)
{ pkgs, module ? ../../nixos-module }:
let
  scenarios = {
    btrfs = ./btrfs.nix;
    bcachefs = ./bcachefs.nix;
    zfs = ./zfs.nix;
    luks-btrfs = ./luks-btrfs.nix;
    audit = ./audit.nix;
    restore-cmdline = ./restore-cmdline.nix;
  };
in
builtins.mapAttrs (_: file: pkgs.testers.runNixOSTest (import file { inherit module; })) scenarios
