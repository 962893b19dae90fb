//! Minimal JSON writing (strings, numbers, booleans, arrays, objects), enough for `--json`.

use std::fmt::Write;

pub fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            // Control characters, DEL, C1 controls and bidirectional overrides as \uXXXX: still
            // the exact text, but inert when the JSON is shown on a terminal.
            c if crate::escape::dangerous(c) => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// An object from (key, already-encoded value) pairs.
pub fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", string(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

pub fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

pub fn opt_string(s: Option<&str>) -> String {
    s.map(string).unwrap_or_else(|| "null".into())
}

/// A name (bytes) as object fields. A name that is UTF-8 is one field, `key`, with exactly that
/// text (control characters as JSON escapes). A name that is not UTF-8 cannot be a JSON string,
/// so it gets two fields: `key` with the name escaped as in plain output (`\xNN` for each bad
/// byte, see `crate::escape`; readable, not exact) and `hex_key` with the exact bytes in lower-case
/// hex. To get the bytes back: `bytes.fromhex(o[hex_key]) if hex_key in o else o[key].encode()`.
pub fn name_fields(
    key: &'static str,
    hex_key: &'static str,
    b: &[u8],
) -> Vec<(&'static str, String)> {
    match std::str::from_utf8(b) {
        Ok(s) => vec![(key, string(s))],
        Err(_) => {
            let mut h = String::with_capacity(b.len() * 2 + 2);
            h.push('"');
            for x in b {
                let _ = write!(h, "{x:02x}");
            }
            h.push('"');
            vec![(key, string(&crate::escape::escape(b))), (hex_key, h)]
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn escapes() {
        assert_eq!(
            super::string("a\"b\\c\n\u{1}é\u{9b}\u{202e}"),
            "\"a\\\"b\\\\c\\n\\u0001é\\u009b\\u202e\""
        );
        assert_eq!(
            super::object(&[("a", "1".into()), ("b", super::array(&["true".into()]))]),
            "{\"a\":1,\"b\":[true]}"
        );
        assert_eq!(
            super::object(&super::name_fields("p", "p_hex", b"a\x1b\n")),
            "{\"p\":\"a\\u001b\\n\"}"
        );
        assert_eq!(
            super::object(&super::name_fields("p", "p_hex", b"a\xff\n")),
            "{\"p\":\"a\\\\xff\\\\n\",\"p_hex\":\"61ff0a\"}"
        );
    }
}
