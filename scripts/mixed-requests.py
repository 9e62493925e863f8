#!/usr/bin/env python3
"""Write a batch of mixed-length requests (JSONL) for `pagoda batch`, to stdout.

16 greedy requests whose prompts are 20-400 consecutive words of tests/data/text/GPL-3 at
random offsets and whose n_predict is 64-384 (random.seed(7): the same file every time).
Used for the engine's KV-utilisation figure in docs/benchmarks.md:

    python3 scripts/mixed-requests.py > mixed.jsonl
    target/release/pagoda batch -f mixed.jsonl -o results.jsonl -t 2
"""
import json
import pathlib
import random

random.seed(7)
text = (pathlib.Path(__file__).resolve().parent.parent / "tests/data/text/GPL-3").read_text()
words = text.split()
for i in range(16):
    n = random.randint(20, 400)
    off = random.randint(0, len(words) - n - 1)
    request = {
        "id": f"r{i}",
        "prompt": " ".join(words[off : off + n]),
        "n_predict": random.randint(64, 384),
        "temperature": 0,
        "seed": i,
    }
    print(json.dumps(request))
