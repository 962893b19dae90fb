# The ephemeral-root binaries, from pkgsStatic (a static musl binary needs nothing else in the
# initrd):   pkgs.pkgsStatic.callPackage ./package.nix { }
#
# The result is the full tool (default features: rollback, finish, check, list, gc, pin, baseline,
# and diff, restore, status), for the running system. Its `initrd` attribute is the initrd build
# (no default features: only rollback, finish, check, list, gc, pin, baseline), which the NixOS
# module puts into the initrd instead of the full tool.
#
# The initrd build here is the plain `--no-default-features` build. scripts/build-static --initrd
# also rebuilds the standard library for size (`-Z build-std`, `-C panic=immediate-abort`, through
# RUSTC_BOOTSTRAP=1) and gets under 512 KiB; that is not done in this Nix build (README, "NixOS":
# what it would need and why it is left out), so the NixOS initrd binary is the larger variant.
{ lib, rustPlatform, rustc, rustPackages_1_80 ? null }:
let
  root = ../.;
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);

  # Cargo refuses to build with a rustc older than Cargo.toml's rust-version. nixpkgs 24.05's
  # default rustc is 1.77.2; it also has rustPackages_1_80 (nixpkgs itself builds vaultwarden with
  # it), which is used then. Newer nixpkgs' default rustc is new enough.
  rustVersion = cargoToml.package.rust-version or "0";
  tooOld = version: lib.versionOlder version rustVersion;
  platform =
    if tooOld rustc.version && rustPackages_1_80 != null && !(tooOld rustPackages_1_80.rustc.version)
    then rustPackages_1_80.rustPlatform
    else rustPlatform;

  common = {
    version = cargoToml.package.version;

    # Only what cargo needs: edits to the module, the tests or the docs do not rebuild the binary.
    src = lib.fileset.toSource {
      inherit root;
      fileset = lib.fileset.unions [
        ../Cargo.toml
        ../Cargo.lock
        ../src
      ];
    };

    cargoLock.lockFile = ../Cargo.lock;

    # The unit and integration tests need loop devices, root and real filesystems; the project's CI
    # runs them (`.ci/run`). The build sandbox has none of that.
    doCheck = false;
  };

  meta = {
    description = cargoToml.package.description;
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "ephemeral-root";
    platforms = lib.platforms.linux;
  };

  # What runs in the initrd: `cargo build --no-default-features` (Cargo.toml: without `tools`).
  initrd = platform.buildRustPackage (common // {
    pname = "${cargoToml.package.name}-initrd";
    buildNoDefaultFeatures = true;
    meta = meta // {
      description = "${cargoToml.package.description} (initrd build: rollback, finish, check, list, gc, pin, baseline)";
    };
  });
in
platform.buildRustPackage (common // {
  pname = cargoToml.package.name;
  passthru = { inherit initrd; };
  inherit meta;
})
