//! Property tests ("fuzzing" without cargo-fuzz, which needs a nightly toolchain) for the parsers
//! that read input from outside: the config file, the kernel command line, the retention policy
//! and the packed nvlist decoder. Each runs for a bounded time (`EPHEMERAL_ROOT_FUZZ_SECS`, default
//! 2 s; CI runs them longer, see `.ci/run`) on seeded random input (`EPHEMERAL_ROOT_FUZZ_SEED`
//! reproduces a failure; the seed is printed), and checks:
//! - no panic, on arbitrary bytes and on mutations of valid input;
//! - round trips: a valid value rendered as text (or packed) parses (unpacks) back to itself;
//! - every error is one line, bounded in length, with no raw control character (values in messages
//!   are escaped and cut).

use crate::config::{self, FsType, Mode, Partial};
use crate::escape;
use crate::retention::{self, Policy, Unit};
use crate::testrand::{run, Rng};
use crate::zfs::nvlist::{NvList, Value};
use std::path::Path;

/// A message as the program would print it: one line, short, no control character.
fn check_message(m: &str) {
    assert!(!m.contains('\n'), "message with a newline: {m:?}");
    assert!(m.len() < 2000, "message of {} bytes", m.len());
    assert!(
        !m.chars().any(escape::dangerous),
        "raw control character: {m:?}"
    );
}

/// Bytes that stress a line-based parser: structure characters, controls, invalid UTF-8.
fn nasty_byte(rng: &mut Rng) -> u8 {
    *rng.pick(&[
        b'=', b'#', b'"', b' ', b'\t', b'\n', b'\r', 0, 0x1b, 0xff, 0xc3, b'/', b'.', b'@', b'a',
        b'z', b'5', b'w', b'm', b'-', b'+', b':',
    ])
}

fn random_text(rng: &mut Rng, max: usize) -> Vec<u8> {
    let n = rng.below(max + 1);
    (0..n)
        .map(|_| {
            if rng.chance(3) {
                rng.next_u64() as u8
            } else {
                nasty_byte(rng)
            }
        })
        .collect()
}

fn ascii_word(rng: &mut Rng, alphabet: &[u8], max: usize) -> String {
    let n = 1 + rng.below(max);
    (0..n).map(|_| *rng.pick(alphabet) as char).collect()
}

fn random_policy(rng: &mut Rng) -> Policy {
    if rng.chance(8) {
        return Policy::All;
    }
    let mut periods = Vec::new();
    for u in [Unit::Hour, Unit::Day, Unit::Week, Unit::Month, Unit::Year] {
        if rng.chance(2) {
            periods.push((u, 1 + rng.below(99) as u32));
        }
    }
    Policy::Rules {
        newest: if periods.is_empty() || rng.chance(2) {
            rng.below(1000) as u32
        } else {
            0
        },
        periods,
    }
}

/// A valid configuration and the text that says it.
fn random_config(rng: &mut Rng) -> (Partial, Vec<u8>) {
    let mut p = Partial::default();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let name = |rng: &mut Rng| ascii_word(rng, b"@abcxyz_-0189", 12);
    if rng.chance(2) {
        let d = format!("/dev/{}", ascii_word(rng, b"sdavb0123", 6));
        lines.push(format!("device = {d}").into_bytes());
        p.device = Some(d);
    }
    if rng.chance(2) {
        let t = *rng.pick(&[FsType::Btrfs, FsType::Bcachefs, FsType::Zfs]);
        lines.push(format!("fstype={t}").into_bytes());
        p.fstype = Some(t);
    }
    for key in ["root", "snapshots", "blank"] {
        if rng.chance(2) {
            let mut v = name(rng);
            if rng.chance(3) {
                v = format!("{v}/{}", name(rng));
            }
            lines.push(format!("{key} = \"{v}\"").into_bytes());
            let slot = match key {
                "root" => &mut p.root,
                "snapshots" => &mut p.snapshots,
                _ => &mut p.blank,
            };
            *slot = Some(v);
        }
    }
    if rng.chance(2) {
        let pol = random_policy(rng);
        lines.push(format!("keep = {pol}   # retention").into_bytes());
        p.keep = Some(pol);
    }
    if rng.chance(2) {
        let m = *rng.pick(&[Mode::Wipe, Mode::Audit]);
        lines.push(format!("mode = {m}").into_bytes());
        p.mode = Some(m);
    }
    if rng.chance(2) {
        let mut all = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let mut line = b"persist =".to_vec();
            for _ in 0..1 + rng.below(3) {
                // Any bytes but NUL, whitespace, '#' and '"' (those end words, comments, quotes).
                let mut w = b"/".to_vec();
                w.extend(
                    rng.bytes(10).into_iter().filter(|b| {
                        *b != 0 && !b.is_ascii_whitespace() && *b != b'#' && *b != b'"'
                    }),
                );
                line.push(b' ');
                line.extend_from_slice(&w);
                all.push(w);
            }
            lines.push(line);
        }
        p.persist = Some(all);
    }
    if rng.chance(2) {
        let (h, m) = (rng.below(15), rng.below(60));
        let sign = if rng.chance(2) { '+' } else { '-' };
        lines.push(format!("timezone = {sign}{h:02}:{m:02}").into_bytes());
        let off = (h * 3600 + m * 60) as i64;
        p.timezone = Some(if sign == '-' { -off } else { off });
    }
    // Shuffle, with blank lines and comments between.
    let mut text = Vec::new();
    while !lines.is_empty() {
        let i = rng.below(lines.len());
        if rng.chance(4) {
            text.extend_from_slice(b"\n# a comment = with \"quotes\"\n");
        }
        text.extend(lines.swap_remove(i));
        text.push(b'\n');
    }
    (p, text)
}

#[test]
fn fuzz_config_parser() {
    let origin = Path::new("/etc/ephemeral-root.conf");
    run("config parser", 200, |rng| {
        // Valid configurations parse back to what they say.
        let (mut want, text) = random_config(rng);
        match config::parse_file(&text, origin) {
            Ok(mut got) => {
                // persist lines were shuffled: compare their words as sets.
                for p in [&mut got.persist, &mut want.persist].into_iter().flatten() {
                    p.sort();
                }
                assert_eq!(got, want, "{}", escape::escape(&text))
            }
            Err(e) => panic!("valid config refused: {e}\n{}", escape::escape(&text)),
        }
        // Mutated and random text: a result or one clean line, never a panic.
        let mut m = text.clone();
        for _ in 0..1 + rng.below(6) {
            if m.is_empty() || rng.chance(3) {
                let at = rng.below(m.len() + 1);
                m.insert(at, nasty_byte(rng));
            } else {
                let at = rng.below(m.len());
                m[at] = if rng.chance(2) {
                    nasty_byte(rng)
                } else {
                    rng.next_u64() as u8
                };
            }
        }
        for t in [m, random_text(rng, 200)] {
            if let Err(e) = config::parse_file(&t, origin) {
                check_message(&e);
            }
        }
        // One key with a huge value.
        if rng.chance(20) {
            let key = *rng.pick(config::KEYS);
            let mut t = format!("{key} = ").into_bytes();
            t.extend(
                (0..5000 + rng.below(50_000))
                    .map(|_| nasty_byte(rng))
                    .filter(|b| *b != b'\n'),
            );
            if let Err(e) = config::parse_file(&t, origin) {
                check_message(&e);
            }
        }
    });
}

#[test]
fn fuzz_kernel_cmdline() {
    use crate::cmdline::{parse, KernelArgs};
    run("kernel command line", 500, |rng| {
        // Our parameters among unrelated words parse back to what they say.
        let mut want = KernelArgs::default();
        let mut words: Vec<Vec<u8>> = Vec::new();
        for _ in 0..rng.below(6) {
            let mut w = random_text(rng, 20);
            w.retain(|b| !b.is_ascii_whitespace() && *b != b'"');
            if !w.starts_with(b"rd.") && !w.is_empty() {
                words.push(w);
            }
        }
        match rng.below(4) {
            0 => {
                words.push(b"rd.ephemeral_root=skip".to_vec());
                want.skip = true;
            }
            1 => {
                words.push(b"rd.ephemeral-root=audit".to_vec());
                want.force_mode = Some(Mode::Audit);
            }
            _ => {}
        }
        if rng.chance(2) {
            let name = ascii_word(rng, b"0123456789-TZ", 24);
            let w = if rng.chance(2) {
                format!("rd.ephemeral_root.restore=\"{name}\"")
            } else {
                format!("rd.ephemeral_root.restore={name}")
            };
            words.push(w.into_bytes());
            want.restore = Some(name);
        }
        let mut line = Vec::new();
        while !words.is_empty() {
            let i = rng.below(words.len());
            line.extend(words.swap_remove(i));
            line.push(*rng.pick(&[b' ', b'\t', b'\n']));
        }
        let got = parse(&line);
        assert_eq!(
            (got.skip, got.force_mode, &got.restore),
            (want.skip, want.force_mode, &want.restore),
            "{}",
            escape::escape(&line)
        );
        for w in &got.warnings {
            check_message(w);
        }
        // Random bytes, and our prefix followed by random bytes.
        let mut t = random_text(rng, 300);
        if rng.chance(2) {
            t.splice(0..0, b"rd.ephemeral_root".iter().copied());
        }
        for w in parse(&t).warnings {
            check_message(&w);
        }
    });
}

#[test]
fn fuzz_retention_parser() {
    run("retention parser", 500, |rng| {
        // Round trip: a policy's text parses back to it.
        let p = random_policy(rng);
        let text = p.to_string();
        assert_eq!(Policy::parse(&text).as_ref(), Ok(&p), "{text}");
        // Random text: a policy whose text round-trips, or one clean line.
        let t: String = (0..rng.below(30))
            .map(|_| {
                *rng.pick(&[
                    '1', '2', '0', '9', 'h', 'd', 'w', 'm', 'y', ' ', '\t', 'a', 'l', 'x', '-',
                    '\u{1b}', '\n', 'é',
                ])
            })
            .collect();
        match Policy::parse(&t) {
            Ok(p) => assert_eq!(Policy::parse(&p.to_string()), Ok(p.clone()), "{t:?}"),
            Err(e) => check_message(&e),
        }
        if let Err(e) = retention::parse_utc_offset(&t) {
            check_message(&e);
        }
        // The decision over random old roots: the newest and the pinned ones are always kept.
        let items: Vec<retention::Item> = (0..rng.below(40))
            .map(|i| retention::Item {
                name: format!("r{i}"),
                time: 1_700_000_000 + (rng.next_u64() % 100_000_000) as i64,
                seq: 1 + rng.below(3) as u32,
                pinned: rng.chance(6),
            })
            .collect();
        let now = 1_700_000_000 + (rng.next_u64() % 120_000_000) as i64;
        let d = retention::decide(&items, &p, now, rng.below(50_000) as i64 - 25_000);
        assert_eq!(d.len(), items.len());
        for it in items.iter().filter(|i| i.pinned) {
            assert!(
                d.iter().any(|x| x.name == it.name && x.keep.is_some()),
                "pinned {} pruned",
                it.name
            );
        }
        if let Some(newest) = items.iter().max_by_key(|i| (i.time, i.seq, i.name.clone())) {
            assert!(d.iter().any(|x| x.name == newest.name && x.keep.is_some()));
        }
    });
}

fn random_name(rng: &mut Rng) -> String {
    let n = 1 + rng.below(10);
    (0..n)
        .map(|_| *rng.pick(&['a', 'b', 'z', '_', '-', '.', ':', '@', '/', '0', 'é', '日']))
        .collect()
}

fn random_nvlist(rng: &mut Rng, depth: usize) -> NvList {
    let mut l = NvList::new();
    for i in 0..rng.below(8) {
        let s = |rng: &mut Rng| random_name(rng);
        let n = 1 + rng.below(4);
        let v = match rng.below(if depth < 3 { 22 } else { 20 }) {
            0 => Value::Boolean,
            1 => Value::BooleanValue(rng.chance(2)),
            2 => Value::Byte(rng.next_u64() as u8),
            3 => Value::Int8(rng.next_u64() as i8),
            4 => Value::Uint8(rng.next_u64() as u8),
            5 => Value::Int16(rng.next_u64() as i16),
            6 => Value::Uint16(rng.next_u64() as u16),
            7 => Value::Int32(rng.next_u64() as i32),
            8 => Value::Uint32(rng.next_u64() as u32),
            9 => Value::Int64(rng.next_u64() as i64),
            10 => Value::Uint64(rng.next_u64()),
            11 => Value::Hrtime(rng.next_u64() as i64),
            12 => Value::String(if rng.chance(5) { String::new() } else { s(rng) }),
            13 => Value::ByteArray(rng.bytes(20)),
            14 => Value::Uint16Array((0..n).map(|_| rng.next_u64() as u16).collect()),
            15 => Value::Int32Array((0..n).map(|_| rng.next_u64() as i32).collect()),
            16 => Value::Uint64Array((0..n).map(|_| rng.next_u64()).collect()),
            17 => Value::BooleanArray((0..n).map(|_| rng.chance(2)).collect()),
            18 => Value::StringArray((0..n).map(|_| s(rng)).collect()),
            19 => Value::Double((rng.next_u64() % 1_000_000) as f64 / 7.0),
            20 => Value::NvList(random_nvlist(rng, depth + 1)),
            _ => Value::NvListArray((0..n).map(|_| random_nvlist(rng, depth + 1)).collect()),
        };
        l.insert(format!("{}{i}", random_name(rng)), v);
    }
    l
}

#[test]
fn fuzz_nvlist_round_trip_and_mutations() {
    run("nvlist codec", 200, |rng| {
        let l = random_nvlist(rng, 0);
        let packed = l.to_native().expect("pack");
        assert_eq!(NvList::from_native(&packed).as_ref(), Ok(&l));
        assert_eq!(NvList::unpack(&packed).as_ref(), Ok(&l));
        // Trailing bytes after the list are ignored (the kernel's buffer is larger).
        let mut padded = packed.clone();
        padded.extend(rng.bytes(16));
        assert_eq!(NvList::from_native(&padded).as_ref(), Ok(&l));
        // Mutations and truncations: Ok or Err, never a panic (nor a hang or a huge allocation).
        for _ in 0..20 {
            let mut b = packed.clone();
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(b.len());
                b[i] = match rng.below(4) {
                    0 => rng.next_u64() as u8,
                    1 => 0xff,
                    2 => 0,
                    _ => b[i] ^ (1 << rng.below(8)),
                };
            }
            if rng.chance(3) {
                b.truncate(rng.below(b.len() + 1));
            }
            let _ = NvList::from_native(&b);
            let _ = NvList::unpack(&b);
            if let Some(x) = b.first_mut() {
                *x = 1; // the same bytes as XDR
            }
            let _ = NvList::from_xdr(&b);
        }
    });
}
