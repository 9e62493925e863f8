//! Fuzz model loading on realistic GGUF headers: `LlamaConfig::from_gguf` and
//! `LlamaWeights::load` (and, for small models, `Llama::from_file` over
//! `ModelFile::from_vec` plus a one-token forward pass) must give a model or an error, never
//! a panic, an abort or a hang.
//!
//! The input is a GGUF file's header (metadata and tensor infos, as in
//! `seeds/model_config/`, made by `seeds/make_model_config_seeds.py` from the real model's
//! header). The target supplies the tensor data: it walks the header itself, and when that
//! succeeds it lays the input over a zero-filled buffer as long as the data section the
//! tensor infos ask for (up to [`CAP`]; the real 135M model's needs ~90 MB). The buffer is
//! allocated once and zeroed lazily by the OS, and the loaders only touch tensor headers and
//! the small norm vectors, so realistic shapes cost little per run.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use pagoda_core::ggml_type::GgmlType;
use pagoda_core::gguf::Gguf;
use pagoda_cpu::model::{Llama, LlamaConfig, LlamaWeights, Session, SessionOptions};
use pagoda_cpu::model_file::ModelFile;

/// Largest file (header plus data) the target builds.
const CAP: usize = 128 << 20;
/// Largest file that is also copied into a `ModelFile` and run for one token.
const SMALL: usize = 8 << 20;

static BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A little-endian reader over the header; `None` past the end.
struct Reader<'a> {
    b: &'a [u8],
    p: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: u64) -> Option<&[u8]> {
        let n = usize::try_from(n).ok()?;
        let s = self.b.get(self.p..self.p.checked_add(n)?)?;
        self.p += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<&[u8]> {
        let n = self.u64()?;
        self.take(n)
    }
    /// Skips a metadata value of type `ty`; returns it as an integer when it is a u32.
    fn value(&mut self, ty: u32, depth: u32) -> Option<Option<u64>> {
        let fixed = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4 => return Some(Some(u64::from(self.u32()?))),
            5 | 6 => 4,
            10..=12 => 8,
            8 => {
                self.string()?;
                return Some(None);
            }
            9 if depth < 8 => {
                let elem = self.u32()?;
                let n = self.u64()?;
                for _ in 0..n {
                    self.value(elem, depth + 1)?;
                }
                return Some(None);
            }
            _ => return None,
        };
        self.take(fixed)?;
        Some(None)
    }
}

/// `(data section start, data bytes the tensor infos need)`, or `None` if the header is
/// malformed (the parser then sees the input as it is).
fn layout(input: &[u8]) -> Option<(usize, usize)> {
    let mut r = Reader { b: input, p: 0 };
    if r.take(4)? != b"GGUF" {
        return None;
    }
    r.u32()?;
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = r.string()?;
        let is_alignment = key == b"general.alignment";
        let ty = r.u32()?;
        if let Some(v) = r.value(ty, 0)? {
            if is_alignment && v.is_power_of_two() {
                alignment = v;
            }
        }
    }
    let mut need = 0u64;
    for _ in 0..n_tensors {
        r.string()?;
        let n_dims = r.u32()?;
        if n_dims > 8 {
            return None;
        }
        let mut dims = [1u64; 8];
        for d in dims.iter_mut().take(n_dims as usize) {
            *d = r.u64()?;
        }
        let ty = GgmlType::from_id(r.u32()?);
        let offset = r.u64()?;
        let Some(ty) = ty else { continue };
        let rows = dims[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = ty.row_bytes(dims[0]).zip(rows).and_then(|(rb, n)| rb.checked_mul(n));
        if let Some(end) = bytes.and_then(|b| b.checked_add(offset)) {
            need = need.max(end);
        }
    }
    let start = (r.p as u64).checked_next_multiple_of(alignment.min(1 << 16))?;
    Some((usize::try_from(start).ok()?, usize::try_from(need).ok()?))
}

fn load(g: &Gguf<'_>) -> Option<LlamaConfig> {
    let config = LlamaConfig::from_gguf(g).ok()?;
    let weights = LlamaWeights::load(g, &config).ok()?;
    assert_eq!(weights.layers.len(), config.n_layers);
    let _ = weights.bytes_per_token();
    Some(config)
}

fn run_small(bytes: Vec<u8>, config: &LlamaConfig) {
    let Ok(file) = ModelFile::from_vec(bytes) else { panic!("parsed once, must parse again") };
    let model = match Llama::from_file(file) {
        Ok(m) => m,
        Err(e) => panic!("the same bytes loaded once: {e}"),
    };
    assert_eq!(model.config(), config);
    let opts = SessionOptions { n_ctx: 8, block_size: 4, n_batch: 4, ..Default::default() };
    let Ok(mut s) = Session::new(&model, opts) else { return };
    if let Ok(logits) = s.eval(&[0, 1.min(config.vocab_size as u32 - 1)]) {
        assert_eq!(logits.len(), config.vocab_size);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((start, need)) = layout(input) else {
        if let Ok(g) = Gguf::parse(input) {
            let _ = load(&g);
        }
        return;
    };
    let total = start.saturating_add(need).max(input.len());
    if total > CAP {
        return;
    }
    let mut buf = BUF.lock().unwrap_or_else(|e| e.into_inner());
    if buf.is_empty() {
        *buf = vec![0u8; CAP];
    }
    buf[..input.len()].copy_from_slice(input);
    let file = &buf[..total];
    if let Ok(g) = Gguf::parse(file) {
        if let Some(config) = load(&g) {
            if total <= SMALL {
                run_small(file.to_vec(), &config);
            }
        }
    }
    buf[..input.len()].fill(0);
});
