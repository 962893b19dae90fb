{
  description = "ephemeral-root: keep the old root as a read-only snapshot and boot a fresh one (btrfs, bcachefs, ZFS) from the systemd initrd";

  # The module is written for nixos-unstable and checked against nixos-24.05 (vm-tests/nix-eval).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Static (musl) builds: the full tool, and as its `initrd` attribute the initrd build (no
      # default features), which the module copies into the initrd alone.
      staticPackage = pkgs: pkgs.pkgsStatic.callPackage ./nixos-module/package.nix { };
    in
    {
      packages = forAllSystems (pkgs: rec {
        ephemeral-root = staticPackage pkgs;
        ephemeral-root-initrd = ephemeral-root.initrd;
        default = ephemeral-root;
      });

      overlays.default = final: _prev: {
        ephemeral-root = staticPackage final;
      };

      # The module, with `package` defaulting to this flake's static build (and so `initrdPackage`
      # to its initrd build).
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nixos-module ];
        boot.ephemeralRoot.package = lib.mkDefault
          (self.packages.${pkgs.stdenv.hostPlatform.system}.default or (staticPackage pkgs));
      };
      nixosModules.ephemeral-root = self.nixosModules.default;

      # One NixOS VM test per scenario in vm-tests/nixos/ (each boots at least three times).
      #   nix build .#checks.x86_64-linux.btrfs -L
      checks = forAllSystems (pkgs:
        import ./vm-tests/nixos { inherit pkgs; module = self.nixosModules.default; });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            rust-analyzer
            btrfs-progs
            bcachefs-tools
            zfs
            util-linux
            cryptsetup
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
