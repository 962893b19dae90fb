#!/usr/bin/env python3
"""Drive the real OpenZFS nvpair library (Debian: libnvpair3linux) through ctypes, for the nvlist
tests in src/zfs/tests_libnvpair.rs.

Reads a JSON array of requests on stdin and writes one line per request on stdout:

  {"op": "build", "list": SPEC}
      Build SPEC with nvlist_alloc / nvlist_add_*, pack it with nvlist_pack(NV_ENCODE_NATIVE) and
      nvlist_pack(NV_ENCODE_XDR).  ->  "ok NATIVE_HEX XDR_HEX DUMP_HEX"
  {"op": "unpack", "hex": HEX}
      nvlist_unpack the bytes, re-pack them both ways and dump what the library sees.
      ->  "ok NATIVE_HEX XDR_HEX DUMP_HEX"  or  "err ERRNO"
  {"op": "info"}  ->  "ok PATH"

SPEC = {"flags": N, "pairs": [[NAME_HEX, TYPE, VALUE], ...]} where TYPE is the data_type_t name
without the DATA_TYPE_ prefix, in lower case ("uint64", "string_array", "nvlist", ...). Strings
and names are hex-encoded bytes, doubles are the hex of their 8 little-endian bytes; integers are
JSON numbers; nvlist values are SPECs and nvlist_array values are lists of SPECs.

DUMP is a canonical text form of a list, produced by walking it with nvlist_next_nvpair and
nvpair_value_*; the Rust side renders its own values the same way:
  list  = "{" FLAGS "|" pair (";" pair)* "}"
  pair  = NAME_HEX ":" TYPE_CODE "=" value
  value = "" (boolean) | decimal | hex (string, double bits) | "[" value ("," value)* "]" | list

Exit status 3 when the library cannot be loaded. Written for the ephemeral-root tests; no code from
OpenZFS is copied here, only its public C API is called.
"""
import ctypes
import ctypes.util
import json
import os
import struct
import sys

NV_ENCODE_NATIVE = 0
NV_ENCODE_XDR = 1

TYPE_CODES = {
    "boolean": 1, "byte": 2, "int16": 3, "uint16": 4, "int32": 5, "uint32": 6, "int64": 7,
    "uint64": 8, "string": 9, "byte_array": 10, "int16_array": 11, "uint16_array": 12,
    "int32_array": 13, "uint32_array": 14, "int64_array": 15, "uint64_array": 16,
    "string_array": 17, "hrtime": 18, "nvlist": 19, "nvlist_array": 20, "boolean_value": 21,
    "int8": 22, "uint8": 23, "boolean_array": 24, "int8_array": 25, "uint8_array": 26, "double": 27,
}
CODE_NAMES = {v: k for k, v in TYPE_CODES.items()}

# scalar type name -> ctypes type (boolean_t is a C enum = int)
SCALARS = {
    "boolean_value": ctypes.c_int, "byte": ctypes.c_ubyte, "int8": ctypes.c_int8,
    "uint8": ctypes.c_uint8, "int16": ctypes.c_int16, "uint16": ctypes.c_uint16,
    "int32": ctypes.c_int32, "uint32": ctypes.c_uint32, "int64": ctypes.c_int64,
    "uint64": ctypes.c_uint64, "hrtime": ctypes.c_longlong, "double": ctypes.c_double,
}
ARRAYS = {
    "boolean_array": ctypes.c_int, "byte_array": ctypes.c_ubyte, "int8_array": ctypes.c_int8,
    "uint8_array": ctypes.c_uint8, "int16_array": ctypes.c_int16,
    "uint16_array": ctypes.c_uint16, "int32_array": ctypes.c_int32,
    "uint32_array": ctypes.c_uint32, "int64_array": ctypes.c_int64,
    "uint64_array": ctypes.c_uint64,
}

P = ctypes.c_void_p


def load():
    # NVPAIR_LIBRARY=/path/to/libnvpair.so.3 tests another build of the library.
    override = os.environ.get("NVPAIR_LIBRARY")
    names = [override] if override else ["libnvpair.so.3", ctypes.util.find_library("nvpair")]
    for name in names:
        if not name:
            continue
        try:
            return ctypes.CDLL(name), name
        except OSError:
            pass
    sys.stderr.write("gen_nvlist_vectors: cannot load %s " % (override or "libnvpair.so.3") +
                     "(apt-get install -t bookworm-backports libnvpair3linux)\n")
    sys.exit(3)


lib, LIBNAME = load()
libc = ctypes.CDLL(None)
libc.free.argtypes = [P]

lib.nvlist_alloc.argtypes = [ctypes.POINTER(P), ctypes.c_uint, ctypes.c_int]
lib.nvlist_free.argtypes = [P]
lib.nvlist_free.restype = None
lib.nvlist_pack.argtypes = [P, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t),
                            ctypes.c_int, ctypes.c_int]
lib.nvlist_unpack.argtypes = [P, ctypes.c_size_t, ctypes.POINTER(P), ctypes.c_int]
lib.nvlist_next_nvpair.argtypes = [P, P]
lib.nvlist_next_nvpair.restype = P
lib.nvlist_nvflag.argtypes = [P]
lib.nvlist_nvflag.restype = ctypes.c_uint
lib.nvpair_name.argtypes = [P]
lib.nvpair_name.restype = ctypes.c_char_p
lib.nvpair_type.argtypes = [P]
lib.nvpair_type.restype = ctypes.c_int


def check(rc, what):
    if rc != 0:
        raise RuntimeError("%s failed: %d" % (what, rc))


def build(spec):
    nvl = P()
    check(lib.nvlist_alloc(ctypes.byref(nvl), spec["flags"], 0), "nvlist_alloc")
    for name_hex, typ, val in spec["pairs"]:
        name = bytes.fromhex(name_hex)
        f = getattr(lib, "nvlist_add_" + typ)
        if typ == "boolean":
            rc = f(nvl, name)
        elif typ in SCALARS:
            ct = SCALARS[typ]
            if typ == "double":
                val = struct.unpack("<d", bytes.fromhex(val))[0]
            f.argtypes = [P, ctypes.c_char_p, ct]
            rc = f(nvl, name, ct(val))
        elif typ == "string":
            f.argtypes = [P, ctypes.c_char_p, ctypes.c_char_p]
            rc = f(nvl, name, bytes.fromhex(val))
        elif typ in ARRAYS:
            ct = ARRAYS[typ]
            arr = (ct * max(len(val), 1))(*val)
            f.argtypes = [P, ctypes.c_char_p, ctypes.POINTER(ct), ctypes.c_uint]
            rc = f(nvl, name, arr, len(val))
        elif typ == "string_array":
            arr = (ctypes.c_char_p * max(len(val), 1))(*[bytes.fromhex(s) for s in val])
            f.argtypes = [P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_uint]
            rc = f(nvl, name, arr, len(val))
        elif typ == "nvlist":
            sub = build(val)
            f.argtypes = [P, ctypes.c_char_p, P]
            rc = f(nvl, name, sub)  # copies
            lib.nvlist_free(sub)
        elif typ == "nvlist_array":
            subs = [build(v) for v in val]
            arr = (P * max(len(subs), 1))(*subs)
            f.argtypes = [P, ctypes.c_char_p, ctypes.POINTER(P), ctypes.c_uint]
            rc = f(nvl, name, arr, len(subs))  # copies
            for s in subs:
                lib.nvlist_free(s)
        else:
            raise RuntimeError("unknown type " + typ)
        check(rc, "nvlist_add_" + typ)
    return nvl


def pack(nvl, encoding):
    buf = ctypes.c_void_p()
    size = ctypes.c_size_t(0)
    check(lib.nvlist_pack(nvl, ctypes.byref(buf), ctypes.byref(size), encoding, 0), "nvlist_pack")
    data = ctypes.string_at(buf, size.value)
    libc.free(buf)
    return data


def value_of(pair, typ):
    """Return the dump text of one nvpair's value."""
    if typ == "boolean":
        return ""
    f = getattr(lib, "nvpair_value_" + typ)
    if typ in SCALARS:
        out = SCALARS[typ]()
        f.argtypes = [P, ctypes.POINTER(SCALARS[typ])]
        check(f(pair, ctypes.byref(out)), "nvpair_value_" + typ)
        if typ == "double":
            return struct.pack("<d", out.value).hex()
        return str(out.value)
    if typ == "string":
        out = ctypes.c_char_p()
        f.argtypes = [P, ctypes.POINTER(ctypes.c_char_p)]
        check(f(pair, ctypes.byref(out)), "nvpair_value_string")
        return out.value.hex()
    n = ctypes.c_uint(0)
    if typ in ARRAYS:
        ct = ARRAYS[typ]
        out = ctypes.POINTER(ct)()
        f.argtypes = [P, ctypes.POINTER(ctypes.POINTER(ct)), ctypes.POINTER(ctypes.c_uint)]
        check(f(pair, ctypes.byref(out), ctypes.byref(n)), "nvpair_value_" + typ)
        return "[" + ",".join(str(out[i]) for i in range(n.value)) + "]"
    if typ == "string_array":
        out = ctypes.POINTER(ctypes.c_char_p)()
        f.argtypes = [P, ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)),
                      ctypes.POINTER(ctypes.c_uint)]
        check(f(pair, ctypes.byref(out), ctypes.byref(n)), "nvpair_value_string_array")
        return "[" + ",".join(out[i].hex() for i in range(n.value)) + "]"
    if typ == "nvlist":
        out = P()
        f.argtypes = [P, ctypes.POINTER(P)]
        check(f(pair, ctypes.byref(out)), "nvpair_value_nvlist")
        return dump(out)
    if typ == "nvlist_array":
        out = ctypes.POINTER(P)()
        f.argtypes = [P, ctypes.POINTER(ctypes.POINTER(P)), ctypes.POINTER(ctypes.c_uint)]
        check(f(pair, ctypes.byref(out), ctypes.byref(n)), "nvpair_value_nvlist_array")
        return "[" + ",".join(dump(out[i]) for i in range(n.value)) + "]"
    raise RuntimeError("unknown type " + typ)


def dump(nvl):
    parts = []
    pair = lib.nvlist_next_nvpair(nvl, None)
    while pair:
        code = lib.nvpair_type(pair)
        name = lib.nvpair_name(pair)
        parts.append("%s:%d=%s" % (name.hex(), code, value_of(pair, CODE_NAMES[code])))
        pair = lib.nvlist_next_nvpair(nvl, pair)
    return "{%d|%s}" % (lib.nvlist_nvflag(nvl), ";".join(parts))


def answer(nvl):
    native = pack(nvl, NV_ENCODE_NATIVE)
    xdr = pack(nvl, NV_ENCODE_XDR)
    d = dump(nvl)
    return "ok %s %s %s" % (native.hex() or "-", xdr.hex() or "-", d.encode().hex())


def main():
    requests = json.load(sys.stdin)
    for req in requests:
        op = req["op"]
        if op == "info":
            print("ok " + LIBNAME)
        elif op == "build":
            nvl = build(req["list"])
            print(answer(nvl))
            lib.nvlist_free(nvl)
        elif op == "unpack":
            data = bytes.fromhex(req["hex"])
            # 8-byte aligned copy: the XDR decoder requires 4-byte alignment.
            buf = (ctypes.c_uint64 * (len(data) // 8 + 1))()
            ctypes.memmove(buf, data, len(data))
            nvl = P()
            rc = lib.nvlist_unpack(ctypes.cast(buf, P), len(data),
                                   ctypes.byref(nvl), 0)
            if rc != 0:
                print("err %d" % rc)
                continue
            print(answer(nvl))
            lib.nvlist_free(nvl)
        else:
            raise RuntimeError("unknown op " + op)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
