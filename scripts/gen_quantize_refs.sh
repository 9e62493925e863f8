#!/usr/bin/env bash
# Regenerates tests/data/quantize/llamacpp.json: what llama.cpp's llama-quantize writes for
# each preset pagoda's `quantize` supports, from the default model (the reference
# tests/quantize.rs checks pagoda against, byte for byte).
#
# llama-quantize is built by scripts/llamacpp-build.sh from the llama.cpp copy vendored in the
# PyPI sdist of llama-cpp-python==0.3.36 (llama.cpp b11312, commit
# 0c1e57098bba43ac29e6e3b677cdceebdd22334f), under target/llamacpp/ (the shared cache). For each preset it runs
#   llama-quantize --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf OUT TYPE 2
# and records the output's SHA-256, size and per-tensor types (read from the GGUF tensor
# infos by a small independent parser below, not by pagoda).
#
# A developer tool, not part of the test command. Needs: python3 + pip, a C++ compiler,
# cmake. Usage: scripts/gen_quantize_refs.sh
# Env: LLAMA_QUANTIZE=/path/to/llama-quantize skips the build (BUILD_JOBS: its -j).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model_rel=models/SmolLM2-135M-Instruct.Q4_1.gguf
model="$here/$model_rel"
out_json="$here/tests/data/quantize/llamacpp.json"
presets="Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16"

# shellcheck source=scripts/llamacpp-build.sh
. "$here/scripts/llamacpp-build.sh"
build="$llamacpp_build_dir"
quantize=${LLAMA_QUANTIZE:-"$build/bin/llama-quantize"}

"$here/scripts/fetch-model.sh"

if [ ! -x "$quantize" ]; then
  llamacpp_build gen_quantize_refs llama-quantize
fi

# The flags the binary was really built with (the cache may predate this script).
build_flags="external binary $quantize"
if [ -z "${LLAMA_QUANTIZE:-}" ] && [ -f "$build/CMakeCache.txt" ]; then
  build_flags=""
  for k in CMAKE_BUILD_TYPE GGML_NATIVE GGML_AVX2 GGML_FMA GGML_F16C GGML_BMI2 GGML_AVX512 \
           GGML_AVX512_VNNI GGML_AVX512_BF16 GGML_AVX512_VBMI GGML_AVX_VNNI LLAMA_CURL \
           LLAMA_OPENSSL LLAMA_BUILD_TESTS LLAMA_BUILD_SERVER; do
    build_flags="$build_flags -D$k=$(grep -E "^$k:" "$build/CMakeCache.txt" | cut -d= -f2-)"
  done
  build_flags="cmake${build_flags}; cmake --build --target llama-quantize"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in $presets; do
  echo "gen_quantize_refs: $p" >&2
  "$quantize" --allow-requantize "$model" "$tmp/$p.gguf" "$p" 2 >"$tmp/$p.log" 2>&1 \
    || { cat "$tmp/$p.log" >&2; exit 1; }
done

python3 - "$tmp" "$out_json" "$model" "$model_rel" "$build_flags" "$presets" <<'PY'
import hashlib, json, struct, sys

tmp, out_json, model, model_rel, build_flags, presets = sys.argv[1:]
presets = presets.split()

# ggml type ids (ggml.h, enum ggml_type) -> names.
GGML = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
        10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
        17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
        23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
        30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

def tensors(path):
    """(name, type name, shape) of every tensor info, in file order (GGUF v2/v3)."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    pos = 0
    def take(n):
        nonlocal pos
        b = data[pos:pos + n]; pos += n
        return b
    def u32(): return struct.unpack("<I", take(4))[0]
    def u64(): return struct.unpack("<Q", take(8))[0]
    def string(): return take(u64()).decode("utf-8")
    def skip_value(t):
        if t in SCALAR: take(SCALAR[t])
        elif t == 8: string()
        elif t == 9:
            et, n = u32(), u64()
            for _ in range(n): skip_value(et)
        else: raise ValueError(f"bad value type {t}")
    assert take(4) == b"GGUF"
    u32()
    n_tensors, n_kv = u64(), u64()
    keys = []
    for _ in range(n_kv):
        keys.append(string()); skip_value(u32())
    out = []
    for _ in range(n_tensors):
        name = string()
        shape = [u64() for _ in range(u32())]
        ty = u32(); u64()
        out.append((name, GGML[ty], shape))
    return keys, out

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

names = None
result = {}
for p in presets:
    path = f"{tmp}/{p}.gguf"
    keys, ts = tensors(path)
    if names is None:
        names = [t[0] for t in ts]
    assert names == [t[0] for t in ts], f"{p}: tensor order differs"
    counts = {}
    for _, ty, _ in ts:
        counts[ty] = counts.get(ty, 0) + 1
    with open(path, "rb") as f:
        size = f.seek(0, 2)
    result[p] = {
        "command": f"llama-quantize --allow-requantize {model_rel} OUT {p} 2",
        "sha256": sha256(path),
        "bytes": size,
        "metadata_keys_tail": keys[-2:],
        "type_counts": dict(sorted(counts.items())),
        "types": [t[1] for t in ts],
    }

doc = {
    "about": "What llama.cpp's llama-quantize writes for each preset from the default model; "
             "tests/quantize.rs checks pagoda's quantize against it. Regenerate with "
             "scripts/gen_quantize_refs.sh.",
    "provenance": {
        "llama_cpp": "b11312, commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f, vendored in the "
                     "PyPI sdist llama-cpp-python==0.3.36 (vendor/llama.cpp)",
        "build": build_flags,
        "command": "llama-quantize --allow-requantize " + model_rel + " OUT TYPE 2",
    },
    "input": {"file": model_rel, "sha256": sha256(model)},
    "tensor_names": names,
    "presets": result,
}
# Indented, but every list of strings on one line (a preset's types fit one line).
text = json.dumps(doc, indent=1)
import re
text = re.sub(r'\[\n\s*("(?:[^"\\]|\\.)*"(?:,\n\s*"(?:[^"\\]|\\.)*")*)\n\s*\]',
              lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
assert json.loads(text) == doc
with open(out_json, "w") as f:
    f.write(text + "\n")
print(f"gen_quantize_refs: wrote {out_json}", file=sys.stderr)
PY
