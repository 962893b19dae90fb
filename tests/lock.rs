//! One writer per filesystem (src/lock.rs, rule 10 of docs/path-safety.md), on real btrfs loop
//! devices: two writers started at the same moment, many rounds, and after every round the
//! invariants of tests/crash_safety.rs (exactly one root, fresh and empty; the root's data kept in
//! exactly one old root; every old root read-only; nothing half-done left in the snapshots
//! location; no dangling pin). The fault-injection build widens every window
//! (EPHEMERAL_ROOT_FAULT_DELAY_MS) and can run without the lock (EPHEMERAL_ROOT_TEST_NO_LOCK=1),
//! which shows that these checks catch the races the lock prevents. Needs root and
//! `--features fault-injection`.

mod common;
use common::*;
use std::process::{Child, Output, Stdio};

#[cfg(not(feature = "fault-injection"))]
#[test]
fn lock_tests_need_the_fault_injection_feature() {
    if std::env::var("EPHEMERAL_ROOT_ALLOW_SKIP").as_deref() == Ok("1")
        && std::env::var("CI").is_err()
    {
        eprintln!(
            "\n*** SKIPPED *** lock tests: build with `cargo test --features fault-injection`\n"
        );
        return;
    }
    panic!("lock tests need `cargo test --features fault-injection` (or EPHEMERAL_ROOT_ALLOW_SKIP=1 outside CI)");
}

const ROUNDS: usize = 50;
/// Milliseconds slept at every fault point: long enough that unlocked runs overlap.
const DELAY: &str = "20";

fn spawn(fs: &LoopFs, args: &[&str], delay: &str, no_lock: bool) -> Child {
    let mut c = fs.command(args);
    c.env("EPHEMERAL_ROOT_FAULT_DELAY_MS", delay)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if no_lock {
        c.env("EPHEMERAL_ROOT_TEST_NO_LOCK", "1");
    }
    c.spawn().expect("spawn ephemeral-root")
}

/// Start both at once, wait for both.
fn race(fs: &mut LoopFs, a: &[&str], b: &[&str], no_lock: bool) -> (Output, Output) {
    race_with(fs, (a, DELAY), (b, DELAY, 0), no_lock)
}

/// Start `a`, then `b` after `b.2` milliseconds, each with its own delay at every fault point;
/// wait for both.
fn race_with(
    fs: &mut LoopFs,
    a: (&[&str], &str),
    b: (&[&str], &str, u64),
    no_lock: bool,
) -> (Output, Output) {
    fs.umount();
    let ca = spawn(fs, a.0, a.1, no_lock);
    std::thread::sleep(std::time::Duration::from_millis(b.2));
    let cb = spawn(fs, b.0, b.1, no_lock);
    (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    )
}

/// After the racing commands, the rest of the boot (`finish`, as the machine runs it after every
/// rollback, with the same retention), then the crash-safety invariants (tests/crash_safety.rs)
/// as a result, so a run without the lock can show which one broke. `marker`: the file the root
/// held before this round; `total`: how many old roots there must be.
fn settle(fs: &mut LoopFs, keep: &str, marker: &str, total: Option<usize>) -> Result<(), String> {
    let o = fs.run(&["finish", "--no-baseline", "--keep", keep]);
    ok(&o, "finish")?;
    let (clean, entries) = fs.check_json(&["--keep", keep]);
    if !clean {
        return Err(format!("check --json is not clean: {entries:?}"));
    }
    invariants(fs, marker, total)
}

fn invariants(fs: &mut LoopFs, marker: &str, total: Option<usize>) -> Result<(), String> {
    if !fs.exists("@root") {
        return Err("no root".into());
    }
    let root = fs.ls("@root");
    if !root.is_empty() {
        return Err(format!("root not fresh: {root:?}"));
    }
    if fs.is_readonly("@root") {
        return Err("root read-only".into());
    }
    let dots: Vec<String> = fs
        .ls("@snapshots")
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".pins" && n != ".fresh-root")
        .collect();
    if !dots.is_empty() {
        return Err(format!("left in the snapshots location: {dots:?}"));
    }
    let olds = fs.old_roots();
    if let Some(t) = total {
        if olds.len() != t {
            return Err(format!("{} old roots, want {t}: {olds:?}", olds.len()));
        }
    }
    let holding: Vec<&String> = olds
        .iter()
        .filter(|o| fs.exists(&format!("@snapshots/{o}/{marker}")))
        .collect();
    if holding.len() != 1 {
        return Err(format!("the root's data ({marker}) is in {holding:?}"));
    }
    for s in fs.subvols() {
        if s.starts_with("@snapshots/") {
            if !fs.is_readonly(&s) {
                return Err(format!("{s} writable"));
            }
        } else if s != "@root" && s != "@snapshots" {
            return Err(format!("stray subvolume {s}"));
        }
    }
    for p in fs.ls("@snapshots/.pins") {
        if !olds.contains(&p) {
            return Err(format!("pin {p} of an old root that does not exist"));
        }
    }
    Ok(())
}

/// The run had to wait for the other one (so this round really raced).
fn contended(o: &Output) -> bool {
    stderr(o).contains("got the lock on")
}

fn fresh_fs(tag: &str) -> LoopFs {
    let mut fs = LoopFs::new(tag);
    fs.subvol("@root");
    fs
}

fn ok(o: &Output, what: &str) -> Result<(), String> {
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", stderr(o)))
    }
}

/// Two `rollback`s at once, `rounds` times. Both must succeed (the second waits, then finds a
/// fresh root: nothing to keep) and keep the root exactly once.
fn rollback_pair(fs: &mut LoopFs, rounds: usize, no_lock: bool) -> Result<usize, String> {
    let mut waited = 0;
    for r in 1..=rounds {
        let marker = format!("etc/round-{r}");
        fs.write(&format!("@root/{marker}"), "x");
        let args = ["rollback", "--keep", "all"];
        let (a, b) = race(fs, &args, &args, no_lock);
        ok(&a, "rollback A")
            .and(ok(&b, "rollback B"))
            .and_then(|_| settle(fs, "all", &marker, Some(r)))
            .map_err(|e| format!("round {r}: {e}"))?;
        waited += usize::from(contended(&a) || contended(&b));
    }
    Ok(waited)
}

/// `rollback` and `gc` at once, both `--keep 3`.
fn rollback_gc(fs: &mut LoopFs, rounds: usize, no_lock: bool) -> Result<usize, String> {
    let mut waited = 0;
    for r in 1..=rounds {
        let marker = format!("etc/round-{r}");
        fs.write(&format!("@root/{marker}"), "x");
        // The rollback slow at every step, and gc (fast) started at a different moment of it
        // each round, so that gc lands in every step unless the lock keeps it out.
        let (a, b) = race_with(
            fs,
            (&["rollback", "--keep", "3"], DELAY),
            (&["gc", "--keep", "3"], "0", (r as u64 % 10) * 30),
            no_lock,
        );
        ok(&a, "rollback")
            .and(ok(&b, "gc"))
            .and_then(|_| settle(fs, "3", &marker, Some(r.min(3))))
            .map_err(|e| format!("round {r}: {e}"))?;
        waited += usize::from(contended(&a) || contended(&b));
    }
    Ok(waited)
}

/// `finish` (the unit after boot) and `gc` (a timer, a person) at once, after a rollback: both
/// seal the kept root and prune.
fn finish_gc(fs: &mut LoopFs, rounds: usize, no_lock: bool) -> Result<usize, String> {
    let mut waited = 0;
    for r in 1..=rounds {
        let marker = format!("etc/round-{r}");
        fs.write(&format!("@root/{marker}"), "x");
        let o = fs.run(&["rollback", "--keep", "3"]);
        ok(&o, "rollback").map_err(|e| format!("round {r}: {e}"))?;
        let (a, b) = race_with(
            fs,
            (&["finish", "--no-baseline", "--keep", "3"], DELAY),
            (&["gc", "--keep", "3"], DELAY, (r as u64 % 10) * 20),
            no_lock,
        );
        ok(&a, "finish")
            .and(ok(&b, "gc"))
            .and_then(|_| settle(fs, "3", &marker, Some(r.min(3))))
            .map_err(|e| format!("round {r}: {e}"))?;
        waited += usize::from(contended(&a) || contended(&b));
    }
    Ok(waited)
}

/// `gc --keep 1` and `pin OLDEST` at once, after a rollback that adds an old root. Either the pin
/// came first (the oldest survives, pinned) or gc did (the oldest is gone and pin said it does
/// not exist); never a pin that reports success on a pruned old root.
fn gc_pin(fs: &mut LoopFs, rounds: usize, no_lock: bool) -> Result<usize, String> {
    let mut waited = 0;
    for r in 1..=rounds {
        let marker = format!("etc/round-{r}");
        fs.write(&format!("@root/{marker}"), "x");
        let o = fs.run(&["rollback", "--keep", "all"]);
        ok(&o, "rollback").map_err(|e| format!("round {r}: {e}"))?;
        let o = fs.run(&["finish", "--no-baseline", "--keep", "all"]);
        ok(&o, "finish").map_err(|e| format!("round {r}: {e}"))?;
        let oldest = fs.old_roots()[0].clone();
        let newest = fs.old_roots().last().cloned().unwrap_or_default();
        let (g, p) = race(fs, &["gc", "--keep", "1"], &["pin", &oldest], no_lock);
        let mut check = || -> Result<(), String> {
            ok(&g, "gc")?;
            let exists = fs.old_roots().contains(&oldest);
            let pinned = fs.exists(&format!("@snapshots/.pins/{oldest}"));
            if p.status.success() {
                if !exists || !pinned {
                    return Err(format!(
                        "pin {oldest} succeeded, but exists={exists} pinned={pinned}"
                    ));
                }
            } else if exists || !stderr(&p).contains("does not exist") {
                return Err(format!("pin failed: {}", stderr(&p)));
            }
            let n = fs.old_roots().len();
            let want = if exists && oldest != newest { 2 } else { 1 };
            settle(fs, "all", &marker, Some(want)).map_err(|e| format!("{e} ({n} old roots)"))?;
            if exists {
                let o = fs.run(&["unpin", &oldest]);
                ok(&o, "unpin")?;
            }
            Ok(())
        };
        check().map_err(|e| format!("round {r}: {e}"))?;
        waited += usize::from(contended(&g) || contended(&p));
    }
    Ok(waited)
}

#[cfg(feature = "fault-injection")]
#[test]
fn two_rollbacks_at_once_keep_the_root_exactly_once() {
    if !require_root("two_rollbacks_at_once_keep_the_root_exactly_once") {
        return;
    }
    let mut fs = fresh_fs("lock-rr");
    let t = std::time::Instant::now();
    let waited = rollback_pair(&mut fs, ROUNDS, false).unwrap();
    // Enough rounds must really have raced (one waited for the other), or this tested nothing.
    assert!(
        waited >= ROUNDS / 5,
        "only {waited} of {ROUNDS} rounds overlapped"
    );
    eprintln!(
        "{ROUNDS} rounds of rollback + rollback ({waited} contended): invariants held ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
}

#[cfg(feature = "fault-injection")]
#[test]
fn rollback_and_gc_at_once() {
    if !require_root("rollback_and_gc_at_once") {
        return;
    }
    let mut fs = fresh_fs("lock-rg");
    let t = std::time::Instant::now();
    let waited = rollback_gc(&mut fs, ROUNDS, false).unwrap();
    // Enough rounds must really have raced (one waited for the other), or this tested nothing.
    assert!(
        waited >= ROUNDS / 5,
        "only {waited} of {ROUNDS} rounds overlapped"
    );
    eprintln!(
        "{ROUNDS} rounds of rollback + gc ({waited} contended): invariants held ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
}

#[cfg(feature = "fault-injection")]
#[test]
fn finish_and_gc_at_once() {
    if !require_root("finish_and_gc_at_once") {
        return;
    }
    let mut fs = fresh_fs("lock-fg");
    let t = std::time::Instant::now();
    let waited = finish_gc(&mut fs, ROUNDS, false).unwrap();
    assert!(
        waited >= ROUNDS / 2,
        "only {waited} of {ROUNDS} rounds overlapped"
    );
    eprintln!(
        "{ROUNDS} rounds of finish + gc ({waited} contended): invariants held ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
}

#[cfg(feature = "fault-injection")]
#[test]
fn gc_and_pin_at_once() {
    if !require_root("gc_and_pin_at_once") {
        return;
    }
    let mut fs = fresh_fs("lock-gp");
    let t = std::time::Instant::now();
    let waited = gc_pin(&mut fs, ROUNDS, false).unwrap();
    // Enough rounds must really have raced (one waited for the other), or this tested nothing.
    assert!(
        waited >= ROUNDS / 5,
        "only {waited} of {ROUNDS} rounds overlapped"
    );
    eprintln!(
        "{ROUNDS} rounds of gc + pin ({waited} contended): invariants held ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
}

/// The planted violation: the same races without the lock break the invariants (so the tests
/// above can fail). Each scenario stops at its first broken round.
#[cfg(feature = "fault-injection")]
#[test]
fn without_the_lock_the_same_races_break_the_invariants() {
    if !require_root("without_the_lock_the_same_races_break_the_invariants") {
        return;
    }
    type Scenario = fn(&mut LoopFs, usize, bool) -> Result<usize, String>;
    let scenarios: [(&str, Scenario); 4] = [
        ("rollback + rollback", rollback_pair),
        ("rollback + gc", rollback_gc),
        ("finish + gc", finish_gc),
        ("gc + pin", gc_pin),
    ];
    for (what, f) in scenarios {
        let mut fs = fresh_fs("lock-nolock");
        match f(&mut fs, ROUNDS, true) {
            Ok(_) => panic!("{what}: {ROUNDS} rounds without the lock and nothing broke"),
            Err(e) => {
                eprintln!("{what} without the lock broke, as expected: {e}");
                // What is left (for the report; repairing it is the protocol's job, not the lock's).
                let state = settle(&mut fs, "all", "none", None)
                    .err()
                    .unwrap_or_default();
                let check = fs.run(&["check"]);
                let again = fs.run(&["rollback", "--keep", "all"]);
                eprintln!(
                    "  state: {state}\n  snapshots: {:?}\n  check: {:?} {}\n  next rollback: {:?} {}",
                    fs.ls("@snapshots"),
                    check.status.code(),
                    String::from_utf8_lossy(&check.stdout).lines().last().unwrap_or(""),
                    again.status.code(),
                    stderr(&again).lines().last().unwrap_or("")
                );
            }
        }
    }
}

fn holder(fs: &mut LoopFs, mode: &str) -> Child {
    let top = fs.mount().to_path_buf();
    // --no-fork: flock(1) execs the command itself, so killing it releases the lock (a forked
    // child would inherit the locked descriptor and keep it).
    let c = std::process::Command::new("flock")
        .arg("--no-fork")
        .arg(mode)
        .arg(&top)
        .arg("sleep")
        .arg("600")
        .spawn()
        .expect("flock(1)");
    // Wait until the kernel shows the lock.
    let t = std::time::Instant::now();
    while !std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains(&format!(" {} ", c.id())))
    {
        assert!(t.elapsed().as_secs() < 10, "flock never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c
}

/// Contention: the message names the holder (PID and command line), `--lock-wait` bounds the
/// wait, a killed holder releases the lock at once, a dry run takes no lock, and `restore` shares
/// the lock with other readers but not with writers.
#[cfg(feature = "fault-injection")]
#[test]
fn contention_names_the_holder_and_a_crash_releases_the_lock() {
    if !require_root("contention_names_the_holder_and_a_crash_releases_the_lock") {
        return;
    }
    let mut fs = fresh_fs("lock-holder");
    fs.write("@root/etc/x", "x");
    fs.boot(&["rollback", "--keep", "all"]);
    let old = fs.old_roots()[0].clone();
    fs.write("@root/etc/y", "y");
    let mut h = holder(&mut fs, "-x");
    let run = |fs: &LoopFs, args: &[&str]| fs.command(args).output().unwrap();

    let o = run(&fs, &["gc", "--lock-wait", "0"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&format!("pid {} (sleep 600)", h.id())), "{e}");
    assert!(e.contains("--lock-wait"), "{e}");
    assert_eq!(e.lines().filter(|l| l.contains("error:")).count(), 1, "{e}");

    let t = std::time::Instant::now();
    let o = run(&fs, &["pin", &old, "--lock-wait", "2"]);
    assert!(!o.status.success());
    assert!(t.elapsed().as_secs_f64() >= 2.0, "{:?}", t.elapsed());
    assert!(stderr(&o).contains("waiting up to 2 s"), "{}", stderr(&o));
    assert!(stderr(&o).contains("after waiting 2 s"), "{}", stderr(&o));

    // A dry run writes nothing and takes no lock.
    let o = run(&fs, &["rollback", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // restore takes the lock shared: refused beside a writer...
    let dest = fs.dir.join("restored");
    let o = run(
        &fs,
        &[
            "restore",
            &old,
            "/etc/x",
            "--to",
            dest.to_str().unwrap(),
            "--lock-wait",
            "0",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("sleep 600"),
        "{}",
        stderr(&o)
    );
    assert!(!dest.exists());

    // ...a writer waiting for a holder that dies gets the lock at once.
    let t = std::time::Instant::now();
    let mut c = fs.command(&["rollback", "--keep", "all", "--lock-wait", "60"]);
    let waiting = c.stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    h.kill().unwrap();
    h.wait().unwrap();
    let o = waiting.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    assert!(stderr(&o).contains("got the lock"), "{}", stderr(&o));

    // Beside another reader, restore runs; a writer still waits.
    let mut h = holder(&mut fs, "-s");
    let o = run(
        &fs,
        &[
            "restore",
            &old,
            "/etc/x",
            "--to",
            dest.to_str().unwrap(),
            "--lock-wait",
            "0",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&fs, &["gc", "--lock-wait", "0"]);
    assert!(
        !o.status.success() && stderr(&o).contains("sleep 600"),
        "{}",
        stderr(&o)
    );
    h.kill().unwrap();
    h.wait().unwrap();
}
