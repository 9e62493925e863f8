//! Part 3: the GGUF reader and quantized kernels over a tiny model in flash.
//!
//! The model file is written by `build.rs` (see there for its layout) and embedded with
//! `include_bytes!`, aligned to 32 bytes so tensor data can be viewed as `&[BlockQ8_0]` /
//! `&[BlockQ4_0]` in place (zero copy: the weights are read straight from flash).
//!
//! The computation is a two-layer residual MLP over a 16-token vocabulary, run greedily:
//!
//! ```text
//! x = dequantize(token_embd[t])                               Q8_0 row → 64 f32
//! per layer:  h = silu(W_up · rmsnorm(x))                      Q8_0 [64 → 128]
//!             x += W_down · h                                  Q4_0 [128 → 64]
//! logits = W_out · rmsnorm(x)                                  Q4_0 [64 → 16]
//! next token = argmax(logits)
//! ```
//!
//! Every matvec quantizes its input to Q8_0 (as ggml does) and uses the weight format's
//! `VecDot`; each output is checked against the dot product of the `dequantize`d row with
//! the unquantized input, within the activation's quantization error bound.

use core::fmt::Write;

use pagoda_core::ggml_type::GgmlType;
use pagoda_core::gguf::{Gguf, TensorView};
use pagoda_core::ops::{rmsnorm, silu};
use pagoda_core::quant::{BlockFormat, BlockQ4_0, BlockQ8_0, Quantize, VecDot, QK};

use crate::{ensure, fnv1a, measure, Error, Stopwatch};

/// Embedding width.
pub const N_EMBD: usize = 64;
/// MLP hidden width.
pub const N_FF: usize = 128;
/// Vocabulary size.
pub const N_VOCAB: usize = 16;
/// Greedy steps.
pub const STEPS: usize = 5;
/// The first token (`"the"`).
pub const FIRST_TOKEN: usize = 2;
/// Most layers this program accepts.
const MAX_LAYERS: usize = 4;

/// Bytes aligned to 32 (so tensor data, at multiples of 32 in the file, is aligned too).
#[repr(C, align(32))]
struct Aligned<B: ?Sized>(B);

/// The tiny model, as `build.rs` wrote it.
static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/tiny.gguf")));

/// The embedded GGUF file.
pub fn model_bytes() -> &'static [u8] {
    &MODEL.0
}

/// One layer's weights, borrowed from flash.
struct Layer<'a> {
    norm: &'a [f32],
    up: &'a [BlockQ8_0],
    down: &'a [BlockQ4_0],
}

/// The model's weights, borrowed from flash.
struct Weights<'a> {
    embd: &'a [BlockQ8_0],
    layers: [Option<Layer<'a>>; MAX_LAYERS],
    n_layers: usize,
    out_norm: &'a [f32],
    output: &'a [BlockQ4_0],
    eps: f32,
}

/// Looks up `name`, checks its type and shape, and views its data as `&[B]`.
fn tensor<'a, B: BlockFormat>(gguf: &Gguf<'a>, name: &str, dims: &[u64]) -> Result<&'a [B], Error> {
    let t: TensorView<'a> = gguf.tensor(name)?;
    ensure(t.ggml_type() == B::TYPE, "tensor type as expected")?;
    ensure(t.dims() == dims, "tensor shape as expected")?;
    Ok(t.try_cast::<B>()?)
}

/// `out[r] = W[r] · x` for the rows of `w` (`x.len() / QK` blocks each): `x` is quantized
/// to Q8_0 and dotted with `B::vec_dot`. With `check`, each result is checked against the
/// f32 dot of the dequantized row with `x`; the bound is the Q8_0 rounding of `x` (half a
/// step of `amax / 127` per value, plus the scale's f16 rounding) times `Σ |w|`.
fn matvec<B>(w: &[B], x: &[f32], out: &mut [f32], check: bool) -> Result<(), Error>
where
    B: VecDot<Activation = BlockQ8_0>,
{
    let n_blocks = x.len() / QK;
    let mut a = [BlockQ8_0 { d: Default::default(), qs: [0; QK] }; N_FF / QK];
    let a = &mut a[..n_blocks];
    BlockQ8_0::quantize(x, a);
    let step = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
    let mut row = [0.0f32; N_FF];
    let row = &mut row[..x.len()];
    ensure(w.len() == out.len() * n_blocks, "matvec shapes agree")?;
    for (o, w_r) in out.iter_mut().zip(w.chunks_exact(n_blocks)) {
        *o = B::vec_dot(w_r, a);
        if !check {
            continue;
        }
        B::dequantize(w_r, row);
        let exact: f32 = row.iter().zip(x).map(|(&p, &q)| p * q).sum();
        let l1: f32 = row.iter().map(|v| v.abs()).sum();
        let bound = 0.6 * step * l1 + 1e-4 * (1.0 + exact.abs());
        ensure((*o - exact).abs() <= bound, "VecDot within the quantization bound of dequantize")?;
    }
    Ok(())
}

/// One greedy step: the logits of the token after `token`.
/// With `check`, every matvec is checked against `dequantize` (see [`matvec`]).
fn forward(
    wts: &Weights<'_>,
    token: usize,
    logits: &mut [f32; N_VOCAB],
    check: bool,
) -> Result<(), Error> {
    let mut x = [0.0f32; N_EMBD];
    let per_row = N_EMBD / QK;
    BlockQ8_0::dequantize(&wts.embd[token * per_row..(token + 1) * per_row], &mut x);
    let mut n = [0.0f32; N_EMBD];
    let mut h = [0.0f32; N_FF];
    let mut d = [0.0f32; N_EMBD];
    for layer in wts.layers.iter().take(wts.n_layers).flatten() {
        rmsnorm(&x, layer.norm, wts.eps, &mut n);
        matvec(layer.up, &n, &mut h, check)?;
        for v in h.iter_mut() {
            *v = silu(*v);
        }
        matvec(layer.down, &h, &mut d, check)?;
        for (xi, di) in x.iter_mut().zip(&d) {
            *xi += di;
        }
    }
    rmsnorm(&x, wts.out_norm, wts.eps, &mut n);
    matvec(wts.output, &n, logits, check)
}

/// Index of the largest value (the first of equal ones).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Runs part 3 and writes its lines (and `# ` measurements from `watch`).
pub fn run<W: Write, S: Stopwatch>(out: &mut W, watch: &mut S) -> Result<(), Error> {
    let bytes = model_bytes();
    let gguf = measure(out, watch, format_args!("gguf parse, {} bytes", bytes.len()), || {
        Gguf::parse(bytes)
    })??;
    writeln!(
        out,
        "gguf: v{}, {} bytes, {} metadata, {} tensors, alignment {}, data at {}, fnv 0x{:08x}",
        gguf.version(),
        bytes.len(),
        gguf.metadata_len(),
        gguf.tensor_count(),
        gguf.alignment(),
        gguf.data_start(),
        bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x0100_0193))
    )?;
    let arch = gguf.get_str("general.architecture")?;
    ensure(arch == "tiny", "architecture is tiny")?;
    let n_embd = gguf.get_u32("tiny.embedding_length")? as usize;
    let n_ff = gguf.get_u32("tiny.feed_forward_length")? as usize;
    let n_layers = gguf.get_u32("tiny.block_count")? as usize;
    let eps = gguf.get_f32("tiny.layer_norm_rms_epsilon")?;
    let tokens = gguf.get_array("tokenizer.ggml.tokens")?;
    ensure(n_embd == N_EMBD && n_ff == N_FF, "model widths")?;
    ensure((1..=MAX_LAYERS).contains(&n_layers), "layer count")?;
    ensure(tokens.len() == N_VOCAB, "vocabulary size")?;
    writeln!(
        out,
        "model: {:?} arch {arch}, {n_layers} layers, n_embd {n_embd}, n_ff {n_ff}, vocab {}, \
         eps {eps:e}",
        gguf.get_str("general.name")?,
        tokens.len()
    )?;
    for t in gguf.tensors() {
        write!(out, "tensor {} {} [", t.name(), t.ggml_type())?;
        for (i, d) in t.dims().iter().enumerate() {
            write!(out, "{}{d}", if i > 0 { ", " } else { "" })?;
        }
        writeln!(out, "] {} bytes at +{}", t.data().len(), t.offset())?;
    }
    ensure(gguf.tensor("no.such.tensor").is_err(), "missing tensors are errors")?;
    ensure(gguf.tensor("blk.0.ffn_up.weight")?.ggml_type() == GgmlType::Q8_0, "ffn_up is Q8_0")?;

    let (e, f, v) = (N_EMBD as u64, N_FF as u64, N_VOCAB as u64);
    let mut layers: [Option<Layer<'_>>; MAX_LAYERS] = Default::default();
    for (l, slot) in layers.iter_mut().enumerate().take(n_layers) {
        let norm = tensor::<f32>(&gguf, layer_tensor_name(l, "ffn_norm.weight")?.as_str(), &[e])?;
        let up =
            tensor::<BlockQ8_0>(&gguf, layer_tensor_name(l, "ffn_up.weight")?.as_str(), &[e, f])?;
        let down =
            tensor::<BlockQ4_0>(&gguf, layer_tensor_name(l, "ffn_down.weight")?.as_str(), &[f, e])?;
        *slot = Some(Layer { norm, up, down });
    }
    let wts = Weights {
        embd: tensor::<BlockQ8_0>(&gguf, "token_embd.weight", &[e, v])?,
        layers,
        n_layers,
        out_norm: tensor::<f32>(&gguf, "output_norm.weight", &[e])?,
        output: tensor::<BlockQ4_0>(&gguf, "output.weight", &[e, v])?,
        eps,
    };

    // Greedy decoding. Each step runs twice: once timed without the checks (the `# ` line),
    // once with every matvec checked against `dequantize`; both must give the same bits.
    let mut seq = [FIRST_TOKEN; STEPS + 1];
    let mut logits = [0.0f32; N_VOCAB];
    let mut trace = [0u32; STEPS];
    for step in 0..STEPS {
        let token = seq[step];
        measure(out, watch, format_args!("forward step {step} ({n_layers} layers)"), || {
            forward(&wts, token, &mut logits, false)
        })??;
        let mut checked = [0.0f32; N_VOCAB];
        forward(&wts, token, &mut checked, true)?;
        ensure(checked == logits, "checked and timed forward agree")?;
        seq[step + 1] = argmax(&logits);
        trace[step] = fnv1a(&logits);
    }
    let name_of = |t: usize| tokens.iter_str().ok().and_then(|mut it| it.nth(t)).unwrap_or("?");
    write!(out, "greedy: {}", name_of(seq[0]))?;
    for &t in &seq[1..] {
        write!(out, " -> {}", name_of(t))?;
    }
    writeln!(out)?;
    for (step, h) in trace.iter().enumerate() {
        writeln!(out, "step {step}: {} -> {}, logits fnv 0x{h:08x}", seq[step], seq[step + 1])?;
    }
    writeln!(
        out,
        "last logits: {:.5} {:.5} {:.5} {:.5} ... max {:.5} at {}",
        logits[0],
        logits[1],
        logits[2],
        logits[3],
        logits[argmax(&logits)],
        argmax(&logits)
    )?;
    Ok(())
}

/// A fixed buffer for tensor names such as `blk.0.ffn_up.weight` (no heap for `format!`).
struct NameBuf {
    buf: [u8; 48],
    len: usize,
}

/// `blk.{layer}.{suffix}`.
fn layer_tensor_name(layer: usize, suffix: &str) -> Result<NameBuf, Error> {
    let mut name = NameBuf { buf: [0; 48], len: 0 };
    write!(name, "blk.{layer}.{suffix}")?;
    Ok(name)
}

impl NameBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for NameBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
