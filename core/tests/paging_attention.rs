//! Property test (2): `paged_decode` and `paged_prefill` equal the naive contiguous attention
//! (materialised scores, f64) within 1e-5 relative error, for random head counts, GQA ratios,
//! head dims, block sizes, context lengths and physical page permutations.

use half::f16;
use pagoda_core::attention::naive::naive_attention;
use pagoda_core::attention::{paged_decode, paged_prefill, AttnConfig};
use pagoda_core::kv::{KvConfig, KvElement, KvPages};
use pagoda_core::pool::PageId;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
    } else if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
    } else {
        // Cases reach 2000 tokens × 32 heads; 64 of them keep the suite at a few seconds.
        ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() }
    }
}

// Under miri (~10⁴× slower) the shapes shrink; the GQA ratios and odd sizes stay.
const MAX_CTX: usize = if cfg!(miri) { 10 } else { 2000 };
const MAX_HEAD_DIM: usize = if cfg!(miri) { 5 } else { 80 };
const MAX_KV_HEADS: usize = if cfg!(miri) { 2 } else { 4 };
const MAX_NEW: usize = if cfg!(miri) { 3 } else { 8 };

/// Relative tolerance from the spec.
const REL_TOL: f32 = 1e-5;

/// xorshift64*: cheap deterministic data from a proptest-chosen seed (generating thousands of
/// floats through proptest would make shrinking useless and slow).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Debug)]
struct Case {
    n_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    n_ctx: usize,
    n_new: usize,
    /// Multiplies q so scores span a wide range (peaky and flat softmaxes).
    q_gain: f32,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1..=MAX_KV_HEADS,
        prop::sample::select(vec![1usize, 2, 3, 8]),
        1..=MAX_HEAD_DIM,
        prop::sample::select(vec![1usize, 2, 3, 5, 8, 16, 32]),
        1..=MAX_CTX,
        1..=MAX_NEW,
        prop::sample::select(vec![0.1f32, 1.0, 4.0]),
        any::<u64>(),
    )
        .prop_map(|(n_kv_heads, group, head_dim, block_size, n_ctx, n_new, q_gain, seed)| {
            Case {
                n_kv_heads,
                group,
                head_dim,
                block_size,
                n_ctx,
                n_new: n_new.min(n_ctx),
                q_gain,
                seed: seed | 1,
            }
        })
}

/// A case's paged cache and its contiguous twin.
struct Built<T> {
    kv: KvPages<T, Vec<T>>,
    /// The block table: logical page i → physical page.
    pages: Vec<PageId>,
    /// Contiguous `[token][kv_head][head_dim]`, rounded through `T`.
    k: Vec<f32>,
    v: Vec<f32>,
    /// Queries of the last `n_new` tokens.
    q: Vec<f32>,
    cfg: AttnConfig,
}

/// Builds the paged cache (layer 1 holds the data; layer 0 holds different noise, so a wrong
/// layer offset shows) through a random page permutation, plus the same K/V contiguous.
fn build<T: KvElement>(c: &Case) -> Built<T> {
    let mut rng = Rng(c.seed);
    let needed = c.n_ctx.div_ceil(c.block_size);
    let n_pages = needed + 3; // some pages the table does not use
    let kc = KvConfig {
        n_layers: 2,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: c.block_size,
        n_pages,
    };
    let mut kv = KvPages::new(kc, vec![T::from_f32(f32::NAN); kc.slab_len().unwrap()]).unwrap();
    // Fisher-Yates: logical page i lives in physical page perm[i].
    let mut perm: Vec<u32> = (0..n_pages as u32).collect();
    for i in (1..n_pages).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    let pages: Vec<PageId> = perm[..needed].iter().map(|&p| PageId(p)).collect();
    let row = kc.row_len();
    let (mut k, mut v) = (Vec::with_capacity(c.n_ctx * row), Vec::with_capacity(c.n_ctx * row));
    for pos in 0..c.n_ctx {
        let page = pages[pos / c.block_size];
        let slot = pos % c.block_size;
        let k_row: Vec<f32> = (0..row).map(|_| rng.unit()).collect();
        let v_row: Vec<f32> = (0..row).map(|_| rng.unit()).collect();
        let noise: Vec<f32> = (0..row).map(|_| 100.0 + rng.unit()).collect();
        kv.write(1, page, slot, &k_row, &v_row).unwrap();
        kv.write(0, page, slot, &noise, &noise).unwrap();
        // The reference sees exactly what the cache stores (rounded to T).
        k.extend(k_row.iter().map(|&x| T::from_f32(x).to_f32()));
        v.extend(v_row.iter().map(|&x| T::from_f32(x).to_f32()));
    }
    let cfg = AttnConfig::new(c.n_kv_heads * c.group, c.n_kv_heads, c.head_dim).unwrap();
    let q: Vec<f32> = (0..c.n_new * cfg.q_len()).map(|_| c.q_gain * rng.unit()).collect();
    Built { kv, pages, k, v, q, cfg }
}

/// Relative error in the sense used for sums: each output element is a weighted mean
/// `Σ p_t v_t / Σ p_t`, so its error is measured against the same mean of the magnitudes,
/// `Σ p_t |v_t| / Σ p_t` (`scale`, computed by the naive attention over `|v|`). Plain `|want|`
/// would be meaningless where the mean cancels to ~0.
fn assert_close(got: &[f32], want: &[f32], scale: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let rel = (g - w).abs() / s.max(w.abs()).max(f32::MIN_POSITIVE);
        prop_assert!(rel <= REL_TOL, "element {}: paged {} vs naive {} (rel {:e})", i, g, w, rel);
    }
    Ok(())
}

fn check<T: KvElement>(c: &Case) -> Result<(), TestCaseError> {
    let Built { kv, pages, k, v, q, cfg } = build::<T>(c);
    let q_len = cfg.q_len();
    let mut scores = vec![0.0f64; c.n_ctx];
    let v_abs: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let mut scale = vec![0.0f32; q.len()];
    naive_attention(&q, &k, &v_abs, c.n_ctx - c.n_new, &cfg, &mut scores, &mut scale).unwrap();

    // Decode: the last query token over the whole context.
    let q_last = &q[(c.n_new - 1) * q_len..];
    let mut want = vec![0.0f32; q_len];
    naive_attention(q_last, &k, &v, c.n_ctx - 1, &cfg, &mut scores, &mut want).unwrap();
    let mut got = vec![f32::NAN; q_len];
    paged_decode(&kv, 1, &pages, c.n_ctx, q_last, &mut got, &cfg).unwrap();
    assert_close(&got, &want, &scale[(c.n_new - 1) * q_len..])?;

    // Prefill: the last n_new tokens as a chunk, causal.
    let mut want = vec![0.0f32; q.len()];
    naive_attention(&q, &k, &v, c.n_ctx - c.n_new, &cfg, &mut scores, &mut want).unwrap();
    let mut got = vec![f32::NAN; q.len()];
    paged_prefill(&kv, 1, &pages, c.n_ctx, &q, &mut got, &cfg).unwrap();
    assert_close(&got, &want, &scale)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn paged_f32_matches_naive(c in case()) {
        check::<f32>(&c)?;
    }

    #[test]
    fn paged_f16_matches_naive_on_f16_rounded_kv(c in case()) {
        check::<f16>(&c)?;
    }
}

/// The causal mask: a prefill query must not see later tokens of its own chunk. Changing the
/// last token's K/V must leave every earlier query's output unchanged.
#[test]
fn prefill_is_causal() {
    let c = Case {
        n_kv_heads: 2,
        group: 2,
        head_dim: 4,
        block_size: 3,
        n_ctx: 7,
        n_new: 4,
        q_gain: 1.0,
        seed: 99,
    };
    let Built { mut kv, pages, q, cfg, .. } = build::<f32>(&c);
    let mut before = vec![0.0; q.len()];
    paged_prefill(&kv, 1, &pages, c.n_ctx, &q, &mut before, &cfg).unwrap();
    let last = pages[(c.n_ctx - 1) / c.block_size];
    let row = vec![5.0; 2 * 4];
    kv.write(1, last, (c.n_ctx - 1) % c.block_size, &row, &row).unwrap();
    let mut after = vec![0.0; q.len()];
    paged_prefill(&kv, 1, &pages, c.n_ctx, &q, &mut after, &cfg).unwrap();
    let q_len = cfg.q_len();
    assert_eq!(before[..3 * q_len], after[..3 * q_len]);
    assert_ne!(before[3 * q_len..], after[3 * q_len..]);
}
