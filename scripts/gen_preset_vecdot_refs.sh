#!/usr/bin/env bash
# llama-perplexity in llama.cpp's ggml_vec_dot arithmetic for the quantization presets whose
# batched matmuls llama.cpp b11312 otherwise computes in other orders, written to
# tests/data/llamacpp/presets_vec_dot.json (tests/model_presets.rs requires pagoda's perplexity
# to equal these to the printed digits).
#
# llama.cpp b11312 (scripts/llamacpp-build.sh) computes a token's logits differently
# depending on its batch: K-quant matmuls of >= 8 rows take a tiled kernel
# (ggml-cpu/tiled/; GGML_CPU_TILED_MM=0 turns it off), Q4_K weights are repacked on x86
# (--no-repack turns it off), and flash attention over >= 64 query rows takes a tiled kernel
# with an f32 accumulator (-ub 32 keeps batches below that). With all three off, every matmul
# is ggml_vec_dot_*'s order and attention is the one-key-at-a-time kernel: pagoda's arithmetic.
# (Q4_0, Q5_0, Q8_0, IQ4_NL, F16 and BF16 are left out: llama.cpp's llamafile tinyBLAS takes
# their batches of >= 2 rows and cannot be turned off at run time.)
#
# Usage: scripts/gen_preset_vecdot_refs.sh [PRESET...]   (default: four presets, one per family of
# kernels: Q4_1, Q3_K_M, Q4_K_M, Q6_K. Not IQ4_XS: on this model most of its tensors fall back
# to IQ4_NL, which tinyBLAS takes)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/llamacpp-build.sh
. "$here/scripts/llamacpp-build.sh"
bin="$llamacpp_build_dir/bin"
[ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-perplexity" ] \
  || llamacpp_build gen_preset_vecdot_refs llama-quantize llama-perplexity
"$here/scripts/fetch-model.sh"
model="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
text="$here/tests/data/text/GPL-3"
presets=("$@")
[ ${#presets[@]} -eq 0 ] && presets=(Q4_1 Q3_K_M Q4_K_M Q6_K)
work=${VECDOT_REFS_DIR:-/tmp/preset_vecdot_refs}
mkdir -p "$work"
for p in "${presets[@]}"; do
  log="$work/ppl_$p.log"
  if [ -f "$log" ] && grep -q "Final estimate" "$log"; then continue; fi
  f="$work/$p.gguf"
  # Q4_1 too: requantizing the Q4_1 model gives other bytes than the model's (it is the
  # preset file tests/model_presets.rs makes).
  "$bin/llama-quantize" --allow-requantize "$model" "$f" "$p" 2 >"$work/quantize_$p.log" 2>&1
  echo "gen_preset_vecdot_refs: $p ($(date +%T))" >&2
  GGML_CPU_TILED_MM=0 "$bin/llama-perplexity" -m "$f" -f "$text" -c 512 -t 2 --no-repack -ub 32 \
    >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
done
python3 - "$work" "$here/tests/data/llamacpp/presets_vec_dot.json" "$text" "${presets[@]}" <<'PY'
import hashlib, json, re, sys
work, out, text, *presets = sys.argv[1:]
doc = {
    "about": "llama-perplexity -c 512 on tests/data/text/GPL-3 with llama.cpp's batch-dependent kernels off: "
             "every matmul in ggml_vec_dot order, one-key-at-a-time flash attention (pagoda's arithmetic)",
    "llama_cpp": "b11312, commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f (sdist of llama-cpp-python==0.3.36), "
                 "built by scripts/llamacpp-build.sh",
    "command": "llama-quantize --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf OUT PRESET 2; "
               "GGML_CPU_TILED_MM=0 llama-perplexity -m OUT -f tests/data/text/GPL-3 -c 512 -t 2 --no-repack -ub 32",
    "text_sha256": hashlib.sha256(open(text, "rb").read()).hexdigest(),
    "made_by": "scripts/gen_preset_vecdot_refs.sh",
    "presets": {},
}
for p in presets:
    log = open(f"{work}/ppl_{p}.log", encoding="utf-8", errors="replace").read()
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    chunks = re.search(r"calculating perplexity over (\d+) chunks", log)
    doc["presets"][p] = {"ppl": float(m.group(1)), "ppl_pm": float(m.group(2)),
                         "n_chunks": int(chunks.group(1)) if chunks else None}
json.dump(doc, open(out, "w"), indent=1)
print(json.dumps(doc["presets"]), file=sys.stderr)
PY
