//! Showing bytes that came from disk, the command line, the kernel command line or a config file:
//! one escaping for plain output and for messages, and a cut for messages.
//!
//! The escaping ("C-style"), used by `diff`'s plain output, `list`, `status` and every message:
//! - `\\` for a backslash; `\n`, `\t`, `\r` for those three control characters;
//! - `\xNN` (two lower-case hex digits) for each byte that is
//!   - any other control character (0x00–0x1f, 0x7f),
//!   - part of an invalid UTF-8 sequence,
//!   - part of the UTF-8 encoding of a C1 control character (U+0080–U+009F, which some terminals
//!     obey, e.g. U+009B is CSI) or of a bidirectional override or isolate (U+202A–U+202E,
//!     U+2066–U+2069, which make a terminal show text in another order than it is);
//! - everything else (printable ASCII, all other valid UTF-8) as it is.
//!
//! So a name with terminal escape sequences or newlines prints on one line, inert, and the escaping
//! is reversible: [`unescape`] gives back the original bytes (a property test checks it). `--json`
//! and `--nix` have their own rules (see `docs/names.md`).

use std::ffi::OsStr;
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How many bytes of a long value a message keeps at each end.
pub const CUT_KEEP: usize = 100;

/// A character that acts on a terminal: C0/C1 controls, DEL, bidirectional overrides/isolates.
pub fn dangerous(c: char) -> bool {
    let u = c as u32;
    u < 0x20
        || (0x7f..=0x9f).contains(&u)
        || (0x202a..=0x202e).contains(&u)
        || (0x2066..=0x2069).contains(&u)
}

fn push_byte(o: &mut String, b: u8) {
    let _ = write!(o, "\\x{b:02x}");
}

fn push_str(o: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if dangerous(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    push_byte(o, b);
                }
            }
            c => o.push(c),
        }
    }
}

/// Escape `b` for a terminal (see the module documentation).
pub fn escape(b: &[u8]) -> String {
    let mut o = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        push_str(&mut o, chunk.valid());
        for &x in chunk.invalid() {
            push_byte(&mut o, x);
        }
    }
    o
}

/// True if [`escape`] would change nothing.
pub fn is_plain(b: &[u8]) -> bool {
    match std::str::from_utf8(b) {
        Ok(s) => !s.chars().any(|c| c == '\\' || dangerous(c)),
        Err(_) => false,
    }
}

/// The inverse of [`escape`]; `None` for text [`escape`] cannot produce (tests and tools).
#[cfg(test)]
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut o = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            o.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b'\\' => o.push(b'\\'),
            b'n' => o.push(b'\n'),
            b't' => o.push(b'\t'),
            b'r' => o.push(b'\r'),
            b'x' => {
                let h = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                o.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(o)
}

/// Back off from `i` to the start of the UTF-8 sequence it is in (at most 3 bytes).
fn boundary_back(b: &[u8], mut i: usize) -> usize {
    let mut n = 0;
    while i > 0 && i < b.len() && b[i] & 0xc0 == 0x80 && n < 3 {
        i -= 1;
        n += 1;
    }
    i
}

fn boundary_fwd(b: &[u8], mut i: usize) -> usize {
    let mut n = 0;
    while i < b.len() && b[i] & 0xc0 == 0x80 && n < 3 {
        i += 1;
        n += 1;
    }
    i
}

/// A value for a message: escaped, and if longer than `2 * CUT_KEEP` bytes, only its first and
/// last [`CUT_KEEP`] bytes with `…` between them and the full length after it.
pub fn cut(b: &[u8]) -> String {
    if b.len() <= 2 * CUT_KEEP + 20 {
        return escape(b);
    }
    let head = boundary_back(b, CUT_KEEP);
    let tail = boundary_fwd(b, b.len() - CUT_KEEP);
    format!(
        "{}…{} ({} bytes)",
        escape(&b[..head]),
        escape(&b[tail..]),
        b.len()
    )
}

/// [`cut`] of a `str`.
pub fn cut_str(s: &str) -> String {
    cut(s.as_bytes())
}

/// [`cut`] in double quotes, for messages that quote the value.
pub fn quoted(b: &[u8]) -> String {
    format!("\"{}\"", cut(b))
}

/// A name for a message: escaped and cut ([`cut`]).
pub fn name(n: &OsStr) -> String {
    cut(n.as_bytes())
}

/// [`name`] of text.
pub fn text(s: &str) -> String {
    cut(s.as_bytes())
}

/// [`name`] of a path.
pub fn path(p: &Path) -> String {
    cut(p.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], &str)] = &[
            (b"/var/lib/x", "/var/lib/x"),
            (b"a b", "a b"),
            ("é日本".as_bytes(), "é日本"),
            (b"a\\b", "a\\\\b"),
            (b"a\nb", "a\\nb"),
            (b"\t\r", "\\t\\r"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"\x00\x7f", "\\x00\\x7f"),
            (b"\xff\xfe", "\\xff\\xfe"),
            (b"ok\xc3", "ok\\xc3"),
            ("\u{9b}31m".as_bytes(), "\\xc2\\x9b31m"),
            ("\u{202e}txt".as_bytes(), "\\xe2\\x80\\xaetxt"),
            (b"\\x41", "\\\\x41"),
        ];
        for (i, want) in cases {
            assert_eq!(escape(i), *want, "{i:?}");
            assert_eq!(unescape(want).as_deref(), Some(*i), "{want}");
            assert_eq!(is_plain(i), escape(i).as_bytes() == *i, "{i:?}");
        }
        assert_eq!(unescape("\\q"), None);
        assert_eq!(unescape("\\x4"), None);
        assert_eq!(unescape("\\"), None);
    }

    #[test]
    fn escaped_text_is_inert() {
        // Every byte value, alone and in pairs: no control character and no newline survives.
        for a in 0..=255u8 {
            for b in [0u8, b'a', 0x80, 0xc2, 0x9b, 0xff] {
                let e = escape(&[a, b]);
                assert!(!e.chars().any(dangerous), "{a:x} {b:x}: {e:?}");
                assert_eq!(unescape(&e).as_deref(), Some(&[a, b][..]));
            }
        }
    }

    #[test]
    fn cut_keeps_both_ends() {
        let long = [b"start-".as_slice(), &vec![b'm'; 2000], b"-end\n"].concat();
        let c = cut(&long);
        assert!(
            c.starts_with("start-mmm") && c.ends_with("-end\\n (2011 bytes)"),
            "{c}"
        );
        assert!(c.len() < 2 * CUT_KEEP + 40, "{}", c.len());
        assert!(c.contains('…'));
        // Multi-byte characters are not split at the cut.
        let wide = "é".repeat(1000);
        let c = cut(wide.as_bytes());
        assert!(!c.contains("\\x"), "{c}");
        assert_eq!(cut(b"short"), "short");
        assert_eq!(quoted(b"a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn message_and_json_names() {
        let long = "x".repeat(5000);
        let n = text(&long);
        assert!(n.len() < 300, "{}", n.len());
        assert!(n.contains("(5000 bytes)") && n.contains('…'), "{n}");
        assert_eq!(name(OsStr::from_bytes(b"\x1b[31mred")), "\\x1b[31mred");
        assert_eq!(path(Path::new("/a\nb")), "/a\\nb");
    }
}
