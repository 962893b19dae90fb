# The OpenZFS versions whose ioctl layout the binary knows. The binary is the source of truth:
# src/zfs/ioctl.rs, `is_supported` (and the text SUPPORTED_VERSIONS); this is a copy of that rule for
# a build-time warning, kept in step by vm-tests/nix-eval, which reads both the Rust function and
# the version table of its `versions` unit test and checks this file against them.
{ lib }:
rec {
  major = 2;
  minors = [ 2 3 4 ];
  # x.y.99 are development snapshots: refused
  patchBelow = 99;
  # zfs-2.3.1 changed zfs_cmd_t (reverted in 2.3.2)
  excluded = [ "2.3.1" ];
  text = "2.2.x, 2.3.x except 2.3.1, and 2.4.x";

  # Leading X.Y.Z of a version string ("2.2.6", "2.3.0-rc5", "zfs-2.4.0-1", "v2.2.7"), or null; the
  # same parse as parse_module_version in src/zfs/ioctl.rs.
  parse = s:
    let
      trimmed = let m = builtins.match "[[:space:]]*([^[:space:]]*)[[:space:]]*" s; in if m == null then s else builtins.head m;
      noZfs = lib.removePrefix "zfs-" trimmed;
      t = if noZfs != trimmed then noZfs else lib.removePrefix "v" trimmed;
      m = builtins.match "([0-9]+)[.]([0-9]+)[.]([0-9]+)([^0-9.].*)?" t;
    in
    if m == null then null
    else { major = lib.toInt (builtins.elemAt m 0); minor = lib.toInt (builtins.elemAt m 1); patch = lib.toInt (builtins.elemAt m 2); };

  supported = s:
    let v = parse s;
    in v != null && v.major == major && builtins.elem v.minor minors && v.patch < patchBelow
      && !(builtins.elem "${toString v.major}.${toString v.minor}.${toString v.patch}" excluded);
}
