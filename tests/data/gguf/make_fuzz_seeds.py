#!/usr/bin/env python3
"""Write the seed corpus of the `gguf_reader` fuzz target into fuzz/seeds/gguf_reader/.

Standard library only. Seeds: a 4 KiB prefix of the default model's header (when
models/SmolLM2-135M-Instruct.Q4_1.gguf is present) and small synthetic GGUF files that
use every metadata value type, nested arrays, a custom alignment and a few tensor types.
Usage: python3 tests/data/gguf/make_fuzz_seeds.py   (from the workspace root)
"""
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "fuzz", "seeds", "gguf_reader")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
       BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, x) for x in items)
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors, version=3, alignment=32):
    """tensors: (name, dims, type id, data bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += s(key) + struct.pack("<I", t) + value(t, v)
    offsets, off = [], 0
    for _, _, _, data in tensors:
        offsets.append(off)
        off += (len(data) + alignment - 1) // alignment * alignment
    for (name, dims, ty, _), o in zip(tensors, offsets):
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, o)
    out += b"\0" * (-len(out) % alignment)
    for (_, _, _, data), o in zip(tensors, offsets):
        out += data + b"\0" * (-len(data) % alignment)
    return out


ALL_TYPES = [
    ("general.architecture", STR, "llama"),
    ("a.u8", U8, 7), ("a.i8", I8, -7), ("a.u16", U16, 700), ("a.i16", I16, -700),
    ("a.u32", U32, 70000), ("a.i32", I32, -70000), ("a.f32", F32, 1.5), ("a.bool", BOOL, True),
    ("a.u64", U64, 1 << 40), ("a.i64", I64, -(1 << 40)), ("a.f64", F64, 2.5),
    ("a.strs", ARR, (STR, ["<s>", "</s>", "héllo"])),
    ("a.i32s", ARR, (I32, [1, -2, 3])), ("a.f32s", ARR, (F32, [0.5, -1.0])),
    ("a.nested", ARR, (ARR, [(U8, [1, 2]), (STR, ["x"])])),
]
F32_TENSOR = ("norm.weight", [8], 0, struct.pack("<8f", *range(8)))
Q4_1_TENSOR = ("blk.0.w", [32, 2], 3, bytes(range(40)))
Q8_0_TENSOR = ("embd", [32, 1], 8, bytes(34))

SEEDS = {
    "all_value_types.gguf": gguf(ALL_TYPES, [F32_TENSOR, Q4_1_TENSOR, Q8_0_TENSOR]),
    "version2.gguf": gguf(ALL_TYPES[:3], [F32_TENSOR], version=2),
    "alignment64.gguf": gguf([("general.alignment", U32, 64)], [F32_TENSOR, Q8_0_TENSOR], alignment=64),
    "no_tensors.gguf": gguf(ALL_TYPES[:5], []),
    "empty.gguf": gguf([], []),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    if os.path.exists(MODEL):
        with open(MODEL, "rb") as f, open(os.path.join(OUT, "model_header_4k.gguf"), "wb") as g:
            g.write(f.read(4096))
    else:
        print("note: default model missing, header prefix seed not written (scripts/fetch-model.sh)")


if __name__ == "__main__":
    main()
