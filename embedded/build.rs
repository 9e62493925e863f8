//! Build script: writes the tiny GGUF model into `OUT_DIR` and, for the bare-metal target,
//! puts `memory.x` on the linker path and links with cortex-m-rt's `link.x`.
//!
//! The model is generated here, on the build host, from a fixed xorshift seed and quantized
//! with pagoda-core's own reference quantizers (`Quantize` for Q8_0 and Q4_0, byte for byte
//! ggml's), so the file is reproducible and nothing binary is committed. Layout (GGUF v3):
//!
//! ```text
//! metadata   general.architecture = "tiny", general.name, general.alignment = 32,
//!            tiny.embedding_length = 64, tiny.feed_forward_length = 128,
//!            tiny.block_count = 2, tiny.layer_norm_rms_epsilon = 1e-5,
//!            tokenizer.ggml.tokens = 16 strings
//! tensors    token_embd.weight       Q8_0 [64, 16]
//!            blk.{0,1}.ffn_norm.weight  F32 [64]
//!            blk.{0,1}.ffn_up.weight    Q8_0 [64, 128]
//!            blk.{0,1}.ffn_down.weight  Q4_0 [128, 64]
//!            output_norm.weight      F32 [64]
//!            output.weight           Q4_0 [64, 16]
//! ```

use std::env;
use std::fs;
use std::path::PathBuf;

use pagoda_core::quant::{BlockQ4_0, BlockQ8_0, Quantize};

/// Model width (values per embedding row).
const N_EMBD: usize = 64;
/// Hidden width of each layer's MLP.
const N_FF: usize = 128;
/// Layers.
const N_LAYERS: usize = 2;
/// Vocabulary size.
const N_VOCAB: usize = 16;
/// Data section alignment (ggml's default).
const ALIGNMENT: usize = 32;
/// Seed of the weights.
const SEED: u32 = 0x5EED_1234;

// GGUF metadata value types.
const GGUF_U32: u32 = 4;
const GGUF_F32: u32 = 6;
const GGUF_STRING: u32 = 8;
const GGUF_ARRAY: u32 = 9;
// ggml tensor types.
const GGML_F32: u32 = 0;
const GGML_Q4_0: u32 = 2;
const GGML_Q8_0: u32 = 8;

/// Marsaglia's xorshift32 (the same generator the program uses for its inputs).
struct XorShift32(u32);

impl XorShift32 {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Uniform in [-1, 1), exactly representable (24 random bits).
    fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    fn fill(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.next_f32()).collect()
    }
}

/// One tensor to write: name, ggml type, dims (ggml order) and its bytes.
struct Tensor {
    name: String,
    ty: u32,
    dims: Vec<u64>,
    data: Vec<u8>,
}

fn f32_tensor(name: &str, values: &[f32]) -> Tensor {
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor { name: name.into(), ty: GGML_F32, dims: vec![values.len() as u64], data }
}

fn q8_0_tensor(name: &str, values: &[f32], row_len: usize) -> Tensor {
    let mut blocks = vec![BlockQ8_0 { d: Default::default(), qs: [0; 32] }; values.len() / 32];
    BlockQ8_0::quantize(values, &mut blocks);
    let mut data = Vec::with_capacity(blocks.len() * 34);
    for b in &blocks {
        data.extend_from_slice(&b.d.to_bits().to_le_bytes());
        data.extend(b.qs.iter().map(|&q| q as u8));
    }
    let dims = vec![row_len as u64, (values.len() / row_len) as u64];
    Tensor { name: name.into(), ty: GGML_Q8_0, dims, data }
}

fn q4_0_tensor(name: &str, values: &[f32], row_len: usize) -> Tensor {
    let mut blocks = vec![BlockQ4_0::default(); values.len() / 32];
    BlockQ4_0::quantize(values, &mut blocks);
    let mut data = Vec::with_capacity(blocks.len() * 18);
    for b in &blocks {
        data.extend_from_slice(&b.d.to_bits().to_le_bytes());
        data.extend_from_slice(&b.qs);
    }
    let dims = vec![row_len as u64, (values.len() / row_len) as u64];
    Tensor { name: name.into(), ty: GGML_Q4_0, dims, data }
}

/// A little-endian GGUF v3 writer (only the value types this model uses).
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn kv_str(&mut self, key: &str, value: &str) {
        self.str(key);
        self.u32(GGUF_STRING);
        self.str(value);
    }
    fn kv_u32(&mut self, key: &str, value: u32) {
        self.str(key);
        self.u32(GGUF_U32);
        self.u32(value);
    }
    fn kv_f32(&mut self, key: &str, value: f32) {
        self.str(key);
        self.u32(GGUF_F32);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }
    fn kv_str_array(&mut self, key: &str, values: &[&str]) {
        self.str(key);
        self.u32(GGUF_ARRAY);
        self.u32(GGUF_STRING);
        self.u64(values.len() as u64);
        for v in values {
            self.str(v);
        }
    }
    fn pad(&mut self) {
        self.buf.resize(self.buf.len().next_multiple_of(ALIGNMENT), 0);
    }
}

/// The whole model file.
fn tiny_gguf() -> Vec<u8> {
    let mut rng = XorShift32(SEED);
    let mut tensors =
        vec![q8_0_tensor("token_embd.weight", &rng.fill(N_VOCAB * N_EMBD, 1.0, 0.0), N_EMBD)];
    for l in 0..N_LAYERS {
        tensors.push(f32_tensor(&format!("blk.{l}.ffn_norm.weight"), &rng.fill(N_EMBD, 0.1, 1.0)));
        tensors.push(q8_0_tensor(
            &format!("blk.{l}.ffn_up.weight"),
            &rng.fill(N_FF * N_EMBD, 0.25, 0.0),
            N_EMBD,
        ));
        tensors.push(q4_0_tensor(
            &format!("blk.{l}.ffn_down.weight"),
            &rng.fill(N_EMBD * N_FF, 0.2, 0.0),
            N_FF,
        ));
    }
    tensors.push(f32_tensor("output_norm.weight", &rng.fill(N_EMBD, 0.1, 1.0)));
    tensors.push(q4_0_tensor("output.weight", &rng.fill(N_VOCAB * N_EMBD, 0.5, 0.0), N_EMBD));

    let tokens = [
        "<s>", "</s>", "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it",
        "was", "red", ".",
    ];
    assert_eq!(tokens.len(), N_VOCAB);

    let mut w = Writer::default();
    w.buf.extend_from_slice(b"GGUF");
    w.u32(3);
    w.u64(tensors.len() as u64);
    w.u64(8); // metadata entries below
    w.kv_str("general.architecture", "tiny");
    w.kv_str("general.name", "pagoda-embedded tiny MLP");
    w.kv_u32("general.alignment", ALIGNMENT as u32);
    w.kv_u32("tiny.embedding_length", N_EMBD as u32);
    w.kv_u32("tiny.feed_forward_length", N_FF as u32);
    w.kv_u32("tiny.block_count", N_LAYERS as u32);
    w.kv_f32("tiny.layer_norm_rms_epsilon", 1e-5);
    w.kv_str_array("tokenizer.ggml.tokens", &tokens);

    let mut offset = 0u64;
    for t in &tensors {
        w.str(&t.name);
        w.u32(t.dims.len() as u32);
        for &d in &t.dims {
            w.u64(d);
        }
        w.u32(t.ty);
        w.u64(offset);
        offset = (offset + t.data.len() as u64).next_multiple_of(ALIGNMENT as u64);
    }
    w.pad();
    for t in &tensors {
        w.buf.extend_from_slice(&t.data);
        w.pad();
    }
    w.buf
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(out.join("tiny.gguf"), tiny_gguf()).expect("write tiny.gguf");

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        // cortex-m-rt's link.x INCLUDEs memory.x from the linker search path.
        fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
        println!("cargo:rustc-link-search={}", out.display());
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=memory.x");
}
