//! Tests of `nvlist.rs` (and of the request/reply shapes in `ioctl.rs`) against the real OpenZFS
//! nvpair library (Debian `libnvpair3linux`), driven by `tests/.../gen_nvlist_vectors.py` through
//! Python `ctypes`.
//!
//! For every case list:
//! (a) the library builds the same list with `nvlist_add_*` and packs it; our NATIVE encoding
//!     must be byte-identical;
//! (b) our decoders must read the library's NATIVE and XDR packings back to the same values;
//! (c) the library must `nvlist_unpack` our bytes, see the same values (canonical dump), and
//!     re-pack them to exactly our bytes.
//! Plus a differential fuzz: mutated buffers must be accepted or rejected alike, with equal
//! contents when accepted.
//!
//! When the library or python3 is missing these tests FAIL, unless
//! `EPHEMERAL_ROOT_SKIP_LIBNVPAIR=1` is set (then they print SKIPPED and pass).
//!
//! Other knobs: `NVPAIR_LIBRARY=/path/libnvpair.so.3` (another build of the library),
//! `NVPAIR_PYTHON="cmd args…"` (interpreter command, e.g. under a newer glibc's ld.so),
//! `NVLIST_FUZZ_ROUNDS` / `NVLIST_FUZZ_SEED` (longer or different differential fuzzing).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::ioctl::*;
use super::nvlist::{NvList, Value, NV_UNIQUE_NAME_TYPE};

const SKIP_VAR: &str = "EPHEMERAL_ROOT_SKIP_LIBNVPAIR";

fn script() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for rel in [
        "tests/zfs/gen_nvlist_vectors.py",
        "tests/gen_nvlist_vectors.py",
    ] {
        let p = root.join(rel);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "gen_nvlist_vectors.py not found under {}/tests",
        root.display()
    );
}

/// Run the script on a batch of JSON requests; `None` only when skipping is allowed.
fn run(requests: &[String]) -> Option<Vec<String>> {
    let skip = std::env::var(SKIP_VAR).map(|v| v == "1").unwrap_or(false);
    let input = format!("[{}]", requests.join(","));
    // NVPAIR_PYTHON="ld.so --library-path … python3" runs the script under another loader/libc
    // (to test a newer distribution's libnvpair, together with NVPAIR_LIBRARY).
    let python = std::env::var("NVPAIR_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut argv = python.split_whitespace();
    let child = Command::new(argv.next().unwrap_or("python3"))
        .args(argv)
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if skip => {
            eprintln!("SKIPPED: cannot run python3: {e}");
            return None;
        }
        Err(e) => panic!("cannot run python3 ({e}); install it, or set {SKIP_VAR}=1 to skip"),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait for python3");
    writer
        .join()
        .expect("writer thread")
        .expect("write requests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        if skip {
            eprintln!("SKIPPED: {stderr}");
            return None;
        }
        panic!(
            "libnvpair is not installed: {stderr}\ninstall libnvpair3linux (bookworm-backports or \
             newer), or set {SKIP_VAR}=1 to skip these tests"
        );
    }
    assert!(
        out.status.success(),
        "gen_nvlist_vectors.py failed: {stderr}"
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines.len(),
        requests.len(),
        "one answer per request; stderr: {stderr}"
    );
    Some(lines)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Boolean => "boolean",
        Value::BooleanValue(_) => "boolean_value",
        Value::Byte(_) => "byte",
        Value::Int8(_) => "int8",
        Value::Uint8(_) => "uint8",
        Value::Int16(_) => "int16",
        Value::Uint16(_) => "uint16",
        Value::Int32(_) => "int32",
        Value::Uint32(_) => "uint32",
        Value::Int64(_) => "int64",
        Value::Uint64(_) => "uint64",
        Value::Hrtime(_) => "hrtime",
        Value::Double(_) => "double",
        Value::String(_) => "string",
        Value::ByteArray(_) => "byte_array",
        Value::Int8Array(_) => "int8_array",
        Value::Uint8Array(_) => "uint8_array",
        Value::Int16Array(_) => "int16_array",
        Value::Uint16Array(_) => "uint16_array",
        Value::Int32Array(_) => "int32_array",
        Value::Uint32Array(_) => "uint32_array",
        Value::Int64Array(_) => "int64_array",
        Value::Uint64Array(_) => "uint64_array",
        Value::BooleanArray(_) => "boolean_array",
        Value::StringArray(_) => "string_array",
        Value::NvList(_) => "nvlist",
        Value::NvListArray(_) => "nvlist_array",
    }
}

fn join<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
    format!("[{}]", v.iter().map(f).collect::<Vec<_>>().join(","))
}

/// The JSON spec the script builds a list from.
fn spec(l: &NvList) -> String {
    let pairs: Vec<String> = l
        .pairs()
        .iter()
        .map(|(n, v)| {
            let val = match v {
                Value::Boolean => "null".to_string(),
                Value::BooleanValue(b) => (*b as i32).to_string(),
                Value::Byte(x) | Value::Uint8(x) => x.to_string(),
                Value::Int8(x) => x.to_string(),
                Value::Int16(x) => x.to_string(),
                Value::Uint16(x) => x.to_string(),
                Value::Int32(x) => x.to_string(),
                Value::Uint32(x) => x.to_string(),
                Value::Int64(x) | Value::Hrtime(x) => x.to_string(),
                Value::Uint64(x) => x.to_string(),
                Value::Double(x) => format!("\"{}\"", hex(&x.to_le_bytes())),
                Value::String(s) => format!("\"{}\"", hex(s.as_bytes())),
                Value::ByteArray(a) | Value::Uint8Array(a) => join(a, |x| x.to_string()),
                Value::Int8Array(a) => join(a, |x| x.to_string()),
                Value::Int16Array(a) => join(a, |x| x.to_string()),
                Value::Uint16Array(a) => join(a, |x| x.to_string()),
                Value::Int32Array(a) => join(a, |x| x.to_string()),
                Value::Uint32Array(a) => join(a, |x| x.to_string()),
                Value::Int64Array(a) => join(a, |x| x.to_string()),
                Value::Uint64Array(a) => join(a, |x| x.to_string()),
                Value::BooleanArray(a) => join(a, |x| (*x as i32).to_string()),
                Value::StringArray(a) => join(a, |s| format!("\"{}\"", hex(s.as_bytes()))),
                Value::NvList(l) => spec(l),
                Value::NvListArray(a) => join(a, spec),
            };
            format!("[\"{}\",\"{}\",{}]", hex(n.as_bytes()), type_name(v), val)
        })
        .collect();
    format!(
        "{{\"flags\":{},\"pairs\":[{}]}}",
        l.flags(),
        pairs.join(",")
    )
}

/// The canonical dump, as the script renders what the library sees.
fn dump(l: &NvList) -> String {
    let pairs: Vec<String> = l
        .pairs()
        .iter()
        .map(|(n, v)| {
            let val = match v {
                Value::Boolean => String::new(),
                Value::BooleanValue(b) => (*b as i32).to_string(),
                Value::Byte(x) | Value::Uint8(x) => x.to_string(),
                Value::Int8(x) => x.to_string(),
                Value::Int16(x) => x.to_string(),
                Value::Uint16(x) => x.to_string(),
                Value::Int32(x) => x.to_string(),
                Value::Uint32(x) => x.to_string(),
                Value::Int64(x) | Value::Hrtime(x) => x.to_string(),
                Value::Uint64(x) => x.to_string(),
                Value::Double(x) => hex(&x.to_le_bytes()),
                Value::String(s) => hex(s.as_bytes()),
                Value::ByteArray(a) | Value::Uint8Array(a) => join(a, |x| x.to_string()),
                Value::Int8Array(a) => join(a, |x| x.to_string()),
                Value::Int16Array(a) => join(a, |x| x.to_string()),
                Value::Uint16Array(a) => join(a, |x| x.to_string()),
                Value::Int32Array(a) => join(a, |x| x.to_string()),
                Value::Uint32Array(a) => join(a, |x| x.to_string()),
                Value::Int64Array(a) => join(a, |x| x.to_string()),
                Value::Uint64Array(a) => join(a, |x| x.to_string()),
                Value::BooleanArray(a) => join(a, |x| (*x as i32).to_string()),
                Value::StringArray(a) => join(a, |s| hex(s.as_bytes())),
                Value::NvList(l) => dump(l),
                Value::NvListArray(a) => join(a, dump),
            };
            format!("{}:{}={}", hex(n.as_bytes()), v.data_type() as i32, val)
        })
        .collect();
    format!("{{{}|{}}}", l.flags(), pairs.join(";"))
}

fn s(x: &str) -> Value {
    Value::String(x.to_string())
}

fn prop(value: Value, source: Option<&str>) -> Value {
    let mut l = NvList::new().with("value", value);
    if let Some(src) = source {
        l.insert("source", s(src));
    }
    Value::NvList(l)
}

/// A reply shaped like ZFS_IOC_OBJSET_STATS's property list for an encrypted old root.
fn objset_stats_reply() -> NvList {
    let me = "rpool/local/old-roots/2026-11-22T00-48-03Z";
    NvList::new()
        .with("redact_snaps", Value::NvList(NvList::new()))
        .with("creation", prop(Value::Uint64(1_763_772_483), None))
        .with("createtxg", prop(Value::Uint64(4242), None))
        .with("readonly", prop(Value::Uint64(1), Some(me)))
        .with("canmount", prop(Value::Uint64(CANMOUNT_NOAUTO), Some(me)))
        .with("mountpoint", prop(s("legacy"), Some("rpool/local")))
        .with("compression", prop(Value::Uint64(15), Some("rpool")))
        .with(
            "keystatus",
            prop(Value::Uint64(KEYSTATUS_UNAVAILABLE), None),
        )
        .with("encryption", prop(Value::Uint64(8), None))
        .with("encryptionroot", prop(s("rpool/local"), None))
        .with(PINNED_PROP, prop(s("kernel update"), Some(me)))
        .with("used", prop(Value::Uint64(1 << 40), Some("")))
}

#[allow(clippy::vec_init_then_push)]
fn cases() -> Vec<(&'static str, NvList)> {
    let mut v: Vec<(&'static str, NvList)> = Vec::new();
    v.push(("empty", NvList::new()));
    v.push(("empty, nvflag 0", NvList::with_flags(0)));
    v.push((
        "NV_UNIQUE_NAME_TYPE with a repeated name",
        NvList::with_flags(NV_UNIQUE_NAME_TYPE)
            .with("a", Value::Uint64(1))
            .with("a", s("one")),
    ));
    v.push((
        "every scalar",
        NvList::new()
            .with("boolean", Value::Boolean)
            .with("bv-true", Value::BooleanValue(true))
            .with("bv-false", Value::BooleanValue(false))
            .with("byte", Value::Byte(0xff))
            .with("int8", Value::Int8(i8::MIN))
            .with("uint8", Value::Uint8(u8::MAX))
            .with("int16", Value::Int16(i16::MIN))
            .with("uint16", Value::Uint16(u16::MAX))
            .with("int32", Value::Int32(i32::MIN))
            .with("uint32", Value::Uint32(u32::MAX))
            .with("int64", Value::Int64(i64::MIN))
            .with("uint64", Value::Uint64(u64::MAX))
            .with("hrtime", Value::Hrtime(1_763_772_483_123_456_789))
            .with("double", Value::Double(-1234.5e-7))
            .with("string", s("rpool/local/root@blank"))
            .with("empty-string", s(""))
            .with("utf8", s("ünïcödé ✓")),
    ));
    // Name and string lengths across the 8-byte padding boundaries.
    let mut pad = NvList::new();
    for n in 1..=17 {
        pad.insert("n".repeat(n), s(&"v".repeat(n + 3)));
    }
    pad.insert("x".repeat(255), Value::Boolean);
    v.push(("padding boundaries", pad));
    v.push((
        "every array, various lengths",
        NvList::new()
            .with("byte_array", Value::ByteArray(vec![0, 1, 2, 0xff, 5]))
            .with("byte_array-empty", Value::ByteArray(vec![]))
            .with("int8_array", Value::Int8Array(vec![-128, 0, 127]))
            .with("uint8_array", Value::Uint8Array(vec![9; 9]))
            .with("int16_array", Value::Int16Array(vec![-1, 2, -3]))
            .with("uint16_array", Value::Uint16Array(vec![65535]))
            .with(
                "int32_array",
                Value::Int32Array(vec![i32::MIN, 0, i32::MAX]),
            )
            .with("uint32_array", Value::Uint32Array(vec![1, 2, 3, 4, 5]))
            .with("int64_array", Value::Int64Array(vec![i64::MIN, -1]))
            .with("uint64_array", Value::Uint64Array(vec![0, 1, u64::MAX]))
            .with("uint64_array-empty", Value::Uint64Array(vec![]))
            .with(
                "boolean_array",
                Value::BooleanArray(vec![true, false, true]),
            )
            .with(
                "string_array",
                Value::StringArray(vec!["a".into(), "".into(), "ccc".into()]),
            )
            .with("string_array-empty", Value::StringArray(vec![])),
    ));
    let leaf = NvList::new()
        .with("value", Value::Uint64(7))
        .with("source", s("rpool"));
    let nested3 = NvList::new()
        .with(
            "level1",
            Value::NvList(
                NvList::new()
                    .with("level2", Value::NvList(leaf.clone()))
                    .with("after", Value::Int32(-5)),
            ),
        )
        .with("tail", s("end"));
    v.push(("nested lists, three deep", nested3.clone()));
    v.push((
        "nvlist arrays",
        NvList::new()
            .with("none", Value::NvListArray(vec![]))
            .with("one-empty", Value::NvListArray(vec![NvList::new()]))
            .with(
                "mixed",
                Value::NvListArray(vec![
                    leaf.clone(),
                    nested3,
                    NvList::with_flags(0).with("x", Value::Boolean),
                ]),
            )
            .with("after", Value::Uint64(1)),
    ));
    v.push((
        "nvlist array inside nvlist array",
        NvList::new().with(
            "outer",
            Value::NvListArray(vec![
                NvList::new().with("inner", Value::NvListArray(vec![leaf.clone(), leaf]))
            ]),
        ),
    ));
    // What ioctl.rs sends.
    let mut props = NvList::new();
    props
        .insert("mountpoint", s("legacy"))
        .insert("canmount", Value::Uint64(CANMOUNT_NOAUTO))
        .insert("readonly", Value::Uint64(1))
        .insert("compression", Value::Uint64(15))
        .insert(PINNED_PROP, s("yes"));
    let reqs = [
        snapshot_request(
            &["rpool/local/root@2026-11-22T00-48-03Z"],
            &[("ephemeral-root:began", "1763772483")],
        ),
        destroy_snaps_request(
            &["rpool/local/old-roots/a@x", "rpool/local/root@blank"],
            true,
        ),
        rollback_request("rpool/local/root", Some("rpool/local/root@blank")),
        rollback_request("rpool/local/root", None),
        create_request("rpool/local/root", &props),
        create_request("rpool/local/root", &NvList::new()),
        clone_request(
            "rpool/local/root",
            "rpool/local/old-roots/.template@blank",
            &props,
        ),
        set_props_request("rpool/local/old-roots/x", &props),
        pool_sync_request("rpool", true),
    ];
    for (i, r) in reqs.into_iter().enumerate() {
        let r = r.expect("request");
        let name: &'static str = [
            "snapshot",
            "destroy_snaps",
            "rollback",
            "rollback-no-target",
            "create",
            "create-no-props",
            "clone",
            "set_prop",
            "pool_sync",
        ][i];
        v.push((name, r.input.expect("new-style requests send a list")));
    }
    v.push(("snapshot_list_next range", snapshot_range(100, 200)));
    // What ioctl.rs parses.
    v.push(("reply: objset stats", objset_stats_reply()));
    v.push((
        "reply: rollback",
        NvList::new().with("target", s("rpool/local/root@blank")),
    ));
    v.push((
        "reply: per-snapshot errors",
        NvList::new()
            .with("rpool/a@x", Value::Int32(16))
            .with("rpool/b@y", Value::Int32(17)),
    ));
    v
}

fn build_requests(cases: &[(&str, NvList)]) -> Vec<String> {
    cases
        .iter()
        .map(|(_, l)| format!("{{\"op\":\"build\",\"list\":{}}}", spec(l)))
        .collect()
}

fn unpack_request(b: &[u8]) -> String {
    format!("{{\"op\":\"unpack\",\"hex\":\"{}\"}}", hex(b))
}

struct Answer {
    native: Vec<u8>,
    xdr: Vec<u8>,
    dump: String,
}

fn parse_answer(line: &str) -> Option<Answer> {
    let f: Vec<&str> = line.split(' ').collect();
    if f[0] != "ok" {
        return None;
    }
    assert_eq!(f.len(), 4, "bad answer {line}");
    Some(Answer {
        native: unhex(f[1]),
        xdr: unhex(f[2]),
        dump: String::from_utf8(unhex(f[3])).expect("dump utf-8"),
    })
}

#[test]
fn library_builds_the_same_bytes_and_we_decode_them() {
    let cases = cases();
    let Some(lines) = run(&build_requests(&cases)) else {
        return;
    };
    for ((what, list), line) in cases.iter().zip(lines) {
        let lib = parse_answer(&line).unwrap_or_else(|| panic!("{what}: library failed: {line}"));
        // (a) byte-identical NATIVE encoding
        let ours = list.to_native().expect("encode");
        assert_eq!(hex(&ours), hex(&lib.native), "{what}: NATIVE bytes differ");
        // the library built what we think we asked for
        assert_eq!(
            lib.dump,
            dump(list),
            "{what}: library built a different list"
        );
        // (b) decode the library's NATIVE and XDR packings
        assert_eq!(
            NvList::from_native(&lib.native).as_ref(),
            Ok(list),
            "{what}: NATIVE decode"
        );
        assert_eq!(
            NvList::from_xdr(&lib.xdr).as_ref(),
            Ok(list),
            "{what}: XDR decode"
        );
        assert_eq!(
            NvList::unpack(&lib.xdr).as_ref(),
            Ok(list),
            "{what}: unpack(XDR)"
        );
    }
}

#[test]
fn library_reads_our_bytes() {
    let cases = cases();
    let reqs: Vec<String> = cases
        .iter()
        .map(|(_, l)| unpack_request(&l.to_native().expect("encode")))
        .collect();
    let Some(lines) = run(&reqs) else { return };
    for ((what, list), line) in cases.iter().zip(lines) {
        // (c) nvlist_unpack accepts our encoding, sees the same values, re-packs to our bytes
        let lib = parse_answer(&line)
            .unwrap_or_else(|| panic!("{what}: nvlist_unpack rejected our bytes: {line}"));
        assert_eq!(
            lib.dump,
            dump(list),
            "{what}: the library reads different values"
        );
        assert_eq!(
            hex(&lib.native),
            hex(&list.to_native().expect("encode")),
            "{what}: re-pack differs"
        );
        assert_eq!(
            NvList::from_xdr(&lib.xdr).as_ref(),
            Ok(list),
            "{what}: XDR of our list"
        );
    }
}

#[test]
fn reply_parsing_on_library_bytes() {
    let Some(lines) = run(&build_requests(&[("objset stats", objset_stats_reply())])) else {
        return;
    };
    let lib = parse_answer(&lines[0]).expect("library built the reply");
    let stats = DatasetStats {
        name: "rpool/local/old-roots/2026-11-22T00-48-03Z".into(),
        fast: FastStats::from(&ZfsCmd::new().zc_objset_stats),
        props: NvList::from_native(&lib.native).expect("decode"),
    };
    assert!(stats.readonly());
    assert_eq!(stats.canmount(), CANMOUNT_NOAUTO);
    assert_eq!(stats.mountpoint(), Some(("legacy", Some("rpool/local"))));
    assert!(stats.is_encrypted());
    assert!(stats.key_missing());
    assert_eq!(stats.encryption_root(), Some("rpool/local"));
    assert_eq!(stats.creation(), Some(1_763_772_483));
    assert_eq!(stats.createtxg(), 4242);
    assert_eq!(stats.pinned(), Some("kernel update"));
    assert!(stats.is_local("readonly") && !stats.is_local("mountpoint"));
    let local = stats.local_props();
    let names: Vec<&str> = local.pairs().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["readonly", "canmount", PINNED_PROP]);
    assert_eq!(local.get_u64("readonly"), Some(1));

    // Failure lists from snapshot/destroy_snaps replies.
    let Some(lines) = run(&build_requests(&[(
        "errors",
        NvList::new()
            .with("rpool/a@x", Value::Int32(16))
            .with("rpool/b@y", Value::Int32(17)),
    )])) else {
        return;
    };
    let lib = parse_answer(&lines[0]).expect("library built the reply");
    let out = NvList::from_native(&lib.native).expect("decode");
    assert_eq!(
        failures_of(&out),
        vec![("rpool/a@x".to_string(), 16), ("rpool/b@y".to_string(), 17)]
    );
}

/// Mutate NATIVE and XDR encodings of the case lists and compare the library's verdict
/// (`nvlist_unpack`) with ours (`NvList::unpack`): both accept or both reject, and what is
/// accepted reads the same.
#[test]
fn differential_fuzz_against_library() {
    let cases = cases();
    let Some(built) = run(&build_requests(&cases)) else {
        return;
    };
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for line in built {
        let lib = parse_answer(&line).expect("library builds every case");
        seeds.push(lib.native);
        seeds.push(lib.xdr);
    }
    // NVLIST_FUZZ_SEED=N to explore other mutations.
    let mut rng: u64 = std::env::var("NVLIST_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s != 0)
        .unwrap_or(0x2545_F491_4F6C_DD1D);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // NVLIST_FUZZ_ROUNDS=N for a longer run (mutations per seed).
    let rounds: usize = std::env::var("NVLIST_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    for b in &seeds {
        for _ in 0..rounds {
            let mut m = b.clone();
            // Leave the 12-byte header alone most of the time so the pairs get exercised.
            let lo = if next() % 8 == 0 { 0 } else { 12.min(m.len()) };
            if m.len() > lo {
                for _ in 0..1 + next() % 3 {
                    let i = lo + (next() as usize) % (m.len() - lo);
                    m[i] = match next() % 4 {
                        0 => next() as u8,
                        1 => m[i].wrapping_add(8),
                        2 => m[i].wrapping_sub(4),
                        _ => m[i] ^ 0x80,
                    };
                }
            }
            if next() % 5 == 0 {
                let cut = (next() as usize) % (m.len() + 1);
                m.truncate(cut);
            }
            bufs.push(m);
        }
    }
    let reqs: Vec<String> = bufs.iter().map(|b| unpack_request(b)).collect();
    let Some(lines) = run(&reqs) else { return };
    let (mut both_ok, mut both_err, mut lossy) = (0, 0, 0);
    let mut disagreements = Vec::new();
    for (b, line) in bufs.iter().zip(lines) {
        let lib = parse_answer(&line);
        let ours = NvList::unpack(b);
        match (&lib, &ours) {
            (Some(lib), Ok(l)) => {
                both_ok += 1;
                // Names/strings that are not UTF-8 are decoded lossily by us (U+FFFD, hex
                // efbfbd in the dump); compare the rest exactly.
                let d = dump(l);
                if d.contains("efbfbd") {
                    lossy += 1;
                } else if lib.dump != d {
                    disagreements.push(format!(
                        "same bytes, different values: {}\n  lib  {}\n  ours {d}",
                        hex(b),
                        lib.dump
                    ));
                }
            }
            (None, Err(_)) => both_err += 1,
            (Some(_), Err(e)) => {
                disagreements.push(format!("library accepts, we reject ({e}): {}", hex(b)))
            }
            (None, Ok(_)) => {
                disagreements.push(format!("library rejects ({line}), we accept: {}", hex(b)))
            }
        }
    }
    eprintln!(
        "differential fuzz: {} buffers, {both_ok} accepted by both ({lossy} with non-UTF-8 text), \
         {both_err} rejected by both",
        bufs.len()
    );
    assert!(
        both_ok > 50 && both_err > 50,
        "the mutations should exercise both outcomes"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
