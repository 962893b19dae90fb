//! The retention policy (btrbk-like `5 4w 12m`) as a pure function over old-root times.
//!
//! `N` keeps the N newest; `Nh Nd Nw Nm Ny` keep the *first* (oldest) old root of each of the last
//! N hours / days / ISO weeks / months / years, counted back from the period that contains "now"
//! (included). `all` keeps everything. The newest old root and pinned ones are never pruned.
//! Periods are computed in a fixed UTC offset (`timezone`). If the clock went backwards (now is
//! earlier than the newest old root), "now" is taken to be the newest old root's time, so a wrong
//! clock can never make every old root look ancient.

use crate::timefmt::civil_from_days;

/// A value quoted for a message: escaped, and cut when long.
fn q(s: &str) -> String {
    crate::escape::quoted(s.as_bytes())
}
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    All,
    Rules {
        newest: u32,
        periods: Vec<(Unit, u32)>,
    },
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Rules {
            newest: 5,
            periods: vec![(Unit::Week, 4), (Unit::Month, 12)],
        }
    }
}

pub const DEFAULT_POLICY: &str = "5 4w 12m";

impl Policy {
    /// Parse `5 4w 12m`, `all`, `24h 7d`, `0`. Error text names the bad word and the fix.
    pub fn parse(s: &str) -> Result<Policy, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.is_empty() {
            return Err("empty retention policy; use e.g. \"5 4w 12m\" or \"all\"".into());
        }
        if words == ["all"] {
            return Ok(Policy::All);
        }
        let mut newest: Option<u32> = None;
        let mut periods: Vec<(Unit, u32)> = Vec::new();
        for w in &words {
            let bad = || {
                format!(
                    "bad retention word {} in {}: expected N (newest), Nh, Nd, Nw, Nm, Ny or \"all\", e.g. \"5 4w 12m\"",
                    q(w),
                    q(s)
                )
            };
            let (digits, unit) = match w.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
                None => (*w, None),
                Some((i, _)) => (&w[..i], Some(&w[i..])),
            };
            if digits.is_empty() || digits.len() > 6 {
                return Err(bad());
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            let unit = match unit {
                None => {
                    if newest.replace(n).is_some() {
                        return Err(format!(
                            "retention policy {} gives the newest count twice",
                            q(s)
                        ));
                    }
                    continue;
                }
                Some("h") => Unit::Hour,
                Some("d") => Unit::Day,
                Some("w") => Unit::Week,
                Some("m") => Unit::Month,
                Some("y") => Unit::Year,
                Some(_) => return Err(bad()),
            };
            if periods.iter().any(|(u, _)| *u == unit) {
                return Err(format!(
                    "retention policy {} names the unit of {} twice",
                    q(s),
                    q(w)
                ));
            }
            periods.push((unit, n));
        }
        Ok(Policy::Rules {
            newest: newest.unwrap_or(0),
            periods,
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::All => f.write_str("all"),
            Policy::Rules { newest, periods } => {
                let mut parts = vec![];
                if *newest > 0 || periods.is_empty() {
                    parts.push(newest.to_string());
                }
                for (u, n) in periods {
                    let c = match u {
                        Unit::Hour => 'h',
                        Unit::Day => 'd',
                        Unit::Week => 'w',
                        Unit::Month => 'm',
                        Unit::Year => 'y',
                    };
                    parts.push(format!("{n}{c}"));
                }
                f.write_str(&parts.join(" "))
            }
        }
    }
}

/// Parse a fixed UTC offset: `UTC`, `Z`, `+02:00`, `-0530`. Returns seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" || t == "+00:00" {
        return Ok(0);
    }
    let bad = || {
        format!(
            "bad timezone {}: use UTC or a fixed offset like +02:00 or -05:30",
            q(s)
        )
    };
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) || rest.len() > 5 {
        return Err(bad());
    }
    let h: i64 = digits[..2].parse().map_err(|_| bad())?;
    let m: i64 = digits[2..].parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// One old root as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    /// When the root began (Unix seconds, UTC).
    pub time: i64,
    /// Several old roots of one root (audit mode) share a time; the higher `seq` is newer.
    pub seq: u32,
    pub pinned: bool,
}

/// Why an old root is kept; `None` in [`Decision::keep`] means it is pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    All,
    Newest,
    Pinned,
    Recent(u32),
    FirstOf(Unit),
    /// Kept by the rollback that is running now.
    JustKept,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::All => f.write_str("policy keeps all"),
            Reason::Newest => f.write_str("newest"),
            Reason::Pinned => f.write_str("pinned"),
            Reason::Recent(n) => write!(f, "among the {n} newest"),
            Reason::JustKept => f.write_str("kept by this rollback"),
            Reason::FirstOf(u) => write!(
                f,
                "first of its {}",
                match u {
                    Unit::Hour => "hour",
                    Unit::Day => "day",
                    Unit::Week => "ISO week",
                    Unit::Month => "month",
                    Unit::Year => "year",
                }
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    pub keep: Option<Reason>,
}

/// Period index of a local time for a unit: consecutive integers for consecutive periods.
fn period(unit: Unit, local: i64) -> i64 {
    let days = local.div_euclid(86_400);
    match unit {
        Unit::Hour => local.div_euclid(3600),
        Unit::Day => days,
        // 1970-01-01 was a Thursday; ISO weeks start on Monday (days + 3 ≡ 0 mod 7 on Mondays).
        Unit::Week => (days + 3).div_euclid(7),
        Unit::Month => {
            let (y, m, _) = civil_from_days(days);
            y * 12 + i64::from(m) - 1
        }
        Unit::Year => civil_from_days(days).0,
    }
}

/// Decide, for every old root, whether it is kept and why. Output is sorted newest first.
/// Ties in time are broken by `seq`, then by name (the later one counts as newer).
pub fn decide(items: &[Item], policy: &Policy, now: i64, utc_offset: i64) -> Vec<Decision> {
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| {
        b.time
            .cmp(&a.time)
            .then_with(|| b.seq.cmp(&a.seq))
            .then_with(|| b.name.cmp(&a.name))
    });
    let newest_time = sorted.first().map(|i| i.time);
    let now = match newest_time {
        Some(t) if t > now => t,
        _ => now,
    };
    let mut keep: Vec<Option<Reason>> = vec![None; sorted.len()];
    if let Some(k) = keep.first_mut() {
        *k = Some(Reason::Newest);
    }
    for (i, it) in sorted.iter().enumerate() {
        if it.pinned && keep[i].is_none() {
            keep[i] = Some(Reason::Pinned);
        }
    }
    match policy {
        Policy::All => {
            for k in keep.iter_mut().filter(|k| k.is_none()) {
                *k = Some(Reason::All);
            }
        }
        Policy::Rules { newest, periods } => {
            for k in keep.iter_mut().take(*newest as usize) {
                if k.is_none() {
                    *k = Some(Reason::Recent(*newest));
                }
            }
            for &(unit, n) in periods {
                if n == 0 {
                    continue;
                }
                let cur = period(unit, now + utc_offset);
                // Oldest first, so the first one seen in a period is the first of that period.
                let mut seen: Option<i64> = None;
                for i in (0..sorted.len()).rev() {
                    let p = period(unit, sorted[i].time + utc_offset);
                    if p > cur || cur - p >= i64::from(n) {
                        continue;
                    }
                    if seen == Some(p) {
                        continue;
                    }
                    seen = Some(p);
                    if keep[i].is_none() {
                        keep[i] = Some(Reason::FirstOf(unit));
                    }
                }
            }
        }
    }
    sorted
        .iter()
        .zip(keep)
        .map(|(it, k)| Decision {
            name: it.name.clone(),
            keep: k,
        })
        .collect()
}

/// Seconds for a civil date, for tests that build times by hand.
#[cfg(test)]
pub fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
    crate::timefmt::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(times: &[(&str, i64)]) -> Vec<Item> {
        times
            .iter()
            .map(|(n, t)| Item {
                name: n.to_string(),
                time: *t,
                seq: 1,
                pinned: false,
            })
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        let mut v: Vec<String> = d
            .iter()
            .filter(|d| d.keep.is_some())
            .map(|d| d.name.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("5 4w 12m", Ok("5 4w 12m")),
            ("all", Ok("all")),
            ("  3  ", Ok("3")),
            ("24h 7d", Ok("24h 7d")),
            ("0", Ok("0")),
            ("1y", Ok("1y")),
            ("", Err("empty")),
            ("5 4x", Err("bad retention word \"4x\"")),
            ("w", Err("bad retention word \"w\"")),
            ("-1", Err("bad retention word \"-1\"")),
            ("5 3", Err("newest count twice")),
            ("4w 2w", Err("unit of \"2w\" twice")),
            ("all 5", Err("bad retention word \"all\"")),
            ("99999999", Err("bad retention word")),
        ];
        for (input, want) in cases {
            match (Policy::parse(input), want) {
                (Ok(p), Ok(s)) => assert_eq!(p.to_string(), *s, "{input:?}"),
                (Err(e), Err(frag)) => assert!(e.contains(frag), "{input:?}: {e}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("UTC"), Ok(0));
        assert_eq!(parse_utc_offset("+02:00"), Ok(7200));
        assert_eq!(parse_utc_offset("-0530"), Ok(-(5 * 3600 + 1800)));
        for bad in ["CET", "+2", "+25:00", "02:00", "+02:60", "+02:000"] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }

    /// Table of (policy, timezone offset, now, items, expected kept names).
    #[test]
    fn decision_table() {
        let now = utc(2026, 11, 22, 12, 0, 0); // a Sunday
        type Case<'a> = (&'a str, &'a str, i64, Vec<(&'a str, i64)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("empty list", "5 4w 12m", now, vec![], vec![]),
            (
                "fewer than N newest: all kept",
                "5",
                now,
                vec![("a", now - 10), ("b", now - 20)],
                vec!["a", "b"],
            ),
            (
                "N newest",
                "2",
                now,
                vec![
                    ("a", now - 10),
                    ("b", now - 20),
                    ("c", now - 30),
                    ("d", now - 40),
                ],
                vec!["a", "b"],
            ),
            (
                "0 still keeps the newest",
                "0",
                now,
                vec![("a", now - 10), ("b", now - 20)],
                vec!["a"],
            ),
            (
                "first of each of the last 2 days (today included)",
                "0 2d",
                now,
                vec![
                    ("today-late", utc(2026, 11, 22, 11, 0, 0)),
                    ("today-early", utc(2026, 11, 22, 1, 0, 0)),
                    ("yday-late", utc(2026, 11, 21, 23, 0, 0)),
                    ("yday-early", utc(2026, 11, 21, 0, 30, 0)),
                    ("two-days-ago", utc(2026, 11, 20, 9, 0, 0)),
                ],
                vec!["today-early", "today-late", "yday-early"],
            ),
            (
                "ISO weeks start on Monday: Sunday and the next Monday are different weeks",
                "0 2w",
                utc(2026, 11, 23, 12, 0, 0), // Monday
                vec![
                    ("mon", utc(2026, 11, 23, 8, 0, 0)),
                    ("sun", utc(2026, 11, 22, 8, 0, 0)),
                    ("sat", utc(2026, 11, 21, 8, 0, 0)),
                    ("prev-sun", utc(2026, 11, 15, 8, 0, 0)),
                ],
                vec!["mon", "sat"],
            ),
            (
                "empty periods are not filled from older ones",
                "0 3m",
                now,
                vec![
                    ("nov", utc(2026, 11, 2, 0, 0, 0)),
                    ("aug", utc(2026, 8, 10, 0, 0, 0)),
                    ("jul", utc(2026, 7, 10, 0, 0, 0)),
                ],
                vec!["nov"],
            ),
            (
                "months and years",
                "1 12m 2y",
                now,
                vec![
                    ("n1", utc(2026, 11, 20, 0, 0, 0)),
                    ("n0", utc(2026, 11, 1, 0, 0, 0)),
                    ("dec25", utc(2025, 12, 31, 0, 0, 0)),
                    ("nov25b", utc(2025, 11, 30, 0, 0, 0)),
                    ("nov25a", utc(2025, 11, 1, 0, 0, 0)),
                    ("jan25", utc(2025, 1, 5, 0, 0, 0)),
                    ("jan25b", utc(2025, 1, 6, 0, 0, 0)),
                    ("y2024", utc(2024, 6, 1, 0, 0, 0)),
                ],
                vec!["dec25", "jan25", "n0", "n1"],
            ),
            (
                "ties in time: broken by name, newest (larger name) always kept",
                "0",
                now,
                vec![("x-1", now - 5), ("x-2", now - 5)],
                vec!["x-2"],
            ),
            (
                "all keeps everything",
                "all",
                now,
                vec![("a", 1), ("b", 2), ("c", now)],
                vec!["a", "b", "c"],
            ),
            (
                "clock went backwards: now is clamped to the newest old root",
                "0 2d",
                utc(1970, 1, 1, 0, 0, 0),
                vec![
                    ("new", utc(2026, 11, 22, 8, 0, 0)),
                    ("yday", utc(2026, 11, 21, 8, 0, 0)),
                    ("old", utc(2026, 11, 1, 8, 0, 0)),
                ],
                vec!["new", "yday"],
            ),
            (
                "future items beyond now (when now is not clamped) are only kept by count",
                "1 1d",
                now,
                vec![
                    ("future", now + 3 * 86_400),
                    ("today", now - 60),
                    ("old", now - 9 * 86_400),
                ],
                vec!["future"],
            ),
        ];
        for (what, pol, now, its, want) in cases {
            let p = Policy::parse(pol).unwrap();
            let d = decide(&items(&its), &p, now, 0);
            let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            w.sort();
            assert_eq!(kept(&d), w, "{what}");
        }
    }

    #[test]
    fn ties_use_seq_before_name() {
        // "x-10" sorts before "x-9" as text, but seq 10 is the newer one.
        let now = utc(2026, 11, 22, 12, 0, 0);
        let it = vec![
            Item {
                name: "x-9".into(),
                time: now - 5,
                seq: 9,
                pinned: false,
            },
            Item {
                name: "x-10".into(),
                time: now - 5,
                seq: 10,
                pinned: false,
            },
        ];
        assert_eq!(
            kept(&decide(&it, &Policy::parse("0").unwrap(), now, 0)),
            vec!["x-10".to_string()]
        );
    }

    #[test]
    fn future_clamp_keeps_newest_day() {
        // With now clamped to the newest item, the newest is in period 0 of every unit.
        let p = Policy::parse("0 1d").unwrap();
        let it = items(&[("future", 1_000_000), ("older", 1_000_000 - 2 * 86_400)]);
        assert_eq!(kept(&decide(&it, &p, 0, 0)), vec!["future".to_string()]);
    }

    #[test]
    fn time_zone_moves_day_boundaries() {
        // 23:30 UTC on the 21st is 01:30 on the 22nd at +02:00.
        let now = utc(2026, 11, 22, 12, 0, 0);
        let it = items(&[
            ("late21utc", utc(2026, 11, 21, 23, 30, 0)),
            ("early22utc", utc(2026, 11, 22, 0, 30, 0)),
        ]);
        let p = Policy::parse("0 1d").unwrap();
        assert_eq!(
            kept(&decide(&it, &p, now, 0)),
            vec!["early22utc".to_string()]
        );
        let both = vec!["early22utc".to_string(), "late21utc".to_string()];
        // At +02:00 both fall on the 22nd; the first of that day is late21utc; early22utc is newest.
        assert_eq!(kept(&decide(&it, &p, now, 7200)), both);
        // At -05:00 both fall on the 21st: first is late21utc, newest is early22utc... but only 1 day
        // back from now (07:00 on the 22nd local) covers the 22nd, which holds neither.
        assert_eq!(
            kept(&decide(&it, &p, now, -5 * 3600)),
            vec!["early22utc".to_string()]
        );
    }

    #[test]
    fn pinned_never_pruned_and_reasons_reported() {
        let now = utc(2026, 11, 22, 12, 0, 0);
        let mut it = items(&[("a", now - 1), ("b", now - 2), ("c", now - 3)]);
        it[2].pinned = true;
        let d = decide(&it, &Policy::parse("0").unwrap(), now, 0);
        assert_eq!(
            d[0],
            Decision {
                name: "a".into(),
                keep: Some(Reason::Newest)
            }
        );
        assert_eq!(
            d[1],
            Decision {
                name: "b".into(),
                keep: None
            }
        );
        assert_eq!(
            d[2],
            Decision {
                name: "c".into(),
                keep: Some(Reason::Pinned)
            }
        );
    }

    #[test]
    fn default_policy_over_a_year_of_daily_boots() {
        let now = utc(2026, 11, 22, 12, 0, 0);
        let its: Vec<Item> = (0..400)
            .map(|i| Item {
                name: format!("d{i:03}"),
                time: now - i * 86_400 - 3600,
                seq: 1,
                pinned: false,
            })
            .collect();
        let d = decide(&its, &Policy::default(), now, 0);
        let n = d.iter().filter(|d| d.keep.is_some()).count();
        // 5 newest + first of up to 4 weeks + first of 12 months, with overlaps: at most 21.
        assert!((12..=21).contains(&n), "kept {n}");
        assert_eq!(d[0].keep, Some(Reason::Newest));
        // Nothing older than 12 months (period-wise) survives.
        for (dec, it) in d.iter().zip({
            let mut s = its.clone();
            s.sort_by(|a, b| b.time.cmp(&a.time));
            s
        }) {
            if now - it.time > 400 * 86_400 - 31 * 86_400 && dec.keep.is_some() {
                panic!("{} kept: {:?}", dec.name, dec.keep);
            }
        }
    }
}
