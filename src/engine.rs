//! The commands that change or inspect the layout: settings in, backend opened, state scanned,
//! plan made, plan printed or executed, result logged. `diff`, `restore` and `status` live in
//! their own modules (full build only).

use crate::backend::Backend;
use crate::cli::{Cli, Command};
use crate::config::{self, Mode, Settings};
use crate::error::{Error, Result};
use crate::lastrun::{self, LastRollback};
use crate::layout::Kind;
use crate::lock::{Mode as LockMode, Request as LockRequest};
use crate::protocol::plan::{self, Plan, PlanError, Request, Step};
use crate::protocol::{self, exec, State};
use crate::{clock, cmdline, fault, json, timefmt};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

pub fn run(cli: Cli) -> Result<()> {
    let command = cli.command.clone().unwrap_or(Command::Help);
    match command {
        Command::Help => {
            print!("{}", crate::cli::USAGE);
            if !cfg!(feature = "tools") {
                println!(
                    "\nThis is the initrd build: diff, restore and status are in the full tool."
                );
            }
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
            for p in fault::Point::ALL {
                println!("{}", p.name());
            }
            return Ok(());
        }
        _ => {}
    }
    let (file, path) = config::load(cli.config.as_deref()).map_err(Error::Usage)?;
    let s = config::merge(cli.settings.clone(), file, path);
    s.check_layout().map_err(Error::Usage)?;
    let now = clock::now();
    match command {
        Command::Rollback => rollback(&cli, &s, now),
        Command::Finish => finish(&cli, &s, now),
        Command::List => list(&cli, &s, now),
        Command::Gc => gc(&cli, &s, now),
        Command::Pin(n) => pin(&cli, &s, &n, true, now),
        Command::Unpin(n) => pin(&cli, &s, &n, false, now),
        Command::Check => check(&cli, &s, now),
        Command::Baseline => baseline(&cli, &s, now),
        #[cfg(feature = "tools")]
        Command::Diff(old) => crate::diff::run(&cli, &s, old.as_deref()),
        #[cfg(feature = "tools")]
        Command::Restore { old_root, path } => {
            crate::restore::run(&cli, &s, &old_root, path.as_os_str())
        }
        #[cfg(feature = "tools")]
        Command::Status => crate::status::run(&cli, &s),
        #[cfg(feature = "tools")]
        Command::Lost => crate::lost::run(&cli, &s),
        #[cfg(feature = "tools")]
        Command::Report => crate::report::run(&cli, &s),
        #[cfg(feature = "tools")]
        Command::Persist(paths) => crate::persist::run(&cli, &s, &paths),
        #[cfg(not(feature = "tools"))]
        Command::Diff(_)
        | Command::Restore { .. }
        | Command::Status
        | Command::Lost
        | Command::Report => Err(Error::Usage(
            "this is the initrd build of ephemeral-root (rollback, finish, check, list, gc, pin); use the full tool installed in the system".into(),
        )),
        Command::Help | Command::Version | Command::FaultPoints => Ok(()),
    }
}

/// The exclusive lock for a command that writes, none for a dry run (which writes nothing).
fn writer<'a>(cli: &Cli, command: &'a str) -> Option<LockRequest<'a>> {
    (!cli.dry_run).then(|| LockRequest::new(command, LockMode::Exclusive, cli.lock_wait))
}

fn plan_error(e: PlanError) -> Error {
    match e {
        PlanError::Refused(m) => Error::Refused(m),
        PlanError::Config(m) => Error::Usage(m),
    }
}

pub fn print_plan(plan: &Plan) {
    for n in &plan.notes {
        println!("note: {n}");
    }
    if plan.is_empty() {
        println!("nothing to do");
    }
    for (i, s) in plan.steps.iter().enumerate() {
        println!("{:>3}. {s}", i + 1);
    }
    if !plan.backlog.is_empty() {
        println!("then, what `finish` left undone:");
        for (i, s) in plan.backlog.iter().enumerate() {
            println!("{:>3}. {s}", i + 1);
        }
    }
}

fn request<'a>(s: &'a Settings, mode: Mode, restore: Option<&'a str>, now: i64) -> Request<'a> {
    Request {
        root_name: &s.root,
        mode,
        restore,
        blank: s.blank.as_deref(),
        policy: &s.keep,
        now,
        utc_offset: s.timezone,
    }
}

fn rollback(cli: &Cli, s: &Settings, now: i64) -> Result<()> {
    let started = Instant::now();
    let cmdline_text = match &cli.kernel_cmdline {
        Some(c) => c.clone(),
        None => std::fs::read("/proc/cmdline").unwrap_or_default(),
    };
    let k = cmdline::parse(&cmdline_text);
    for w in &k.warnings {
        log::warn!("{w}");
    }
    let mut rec = LastRollback {
        time: timefmt::rfc3339(now),
        ..Default::default()
    };
    if k.skip {
        log::warn!(
            "rd.ephemeral_root=skip: leaving root {} untouched this boot",
            s.root
        );
        if !cli.dry_run {
            rec.result = "skipped".into();
            rec.mode = "skip".into();
            rec.duration_ms = Some(0);
            lastrun::write(&rec);
        }
        return Ok(());
    }
    let mode = k.force_mode.unwrap_or(s.mode);
    if let Some(m) = k.force_mode {
        log::info!("rd.ephemeral_root={m}: mode {m} for this boot");
    }
    rec.mode = mode.to_string();
    let result = (|| -> Result<(Option<String>, Option<String>)> {
        let (mut b, st) = protocol::open_locked(s, now, writer(cli, "rollback"))?;
        log::info!(
            "{}: root {}, snapshots {}, mode {mode}, keep \"{}\"{}",
            st.fs,
            s.root,
            s.snapshots,
            s.keep,
            k.restore
                .as_deref()
                .map(|r| format!(", restore {r}"))
                .unwrap_or_default()
        );
        let plan = plan::plan_rollback(&st, &request(s, mode, k.restore.as_deref(), now))
            .map_err(plan_error)?;
        for n in &plan.notes {
            log::info!("{n}");
        }
        if cli.dry_run {
            print_plan(&plan);
            b.close()?;
            return Ok((None, None));
        }
        exec::execute(b.as_mut(), &plan.steps, "step")?;
        // The new root is in place and durable: from here on, nothing fails the boot.
        let mut backlog_error = None;
        if !plan.backlog.is_empty() {
            log::info!(
                "`finish` did not run after the last boot: doing its work now ({} steps)",
                plan.backlog.len()
            );
            if let Err(e) = exec::execute(b.as_mut(), &plan.backlog, "finish") {
                log::error!("finishing the previous boot's work failed (the boot goes on; `ephemeral-root finish` retries): {e}");
                backlog_error = Some(e.to_string());
            }
        }
        b.close()?;
        Ok((plan.kept.clone(), backlog_error))
    })();
    if cli.dry_run {
        return result.map(|_| ());
    }
    let ms = started.elapsed().as_millis() as u64;
    rec.duration_ms = Some(ms);
    match result {
        Ok((kept, backlog_error)) => {
            log::info!("rollback finished in {ms} ms");
            rec.result = "ok".into();
            rec.kept = kept;
            rec.backlog_error = backlog_error;
            lastrun::write(&rec);
            Ok(())
        }
        Err(e) => {
            rec.result = "failed".into();
            rec.error = Some(e.to_string());
            lastrun::write(&rec);
            Err(e)
        }
    }
}

/// `finish` (after boot) and `gc`: seal, delete, prune; `finish` also takes the baseline.
fn finish_like(cli: &Cli, s: &Settings, now: i64, what: &str, baseline: bool) -> Result<()> {
    let (mut b, st) = protocol::open_locked(s, now, writer(cli, what))?;
    let plan = plan::plan_finish(&st, &s.keep, now, s.timezone);
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
    exec::execute(b.as_mut(), &plan.steps, what)?;
    let pruned = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Prune { .. }))
        .count();
    let sealed = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Seal(..)))
        .count();
    log::info!(
        "{what}: sealed {sealed}, pruned {pruned} old root(s) with policy \"{}\"",
        s.keep
    );
    if baseline && st.root.is_some() {
        // Once per boot: a finish that runs again (a re-started unit, `nixos-rebuild switch`)
        // must not move the baseline, or `diff` would forget what changed since boot.
        if crate::lastrun::baseline_taken_this_boot() {
            log::info!("{what}: baseline already taken this boot; keeping it");
        } else {
            take_baseline(b.as_mut())?;
            log::info!("{what}: baseline taken");
        }
    }
    b.close()
}

fn finish(cli: &Cli, s: &Settings, now: i64) -> Result<()> {
    finish_like(cli, s, now, "finish", !cli.no_baseline)
}

fn gc(cli: &Cli, s: &Settings, now: i64) -> Result<()> {
    finish_like(cli, s, now, "gc", false)
}

/// Take the baseline and make it durable, and remember (in /run, so for this boot) that it was.
fn take_baseline(b: &mut dyn Backend) -> Result<()> {
    b.create_snapshots_location()?;
    // Read before the snapshot begins: every change after the snapshot has a later change time
    // (what `diff` relies on to skip entries unchanged since then).
    let at = crate::clock::reading();
    b.take_baseline()?;
    fault::point(fault::Point::BaselineDone);
    b.sync()?;
    crate::lastrun::mark_baseline_taken(&at);
    Ok(())
}

fn baseline(cli: &Cli, s: &Settings, now: i64) -> Result<()> {
    if crate::mounts::root_is_tmpfs(&crate::mounts::read_mountinfo()?) {
        return Err(Error::Usage(
            "/ is a tmpfs: there is nothing to snapshot; `diff` walks / directly".into(),
        ));
    }
    let (mut b, st) = protocol::open_locked(
        s,
        now,
        Some(LockRequest::new(
            "baseline",
            LockMode::Exclusive,
            cli.lock_wait,
        )),
    )?;
    if st.root.is_none() {
        b.close()?;
        return Err(Error::Usage(format!(
            "root {} does not exist on {}; check --root",
            s.root, st.fs
        )));
    }
    take_baseline(b.as_mut())?;
    b.close()?;
    log::info!(
        "baseline taken: {}/{} (diff now shows only what changes from here)",
        s.snapshots,
        crate::layout::BASELINE
    );
    Ok(())
}

fn pin(cli: &Cli, s: &Settings, name: &str, on: bool, now: i64) -> Result<()> {
    let command = if on { "pin" } else { "unpin" };
    let (mut b, st) = protocol::open_locked(
        s,
        now,
        Some(LockRequest::new(
            command,
            LockMode::Exclusive,
            cli.lock_wait,
        )),
    )?;
    let Some(o) = st.find_old_root(name) else {
        b.close()?;
        return Err(Error::Usage(format!(
            "old root \"{}\" does not exist in {}; `ephemeral-root list` shows the names",
            crate::escape::text(name),
            s.snapshots
        )));
    };
    let name = o.name.to_string();
    b.set_pinned(&name, on)?;
    b.sync()?;
    log::info!("{} old root {name}", if on { "pinned" } else { "unpinned" });
    b.close()
}

fn list(cli: &Cli, s: &Settings, now: i64) -> Result<()> {
    let (b, st) = protocol::open_detailed(s, now)?;
    b.close()?;
    let v = st.old_roots();
    let newest = v.last().map(|o| o.name.to_string());
    if cli.json {
        let items: Vec<String> = v
            .iter()
            .map(|o| {
                // Nested paths are strings; when one is not UTF-8, `nested_hex` has every path's
                // exact bytes (as `name_hex` in check --json).
                let nested: Vec<String> = o
                    .facts
                    .nested
                    .iter()
                    .map(|n| match n.to_str() {
                        Some(t) => json::string(t),
                        None => json::string(&crate::escape::escape(n.as_bytes())),
                    })
                    .collect();
                let mut f = vec![
                    ("name", json::string(o.name)),
                    ("time", json::string(&timefmt::rfc3339(o.time))),
                    ("pinned", o.facts.pinned.to_string()),
                    ("newest", (Some(o.name) == newest.as_deref()).to_string()),
                    ("readonly", o.facts.readonly.to_string()),
                    ("sealed", o.sealed.to_string()),
                    ("nested", json::array(&nested)),
                ];
                if o.facts.nested.iter().any(|n| n.to_str().is_none()) {
                    let hex: Vec<String> = o
                        .facts
                        .nested
                        .iter()
                        .map(|n| {
                            let h: String =
                                n.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                            json::string(&h)
                        })
                        .collect();
                    f.push(("nested_hex", json::array(&hex)));
                }
                json::object(&f)
            })
            .collect();
        println!("{}", json::array(&items));
        return Ok(());
    }
    if v.is_empty() {
        println!("no old roots in {} yet", s.snapshots);
        return Ok(());
    }
    println!("{:<24} {:<20} {:>10}  ", "NAME", "BEGAN (UTC)", "AGE");
    for o in &v {
        let mut flags = vec![];
        if !o.sealed {
            flags.push("not sealed yet (finish seals it)".to_string());
        }
        if o.facts.pinned {
            flags.push("pinned".to_string());
        }
        if !o.facts.nested.is_empty() {
            flags.push(format!("{} nested", o.facts.nested.len()));
        }
        if Some(o.name) == newest.as_deref() {
            flags.push("← newest".to_string());
        }
        println!(
            "{:<24} {:<20} {:>10}  {}",
            o.name,
            timefmt::rfc3339(o.time)
                .replace('T', " ")
                .trim_end_matches('Z'),
            timefmt::human_age(now - o.time),
            flags.join(", ")
        );
    }
    Ok(())
}

/// `check --json`: the one definition of what is on disk, for every harness.
fn check_json(st: &State, problems: &[String], extra: Option<(&'static str, String)>) -> String {
    let entries: Vec<String> = st
        .entries
        .iter()
        .map(|e| {
            let mut f = json::name_fields("name", "name_hex", e.name.as_bytes());
            f.push(("kind", json::string(e.kind.as_str())));
            if matches!(e.kind, Kind::OldRoot | Kind::Baseline | Kind::Pending) {
                f.push(("readonly", e.facts.readonly.to_string()));
            }
            if e.kind == Kind::OldRoot && e.belongs_to.is_none() {
                f.push(("pinned", e.facts.pinned.to_string()));
            }
            if let Some(o) = &e.belongs_to {
                f.push(("belongs_to", json::string(o)));
            }
            json::object(&f)
        })
        .collect();
    let root = match &st.root {
        Some(r) => json::object(&[
            ("present", "true".into()),
            ("fresh", r.facts.fresh.to_string()),
            ("began", json::string(&timefmt::rfc3339(r.facts.began))),
        ]),
        None => json::object(&[("present", "false".into()), ("fresh", "null".into())]),
    };
    let mut fields = vec![
        ("clean", (st.clean() && problems.is_empty()).to_string()),
        ("filesystem", json::string(&st.fs)),
        ("snapshots", json::string(&st.snapshots)),
        ("root", root),
        ("entries", json::array(&entries)),
        (
            "problems",
            json::array(&problems.iter().map(|p| json::string(p)).collect::<Vec<_>>()),
        ),
    ];
    fields.extend(extra);
    json::object(&fields)
}

fn check(cli: &Cli, s: &Settings, now: i64) -> Result<()> {
    #[allow(unused_mut)]
    let (mut b, mut st) = protocol::open_detailed(s, now)?;
    // The persistence checks (full build): hidden, missing and stray state before the reboot.
    #[cfg(feature = "tools")]
    let found = if st.root.is_some() {
        crate::persisted::gather(b.as_mut(), s)
    } else {
        None
    };
    #[cfg(not(feature = "tools"))]
    let found: Option<()> = None;
    b.close()?;
    let mut problems = st.problems();
    let mounted = st.root.as_mut().and_then(|r| r.facts.mounted_at.take());
    // What rollback would do (where the root is not mounted, i.e. in the initrd).
    let plan = plan::plan_rollback(&st, &request(s, s.mode, None, now));
    if let Err(PlanError::Refused(m) | PlanError::Config(m)) = &plan {
        if st.refusals.is_empty() {
            problems.push(m.clone());
        }
    }
    if cli.json {
        #[cfg(feature = "tools")]
        let extra = found
            .as_ref()
            .map(|f| ("persistence", crate::persisted::output::json(f)));
        #[cfg(not(feature = "tools"))]
        let extra = None;
        println!("{}", check_json(&st, &problems, extra));
    } else {
        println!(
            "config file:  {}",
            s.config_file
                .as_ref()
                .map(|p| crate::escape::path(p))
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
        println!("filesystem:   {}", st.fs);
        let olds = st.old_roots();
        println!(
            "old roots:    {} ({} not sealed yet)",
            olds.len(),
            olds.iter().filter(|o| !o.sealed).count()
        );
        for e in &st.entries {
            let what = match e.kind {
                Kind::Pending => "pending (the next finish or rollback completes it)",
                Kind::Leftover => "leftover (the next finish or rollback discards it)",
                Kind::Foreign => "foreign (not made by ephemeral-root; never touched)",
                _ => continue,
            };
            println!(
                "entry:        {}/{}: {what}",
                s.snapshots,
                crate::escape::name(&e.name)
            );
        }
        if let Some(at) = &mounted {
            println!("note: root is mounted at {at}: rollback will refuse here and run in the initrd; showing what it would do there");
        }
        if let Ok(p) = &plan {
            println!("rollback would:");
            print_plan(p);
        }
        for p in &problems {
            println!("problem: {p}");
        }
        #[cfg(feature = "tools")]
        if let Some(f) = &found {
            print!("{}", crate::persisted::output::human(f));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Other(format!(
            "check found {} problem(s)",
            problems.len()
        )));
    }
    #[cfg(feature = "tools")]
    if let Some(n) = found.as_ref().map(|f| f.errors()).filter(|n| *n > 0) {
        return Err(Error::Other(format!(
            "check: {n} critical persisted file(s) would be lost at the next boot (listed above as errors)"
        )));
    }
    #[cfg(not(feature = "tools"))]
    let _ = found;
    if !cli.json {
        if st.clean() {
            println!("check: ok");
        } else {
            println!("check: ok (work in progress or foreign entries listed above)");
        }
    }
    Ok(())
}
