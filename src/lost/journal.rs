//! Reading the journal: `journalctl -b N -o json` as a subprocess (no journal library), one JSON
//! object per line. journalctl writes a field as a string, as an array of byte values when it is
//! not printable UTF-8, as `null` when too large (we pass `--all`, so never), and as an array of
//! those when a field occurs more than once in an entry (the first is taken).

use crate::error::{Error, Result};
use crate::escape;
use std::ffi::OsStr;
use std::io::BufRead;

/// The fields `lost` reads (journalctl adds `__REALTIME_TIMESTAMP` and the cursor fields).
pub const FIELDS: &[&str] = &[
    "MESSAGE",
    "UNIT",
    "USER_UNIT",
    "_SYSTEMD_UNIT",
    "_SYSTEMD_USER_UNIT",
    "SYSLOG_IDENTIFIER",
    "_COMM",
    "MESSAGE_ID",
    "UNIT_RESULT",
    "JOB_RESULT",
];

/// One journal entry: the fields above, as bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fields: Vec<(String, Vec<u8>)>,
    /// `__REALTIME_TIMESTAMP`, microseconds.
    pub realtime_us: Option<u64>,
}

impl Entry {
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The unit (or program) the entry is about: `UNIT`/`USER_UNIT` (systemd writing about a
    /// unit), then the sender's unit, then its syslog identifier or command name.
    pub fn who(&self) -> Vec<u8> {
        [
            "UNIT",
            "USER_UNIT",
            "_SYSTEMD_USER_UNIT",
            "_SYSTEMD_UNIT",
            "SYSLOG_IDENTIFIER",
            "_COMM",
        ]
        .iter()
        .find_map(|k| self.get(k).filter(|v| !v.is_empty()))
        .unwrap_or(b"(unknown)")
        .to_vec()
    }
}

/// systemd's catalog ids: a unit failed (`UNIT_RESULT`), a start job failed (`JOB_RESULT`).
pub const UNIT_FAILED: &[u8] = b"d9b373ed55a64feb8242e02dbe79a49c";
pub const JOB_FAILED: &[u8] = b"be02cf6855d2428ba40df7e9d022f03d";

enum Value {
    Null,
    Str(Vec<u8>),
    Num(u64),
    Arr(Vec<Value>),
}

impl Value {
    /// A field's bytes: a string, an array of byte values, or the first of several values.
    fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Str(s) => Some(s),
            Value::Arr(v) if v.iter().all(|x| matches!(x, Value::Num(n) if *n < 256)) => Some(
                v.into_iter()
                    .map(|x| match x {
                        Value::Num(n) => n as u8,
                        _ => 0,
                    })
                    .collect(),
            ),
            Value::Arr(v) => v.into_iter().next().and_then(Value::bytes),
            Value::Null | Value::Num(_) => None,
        }
    }
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }
    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.b.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }
    fn string(&mut self) -> Option<Vec<u8>> {
        self.eat(b'"')?;
        let mut o = Vec::new();
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return Some(o),
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => o.push(b'\n'),
                        b't' => o.push(b'\t'),
                        b'r' => o.push(b'\r'),
                        b'b' => o.push(8),
                        b'f' => o.push(12),
                        b'u' => {
                            let mut u = self.hex4()?;
                            if (0xd800..0xdc00).contains(&u)
                                && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                u = 0x10000
                                    + ((u - 0xd800) << 10)
                                    + (lo.checked_sub(0xdc00)? & 0x3ff);
                            }
                            let ch = char::from_u32(u)?;
                            o.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        e => o.push(e),
                    }
                }
                c => o.push(c),
            }
        }
    }
    fn value(&mut self) -> Option<Value> {
        self.ws();
        match *self.b.get(self.i)? {
            b'"' => self.string().map(Value::Str),
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                if self.eat(b']').is_some() {
                    return Some(Value::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    if self.eat(b']').is_some() {
                        return Some(Value::Arr(v));
                    }
                    self.eat(b',')?;
                }
            }
            b'n' if self.b[self.i..].starts_with(b"null") => {
                self.i += 4;
                Some(Value::Null)
            }
            c if c.is_ascii_digit() => {
                let s = self.i;
                while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.b[s..self.i])
                    .ok()?
                    .parse()
                    .ok()
                    .map(Value::Num)
            }
            _ => None,
        }
    }
}

/// One line of `journalctl -o json`; `None` when it is not a JSON object of fields.
pub fn parse_line(line: &[u8]) -> Option<Entry> {
    let mut p = P { b: line, i: 0 };
    let mut e = Entry::default();
    p.eat(b'{')?;
    if p.eat(b'}').is_some() {
        return Some(e);
    }
    loop {
        let key = String::from_utf8(p.string()?).ok()?;
        p.eat(b':')?;
        let v = p.value()?;
        if key == "__REALTIME_TIMESTAMP" {
            e.realtime_us = v
                .bytes()
                .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok());
        } else if FIELDS.contains(&key.as_str()) {
            if let Some(b) = v.bytes() {
                e.fields.push((key, b));
            }
        }
        if p.eat(b'}').is_some() {
            return Some(e);
        }
        p.eat(b',')?;
    }
}

/// Run journalctl for boot `boot` (of `file`, when given) and hand each entry to `f`.
pub fn read(boot: &str, file: Option<&std::path::Path>, f: &mut dyn FnMut(Entry)) -> Result<()> {
    let fields = format!("--output-fields={}", FIELDS.join(","));
    let mut argv: Vec<&OsStr> = [
        "journalctl",
        "-b",
        boot,
        "-o",
        "json",
        "--all",
        "--no-pager",
        &fields,
    ]
    .into_iter()
    .map(OsStr::new)
    .collect();
    if let Some(p) = file {
        argv.extend([OsStr::new("--file"), p.as_os_str()]);
    }
    let mut child = crate::spawn::spawn(&argv).map_err(|e| {
        Error::Refused(format!(
            "cannot run journalctl ({e}): `lost` reads the journal with systemd's journalctl"
        ))
    })?;
    let io = |e: std::io::Error| Error::Refused(format!("reading journalctl's output: {e}"));
    let mut bad = 0u64;
    for line in std::io::BufReader::new(&mut child.stdout).split(b'\n') {
        let line = line.map_err(io)?;
        match parse_line(&line) {
            Some(e) => f(e),
            None if line.is_empty() => {}
            None => bad += 1,
        }
    }
    // What journalctl says on stderr (a line or two), read once its output has ended.
    let mut err = Vec::new();
    std::io::Read::read_to_end(&mut child.stderr, &mut err).map_err(io)?;
    let code = child.wait().map_err(io)?;
    if code != 0 {
        let why = err
            .split(|&b| b == b'\n')
            .find(|l| !l.is_empty())
            .map(escape::cut)
            .unwrap_or_else(|| format!("exit status {code}"));
        return Err(Error::Refused(format!(
            "journalctl -b {} failed: {why}; `journalctl --list-boots` shows the boots",
            escape::cut_str(boot)
        )));
    }
    if bad > 0 {
        log::warn!("{bad} line(s) of journalctl's output were not JSON objects; skipped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let e = parse_line(br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1796079433919609","MESSAGE":"Could not load host key: /etc/ssh/ssh_host_ed25519_key","_PID":"1","SYSLOG_IDENTIFIER":["sshd","sshd-dup"],"_SYSTEMD_UNIT":"sshd.service","UNIT":null}"#).unwrap();
        assert_eq!(e.realtime_us, Some(1796079433919609));
        assert_eq!(
            e.get("MESSAGE"),
            Some(&b"Could not load host key: /etc/ssh/ssh_host_ed25519_key"[..])
        );
        assert_eq!(e.get("SYSLOG_IDENTIFIER"), Some(&b"sshd"[..]));
        assert_eq!(e.get("UNIT"), None);
        assert_eq!(e.get("_PID"), None, "not a field lost reads");
        assert_eq!(e.who(), b"sshd.service");
        // Not UTF-8: an array of bytes; escapes, surrogate pairs.
        let e = parse_line(br#"{ "MESSAGE" : [47,118,97,114,47,255,10] , "UNIT":"a\u001b\"\\\ud83d\ude00.service"}"#).unwrap();
        assert_eq!(e.get("MESSAGE"), Some(&b"/var/\xff\n"[..]));
        assert_eq!(e.who(), "a\u{1b}\"\\\u{1f600}.service".as_bytes());
        assert_eq!(parse_line(b"{}").unwrap(), Entry::default());
        for bad in [
            &b""[..],
            b"[1]",
            b"{\"a\":",
            b"{\"a\":tru}",
            b"{\"a\":\"\\ud800\"}",
        ] {
            assert!(parse_line(bad).is_none(), "{bad:?}");
        }
        assert_eq!(parse_line(b"{\"_COMM\":\"x\"}").unwrap().who(), b"x");
        assert_eq!(parse_line(b"{\"_COMM\":\"\"}").unwrap().who(), b"(unknown)");
    }
}
