#!/usr/bin/env python3
"""Build the SentencePiece test vocabulary and its expected ids.

Trains a small SentencePiece BPE model (with byte fallback) on the GPL-3 text shipped by
Debian (/usr/share/common-licenses/GPL-3), writes its pieces, scores and types into a GGUF
file under the `tokenizer.ggml.*` keys (model = "llama", the layout llama.cpp's converter
uses), and records the ids the `sentencepiece` package gives for a set of strings.

Outputs (committed, small):
  tests/data/tokenizer/sp_tiny.gguf       the vocabulary as GGUF (no tensors)
  tests/data/tokenizer/sp_expected.json   [{"text", "ids", "pieces"}] from sentencepiece

Usage: pip install sentencepiece gguf numpy && python3 scripts/gen_sp_vocab.py
"""
import json
import os
import sys
import tempfile

import gguf
import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")
CORPUS = "/usr/share/common-licenses/GPL-3"

CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "the program is free software; you can redistribute it",
    " leading space",
    "trailing space ",
    "multiple   spaces    here",
    "line one\nline two\n\nline four",
    "tab\tseparated\tvalues",
    "12345 and 3.14159 and 1,000,000",
    "Hello, world! How's it going? (fine) [ok] {yes}",
    "don't, I'll, we're, she's, they've, it'd",
    "café naïve résumé",
    "日本語のテキスト",
    "emoji 😀🎉👍",
    "<s>not a control token</s>",
    "GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007",
    "   ",
    " ",
    "\n",
    "a",
    "ñ",
    "x\u0301y",
    "Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>",
]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "sp")
        spm.SentencePieceTrainer.train(
            input=CORPUS,
            model_prefix=prefix,
            model_type="bpe",
            vocab_size=700,
            byte_fallback=True,
            character_coverage=1.0,
            # Keep the text as is: llama.cpp does no normalization.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            num_threads=1,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.is_control(i):
            t = gguf.TokenType.CONTROL
        elif sp.is_unused(i):
            t = gguf.TokenType.UNUSED
        elif sp.is_byte(i):
            t = gguf.TokenType.BYTE
        else:
            t = gguf.TokenType.NORMAL
        types.append(int(t))

    os.makedirs(OUT, exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(OUT, "sp_tiny.gguf"), arch="llama")
    w.add_name("pagoda sentencepiece test vocabulary")
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    cases = [{"text": t, "ids": sp.encode(t), "pieces": sp.encode(t, out_type=str)} for t in CASES]
    doc = {
        "source": "sentencepiece %s (Python), encode(text) without BOS/EOS" % spm.__version__,
        "vocab": "tests/data/tokenizer/sp_tiny.gguf, made by scripts/gen_sp_vocab.py (gguf %s) from %s"
        % (getattr(gguf, "__version__", "0.19.0"), CORPUS),
        "vocab_size": sp.get_piece_size(),
        "cases": cases,
    }
    with open(os.path.join(OUT, "sp_expected.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", len(cases), "cases,", sp.get_piece_size(), "pieces", file=sys.stderr)


if __name__ == "__main__":
    main()
