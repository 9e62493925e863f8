//! Part 2: paged prefill and paged decode with grouped-query attention.
//!
//! Shape: 2 layers, 4 query heads sharing 2 kv heads (group of 2), head_dim 16, pages of 4
//! tokens, f32 pages. Two sequences are appended token by token in turns, so sequence X's
//! pages are not contiguous in the pool:
//!
//! ```text
//! X: 12-token prompt  pages [0 2 4]      then 4 decode steps: [0 2 4 5]
//! Y:  6-token prompt  pages [1 3]        (only occupies pages; its K/V are real data)
//! ```
//!
//! Prefill attends X's 12 prompt queries causally (`paged_prefill`), then each decode step
//! appends one token and attends it (`paged_decode`). Every output is checked against
//! pagoda-core's naive f64 attention over a contiguous copy of X's K/V (max error ≤ 1e-5),
//! and three prefill rows are recomputed with `paged_decode` and must match bit for bit.

use core::fmt::Write;

use pagoda_core::attention::naive::naive_attention;
use pagoda_core::attention::{paged_decode, paged_prefill, AttnConfig};
use pagoda_core::kv::{KvConfig, KvPages};
use pagoda_core::pool::{BlockPool, PageEntry};
use pagoda_core::table::{ArrayPageList, BlockTable};

use crate::{ensure, fnv1a, max_abs_diff, measure, sum, write_pages, Error, Stopwatch, XorShift32};

/// Layers.
pub const N_LAYERS: usize = 2;
/// Query heads.
pub const N_HEADS: usize = 4;
/// Key/value heads (GQA: each serves 2 query heads).
pub const N_KV_HEADS: usize = 2;
/// Values per head.
pub const HEAD_DIM: usize = 16;
/// Tokens per page.
pub const BLOCK_SIZE: usize = 4;
/// Pages in the pool.
pub const N_PAGES: usize = 16;
/// Prompt tokens of sequence X.
pub const PROMPT: usize = 12;
/// Decode steps after the prompt.
pub const DECODE_STEPS: usize = 4;
/// Prompt tokens of sequence Y.
pub const PROMPT_Y: usize = 6;
/// Longest context.
pub const MAX_CTX: usize = PROMPT + DECODE_STEPS;

/// f32s of one token's K or V row (all kv heads).
const ROW: usize = N_KV_HEADS * HEAD_DIM;
/// f32s of one token's queries (all heads).
const Q_LEN: usize = N_HEADS * HEAD_DIM;
/// f32s in the KV slab.
const KV_LEN: usize = N_LAYERS * N_PAGES * 2 * ROW * BLOCK_SIZE;
/// The KV shape.
const KV: KvConfig = KvConfig {
    n_layers: N_LAYERS,
    n_kv_heads: N_KV_HEADS,
    head_dim: HEAD_DIM,
    block_size: BLOCK_SIZE,
    n_pages: N_PAGES,
};
/// Largest accepted `|paged - naive|`.
const TOLERANCE: f32 = 1e-5;

/// A block table with room for 8 pages, stored inline.
type Table = BlockTable<ArrayPageList<8>>;

/// This part's static memory.
pub struct Buffers {
    /// Page pool entries.
    pub entries: [PageEntry; N_PAGES],
    /// KV slab (f32 pages).
    pub kv: [f32; KV_LEN],
    /// Sequence X's keys, contiguous: `[layer][token][kv_head][head_dim]` (for the reference).
    pub shadow_k: [f32; N_LAYERS * MAX_CTX * ROW],
    /// Sequence X's values, same layout.
    pub shadow_v: [f32; N_LAYERS * MAX_CTX * ROW],
    /// Prompt queries, `[token][head][head_dim]`.
    pub q: [f32; PROMPT * Q_LEN],
    /// Paged attention output.
    pub out: [f32; PROMPT * Q_LEN],
    /// Naive reference output.
    pub reference: [f32; PROMPT * Q_LEN],
    /// Scores scratch of the naive reference.
    pub scores: [f64; MAX_CTX],
}

impl Buffers {
    /// Vacant entries, zeroed buffers.
    pub const fn new() -> Self {
        Buffers {
            entries: [PageEntry::VACANT; N_PAGES],
            kv: [0.0; KV_LEN],
            shadow_k: [0.0; N_LAYERS * MAX_CTX * ROW],
            shadow_v: [0.0; N_LAYERS * MAX_CTX * ROW],
            q: [0.0; PROMPT * Q_LEN],
            out: [0.0; PROMPT * Q_LEN],
            reference: [0.0; PROMPT * Q_LEN],
            scores: [0.0; MAX_CTX],
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends one token to `table` and writes random K/V rows for every layer; when `shadow`
/// is given, also copies them to its contiguous `[layer][token][row]` arrays.
fn append<S>(
    table: &mut Table,
    pool: &mut BlockPool<S>,
    kv: &mut KvPages<f32, &mut [f32]>,
    rng: &mut XorShift32,
    shadow: Option<(&mut [f32], &mut [f32])>,
) -> Result<(), Error>
where
    S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
{
    let pos = table.len();
    let outcome = table.append_slot(pool)?;
    ensure(outcome.copy.is_none(), "unshared tables never copy")?;
    let (mut k, mut v) = ([0.0f32; ROW], [0.0f32; ROW]);
    let mut shadow = shadow;
    for layer in 0..N_LAYERS {
        rng.fill(&mut k, 1.0);
        rng.fill(&mut v, 1.0);
        kv.write(layer, outcome.slot.page, outcome.slot.slot, &k, &v)?;
        if let Some((sk, sv)) = shadow.as_mut() {
            let at = (layer * MAX_CTX + pos) * ROW;
            sk[at..at + ROW].copy_from_slice(&k);
            sv[at..at + ROW].copy_from_slice(&v);
        }
    }
    Ok(())
}

/// Runs part 2 and writes its lines (and `# ` measurements from `watch`).
pub fn run<W: Write, S: Stopwatch>(
    buf: &mut Buffers,
    out: &mut W,
    watch: &mut S,
) -> Result<(), Error> {
    let cfg = AttnConfig::new(N_HEADS, N_KV_HEADS, HEAD_DIM)?;
    let Buffers { entries, kv, shadow_k, shadow_v, q, out: attn, reference, scores } = buf;
    let mut pool = BlockPool::new(&mut entries[..])?;
    let mut kv = KvPages::<f32, _>::new(KV, &mut kv[..])?;
    let mut rng = XorShift32::new(0xA77E_0002);
    writeln!(
        out,
        "attention: {N_LAYERS} layers, {N_HEADS} query heads / {N_KV_HEADS} kv heads (GQA), \
         head_dim {HEAD_DIM}, block size {BLOCK_SIZE}, scale {}",
        cfg.scale
    )?;

    let mut x = Table::new(BLOCK_SIZE, ArrayPageList::default())?;
    let mut y = Table::new(BLOCK_SIZE, ArrayPageList::default())?;
    for t in 0..PROMPT {
        append(&mut x, &mut pool, &mut kv, &mut rng, Some((&mut shadow_k[..], &mut shadow_v[..])))?;
        if t < PROMPT_Y {
            append(&mut y, &mut pool, &mut kv, &mut rng, None)?;
        }
    }
    pool.check_invariants()?;
    pool.check_holders([x.pages(), y.pages()].into_iter())?;
    write!(out, "sequences: X {} tokens pages ", x.len())?;
    write_pages(out, x.pages())?;
    write!(out, ", Y {} tokens pages ", y.len())?;
    write_pages(out, y.pages())?;
    writeln!(out)?;

    // Prefill: X's 12 prompt queries, causal, over its own pages.
    rng.fill(&mut q[..], 1.0);
    for layer in 0..N_LAYERS {
        measure(out, watch, format_args!("prefill layer {layer}, {PROMPT} tokens"), || {
            paged_prefill(&kv, layer, x.pages(), PROMPT, &q[..], &mut attn[..], &cfg)
        })??;
        let at = layer * MAX_CTX * ROW;
        let (k, v) = (&shadow_k[at..at + PROMPT * ROW], &shadow_v[at..at + PROMPT * ROW]);
        naive_attention(&q[..], k, v, 0, &cfg, &mut scores[..], &mut reference[..])?;
        let err = max_abs_diff(&attn[..], &reference[..]);
        ensure(err <= TOLERANCE, "paged prefill matches naive f64 attention")?;
        // Prefill row i is decode at n_ctx = i + 1: same code, same bits.
        for i in [0, PROMPT / 2, PROMPT - 1] {
            let mut row = [0.0f32; Q_LEN];
            let q_i = &q[i * Q_LEN..(i + 1) * Q_LEN];
            paged_decode(&kv, layer, x.pages(), i + 1, q_i, &mut row, &cfg)?;
            ensure(row[..] == attn[i * Q_LEN..(i + 1) * Q_LEN], "prefill row == decode")?;
        }
        writeln!(
            out,
            "prefill layer {layer}: {PROMPT} tokens, out sum {:.6} fnv 0x{:08x}, \
             max |paged - naive f64| {:e}",
            sum(&attn[..]),
            fnv1a(&attn[..]),
            err
        )?;
    }

    // Decode: one token at a time; the first step opens a new page.
    for _ in 0..DECODE_STEPS {
        append(&mut x, &mut pool, &mut kv, &mut rng, Some((&mut shadow_k[..], &mut shadow_v[..])))?;
        let n_ctx = x.len();
        let q_t = &mut q[..Q_LEN];
        rng.fill(q_t, 1.0);
        let mut outs = [[0.0f32; Q_LEN]; N_LAYERS];
        measure(out, watch, format_args!("decode step n_ctx {n_ctx}, {N_LAYERS} layers"), || {
            outs.iter_mut()
                .enumerate()
                .try_for_each(|(layer, o)| paged_decode(&kv, layer, x.pages(), n_ctx, q_t, o, &cfg))
        })??;
        let mut err = 0.0f32;
        for (layer, o) in outs.iter().enumerate() {
            let at = layer * MAX_CTX * ROW;
            let (k, v) = (&shadow_k[at..at + n_ctx * ROW], &shadow_v[at..at + n_ctx * ROW]);
            let r = &mut reference[..Q_LEN];
            naive_attention(q_t, k, v, n_ctx - 1, &cfg, &mut scores[..], r)?;
            err = err.max(max_abs_diff(o, r));
        }
        ensure(err <= TOLERANCE, "paged decode matches naive f64 attention")?;
        let flat = outs.as_flattened();
        write!(out, "decode n_ctx {n_ctx}: pages ")?;
        write_pages(out, x.pages())?;
        writeln!(
            out,
            ", out sum {:.6} fnv 0x{:08x}, max |paged - naive f64| {:e}",
            sum(flat),
            fnv1a(flat),
            err
        )?;
    }
    pool.check_invariants()?;
    pool.check_holders([x.pages(), y.pages()].into_iter())?;
    x.free(&mut pool)?;
    y.free(&mut pool)?;
    pool.check_invariants()?;
    ensure(pool.free_count() == N_PAGES, "every page is back")?;
    writeln!(out, "attention: freed, free {} of {}, invariants ok", pool.free_count(), N_PAGES)?;
    Ok(())
}
