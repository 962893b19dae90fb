# Evaluated by vm-tests/nix-eval (nix eval --impure --json) against a scratch copy of the repo whose
# flake.lock pins nixpkgs to path:$NIXPKGS (nix flake lock --override-input), so nothing is fetched.
{ repo, system ? "x86_64-linux" }:
let
  f = builtins.getFlake ("path:" + toString repo);
  nixpkgs = f.inputs.nixpkgs;
  overlaid = import nixpkgs.outPath { inherit system; overlays = [ f.overlays.default ]; };
  sample = nixpkgs.lib.nixosSystem {
    inherit system;
    modules = [
      f.nixosModules.default
      {
        boot.loader.grub.enable = false;
        boot.initrd.systemd.enable = true;
        system.stateVersion = "24.05";
        boot.ephemeralRoot.enable = true;
        fileSystems."/" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@root" ]; };
        fileSystems."/nix" = { device = "/dev/vda"; fsType = "btrfs"; options = [ "subvol=@nix" ]; };
      }
    ];
  };
in
{
  package = f.packages.${system}.default.drvPath;
  packageInitrd = (f.packages.${system}.ephemeral-root-initrd or null).drvPath or null;
  defaultInitrd = (f.packages.${system}.default.initrd or null).drvPath or null;
  overlay = overlaid.ephemeral-root.drvPath;
  devShell = f.devShells.${system}.default.drvPath;
  module = sample.config.system.build.toplevel.drvPath;
  # the module from the flake uses the flake's package
  modulePackage = sample.config.boot.ephemeralRoot.package.drvPath;
  moduleInitrdPackage = (sample.config.boot.ephemeralRoot.initrdPackage or null).drvPath or null;
  checks = builtins.mapAttrs (_: t: t.driver.drvPath) f.checks.${system};
}
