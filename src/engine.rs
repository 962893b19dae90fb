//! The commands: settings in, backend opened, plan made, plan printed or executed, result logged.

use crate::backend::btrfs::Btrfs;
use crate::backend::{Backend, Inventory};
use crate::cli::{Cli, Command};
use crate::config::{self, FsType, Mode, Settings};
use crate::error::{Context, Error, Result};
use crate::plan::{self, Plan, PlanError, Request, Step};
use crate::{cmdline, fault, json, mounts, probe, timefmt};
use std::time::Instant;

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Where the last rollback leaves its record (kept across switch-root: systemd carries /run over).
pub fn state_dir() -> String {
    std::env::var("EPHEMERAL_ROOT_STATE_DIR").unwrap_or_else(|_| mounts::RUN_DIR.to_string())
}

pub fn run(cli: Cli) -> Result<()> {
    let command = cli.command.clone().unwrap_or(Command::Help);
    match command {
        Command::Help => {
            print!("{}", crate::cli::USAGE);
            return Ok(());
        }
        Command::Version => {
            println!("ephemeral-root {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::FaultPoints => {
            if !fault::ENABLED {
                return Err(Error::Usage(
                    "this build has no fault injection (cargo feature fault-injection)".into(),
                ));
            }
            for p in fault::POINTS {
                println!("{p}");
            }
            return Ok(());
        }
        _ => {}
    }
    let (file, path) = config::load(cli.config.as_deref()).map_err(Error::Usage)?;
    let s = config::merge(cli.settings.clone(), file, path);
    s.check_layout().map_err(Error::Usage)?;
    match command {
        Command::Rollback => rollback(&cli, &s),
        Command::List => list(&cli, &s),
        Command::Gc => gc(&cli, &s),
        Command::Pin(n) => pin(&s, &n, true),
        Command::Unpin(n) => pin(&s, &n, false),
        Command::Check => check(&s),
        Command::Diff(old) => crate::diff::run(&cli, &s, old.as_deref()),
        Command::Baseline => crate::diff::baseline(&cli, &s),
        Command::Restore { old_root, path } => {
            // restore still takes the path as text (until it handles names as bytes).
            let path = path.to_str().ok_or_else(|| {
                Error::Usage(format!(
                    "restore of a path that is not UTF-8 (\"{}\") is not supported yet",
                    crate::escape::cut(path.as_os_str().as_encoded_bytes())
                ))
            })?;
            crate::restore::run(&cli, &s, &old_root, path)
        }
        Command::Status => crate::status::run(&cli, &s),
        Command::Help | Command::Version | Command::FaultPoints => Ok(()),
    }
}

/// Find the device when none is configured: the filesystem mounted at `/`.
fn device_for(s: &Settings) -> Result<String> {
    if let Some(d) = &s.device {
        return Ok(d.clone());
    }
    let mi = mounts::read_mountinfo()?;
    if let Some(m) = mi
        .iter()
        .rev()
        .find(|m| m.mount_point == "/" && (m.fstype == "btrfs" || m.fstype == "bcachefs"))
    {
        return Ok(m.source.split(':').next().unwrap_or(&m.source).to_string());
    }
    Err(Error::Usage(
        "no device given and / is not on btrfs or bcachefs; pass --device or set `device =` in /etc/ephemeral-root.conf".into(),
    ))
}

/// Probe the device, enter a private mount namespace and open the backend.
pub fn open_backend(s: &Settings) -> Result<Box<dyn Backend>> {
    if s.fstype == Some(FsType::Zfs) {
        return crate::backend::zfs::open_backend(s);
    }
    let device = device_for(s)?;
    let (members, sup) = probe::resolve_devices(&device)?;
    let found = sup.as_ref().map(|x| x.fstype);
    let fstype = match (s.fstype, found) {
        (_, None) => {
            return Err(Error::Refused(format!(
                "{device} does not hold a btrfs or bcachefs filesystem (no superblock found); check --device / `device =`"
            )))
        }
        (Some(want), Some(got)) if want != got => {
            return Err(Error::Refused(format!(
                "{device} holds {got}, but fstype is {want}; fix --fstype / `fstype =` or the device"
            )))
        }
        (_, Some(got)) => got,
    };
    mounts::enter_private_namespace()?;
    match fstype {
        FsType::Btrfs => Ok(Box::new(Btrfs::open(
            &members[0],
            &members,
            &s.root,
            &s.snapshots,
            s.blank.as_deref(),
        )?)),
        FsType::Bcachefs => crate::backend::bcachefs::open_backend(&members, s),
        FsType::Zfs => Err(Error::Usage(
            "the zfs backend is not available in this build yet".into(),
        )),
    }
}

fn plan_error(e: PlanError) -> Error {
    match e {
        PlanError::Refused(m) => Error::Refused(m),
        PlanError::Config(m) => Error::Usage(m),
    }
}

/// Run every step, logging each before it starts.
pub fn execute(b: &mut dyn Backend, plan: &Plan) -> Result<()> {
    let n = plan.steps.len();
    for (i, step) in plan.steps.iter().enumerate() {
        log::info!("step {}/{n}: {step}", i + 1);
        fault::point(step.fault_point());
        let r = match step {
            Step::CreateSnapshotsLocation => b.create_snapshots_location(),
            Step::Discard(x) => b.discard(x),
            Step::BuildNewRoot(src) => b.build_new_root(src),
            Step::KeepRoot(name) => b.keep_root(name),
            Step::MoveRootAside(name) => b.move_root_aside(name),
            Step::SealOldRoot(name) => b.seal_old_root(name),
            Step::RetireRoot(_) => b.retire_root(),
            Step::ActivateNewRoot => b.activate_new_root(),
            Step::DeleteRetired(x) => b.delete_retired(x),
            Step::DeleteOldRoot(x, _) => b.delete_old_root(x),
            Step::Sync => b.sync(),
        };
        r.map_err(|e| prefix(e, &format!("step {}/{n} ({step})", i + 1)))?;
    }
    Ok(())
}

fn prefix(e: Error, p: &str) -> Error {
    match e {
        Error::Sys { what, source, hint } => Error::Sys {
            what: format!("{p}: {what}"),
            source,
            hint,
        },
        Error::Refused(m) => Error::Refused(format!("{p}: {m}")),
        Error::Usage(m) => Error::Usage(format!("{p}: {m}")),
        Error::Other(m) => Error::Other(format!("{p}: {m}")),
    }
}

pub fn print_plan(plan: &Plan) {
    for n in &plan.notes {
        println!("note: {n}");
    }
    if plan.steps.is_empty() {
        println!("nothing to do");
    }
    for (i, s) in plan.steps.iter().enumerate() {
        println!("{:>3}. {s}", i + 1);
    }
}

fn request<'a>(s: &'a Settings, mode: Mode, restore: Option<&'a str>) -> Request<'a> {
    Request {
        root_name: &s.root,
        mode,
        restore,
        blank: s.blank.as_deref(),
        policy: &s.keep,
        now: now(),
        utc_offset: s.timezone,
    }
}

fn rollback(cli: &Cli, s: &Settings) -> Result<()> {
    let started = Instant::now();
    let cmdline_text = match &cli.kernel_cmdline {
        Some(c) => c.clone(),
        None => std::fs::read("/proc/cmdline").unwrap_or_default(),
    };
    let k = cmdline::parse(&cmdline_text);
    for w in &k.warnings {
        log::warn!("{w}");
    }
    if k.skip {
        log::warn!(
            "rd.ephemeral_root=skip: leaving root {} untouched this boot",
            s.root
        );
        if cli.dry_run {
            return Ok(()); // a dry run writes nothing, not even the record
        }
        write_record(&Record {
            result: "skipped",
            mode: "skip",
            kept: None,
            error: None,
            ms: 0,
        });
        return Ok(());
    }
    let mode = k.force_mode.unwrap_or(s.mode);
    if let Some(m) = k.force_mode {
        log::info!("rd.ephemeral_root={m}: mode {m} for this boot");
    }
    let result = (|| -> Result<Option<String>> {
        let mut b = open_backend(s)?;
        let inv = b.inventory()?;
        log::info!(
            "{}: root {}, snapshots {}, mode {mode}, keep \"{}\"{}",
            inv.fs,
            s.root,
            s.snapshots,
            s.keep,
            k.restore
                .as_deref()
                .map(|r| format!(", restore {r}"))
                .unwrap_or_default()
        );
        let plan = plan::plan_rollback(&inv, &request(s, mode, k.restore.as_deref()))
            .map_err(plan_error)?;
        for n in &plan.notes {
            log::info!("{n}");
        }
        if cli.dry_run {
            print_plan(&plan);
            b.close()?;
            return Ok(None);
        }
        execute(b.as_mut(), &plan)?;
        b.close()?;
        Ok(plan.kept.clone())
    })();
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(kept) => {
            if !cli.dry_run {
                log::info!("rollback finished in {ms} ms");
                write_record(&Record {
                    result: "ok",
                    mode: &mode.to_string(),
                    kept: kept.as_deref(),
                    error: None,
                    ms,
                });
            }
            Ok(())
        }
        Err(e) => {
            if !cli.dry_run {
                write_record(&Record {
                    result: "failed",
                    mode: &mode.to_string(),
                    kept: None,
                    error: Some(&e.to_string()),
                    ms,
                });
            }
            Err(e)
        }
    }
}

struct Record<'a> {
    result: &'a str,
    mode: &'a str,
    kept: Option<&'a str>,
    error: Option<&'a str>,
    ms: u64,
}

fn write_record(r: &Record) {
    let dir = state_dir();
    let body = json::object(&[
        ("result", json::string(r.result)),
        ("mode", json::string(r.mode)),
        ("time", json::string(&timefmt::rfc3339(now()))),
        ("duration_ms", r.ms.to_string()),
        ("kept", json::opt_string(r.kept)),
        ("error", json::opt_string(r.error)),
    ]);
    let tmp = format!("{dir}/last-rollback.json.tmp");
    let res = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&tmp, format!("{body}\n")))
        .and_then(|_| std::fs::rename(&tmp, format!("{dir}/last-rollback.json")));
    if let Err(e) = res {
        log::warn!("could not write {dir}/last-rollback.json: {e}");
    }
}

fn sorted_old_roots(inv: &Inventory) -> Vec<&crate::backend::OldRoot> {
    let mut v: Vec<_> = inv.old_roots.iter().collect();
    v.sort_by(|a, b| (a.time, a.seq).cmp(&(b.time, b.seq)));
    v
}

fn list(cli: &Cli, s: &Settings) -> Result<()> {
    let mut b = open_backend(s)?;
    let inv = b.inventory()?;
    b.close()?;
    let v = sorted_old_roots(&inv);
    let newest = v.last().map(|o| o.name.clone());
    let t = now();
    if cli.json {
        let items: Vec<String> = v
            .iter()
            .map(|o| {
                json::object(&[
                    ("name", json::string(&o.name)),
                    ("time", json::string(&timefmt::rfc3339(o.time))),
                    ("pinned", o.pinned.to_string()),
                    ("newest", (Some(&o.name) == newest.as_ref()).to_string()),
                    ("readonly", o.readonly.to_string()),
                    (
                        "nested",
                        json::array(&o.nested.iter().map(|n| json::string(n)).collect::<Vec<_>>()),
                    ),
                ])
            })
            .collect();
        println!("{}", json::array(&items));
        return Ok(());
    }
    if v.is_empty() {
        println!("no old roots in {} yet", s.snapshots);
        return Ok(());
    }
    println!("{:<24} {:<20} {:>10}  {}", "NAME", "BEGAN (UTC)", "AGE", "");
    for o in &v {
        let mut flags = vec![];
        if o.pinned {
            flags.push("pinned".to_string());
        }
        if !o.nested.is_empty() {
            flags.push(format!("{} nested", o.nested.len()));
        }
        if Some(&o.name) == newest.as_ref() {
            flags.push("← newest".to_string());
        }
        println!(
            "{:<24} {:<20} {:>10}  {}",
            o.name,
            timefmt::rfc3339(o.time)
                .replace('T', " ")
                .trim_end_matches('Z'),
            timefmt::human_age(t - o.time),
            flags.join(", ")
        );
    }
    Ok(())
}

fn gc(cli: &Cli, s: &Settings) -> Result<()> {
    let mut b = open_backend(s)?;
    let inv = b.inventory()?;
    let plan = plan::plan_gc(&inv, &s.keep, now(), s.timezone);
    if cli.dry_run {
        for d in &plan.retention {
            match &d.keep {
                Some(r) => println!("keep   {}  ({r})", d.name),
                None => println!("prune  {}", d.name),
            }
        }
        print_plan(&plan);
        return b.close();
    }
    execute(b.as_mut(), &plan)?;
    let pruned = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::DeleteOldRoot(..)))
        .count();
    log::info!("gc: pruned {pruned} old root(s) with policy \"{}\"", s.keep);
    b.close()
}

fn pin(s: &Settings, name: &str, on: bool) -> Result<()> {
    let mut b = open_backend(s)?;
    let inv = b.inventory()?;
    if !inv.old_roots.iter().any(|o| o.name == name) {
        b.close()?;
        return Err(Error::Usage(format!(
            "old root {name:?} does not exist in {}; `ephemeral-root list` shows the names",
            s.snapshots
        )));
    }
    b.set_pinned(name, on)?;
    log::info!("{} old root {name}", if on { "pinned" } else { "unpinned" });
    b.close()
}

fn check(s: &Settings) -> Result<()> {
    println!(
        "config file:  {}",
        s.config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none; defaults)".into())
    );
    println!("root:         {}", s.root);
    println!("snapshots:    {}", s.snapshots);
    println!(
        "blank:        {}",
        s.blank.as_deref().unwrap_or("(none: new roots are empty)")
    );
    println!("keep:         {}", s.keep);
    println!("mode:         {}", s.mode);
    let mut b = open_backend(s)?;
    let mut inv = b.inventory()?;
    b.close()?;
    println!("filesystem:   {}", inv.fs);
    println!("old roots:    {}", inv.old_roots.len());
    let mut problems = 0;
    if let Some(at) = inv.root_mounted_at.take() {
        println!("note: root is mounted at {at}: rollback will refuse here and run in the initrd; showing what it would do there");
    }
    for r in &inv.refusals {
        println!("problem: {r}");
        problems += 1;
    }
    match plan::plan_rollback(&inv, &request(s, s.mode, None)) {
        Ok(p) => {
            println!("rollback would:");
            print_plan(&p);
        }
        Err(PlanError::Refused(m) | PlanError::Config(m)) => {
            if inv.refusals.is_empty() {
                println!("problem: {m}");
                problems += 1;
            }
        }
    }
    if problems > 0 {
        return Err(Error::Other(format!("check found {problems} problem(s)")));
    }
    println!("check: ok");
    Ok(())
}

#[allow(dead_code)]
fn _ctx_used() -> Result<()> {
    std::fs::metadata("/").map(|_| ()).ctx(|| "stat /")
}
