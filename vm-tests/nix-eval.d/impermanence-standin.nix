# A stand-in for nix-community/impermanence's `environment.persistence` option, with the same shape
# after merging: locations with `enable`, `persistentStoragePath`, `directories`/`files` coerced from
# strings to attrsets with `directory`/`file` and the computed `dirPath`/`filePath`, and `users.<name>`
# whose entries are relative to the user's home. Used when IMPERMANENCE is not set; with
# IMPERMANENCE=/path/to/impermanence nix-eval imports the real module instead.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  entry = kind: home: types.coercedTo types.str (p: { ${kind} = p; }) (types.submodule ({ config, ... }: {
    freeformType = types.attrsOf types.anything;
    options.${kind} = mkOption { type = types.str; };
    options.home = mkOption { type = types.nullOr types.str; default = home; };
    options."${if kind == "directory" then "dir" else "file"}Path" = mkOption {
      type = types.str;
      default = if home == null then config.${kind} else "${home}/${config.${kind}}";
    };
  }));
  lists = home: {
    directories = mkOption { type = types.listOf (entry "directory" home); default = [ ]; };
    files = mkOption { type = types.listOf (entry "file" home); default = [ ]; };
  };
  users = config.users.users;
in
{
  options.environment.persistence = mkOption {
    default = { };
    type = types.attrsOf (types.submodule ({ name, ... }: {
      options = lists null // {
        enable = mkOption { type = types.bool; default = true; };
        persistentStoragePath = mkOption { type = types.str; default = name; };
        hideMounts = mkOption { type = types.bool; default = false; };
        users = mkOption {
          default = { };
          type = types.attrsOf (types.submodule ({ name, ... }: {
            options = lists (users.${name}.home or "/home/${name}");
          }));
        };
      };
    }));
  };
}
