#!/usr/bin/env python3
"""Writes the seeds of the `model_config`, `kv_policy` and `chat_template` fuzz targets
into seeds/<target>/ (the other targets' seeds are hand-written or start empty).

model_config:

Each seed is a GGUF header only (metadata and tensor infos, no tensor data: the target
appends a zero-filled data section of the size the tensor infos ask for). The metadata is
the real model's (models/SmolLM2-135M-Instruct.Q4_1.gguf) minus the three big tokenizer
arrays (tokens, token types, merges: 1.7 MB the loaders do not read), with:

  smollm2_header.gguf        every real tensor info (30 layers, vocab 49152: ~97 MB of data)
  smollm2_2layers.gguf       2 layers, vocab 512 (real widths, types: ~5 MB, runs a token)
  tiny_1layer.gguf           1 layer, width 64, 4 heads / 2 KV heads, ffn 128, vocab 64
  tiny_1layer_untied.gguf    the same plus an output.weight (untied LM head)

kv_policy: 32 bytes of sizes (n_ctx, block_size, layer, n_layers: u64 LE), then a policy.
chat_template: a flag byte, then NUL-separated template, system, user, role, content, ...
(the real model's template, a plain ChatML one and a non-ChatML one).

Usage: python3 fuzz/seeds/make_seeds.py [MODEL]
"""
import os
import struct
import sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
model = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    root, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
seeds = os.path.join(root, "fuzz", "seeds")
out_dir = os.path.join(seeds, "model_config")

FIXED = {0: 1, 1: 1, 7: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 10: 8, 11: 8, 12: 8}
BLOCK = {0: (1, 4), 8: (32, 34), 3: (32, 20), 2: (32, 18)}  # type: (elements, bytes)
DROP = {b"tokenizer.ggml.tokens", b"tokenizer.ggml.token_type", b"tokenizer.ggml.merges"}


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        v = self.b[self.p:self.p + n]
        assert len(v) == n, "truncated header"
        self.p += n
        return v

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self):
        return self.take(self.u64())

    def value(self, ty):
        """The raw bytes of a value of type `ty`."""
        start = self.p
        if ty in FIXED:
            self.take(FIXED[ty])
        elif ty == 8:
            self.string()
        elif ty == 9:
            elem, n = self.u32(), self.u64()
            for _ in range(n):
                self.value(elem)
        else:
            raise ValueError(f"value type {ty}")
        return self.b[start:self.p]


def read_header(path):
    with open(path, "rb") as f:
        b = f.read(4 << 20)
    r = Reader(b)
    assert r.take(4) == b"GGUF"
    r.u32()
    n_tensors, n_kv = r.u64(), r.u64()
    kvs = []
    for _ in range(n_kv):
        key = r.string()
        ty = r.u32()
        kvs.append((key, ty, r.value(ty)))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.u64() for _ in range(r.u32())]
        ty = r.u32()
        r.u64()
        tensors.append((name, dims, ty))
    return kvs, tensors


def s(b):
    return struct.pack("<Q", len(b)) + b


def write(name, kvs, tensors, overrides):
    kvs = [(k, t, struct.pack("<I", overrides[k]) if k in overrides else v)
           for k, t, v in kvs if k not in DROP]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + v
    offset = 0
    for tname, dims, ty in tensors:
        out += s(tname) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
        n = 1
        for d in dims:
            n *= d
        per, size = BLOCK[ty]
        offset = (offset + n // per * size + 31) // 32 * 32
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(out)
    print(f"{name}: {len(out)} bytes of header, {offset} bytes of data")


def shrink(tensors, layers, dim, ffn, kv_dim, vocab, untied=False):
    out = []
    for name, dims, ty in tensors:
        n = name.decode()
        if n.startswith("blk.") and int(n.split(".")[1]) >= layers:
            continue
        shape = {
            "token_embd": [dim, vocab], "output_norm": [dim], "attn_norm": [dim],
            "ffn_norm": [dim], "attn_q": [dim, dim], "attn_output": [dim, dim],
            "attn_k": [dim, kv_dim], "attn_v": [dim, kv_dim], "ffn_gate": [dim, ffn],
            "ffn_up": [dim, ffn], "ffn_down": [ffn, dim],
        }[n.split(".")[-2]]
        out.append((name, shape, ty))
    if untied:
        out.append((b"output.weight", [dim, vocab], 8))
    return out


def main():
    kvs, tensors = read_header(model)
    os.makedirs(out_dir, exist_ok=True)
    write("smollm2_header.gguf", kvs, tensors, {})
    write("smollm2_2layers.gguf", kvs, shrink(tensors, 2, 576, 1536, 192, 512),
          {b"llama.block_count": 2, b"llama.vocab_size": 512})
    tiny = {b"llama.block_count": 1, b"llama.embedding_length": 64,
            b"llama.feed_forward_length": 128, b"llama.attention.head_count": 4,
            b"llama.attention.head_count_kv": 2, b"llama.rope.dimension_count": 16,
            b"llama.vocab_size": 64, b"llama.context_length": 256}
    write("tiny_1layer.gguf", kvs, shrink(tensors, 1, 64, 128, 32, 64), tiny)
    write("tiny_1layer_untied.gguf", kvs, shrink(tensors, 1, 64, 128, 32, 64, True), tiny)

    template = dict((k, v) for k, _, v in kvs)[b"tokenizer.chat_template"][8:]
    write_chat_templates(template)
    write_kv_policies()


def write_kv_policies():
    d = os.path.join(seeds, "kv_policy")
    os.makedirs(d, exist_ok=True)
    policies = ["full", "sink:4,window:64", "window:128", "h2o:256", "h2o:25%", "pyramid:512",
                "pyramid:100%", "sink:0,window:1", "h2o:0", "sink:4"]
    for i, text in enumerate(policies):
        with open(os.path.join(d, f"p{i}"), "wb") as f:
            f.write(struct.pack("<QQQQ", 2048, 16, 3, 30) + text.encode())
    print(f"kv_policy: {len(policies)} seeds")


def write_chat_templates(real):
    d = os.path.join(seeds, "chat_template")
    os.makedirs(d, exist_ok=True)
    chatml = b"{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}"
    llama2 = b"{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"
    convo = [b"Be brief.", b"Hi!", b"user", b"What is 2+2?", b"assistant", b"4", b"user", b"\xc3\xa9"]
    for name, flags, template in [("real", 7, real), ("real_plain", 0, real),
                                  ("chatml", 3, chatml), ("llama2", 1, llama2)]:
        with open(os.path.join(d, name), "wb") as f:
            f.write(bytes([flags]) + b"\0".join([template] + convo))
    print("chat_template: 4 seeds")


main()
