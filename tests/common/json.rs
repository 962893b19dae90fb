//! A small JSON reader for `check --json` (the tests also run inside the VM guests, which have no
//! python3): values, objects, arrays, strings with escapes, numbers, literals.

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(v) => v.iter().find(|(n, _)| n == k).map(|(_, j)| j),
            _ => None,
        }
    }
    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

pub fn parse(s: &str) -> Result<Json, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let v = value(&b, &mut i)?;
    ws(&b, &mut i);
    if i != b.len() {
        return Err(format!("trailing text at {i}"));
    }
    Ok(v)
}

fn ws(b: &[char], i: &mut usize) {
    while *i < b.len() && b[*i].is_whitespace() {
        *i += 1;
    }
}

fn value(b: &[char], i: &mut usize) -> Result<Json, String> {
    ws(b, i);
    let c = *b.get(*i).ok_or("unexpected end")?;
    match c {
        '{' => {
            *i += 1;
            let mut v = vec![];
            ws(b, i);
            if b.get(*i) == Some(&'}') {
                *i += 1;
                return Ok(Json::Obj(v));
            }
            loop {
                ws(b, i);
                let k = match value(b, i)? {
                    Json::Str(k) => k,
                    o => return Err(format!("object key {o:?}")),
                };
                ws(b, i);
                if b.get(*i) != Some(&':') {
                    return Err(format!("want ':' at {i}"));
                }
                *i += 1;
                v.push((k, value(b, i)?));
                ws(b, i);
                match b.get(*i) {
                    Some(',') => *i += 1,
                    Some('}') => {
                        *i += 1;
                        return Ok(Json::Obj(v));
                    }
                    _ => return Err(format!("want ',' or '}}' at {i}")),
                }
            }
        }
        '[' => {
            *i += 1;
            let mut v = vec![];
            ws(b, i);
            if b.get(*i) == Some(&']') {
                *i += 1;
                return Ok(Json::Arr(v));
            }
            loop {
                v.push(value(b, i)?);
                ws(b, i);
                match b.get(*i) {
                    Some(',') => *i += 1,
                    Some(']') => {
                        *i += 1;
                        return Ok(Json::Arr(v));
                    }
                    _ => return Err(format!("want ',' or ']' at {i}")),
                }
            }
        }
        '"' => {
            *i += 1;
            let mut s = String::new();
            loop {
                let c = *b.get(*i).ok_or("unterminated string")?;
                *i += 1;
                match c {
                    '"' => return Ok(Json::Str(s)),
                    '\\' => {
                        let e = *b.get(*i).ok_or("bad escape")?;
                        *i += 1;
                        match e {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            'r' => s.push('\r'),
                            'b' => s.push('\u{8}'),
                            'f' => s.push('\u{c}'),
                            'u' => {
                                let h: String =
                                    b.get(*i..*i + 4).ok_or("bad \\u")?.iter().collect();
                                *i += 4;
                                let n = u32::from_str_radix(&h, 16).map_err(|e| e.to_string())?;
                                s.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                            }
                            o => s.push(o),
                        }
                    }
                    o => s.push(o),
                }
            }
        }
        't' | 'f' | 'n' => {
            for (w, j) in [
                ("true", Json::Bool(true)),
                ("false", Json::Bool(false)),
                ("null", Json::Null),
            ] {
                let end = *i + w.len();
                if b.get(*i..end)
                    .map(|x| x.iter().collect::<String>())
                    .as_deref()
                    == Some(w)
                {
                    *i = end;
                    return Ok(j);
                }
            }
            Err(format!("bad literal at {i}"))
        }
        _ => {
            let st = *i;
            while *i < b.len() && (b[*i].is_ascii_digit() || "+-.eE".contains(b[*i])) {
                *i += 1;
            }
            let t: String = b[st..*i].iter().collect();
            t.parse()
                .map(Json::Num)
                .map_err(|_| format!("bad value at {st}: {t:?}"))
        }
    }
}

#[test]
fn json_reads_check_output() {
    let j = parse(r#"{"clean": false, "n": -1.5e2, "entries": [{"name": "a\"\u00e9", "kind": "old-root"}, null], "x": true}"#).unwrap();
    assert_eq!(j.get("clean"), Some(&Json::Bool(false)));
    assert_eq!(j.get("n"), Some(&Json::Num(-150.0)));
    match j.get("entries") {
        Some(Json::Arr(a)) => assert_eq!(a[0].get("name").and_then(Json::str), Some("a\"é")),
        o => panic!("{o:?}"),
    }
    assert!(parse("{").is_err());
    assert!(parse("[1,]").is_err());
}
