# The units, read from the generic ones: initrd/ephemeral-root.service is the single source of truth
# for the initrd unit's ordering, arguments and service settings (initrd/fail-closed.conf for
# failureAction = "emergency"); initrd/ephemeral-root-finish.service for the system unit that runs
# `ephemeral-root finish` after boot. The NixOS module only adds what depends on the configuration
# (the root device unit, zfs-import-<pool>.service, the bcachefs unlock unit; `--no-baseline` when
# baseline = false) and swaps /usr/bin for the store path. vm-tests/nix-eval checks both rendered
# units against the generic files with an independent parser.
{ lib }:
let
  strip = s:
    let m = builtins.match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" s;
    in if m == null then "" else builtins.head m;

  # INI-like unit file -> { Section = { Key = [ "value" ... ]; }; } (every occurrence kept, in order).
  parseUnitFile = file:
    let
      lines = map strip (lib.splitString "\n" (builtins.readFile file));
      step = acc: line:
        let
          section = builtins.match "[[]([A-Za-z]+)[]]" line;
          kv = builtins.match "([A-Za-z]+)[[:space:]]*=[[:space:]]*(.*)" line;
        in
        if line == "" || lib.hasPrefix "#" line || lib.hasPrefix ";" line then acc
        else if section != null then acc // { current = builtins.head section; }
        else if kv != null then
          let
            key = builtins.elemAt kv 0;
            value = strip (builtins.elemAt kv 1);
            sec = acc.sections.${acc.current} or { };
          in
          acc // {
            sections = acc.sections // {
              ${acc.current} = sec // { ${key} = (sec.${key} or [ ]) ++ [ value ]; };
            };
          }
        else throw "ephemeral-root: cannot parse line '${line}' in ${toString file}";
    in
    (builtins.foldl' step { current = "none"; sections = { }; } lines).sections;

  words = values: lib.concatMap (v: builtins.filter (w: w != "") (lib.splitString " " v)) values;
  last = values: lib.last values;

  listKeys = [ "After" "Before" "Wants" "Requires" "BindsTo" "Conflicts" "OnFailure" ];
  scalarSection = skip: sec: lib.mapAttrs (_: last) (removeAttrs sec skip);

  # One generic unit file as NixOS unit options.
  fromFile = file:
    let
      generic = parseUnitFile file;
      execStart = last generic.Service.ExecStart;
      execWords = words [ execStart ];
    in
    rec {
      inherit generic;
      description = last generic.Unit.Description;
      after = words (generic.Unit.After or [ ]);
      before = words (generic.Unit.Before or [ ]);
      wants = words (generic.Unit.Wants or [ ]);
      requires = words (generic.Unit.Requires or [ ]);
      wantedBy = words (generic.Install.WantedBy or [ ]);

      # [Unit] settings other than the dependency lists and Description (DefaultDependencies,
      # ConditionPathExists, Documentation, ...).
      unitConfig = scalarSection ([ "Description" ] ++ listKeys) generic.Unit;

      # "/usr/bin/ephemeral-root" and e.g. "rollback --config /etc/ephemeral-root.conf".
      execProgram = builtins.head execWords;
      execArgs = lib.concatStringsSep " " (builtins.tail execWords);
      execStartFor = bin: "${bin} ${execArgs}";

      # [Service] settings other than ExecStart (Type, RemainAfterExit, Nice, TimeoutStartSec...).
      serviceConfig = scalarSection [ "ExecStart" ] generic.Service;

      # Where the conf file lives (the --config argument), so the module writes it to the same path.
      configPath =
        let
          idx = lib.lists.findFirstIndex (w: w == "--config") null execWords;
        in
        if idx == null then "/etc/ephemeral-root.conf" else builtins.elemAt execWords (idx + 1);
    };

  initrdUnit = fromFile ../initrd/ephemeral-root.service;
  failClosed = parseUnitFile ../initrd/fail-closed.conf;
in
# The initrd unit at the top level; `finish` is the system unit.
initrdUnit // {
  inherit parseUnitFile failClosed;

  # The fail-closed drop-in, as unit settings (OnFailure=emergency.target, OnFailureJobMode=...).
  failClosedOnFailure = words (failClosed.Unit.OnFailure or [ ]);
  failClosedUnitConfig = scalarSection [ "OnFailure" ] (failClosed.Unit or { });

  finish = fromFile ../initrd/ephemeral-root-finish.service;
}
