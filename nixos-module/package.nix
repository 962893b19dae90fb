# The ephemeral-root binary. Call it from pkgsStatic for the initrd (a static musl binary needs
# nothing else in the initrd):   pkgs.pkgsStatic.callPackage ./package.nix { }
{ lib, rustPlatform }:
let
  root = ../.;
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
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

  meta = {
    description = cargoToml.package.description;
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "ephemeral-root";
    platforms = lib.platforms.linux;
  };
}
