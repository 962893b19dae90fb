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
            c if (c as u32) < 0x20 => {
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

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(
            super::string("a\"b\\c\n\u{1}é"),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
        assert_eq!(
            super::object(&[("a", "1".into()), ("b", super::array(&["true".into()]))]),
            "{\"a\":1,\"b\":[true]}"
        );
    }
}
