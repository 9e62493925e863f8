#!/usr/bin/env python3
"""Generate reference data for pagoda's quantized block formats (tests/quant_reference.rs).

Two files are written to tests/data/quant/:

* model_rows.json: a few rows of real tensors of every type in the default model
  (Q4_1, Q8_0, F32): their raw bytes and the `gguf` package's dequantization.
  Run scripts/fetch-model.sh first.
* synthetic.json: deterministic pseudo-random data for every format pagoda supports.
  - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16: quantized by `gguf.quants.quantize`
    (numpy ports of ggml's reference quantizers), dequantized by `gguf.quants.dequantize`.
    pagoda must reproduce both the bytes and the values.
  - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS: the gguf package cannot quantize
    these, so the blocks are random bytes (with sane f16 super-block scales); pagoda
    must reproduce the dequantization. (Their quantizers are checked byte for byte
    against llama.cpp's C code instead: scripts/gen_llamacpp_quant_refs.py.)
  - Q8_1, Q8_K (activation formats, absent from the gguf package): quantized by the
    numpy transcriptions of ggml's `quantize_row_q8_1_ref` / `quantize_row_q8_K_ref`
    below, dequantized as `d * qs`.

All floats are stored as little-endian hex of their bits, so comparisons are bit-exact.
Usage: python3 scripts/gen_quant_refs.py [MODEL]   (needs `pip install gguf numpy`)
"""

import hashlib
import json
import os
import sys
from importlib.metadata import version

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "quant")
SEED = 20261126


def hexf(a) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def provenance(extra: dict) -> dict:
    return {
        "script": "scripts/gen_quant_refs.py",
        "gguf_version": version("gguf"),
        "numpy_version": version("numpy"),
        **extra,
    }


# ---------------------------------------------------------------- model rows

MODEL_ROWS = [
    ("token_embd.weight", [0, 1, 12345, 49151]),  # Q8_0
    ("blk.0.attn_q.weight", [0, 287, 575]),  # Q4_1
    ("blk.29.ffn_down.weight", [0, 575]),  # Q4_1, 1536 values per row
    ("blk.0.attn_norm.weight", [0]),  # F32, one row
    ("output_norm.weight", [0]),  # F32
]


def model_rows(path: str) -> dict:
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    reader = GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    cases = []
    for name, rows in MODEL_ROWS:
        t = tensors[name]
        data = t.data.reshape(-1, t.data.shape[-1]) if t.data.ndim > 1 else t.data.reshape(1, -1)
        for r in rows:
            raw = np.ascontiguousarray(data[r]).view(np.uint8)
            values = dequantize(raw, t.tensor_type).reshape(-1)
            cases.append({
                "name": f"{name}[row {r}]",
                "type": t.tensor_type.name,
                "bytes": raw.tobytes().hex(),
                "dequantized": hexf(values),
            })
    return {
        "provenance": provenance({
            "model": os.path.basename(path),
            "model_sha256": sha,
            "tensors": {n: rows for n, rows in MODEL_ROWS},
            "method": "raw row bytes from gguf.GGUFReader; values from gguf.quants.dequantize",
        }),
        "cases": cases,
    }


# ---------------------------------------------------------------- synthetic data

def test_vector(rng, block: int, blocks: int) -> np.ndarray:
    """Blocks at varied scales: normal, tiny, huge, zero, constant, f16-subnormal."""
    scales = [1.0, 1.0, 1.0, 1.0, 1e-3, 1e3, 0.0, 1e-8, 50.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    out = []
    for i in range(blocks):
        s = scales[i % len(scales)]
        x = rng.standard_normal(block).astype(np.float32) * np.float32(s)
        if s == 0.0:
            # +0.0 only: numpy's min/max do not pick between -0.0 and +0.0 the way
            # ggml's strict `<` scan does, so signed zeros would test numpy, not ggml.
            x = np.zeros(block, dtype=np.float32)
        if i == 9:
            x[:] = np.float32(0.7)  # constant block: Q4_1/Q5_1 get d = 0
        if i == 10:
            x = np.abs(x)  # one-signed block
        if i == 11:
            x = np.round(x * 4) / 4  # many exact ties after scaling
        if i == 12:
            x = ties_block(rng, block)
        out.append(x)
    return np.concatenate(out).astype(np.float32)


def ties_block(rng, block: int) -> np.ndarray:
    """Half-integers with largest magnitude 127 (first value -127): the 8-bit scales come
    out as exactly 1, so every value is a rounding tie (roundf vs. ties-to-even)."""
    x = (rng.integers(-126, 126, size=block) + 0.5).astype(np.float32)
    x[0] = -127.0
    return x


def q8_1_ref(x: np.ndarray) -> np.ndarray:
    """numpy transcription of ggml's quantize_row_q8_1_ref."""
    blocks = x.reshape(-1, 32)
    out = []
    for b in blocks:
        amax = np.float32(np.max(np.abs(b)))
        d = np.float32(amax / np.float32(127))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        v = (b * idv).astype(np.float32)
        qs = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)  # roundf
        s = np.float32(np.float32(int(qs.astype(np.int32).sum())) * d)
        out.append(np.float16(d).tobytes() + np.float16(s).tobytes() + qs.tobytes())
    return np.frombuffer(b"".join(out), dtype=np.uint8)


def q8_k_ref(x: np.ndarray) -> np.ndarray:
    """numpy transcription of ggml's quantize_row_q8_K_ref (nearest_int = ties to even)."""
    out = []
    for b in x.reshape(-1, 256):
        i = int(np.argmax(np.abs(b)))  # first index of the largest magnitude, like ggml
        amax, mx = np.abs(b[i]), b[i]
        if amax == 0:
            out.append(np.zeros(292, dtype=np.uint8).tobytes())
            continue
        iscale = np.float32(np.float32(-127) / mx)
        qs = np.minimum(127, np.rint((iscale * b).astype(np.float32))).astype(np.int8)
        bsums = qs.astype(np.int16).reshape(16, 16).sum(axis=1).astype("<i2")
        d = np.float32(np.float32(1) / iscale)
        out.append(np.array([d], dtype="<f4").tobytes() + qs.tobytes() + bsums.tobytes())
    return np.frombuffer(b"".join(out), dtype=np.uint8)


def dequantize_q8_1(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 36)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    return (b[:, 4:].copy().view(np.int8).astype(np.float32) * d).reshape(-1)


def dequantize_q8_k(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 292)
    d = b[:, :4].copy().view("<f4")
    return (d * b[:, 4:260].copy().view(np.int8).astype(np.float32)).reshape(-1)


# Byte offset of the f16 super-block scale(s) in each block (two for d and dmin).
SCALE_AT = {T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208, 1), T.Q2_K: (80, 2),
            T.Q3_K: (108, 1), T.IQ4_NL: (0, 1), T.IQ4_XS: (0, 1)}


def random_k_blocks(rng, qtype, n_blocks: int) -> np.ndarray:
    size = {T.Q4_K: 144, T.Q5_K: 176, T.Q6_K: 210, T.Q2_K: 84, T.Q3_K: 110, T.IQ4_NL: 18,
            T.IQ4_XS: 136}[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    scales = (np.abs(rng.standard_normal((n_blocks, 2))) * 0.01).astype(np.float16)
    scales[0] = 0  # an all-zero-scale block
    at, count = SCALE_AT[qtype]
    raw[:, at:at + 2 * count] = scales[:, :count].copy().view(np.uint8)
    raw[1] = 0  # an all-zero block
    return raw.reshape(-1)


def synthetic() -> dict:
    rng = np.random.default_rng(SEED)
    cases = []
    for qtype in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
        x = test_vector(rng, 32, 16)
        raw = quantize(x.reshape(1, -1), qtype).reshape(-1)
        cases.append({
            "name": f"{qtype.name} quantized by gguf.quants.quantize",
            "type": qtype.name,
            "input": hexf(x),
            "bytes": raw.tobytes().hex(),
            "dequantized": hexf(dequantize(raw, qtype).reshape(-1)),
        })
    # F16: normal, subnormal and overflowing values.
    x = np.concatenate([
        rng.standard_normal(64).astype(np.float32),
        np.array([1e-7, -3e-8, 65504.0, 65520.0, 1e6, -1e6, 0.0, -0.0], dtype=np.float32),
    ])
    raw = quantize(x, T.F16).view(np.uint8).reshape(-1)
    cases.append({
        "name": "F16 via numpy astype(float16)",
        "type": "F16",
        "input": hexf(x),
        "bytes": raw.tobytes().hex(),
        "dequantized": hexf(dequantize(raw, T.F16).reshape(-1)),
    })
    # BF16: ties, NaN, infinities.
    x = np.concatenate([
        rng.standard_normal(64).astype(np.float32),
        np.array([1 + 2**-8, 1 + 3 * 2**-8, np.inf, -np.inf, np.nan, 3e38, 1e-40], dtype=np.float32),
    ])
    raw = quantize(x.reshape(1, -1), T.BF16).reshape(-1)
    cases.append({
        "name": "BF16 via gguf.quants.quantize",
        "type": "BF16",
        "input": hexf(x),
        "bytes": raw.tobytes().hex(),
        "dequantized": hexf(dequantize(raw, T.BF16).reshape(-1)),
    })
    for qtype in [T.Q4_K, T.Q5_K, T.Q6_K]:
        raw = random_k_blocks(rng, qtype, 6)
        cases.append({
            "name": f"{qtype.name} random blocks",
            "type": qtype.name,
            "bytes": raw.tobytes().hex(),
            "dequantized": hexf(dequantize(raw, qtype).reshape(-1)),
        })
    x = test_vector(rng, 32, 16)
    raw = q8_1_ref(x)
    cases.append({
        "name": "Q8_1 via numpy transcription of quantize_row_q8_1_ref",
        "type": "Q8_1",
        "input": hexf(x),
        "bytes": raw.tobytes().hex(),
        "dequantized": hexf(dequantize_q8_1(raw)),
    })
    x = test_vector(rng, 256, 4)
    x[256:512] = 0  # an all-zero super-block
    x[512:768] = ties_block(rng, 256)
    raw = q8_k_ref(x)
    cases.append({
        "name": "Q8_K via numpy transcription of quantize_row_q8_K_ref",
        "type": "Q8_K",
        "input": hexf(x),
        "bytes": raw.tobytes().hex(),
        "dequantized": hexf(dequantize_q8_k(raw)),
    })
    # Added after the cases above so that their random draws (and bytes) are unchanged.
    for qtype, n_blocks in [(T.Q2_K, 6), (T.Q3_K, 6), (T.IQ4_NL, 16), (T.IQ4_XS, 6)]:
        raw = random_k_blocks(rng, qtype, n_blocks)
        cases.append({
            "name": f"{qtype.name} random blocks",
            "type": qtype.name,
            "bytes": raw.tobytes().hex(),
            "dequantized": hexf(dequantize(raw, qtype).reshape(-1)),
        })
    return {
        "provenance": provenance({
            "seed": SEED,
            "method": "see the docstring of scripts/gen_quant_refs.py",
        }),
        "cases": cases,
    }


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(model):
        sys.exit(f"{model} is missing: run scripts/fetch-model.sh first")
    os.makedirs(OUT, exist_ok=True)
    for name, doc in [("model_rows.json", model_rows(model)), ("synthetic.json", synthetic())]:
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote tests/data/quant/{name} ({len(doc['cases'])} cases)")


if __name__ == "__main__":
    main()
