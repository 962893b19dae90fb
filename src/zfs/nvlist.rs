//! Packed name/value lists ("nvlists") as used by the OpenZFS ioctl interface.
//!
//! Written from the format description in docs/kernel-interfaces.md#zfs-nvlist and OpenZFS
//! `module/nvpair/nvpair.c` (zfs-2.2.0 … zfs-2.4.4; the packed format has not changed), and tested
//! byte for byte against Debian's `libnvpair3linux` (see `tests_libnvpair.rs`).
//!
//! * [`NvList::to_native`] / [`NvList::from_native`]: the NATIVE encoding, little-endian only. This
//!   is what `/dev/zfs` takes and returns.
//! * [`NvList::from_xdr`]: the XDR encoding (on-disk vdev labels). Decode only.
//! * [`NvList::unpack`]: either, chosen by the 4-byte stream header.
//!
//! The decoders never panic and never allocate more than a small multiple of the input length,
//! whatever the input: every length and count is checked against the bytes that remain.

use std::fmt;

/// `NV_UNIQUE_NAME`: adding a pair replaces any pair with the same name. libzfs always sets it.
pub const NV_UNIQUE_NAME: u32 = 1;
/// `NV_UNIQUE_NAME_TYPE`: names are unique per type.
pub const NV_UNIQUE_NAME_TYPE: u32 = 2;

const NV_VERSION: i32 = 0;
const NV_ENCODE_NATIVE: u8 = 0;
#[cfg(test)]
const NV_ENCODE_XDR: u8 = 1;
const NV_LITTLE_ENDIAN: u8 = 1;
/// Size of `nvpair_t` without its name (the fixed pair header).
const NVP_HEADER: usize = 16;
/// Size of the in-stream `nvlist_t` image of an embedded list.
const NVLIST_IMAGE: usize = 24;
/// Deepest nesting we accept. The userland library allows 100, the kernel 20; ZFS replies nest
/// at most 3 deep.
pub const MAX_DEPTH: usize = 32;

/// Errors from encoding or decoding a packed nvlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvError {
    #[error("packed nvlist truncated: needed {needed} bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("packed nvlist has unknown encoding {0} (expected 0 = native or 1 = xdr)")]
    UnknownEncoding(u8),
    #[error("packed native nvlist is big-endian; only little-endian is supported")]
    BigEndian,
    #[error("packed nvlist has unsupported version {0}")]
    Version(i32),
    #[error("malformed nvpair at offset {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
    #[error("nvpair at offset {offset} has unknown data type {code}")]
    UnknownType { offset: usize, code: i32 },
    #[error("packed nvlist nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("nvlist name or string contains a NUL byte: {0:?}")]
    InteriorNul(String),
    #[error("nvlist element too large to pack: {0}")]
    TooLarge(&'static str),
}

/// Data type codes (`data_type_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum DataType {
    Boolean = 1,
    Byte = 2,
    Int16 = 3,
    Uint16 = 4,
    Int32 = 5,
    Uint32 = 6,
    Int64 = 7,
    Uint64 = 8,
    String = 9,
    ByteArray = 10,
    Int16Array = 11,
    Uint16Array = 12,
    Int32Array = 13,
    Uint32Array = 14,
    Int64Array = 15,
    Uint64Array = 16,
    StringArray = 17,
    Hrtime = 18,
    NvList = 19,
    NvListArray = 20,
    BooleanValue = 21,
    Int8 = 22,
    Uint8 = 23,
    BooleanArray = 24,
    Int8Array = 25,
    Uint8Array = 26,
    Double = 27,
}

impl DataType {
    pub fn from_code(code: i32) -> Option<DataType> {
        use DataType::*;
        Some(match code {
            1 => Boolean,
            2 => Byte,
            3 => Int16,
            4 => Uint16,
            5 => Int32,
            6 => Uint32,
            7 => Int64,
            8 => Uint64,
            9 => String,
            10 => ByteArray,
            11 => Int16Array,
            12 => Uint16Array,
            13 => Int32Array,
            14 => Uint32Array,
            15 => Int64Array,
            16 => Uint64Array,
            17 => StringArray,
            18 => Hrtime,
            19 => NvList,
            20 => NvListArray,
            21 => BooleanValue,
            22 => Int8,
            23 => Uint8,
            24 => BooleanArray,
            25 => Int8Array,
            26 => Uint8Array,
            27 => Double,
            _ => return None,
        })
    }

    /// Size of one element in the native encoding (strings and lists excluded).
    fn elem_size(self) -> usize {
        use DataType::*;
        match self {
            Boolean => 0,
            Byte | Int8 | Uint8 | ByteArray | Int8Array | Uint8Array => 1,
            Int16 | Uint16 | Int16Array | Uint16Array => 2,
            Int32 | Uint32 | BooleanValue | Int32Array | Uint32Array | BooleanArray => 4,
            Int64 | Uint64 | Hrtime | Double | Int64Array | Uint64Array => 8,
            String | StringArray => 1,
            NvList | NvListArray => NVLIST_IMAGE,
        }
    }

    fn is_array(self) -> bool {
        use DataType::*;
        matches!(
            self,
            ByteArray
                | Int8Array
                | Uint8Array
                | Int16Array
                | Uint16Array
                | Int32Array
                | Uint32Array
                | Int64Array
                | Uint64Array
                | BooleanArray
                | StringArray
                | NvListArray
        )
    }
}

/// One value. Strings are Rust strings; bytes that are not UTF-8 are decoded lossily (ZFS names
/// are ASCII; user property values may in theory hold anything).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `DATA_TYPE_BOOLEAN`: a flag without a value (presence is the information).
    Boolean,
    /// `DATA_TYPE_BOOLEAN_VALUE`.
    BooleanValue(bool),
    Byte(u8),
    Int8(i8),
    Uint8(u8),
    Int16(i16),
    Uint16(u16),
    Int32(i32),
    Uint32(u32),
    Int64(i64),
    Uint64(u64),
    Hrtime(i64),
    /// Userland only: the kernel rejects it.
    Double(f64),
    String(String),
    ByteArray(Vec<u8>),
    Int8Array(Vec<i8>),
    Uint8Array(Vec<u8>),
    Int16Array(Vec<i16>),
    Uint16Array(Vec<u16>),
    Int32Array(Vec<i32>),
    Uint32Array(Vec<u32>),
    Int64Array(Vec<i64>),
    Uint64Array(Vec<u64>),
    BooleanArray(Vec<bool>),
    StringArray(Vec<String>),
    NvList(NvList),
    NvListArray(Vec<NvList>),
}

impl Value {
    pub fn data_type(&self) -> DataType {
        match self {
            Value::Boolean => DataType::Boolean,
            Value::BooleanValue(_) => DataType::BooleanValue,
            Value::Byte(_) => DataType::Byte,
            Value::Int8(_) => DataType::Int8,
            Value::Uint8(_) => DataType::Uint8,
            Value::Int16(_) => DataType::Int16,
            Value::Uint16(_) => DataType::Uint16,
            Value::Int32(_) => DataType::Int32,
            Value::Uint32(_) => DataType::Uint32,
            Value::Int64(_) => DataType::Int64,
            Value::Uint64(_) => DataType::Uint64,
            Value::Hrtime(_) => DataType::Hrtime,
            Value::Double(_) => DataType::Double,
            Value::String(_) => DataType::String,
            Value::ByteArray(_) => DataType::ByteArray,
            Value::Int8Array(_) => DataType::Int8Array,
            Value::Uint8Array(_) => DataType::Uint8Array,
            Value::Int16Array(_) => DataType::Int16Array,
            Value::Uint16Array(_) => DataType::Uint16Array,
            Value::Int32Array(_) => DataType::Int32Array,
            Value::Uint32Array(_) => DataType::Uint32Array,
            Value::Int64Array(_) => DataType::Int64Array,
            Value::Uint64Array(_) => DataType::Uint64Array,
            Value::BooleanArray(_) => DataType::BooleanArray,
            Value::StringArray(_) => DataType::StringArray,
            Value::NvList(_) => DataType::NvList,
            Value::NvListArray(_) => DataType::NvListArray,
        }
    }

    /// `nvp_value_elem`: 0 for a flag, the length for arrays, 1 otherwise.
    fn nelem(&self) -> usize {
        match self {
            Value::Boolean => 0,
            Value::ByteArray(v) | Value::Uint8Array(v) => v.len(),
            Value::Int8Array(v) => v.len(),
            Value::Int16Array(v) => v.len(),
            Value::Uint16Array(v) => v.len(),
            Value::Int32Array(v) => v.len(),
            Value::Uint32Array(v) => v.len(),
            Value::Int64Array(v) => v.len(),
            Value::Uint64Array(v) => v.len(),
            Value::BooleanArray(v) => v.len(),
            Value::StringArray(v) => v.len(),
            Value::NvListArray(v) => v.len(),
            _ => 1,
        }
    }

    /// Unpadded size of the value in a native pair (`i_get_value_size`).
    fn native_size(&self) -> usize {
        match self {
            Value::String(s) => s.len() + 1,
            Value::StringArray(v) => v.iter().map(|s| 8 + s.len() + 1).sum(),
            Value::NvListArray(v) => v.len() * (8 + NVLIST_IMAGE),
            other => other.nelem() * other.data_type().elem_size(),
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint64(v) => Some(*v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_nvlist(&self) -> Option<&NvList> {
        match self {
            Value::NvList(l) => Some(l),
            _ => None,
        }
    }
}

/// An ordered list of name/value pairs, with the list's `nvflag`.
#[derive(Debug, Clone, PartialEq)]
pub struct NvList {
    flags: u32,
    pairs: Vec<(String, Value)>,
}

impl Default for NvList {
    fn default() -> Self {
        NvList::new()
    }
}

impl NvList {
    /// An empty list with `NV_UNIQUE_NAME`, as `fnvlist_alloc()` makes.
    pub fn new() -> NvList {
        NvList {
            flags: NV_UNIQUE_NAME,
            pairs: Vec::new(),
        }
    }

    /// An empty list with these `nvflag` bits (only `NV_UNIQUE_NAME` and `NV_UNIQUE_NAME_TYPE`
    /// are kept, as `nvlist_alloc` does).
    pub fn with_flags(flags: u32) -> NvList {
        NvList {
            flags: flags & (NV_UNIQUE_NAME | NV_UNIQUE_NAME_TYPE),
            pairs: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn flags(&self) -> u32 {
        self.flags
    }

    pub fn pairs(&self) -> &[(String, Value)] {
        &self.pairs
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Add a pair. Like `nvlist_add_*`: with `NV_UNIQUE_NAME` an existing pair of that name is
    /// removed first (with `NV_UNIQUE_NAME_TYPE`, one of that name and type); the new pair goes
    /// last.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        let name = name.into();
        if self.flags & NV_UNIQUE_NAME != 0 {
            self.pairs.retain(|(n, _)| *n != name);
        } else if self.flags & NV_UNIQUE_NAME_TYPE != 0 {
            let t = value.data_type();
            self.pairs
                .retain(|(n, v)| !(*n == name && v.data_type() == t));
        }
        self.pairs.push((name, value));
        self
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, name: impl Into<String>, value: Value) -> Self {
        self.insert(name, value);
        self
    }

    /// The first pair with this name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(Value::as_u64)
    }
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }
    pub fn get_nvlist(&self, name: &str) -> Option<&NvList> {
        self.get(name).and_then(Value::as_nvlist)
    }
    #[cfg(test)]
    pub fn get_i32(&self, name: &str) -> Option<i32> {
        match self.get(name) {
            Some(Value::Int32(v)) => Some(*v),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(i).1)
    }

    // ------------------------------------------------------------------ NATIVE encode

    /// Pack as `NV_ENCODE_NATIVE`, little-endian (what `fnvlist_pack` produces on x86_64/aarch64).
    pub fn to_native(&self) -> Result<Vec<u8>, NvError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[NV_ENCODE_NATIVE, NV_LITTLE_ENDIAN, 0, 0]);
        out.extend_from_slice(&NV_VERSION.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        self.encode_native_pairs(&mut out, 0)?;
        if out.len() > i32::MAX as usize {
            return Err(NvError::TooLarge("packed nvlist larger than 2 GiB"));
        }
        Ok(out)
    }

    fn encode_native_pairs(&self, out: &mut Vec<u8>, depth: usize) -> Result<(), NvError> {
        if depth >= MAX_DEPTH {
            return Err(NvError::TooDeep);
        }
        for (name, value) in &self.pairs {
            encode_native_pair(out, name, value)?;
            match value {
                Value::NvList(l) => l.encode_native_pairs(out, depth + 1)?,
                Value::NvListArray(ls) => {
                    for l in ls {
                        l.encode_native_pairs(out, depth + 1)?;
                    }
                }
                _ => {}
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        Ok(())
    }

    // ------------------------------------------------------------------ decode

    #[cfg(test)]
    /// Unpack either encoding, as `nvlist_unpack` does.
    pub fn unpack(buf: &[u8]) -> Result<NvList, NvError> {
        match buf.first() {
            Some(&NV_ENCODE_XDR) => NvList::from_xdr(buf),
            _ => NvList::from_native(buf),
        }
    }

    /// Unpack a NATIVE little-endian packed list. Bytes after the end of the list are ignored
    /// (the kernel's output buffer is larger than the list).
    ///
    /// Like libnvpair, the top-level version word is not checked and the top-level `nvflag` is
    /// kept as sent; embedded lists must have version 0 and keep only the two known flag bits.
    pub fn from_native(buf: &[u8]) -> Result<NvList, NvError> {
        let mut r = Reader { buf, pos: 0 };
        let hdr = r.take(4)?;
        if hdr[0] != NV_ENCODE_NATIVE {
            return Err(NvError::UnknownEncoding(hdr[0]));
        }
        if hdr[1] != NV_LITTLE_ENDIAN {
            return Err(NvError::BigEndian);
        }
        let _version = r.le_i32()?;
        let flags = r.le_u32()?;
        let mut list = NvList {
            flags,
            pairs: Vec::new(),
        };
        decode_native_pairs(&mut r, &mut list, 0)?;
        Ok(list)
    }

    /// Unpack an XDR packed list (as found in vdev labels; the kernel never sends one to us, so
    /// only the differential tests against libnvpair use it).
    #[cfg(test)]
    pub fn from_xdr(buf: &[u8]) -> Result<NvList, NvError> {
        let mut r = Reader { buf, pos: 0 };
        let hdr = r.take(4)?;
        if hdr[0] != NV_ENCODE_XDR {
            return Err(NvError::UnknownEncoding(hdr[0]));
        }
        decode_xdr_list(&mut r, 0)
    }
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn check_cstr(s: &str) -> Result<(), NvError> {
    if s.as_bytes().contains(&0) {
        return Err(NvError::InteriorNul(s.to_string()));
    }
    Ok(())
}

fn encode_native_pair(out: &mut Vec<u8>, name: &str, value: &Value) -> Result<(), NvError> {
    check_cstr(name)?;
    let name_sz = name.len() + 1;
    if name_sz > i16::MAX as usize {
        return Err(NvError::TooLarge("nvpair name longer than 32766 bytes"));
    }
    let vsz = value.native_size();
    let valoff = align8(NVP_HEADER + name_sz);
    let size = valoff + align8(vsz);
    if size > i32::MAX as usize || value.nelem() > i32::MAX as usize {
        return Err(NvError::TooLarge("nvpair larger than 2 GiB"));
    }
    let start = out.len();
    out.extend_from_slice(&(size as i32).to_le_bytes());
    out.extend_from_slice(&(name_sz as i16).to_le_bytes());
    out.extend_from_slice(&0i16.to_le_bytes());
    out.extend_from_slice(&(value.nelem() as i32).to_le_bytes());
    out.extend_from_slice(&(value.data_type() as i32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.resize(start + valoff, 0);
    match value {
        Value::Boolean => {}
        Value::BooleanValue(b) => out.extend_from_slice(&(*b as i32).to_le_bytes()),
        Value::Byte(v) | Value::Uint8(v) => out.push(*v),
        Value::Int8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Int16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Uint16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Int32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Uint32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Int64(v) | Value::Hrtime(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Uint64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Double(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::String(s) => {
            check_cstr(s)?;
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        Value::ByteArray(v) | Value::Uint8Array(v) => out.extend_from_slice(v),
        Value::Int8Array(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Value::Int16Array(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Value::Uint16Array(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Value::Int32Array(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Value::Uint32Array(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Value::Int64Array(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Value::Uint64Array(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Value::BooleanArray(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&(*x as i32).to_le_bytes())),
        Value::StringArray(v) => {
            // A table of (zeroed) pointers, then the strings.
            out.resize(out.len() + 8 * v.len(), 0);
            for s in v {
                check_cstr(s)?;
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
        }
        Value::NvList(l) => push_nvlist_image(out, l.flags),
        Value::NvListArray(ls) => {
            out.resize(out.len() + 8 * ls.len(), 0);
            for l in ls {
                push_nvlist_image(out, l.flags);
            }
        }
    }
    out.resize(start + size, 0);
    Ok(())
}

/// The 24-byte `nvlist_t` image: version, nvflag, priv (pointer, zeroed), flag, pad.
fn push_nvlist_image(out: &mut Vec<u8>, flags: u32) {
    out.extend_from_slice(&NV_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&[0u8; 16]);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NvError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(NvError::Truncated {
                offset: self.pos,
                needed: n,
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], NvError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn le_i32(&mut self) -> Result<i32, NvError> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    fn le_u32(&mut self) -> Result<u32, NvError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    #[cfg(test)]
    fn be_i32(&mut self) -> Result<i32, NvError> {
        Ok(i32::from_be_bytes(self.arr()?))
    }
    #[cfg(test)]
    fn be_u32(&mut self) -> Result<u32, NvError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    #[cfg(test)]
    fn be_u64(&mut self) -> Result<u64, NvError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    #[cfg(test)]
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// Little-endian cursor over a byte slice that is already known to be long enough; reads past
/// the end yield zero instead of panicking (callers check lengths first).
struct Le<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Le<'_> {
    fn next<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.b.get(self.pos..self.pos + N) {
            a.copy_from_slice(s);
        }
        self.pos += N;
        a
    }
}

fn malformed(offset: usize, what: &'static str) -> NvError {
    NvError::Malformed { offset, what }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Check `(type, nelem)` like `i_validate_type_nelem`.
fn check_nelem(t: DataType, nelem: i32, offset: usize) -> Result<usize, NvError> {
    if nelem < 0 {
        return Err(malformed(offset, "negative element count"));
    }
    let ok = match t {
        DataType::Boolean => nelem == 0,
        _ if t.is_array() => true,
        _ => nelem == 1,
    };
    if !ok {
        return Err(malformed(
            offset,
            "element count does not match the data type",
        ));
    }
    Ok(nelem as usize)
}

fn decode_native_pairs(r: &mut Reader<'_>, list: &mut NvList, depth: usize) -> Result<(), NvError> {
    if depth >= MAX_DEPTH {
        return Err(NvError::TooDeep);
    }
    loop {
        let start = r.pos;
        let size = r.le_i32()?;
        if size == 0 {
            return Ok(());
        }
        if size < 24 {
            return Err(malformed(start, "nvpair size too small"));
        }
        r.pos = start;
        let pair = r.take(size as usize)?;
        let mut h = Le { b: pair, pos: 4 };
        let name_sz = i16::from_le_bytes(h.next());
        let _reserved = i16::from_le_bytes(h.next());
        let nelem = i32::from_le_bytes(h.next());
        let code = i32::from_le_bytes(h.next());
        if name_sz < 1 {
            return Err(malformed(start, "empty name"));
        }
        let name_sz = name_sz as usize;
        let valoff = align8(NVP_HEADER + name_sz);
        if valoff > pair.len() {
            return Err(malformed(start, "name runs past the pair"));
        }
        let name_bytes = &pair[NVP_HEADER..NVP_HEADER + name_sz];
        if name_bytes[name_sz - 1] != 0 || name_bytes[..name_sz - 1].contains(&0) {
            return Err(malformed(
                start,
                "name is not NUL-terminated at its stated length",
            ));
        }
        let name = lossy(&name_bytes[..name_sz - 1]);
        let t = DataType::from_code(code).ok_or(NvError::UnknownType {
            offset: start,
            code,
        })?;
        let n = check_nelem(t, nelem, start)?;
        let val = &pair[valoff..];
        let value = decode_native_value(t, n, val, start)?;
        let value = match value {
            Value::NvList(mut l) => {
                decode_native_pairs(r, &mut l, depth + 1)?;
                Value::NvList(l)
            }
            Value::NvListArray(mut ls) => {
                for l in ls.iter_mut() {
                    decode_native_pairs(r, l, depth + 1)?;
                }
                Value::NvListArray(ls)
            }
            v => v,
        };
        list.pairs.push((name, value));
    }
}

/// Decode a native value from its padded region `val` (exactly `A8(value size)` bytes, as the
/// library requires).
fn decode_native_value(t: DataType, n: usize, val: &[u8], off: usize) -> Result<Value, NvError> {
    // Size the value occupies before padding; strings are measured from the data.
    let vsz: usize = match t {
        DataType::String => match val.iter().position(|&b| b == 0) {
            Some(p) => p + 1,
            None => return Err(malformed(off, "string not NUL-terminated")),
        },
        DataType::StringArray => {
            let table = n.checked_mul(8).filter(|&l| l <= val.len());
            let table = table.ok_or(malformed(off, "string array larger than its pair"))?;
            let mut p = table;
            for _ in 0..n {
                let rest = val.get(p..).unwrap_or(&[]);
                let len = rest.iter().position(|&b| b == 0);
                p += len.ok_or(malformed(off, "string array element not NUL-terminated"))? + 1;
            }
            p
        }
        DataType::NvListArray => n
            .checked_mul(8 + NVLIST_IMAGE)
            .ok_or(malformed(off, "nvlist array count overflows"))?,
        _ => n
            .checked_mul(t.elem_size())
            .ok_or(malformed(off, "array count overflows"))?,
    };
    if align8(vsz) != val.len() {
        return Err(malformed(off, "pair size does not match its value size"));
    }
    let v = &val[..vsz];
    macro_rules! arr {
        ($ty:ty) => {
            v.chunks_exact(std::mem::size_of::<$ty>())
                .map(|c| {
                    let mut a = [0u8; std::mem::size_of::<$ty>()];
                    a.copy_from_slice(c);
                    <$ty>::from_le_bytes(a)
                })
                .collect::<Vec<$ty>>()
        };
    }
    let mut le = Le { b: v, pos: 0 };
    Ok(match t {
        DataType::Boolean => Value::Boolean,
        DataType::BooleanValue => Value::BooleanValue(native_bool(le.next(), off)?),
        DataType::Byte => Value::Byte(le.next::<1>()[0]),
        DataType::Int8 => Value::Int8(i8::from_le_bytes(le.next())),
        DataType::Uint8 => Value::Uint8(le.next::<1>()[0]),
        DataType::Int16 => Value::Int16(i16::from_le_bytes(le.next())),
        DataType::Uint16 => Value::Uint16(u16::from_le_bytes(le.next())),
        DataType::Int32 => Value::Int32(i32::from_le_bytes(le.next())),
        DataType::Uint32 => Value::Uint32(u32::from_le_bytes(le.next())),
        DataType::Int64 => Value::Int64(i64::from_le_bytes(le.next())),
        DataType::Uint64 => Value::Uint64(u64::from_le_bytes(le.next())),
        DataType::Hrtime => Value::Hrtime(i64::from_le_bytes(le.next())),
        DataType::Double => Value::Double(f64::from_le_bytes(le.next())),
        DataType::String => Value::String(lossy(&v[..vsz - 1])),
        DataType::ByteArray => Value::ByteArray(v.to_vec()),
        DataType::Uint8Array => Value::Uint8Array(v.to_vec()),
        DataType::Int8Array => Value::Int8Array(arr!(i8)),
        DataType::Int16Array => Value::Int16Array(arr!(i16)),
        DataType::Uint16Array => Value::Uint16Array(arr!(u16)),
        DataType::Int32Array => Value::Int32Array(arr!(i32)),
        DataType::Uint32Array => Value::Uint32Array(arr!(u32)),
        DataType::Int64Array => Value::Int64Array(arr!(i64)),
        DataType::Uint64Array => Value::Uint64Array(arr!(u64)),
        DataType::BooleanArray => {
            let raw = arr!(i32);
            let mut out = Vec::with_capacity(raw.len());
            for x in raw {
                out.push(native_bool(x.to_le_bytes(), off)?);
            }
            Value::BooleanArray(out)
        }
        DataType::StringArray => {
            let strs = v.get(n * 8..).unwrap_or(&[]);
            let mut out = Vec::with_capacity(n);
            for s in strs.split(|&b| b == 0).take(n) {
                out.push(lossy(s));
            }
            Value::StringArray(out)
        }
        DataType::NvList => Value::NvList(nvlist_image(v, off)?),
        DataType::NvListArray => {
            let images = v.get(n * 8..).unwrap_or(&[]);
            let mut out = Vec::with_capacity(n);
            for img in images.chunks_exact(NVLIST_IMAGE) {
                out.push(nvlist_image(img, off)?);
            }
            Value::NvListArray(out)
        }
    })
}

fn native_bool(b: [u8; 4], off: usize) -> Result<bool, NvError> {
    match i32::from_le_bytes(b) {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(malformed(off, "boolean value is neither 0 nor 1")),
    }
}

/// Parse an embedded `nvlist_t` image; its pairs follow the enclosing pair in the stream.
fn nvlist_image(img: &[u8], off: usize) -> Result<NvList, NvError> {
    let mut le = Le { b: img, pos: 0 };
    if img.len() < NVLIST_IMAGE {
        return Err(malformed(off, "embedded nvlist image truncated"));
    }
    let version = i32::from_le_bytes(le.next());
    if version != NV_VERSION {
        return Err(NvError::Version(version));
    }
    Ok(NvList::with_flags(u32::from_le_bytes(le.next())))
}

// ---------------------------------------------------------------------- XDR decode

#[cfg(test)]
/// An XDR list: version (not checked by libnvpair, at any level), nvflag (kept as sent), pairs,
/// and an 8-byte terminator.
fn decode_xdr_list(r: &mut Reader<'_>, depth: usize) -> Result<NvList, NvError> {
    if depth >= MAX_DEPTH {
        return Err(NvError::TooDeep);
    }
    let _version = r.be_i32()?;
    let mut list = NvList {
        flags: r.be_u32()?,
        pairs: Vec::new(),
    };
    loop {
        let start = r.pos;
        let _encoded_size = r.be_i32()?;
        let decoded_size = r.be_i32()?;
        if decoded_size == 0 {
            return Ok(list);
        }
        if decoded_size < 24 {
            return Err(malformed(start, "xdr pair decoded size too small"));
        }
        let (name, name_len) = xdr_string(r, decoded_size as usize - NVP_HEADER - 1, start)?;
        let code = r.be_i32()?;
        let nelem = r.be_i32()?;
        let t = DataType::from_code(code).ok_or(NvError::UnknownType {
            offset: start,
            code,
        })?;
        let n = check_nelem(t, nelem, start)?;
        // The decoded size is the native pair size; the library allocates it and then requires
        // it to be exact, so the value region bounds what may be decoded.
        let valoff = align8(NVP_HEADER + name_len + 1);
        let region = (decoded_size as usize)
            .checked_sub(valoff)
            .ok_or(malformed(
                start,
                "xdr pair decoded size smaller than its name",
            ))?;
        let (value, vsz) = decode_xdr_value(r, t, n, region, start, depth)?;
        if align8(vsz) != region {
            return Err(malformed(
                start,
                "xdr pair decoded size does not match its value",
            ));
        }
        list.pairs.push((name, value));
    }
}

#[cfg(test)]
fn xdr_pad(r: &mut Reader<'_>, len: usize) -> Result<(), NvError> {
    let pad = (4 - len % 4) % 4;
    r.take(pad).map(|_| ())
}

#[cfg(test)]
/// An XDR string of at most `max` bytes (the room left in the native pair, as libnvpair
/// checks); returns it and its length in bytes. Like the C decoder, a NUL inside ends it.
fn xdr_string(r: &mut Reader<'_>, max: usize, off: usize) -> Result<(String, usize), NvError> {
    let len = r.be_u32()? as usize;
    if len > max {
        return Err(malformed(off, "xdr string longer than its pair"));
    }
    let b = r.take(len)?;
    let b = b.split(|&c| c == 0).next().unwrap_or(b);
    xdr_pad(r, len)?;
    Ok((lossy(b), b.len()))
}

#[cfg(test)]
/// Read an XDR counted array of `n` elements of native size `native` and wire width `width`
/// (4 or 8). Like libnvpair's `xdr_array`, the count may differ from `nelem` as long as it fits
/// the pair's value region; missing elements read as 0 and extra ones are dropped.
fn xdr_array(
    r: &mut Reader<'_>,
    n: usize,
    native: usize,
    width: usize,
    region: usize,
    off: usize,
) -> Result<Vec<u64>, NvError> {
    let count = r.be_u32()? as usize;
    if count > region / native {
        return Err(malformed(off, "xdr array count larger than its pair"));
    }
    if count.saturating_mul(width) > r.remaining() {
        return Err(NvError::Truncated {
            offset: r.pos,
            needed: count.saturating_mul(width),
        });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..count {
        out.push(if width == 8 {
            r.be_u64()?
        } else {
            u64::from(r.be_u32()?)
        });
    }
    out.resize(n, 0);
    Ok(out)
}

#[cfg(test)]
/// The value of a pair with no elements (only flags and arrays can have none).
fn empty_value(t: DataType) -> Value {
    match t {
        DataType::ByteArray => Value::ByteArray(Vec::new()),
        DataType::Int8Array => Value::Int8Array(Vec::new()),
        DataType::Uint8Array => Value::Uint8Array(Vec::new()),
        DataType::Int16Array => Value::Int16Array(Vec::new()),
        DataType::Uint16Array => Value::Uint16Array(Vec::new()),
        DataType::Int32Array => Value::Int32Array(Vec::new()),
        DataType::Uint32Array => Value::Uint32Array(Vec::new()),
        DataType::Int64Array => Value::Int64Array(Vec::new()),
        DataType::Uint64Array => Value::Uint64Array(Vec::new()),
        DataType::BooleanArray => Value::BooleanArray(Vec::new()),
        DataType::StringArray => Value::StringArray(Vec::new()),
        DataType::NvListArray => Value::NvListArray(Vec::new()),
        // check_nelem only lets BOOLEAN and arrays through with zero elements.
        _ => Value::Boolean,
    }
}

#[cfg(test)]
/// Decode an XDR value; returns it and its unpadded native size (from the raw string lengths,
/// so that lossy UTF-8 conversion does not change the size check).
fn decode_xdr_value(
    r: &mut Reader<'_>,
    t: DataType,
    n: usize,
    region: usize,
    off: usize,
    depth: usize,
) -> Result<(Value, usize), NvError> {
    if n == 0 {
        // No value at all is encoded for a zero-element pair (flags and empty arrays).
        return Ok((empty_value(t), 0));
    }
    let xbool = |x: u64| match x {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(malformed(off, "boolean value is neither 0 nor 1")),
    };
    let value = match t {
        DataType::Boolean => Value::Boolean,
        DataType::BooleanValue => Value::BooleanValue(xbool(u64::from(r.be_u32()?))?),
        DataType::Byte => Value::Byte(r.be_u32()? as u8),
        DataType::Int8 => Value::Int8(r.be_i32()? as i8),
        DataType::Uint8 => Value::Uint8(r.be_u32()? as u8),
        DataType::Int16 => Value::Int16(r.be_i32()? as i16),
        DataType::Uint16 => Value::Uint16(r.be_u32()? as u16),
        DataType::Int32 => Value::Int32(r.be_i32()?),
        DataType::Uint32 => Value::Uint32(r.be_u32()?),
        DataType::Int64 => Value::Int64(r.be_u64()? as i64),
        DataType::Uint64 => Value::Uint64(r.be_u64()?),
        DataType::Hrtime => Value::Hrtime(r.be_u64()? as i64),
        DataType::Double => Value::Double(f64::from_bits(r.be_u64()?)),
        DataType::String => {
            let (s, len) = xdr_string(r, region.saturating_sub(1), off)?;
            return Ok((Value::String(s), len + 1));
        }
        DataType::ByteArray => {
            let b = r.take(n)?.to_vec();
            xdr_pad(r, n)?;
            Value::ByteArray(b)
        }
        DataType::Int8Array => Value::Int8Array(
            xdr_array(r, n, 1, 4, region, off)?
                .iter()
                .map(|&x| x as i8)
                .collect(),
        ),
        DataType::Uint8Array => Value::Uint8Array(
            xdr_array(r, n, 1, 4, region, off)?
                .iter()
                .map(|&x| x as u8)
                .collect(),
        ),
        DataType::Int16Array => Value::Int16Array(
            xdr_array(r, n, 2, 4, region, off)?
                .iter()
                .map(|&x| x as i16)
                .collect(),
        ),
        DataType::Uint16Array => Value::Uint16Array(
            xdr_array(r, n, 2, 4, region, off)?
                .iter()
                .map(|&x| x as u16)
                .collect(),
        ),
        DataType::Int32Array => Value::Int32Array(
            xdr_array(r, n, 4, 4, region, off)?
                .iter()
                .map(|&x| x as i32)
                .collect(),
        ),
        DataType::Uint32Array => Value::Uint32Array(
            xdr_array(r, n, 4, 4, region, off)?
                .iter()
                .map(|&x| x as u32)
                .collect(),
        ),
        DataType::BooleanArray => Value::BooleanArray(
            xdr_array(r, n, 4, 4, region, off)?
                .into_iter()
                .map(xbool)
                .collect::<Result<_, _>>()?,
        ),
        DataType::Int64Array => Value::Int64Array(
            xdr_array(r, n, 8, 8, region, off)?
                .iter()
                .map(|&x| x as i64)
                .collect(),
        ),
        DataType::Uint64Array => Value::Uint64Array(xdr_array(r, n, 8, 8, region, off)?),
        DataType::StringArray => {
            if n.saturating_mul(4) > r.remaining() {
                return Err(NvError::Truncated {
                    offset: r.pos,
                    needed: n.saturating_mul(4),
                });
            }
            let mut out = Vec::with_capacity(n);
            // Room in the native value region: the pointer table, then each string + NUL.
            let mut used = n.saturating_mul(8);
            for _ in 0..n {
                if region <= used {
                    return Err(malformed(off, "xdr string array larger than its pair"));
                }
                let (s, len) = xdr_string(r, region - used - 1, off)?;
                out.push(s);
                used += len + 1;
            }
            let vsz = used;
            return Ok((Value::StringArray(out), vsz));
        }
        DataType::NvList => Value::NvList(decode_xdr_list(r, depth + 1)?),
        DataType::NvListArray => {
            // Each embedded list takes at least 16 bytes.
            if n.saturating_mul(16) > r.remaining() {
                return Err(NvError::Truncated {
                    offset: r.pos,
                    needed: n.saturating_mul(16),
                });
            }
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(decode_xdr_list(r, depth + 1)?);
            }
            Value::NvListArray(out)
        }
    };
    let vsz = value.native_size();
    Ok((value, vsz))
}

// ---------------------------------------------------------------------- display

impl fmt::Display for NvList {
    /// A compact, human-readable form for logs: `{name=value, …}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match v {
                Value::Boolean => write!(f, "{n}")?,
                Value::String(s) => write!(f, "{n}={s:?}")?,
                Value::NvList(l) => write!(f, "{n}={l}")?,
                Value::Uint64(x) => write!(f, "{n}={x}")?,
                Value::Int32(x) => write!(f, "{n}={x}")?,
                Value::BooleanValue(x) => write!(f, "{n}={x}")?,
                other => write!(f, "{n}={other:?}")?,
            }
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Worked examples of the format (docs/kernel-interfaces.md#zfs-nvlist), made with OpenZFS nvpair.c 2.3.9.
    #[test]
    fn empty_list_native() {
        let b = NvList::new().to_native().unwrap();
        assert_eq!(b, hex("00010000 00000000 01000000 00000000"));
        assert_eq!(NvList::from_native(&b).unwrap(), NvList::new());
    }

    #[test]
    fn target_string_native() {
        let l = NvList::new().with("target", Value::String("tank/fs@s1".into()));
        let b = l.to_native().unwrap();
        let mut want = hex("00010000 00000000 01000000 28000000 0700 0000 01000000 09000000");
        want.extend_from_slice(b"target\0\0tank/fs@s1\0\0\0\0\0\0");
        want.extend_from_slice(&[0; 4]);
        assert_eq!(b.len(), 56);
        assert_eq!(b, want);
        assert_eq!(NvList::from_native(&b).unwrap(), l);
    }

    fn snaps_list() -> NvList {
        NvList::new().with(
            "snaps",
            Value::NvList(NvList::new().with("tank/fs@s1", Value::Boolean)),
        )
    }

    #[test]
    fn nested_snaps_native() {
        let b = snaps_list().to_native().unwrap();
        let mut want = hex("00010000 00000000 01000000 30000000 0600 0000 01000000 13000000");
        want.extend_from_slice(b"snaps\0\0\0");
        want.extend(hex("00000000 01000000 0000000000000000 00000000 00000000"));
        want.extend(hex("20000000 0b00 0000 00000000 01000000"));
        want.extend_from_slice(b"tank/fs@s1\0\0\0\0\0\0");
        want.extend(hex("00000000 00000000"));
        assert_eq!(b.len(), 100);
        assert_eq!(b, want);
        assert_eq!(NvList::from_native(&b).unwrap(), snaps_list());
    }

    #[test]
    fn nested_snaps_xdr() {
        let mut b = hex("01010000 00000000 00000001 0000004c 00000030 00000005");
        b.extend_from_slice(b"snaps\0\0\0");
        b.extend(hex(
            "00000013 00000001 00000000 00000001 00000020 00000020 0000000a",
        ));
        b.extend_from_slice(b"tank/fs@s1\0\0");
        b.extend(hex("00000001 00000000 0000000000000000 0000000000000000"));
        assert_eq!(b.len(), 96);
        assert_eq!(NvList::from_xdr(&b).unwrap(), snaps_list());
        assert_eq!(NvList::unpack(&b).unwrap(), snaps_list());
    }

    #[test]
    fn unique_name_replaces() {
        let mut l = NvList::new();
        l.insert("a", Value::Uint64(1))
            .insert("b", Value::Uint64(2))
            .insert("a", Value::Int32(3));
        assert_eq!(l.pairs().len(), 2);
        assert_eq!(l.pairs()[1], ("a".to_string(), Value::Int32(3)));
        let mut m = NvList::with_flags(0);
        m.insert("a", Value::Uint64(1))
            .insert("a", Value::Uint64(2));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn interior_nul_is_an_error() {
        let l = NvList::new().with("a\0b", Value::Boolean);
        assert!(matches!(l.to_native(), Err(NvError::InteriorNul(_))));
        let l = NvList::new().with("a", Value::StringArray(vec!["x\0".into()]));
        assert!(matches!(l.to_native(), Err(NvError::InteriorNul(_))));
    }

    #[test]
    fn trailing_bytes_after_list_are_ignored() {
        let mut b = snaps_list().to_native().unwrap();
        b.extend_from_slice(&[0xAA; 64]);
        assert_eq!(NvList::from_native(&b).unwrap(), snaps_list());
    }

    #[test]
    fn rejects_bad_headers() {
        let b = NvList::new().to_native().unwrap();
        let mut be = b.clone();
        be[1] = 0;
        assert_eq!(NvList::from_native(&be), Err(NvError::BigEndian));
        let mut enc = b.clone();
        enc[0] = 7;
        assert_eq!(NvList::from_native(&enc), Err(NvError::UnknownEncoding(7)));
        let mut ver = b.clone();
        ver[4] = 1;
        assert!(
            NvList::from_native(&ver).is_ok(),
            "top-level version is not checked"
        );
        let mut emb = snaps_list().to_native().unwrap();
        emb[12 + 24] = 1; // version of the embedded nvlist_t image
        assert_eq!(NvList::from_native(&emb), Err(NvError::Version(1)));
        assert!(matches!(
            NvList::from_native(&b[..15]),
            Err(NvError::Truncated { .. })
        ));
        assert!(NvList::unpack(&[]).is_err());
    }

    #[test]
    fn rejects_wrong_pair_size() {
        let mut b = NvList::new()
            .with("x", Value::Uint64(5))
            .to_native()
            .unwrap();
        // Grow the stated pair size by 8 (and supply the bytes): the library rejects this.
        b[12] += 8;
        b.splice(12 + 32..12 + 32, [0u8; 8]);
        assert!(matches!(
            NvList::from_native(&b),
            Err(NvError::Malformed { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut l = NvList::new();
        for _ in 0..MAX_DEPTH + 5 {
            l = NvList::new().with("n", Value::NvList(l));
        }
        assert_eq!(l.to_native(), Err(NvError::TooDeep));
        // Build a too-deep stream by hand: many nested pair headers, no terminators.
        let mut b = vec![0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let one = NvList::new()
            .with("n", Value::NvList(NvList::new()))
            .to_native()
            .unwrap();
        let pair_len = u32::from_le_bytes([one[12], one[13], one[14], one[15]]) as usize;
        assert_eq!(pair_len, 48);
        let pair = &one[12..12 + pair_len];
        for _ in 0..MAX_DEPTH + 5 {
            b.extend_from_slice(pair);
        }
        assert_eq!(NvList::from_native(&b), Err(NvError::TooDeep));
    }

    /// xorshift64*, deterministic.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545F4914F6CDD1D)
        }
    }

    pub(crate) fn sample() -> NvList {
        let inner = NvList::new()
            .with("value", Value::Uint64(1))
            .with("source", Value::String("tank".into()));
        NvList::new()
            .with("flag", Value::Boolean)
            .with("bv", Value::BooleanValue(true))
            .with("u8", Value::Uint8(200))
            .with("i16", Value::Int16(-3))
            .with("u32", Value::Uint32(0xdead_beef))
            .with("u64", Value::Uint64(u64::MAX))
            .with("s", Value::String("hello".into()))
            .with(
                "sa",
                Value::StringArray(vec!["a".into(), "".into(), "ccc".into()]),
            )
            .with("u64a", Value::Uint64Array(vec![1, 2, 3]))
            .with("ba", Value::ByteArray(vec![1, 2, 3, 4, 5]))
            .with("nv", Value::NvList(inner.clone()))
            .with(
                "nva",
                Value::NvListArray(vec![inner.clone(), NvList::new(), inner]),
            )
    }

    /// Random mutations, truncations and garbage: the decoders return errors, never panic, and
    /// never hang.
    #[test]
    fn fuzz_decoders_do_not_panic() {
        let native = sample().to_native().unwrap();
        assert_eq!(NvList::from_native(&native).unwrap(), sample());
        let mut rng = Rng(0x9E3779B97F4A7C15);
        for len in 0..native.len() {
            let _ = NvList::from_native(&native[..len]);
            let mut x = native[..len].to_vec();
            if !x.is_empty() {
                x[0] = 1;
            }
            let _ = NvList::from_xdr(&x);
        }
        for round in 0..20_000 {
            let mut b = native.clone();
            let flips = 1 + (rng.next() % 8) as usize;
            for _ in 0..flips {
                let i = (rng.next() as usize) % b.len();
                b[i] = match rng.next() % 4 {
                    0 => rng.next() as u8,
                    1 => 0xff,
                    2 => 0,
                    _ => b[i] ^ (1 << (rng.next() % 8)),
                };
            }
            if round % 3 == 0 {
                b.truncate((rng.next() as usize) % (b.len() + 1));
            }
            let _ = NvList::from_native(&b);
            if let Some(x) = b.first_mut() {
                *x = 1;
            }
            let _ = NvList::from_xdr(&b);
            let _ = NvList::unpack(&b);
        }
        for _ in 0..5_000 {
            let len = (rng.next() % 300) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 12 {
                b[..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
            }
            let _ = NvList::from_native(&b);
            if len >= 12 {
                b[..12].copy_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            }
            let _ = NvList::from_xdr(&b);
        }
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        // A uint64 array pair claiming 2^31-1 elements in a tiny buffer.
        let mut b = NvList::new()
            .with("a", Value::Uint64Array(vec![7]))
            .to_native()
            .unwrap();
        b[12 + 8..12 + 12].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(NvList::from_native(&b).is_err());
        let mut b = NvList::new()
            .with("a", Value::NvListArray(vec![NvList::new()]))
            .to_native()
            .unwrap();
        b[12 + 8..12 + 12].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(NvList::from_native(&b).is_err());
    }
}
