//! Calendar arithmetic on Unix seconds (proleptic Gregorian, no time-zone database) and the
//! formats we print: old-root names (`2026-11-22T00-48-03Z`) and RFC 3339 UTC.

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31). H. Hinnant's civil_from_days.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01. Inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

pub fn to_civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
    }
}

/// `2026-11-22T00:48:03Z`
pub fn rfc3339(secs: i64) -> String {
    let c = to_civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// The name of an old root that began at `secs`: `2026-11-22T00-48-03Z`, plus `-N` for the
/// N-th (N ≥ 2) old root with the same start time (audit mode keeps the same root across boots).
pub fn old_root_name(secs: i64, seq: u32) -> String {
    let c = to_civil(secs);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    if seq <= 1 {
        base
    } else {
        format!("{base}-{seq}")
    }
}

/// Parse an old-root name back into (start time, sequence). `None` for anything else: such
/// entries are not old roots and are never touched.
pub fn parse_old_root_name(name: &str) -> Option<(i64, u32)> {
    let b = name.as_bytes();
    if b.len() < 20 || !b[..20].is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = name.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let sep_ok = b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b'-'
        && b[16] == b'-'
        && b[19] == b'Z';
    if !sep_ok {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59
    {
        return None;
    }
    let seq = match &name[20..] {
        "" => 1,
        rest => {
            let digits = rest.strip_prefix('-')?;
            if digits.is_empty()
                || !digits.bytes().all(|c| c.is_ascii_digit())
                || digits.starts_with('0')
            {
                return None;
            }
            let n: u32 = digits.parse().ok()?;
            if n < 2 {
                return None;
            }
            n
        }
    };
    Some((
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s,
        seq,
    ))
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Human age: `3d 4h`, `12m`, `40s`; negative ages (clock went backwards) print as `in the future`.
pub fn human_age(secs: i64) -> String {
    if secs < 0 {
        return "in the future".into();
    }
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(feature = "tools")]
/// Human size: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_many_years() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_135_683), "2026-11-20T00:48:03Z");
        assert_eq!(old_root_name(1_795_135_683, 1), "2026-11-20T00-48-03Z");
        assert_eq!(old_root_name(1_795_135_683, 3), "2026-11-20T00-48-03Z-3");
    }

    #[test]
    fn names_parse_back() {
        for (t, seq) in [
            (0, 1),
            (1_795_135_683, 1),
            (1_795_135_683, 2),
            (4_102_444_799, 17),
        ] {
            assert_eq!(parse_old_root_name(&old_root_name(t, seq)), Some((t, seq)));
        }
    }

    #[test]
    fn foreign_names_are_not_old_roots() {
        for bad in [
            "",
            ".incomplete-2026-11-20T22-48-03Z",
            "2026-11-20T00:48:03Z",
            "2026-13-20T22-48-03Z",
            "2026-02-30T22-48-03Z",
            "2026-11-20T24-48-03Z",
            "2026-11-20T22-48-03Z-1",
            "2026-11-20T22-48-03Z-02",
            "2026-11-20T22-48-03Z-",
            "2026-11-20T22-48-03Zx",
            "2026-11-20T22-48-03Z-2x",
            "old_roots",
            "2026-11-20T22-48-03Ä",
        ] {
            assert_eq!(parse_old_root_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ages_and_sizes() {
        assert_eq!(human_age(-5), "in the future");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(61), "1m");
        assert_eq!(human_age(3 * 3600 + 60), "3h 1m");
        assert_eq!(human_age(2 * 86_400 + 5 * 3600), "2d 5h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
