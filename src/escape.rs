//! Printing names that come from disk or the command line: bytes, never lossily converted, with
//! every control character and every byte that is not valid UTF-8 escaped, so a name cannot forge
//! or colour lines on a terminal; long names are cut in the middle for messages.

use std::ffi::OsStr;
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Messages never print more of one name than this (bytes of the original, before escaping).
const MAX_IN_MESSAGES: usize = 240;

/// C-style escaping: `\\`, `\n`, `\t`, `\r`, `\e`, `\xNN` for other control characters, DEL and
/// bytes that are not part of valid UTF-8.
pub fn bytes(b: &[u8]) -> String {
    let mut o = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                '\t' => o.push_str("\\t"),
                '\r' => o.push_str("\\r"),
                '\u{1b}' => o.push_str("\\e"),
                c if (c as u32) < 0x20
                    || c as u32 == 0x7f
                    || ('\u{80}'..='\u{9f}').contains(&c) =>
                {
                    let _ = write!(o, "\\x{:02x}", c as u32);
                }
                c => o.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(o, "\\x{byte:02x}");
        }
    }
    o
}

/// A name for a message: escaped, and cut in the middle when long.
pub fn name(n: &OsStr) -> String {
    let b = n.as_bytes();
    if b.len() <= MAX_IN_MESSAGES {
        return bytes(b);
    }
    let h = MAX_IN_MESSAGES / 2;
    format!(
        "{}…({} bytes)…{}",
        bytes(&b[..h]),
        b.len() - 2 * h,
        bytes(&b[b.len() - h..])
    )
}

pub fn text(s: &str) -> String {
    name(OsStr::new(s))
}

pub fn path(p: &Path) -> String {
    name(p.as_os_str())
}

/// A name as a JSON string. Valid UTF-8 is written as is (with JSON's escapes); a byte that is not
/// valid UTF-8 is written as the code point U+DC80+byte (a lone surrogate escape, `\udcNN`, as
/// Python's `surrogateescape` does), so the original bytes can be recovered.
pub fn json_name(n: &OsStr) -> String {
    let mut o = String::from("\"");
    for chunk in n.as_bytes().utf8_chunks() {
        let s = crate::json::string(chunk.valid());
        o.push_str(&s[1..s.len() - 1]);
        for byte in chunk.invalid() {
            let _ = write!(o, "\\udc{byte:02x}");
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        for (input, want) in [
            (&b"plain"[..], "plain"),
            (b"a\nb", "a\\nb"),
            (b"\x1b[31mred", "\\e[31mred"),
            (b"back\\slash", "back\\\\slash"),
            (b"caf\xc3\xa9", "café"),
            (b"bad\xff\xfe", "bad\\xff\\xfe"),
            (b"del\x7f", "del\\x7f"),
            ("c1\u{85}".as_bytes(), "c1\\x85"),
        ] {
            assert_eq!(bytes(input), want, "{input:?}");
        }
        let long = "x".repeat(5000);
        let n = text(&long);
        assert!(n.len() < 300, "{}", n.len());
        assert!(n.contains("(4760 bytes)"), "{n}");
        assert_eq!(
            json_name(OsStr::from_bytes(b"a\"\n\xff")),
            "\"a\\\"\\n\\udcff\""
        );
    }
}
