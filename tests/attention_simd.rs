//! `pagoda_cpu::attention::paged_attention` at every SIMD level this CPU has equals core's
//! scalar specification (`paged_prefill` / `paged_decode`) and core's naive f64 attention,
//! within 1e-5 relative error, over random head counts, GQA ratios (1, 2, 3, 8), head dims
//! (ragged tails: not multiples of 8 or 16), block sizes, contexts up to 2000 tokens,
//! prefill chunks spanning several tasks, random page permutations, f32, f16, bf16, q8_0 and
//! q4_0 pages (through this generic kernel; the model's f16 pages use
//! `paged_attention_f16`; block formats with head dims rounded up to 32), and
//! with the flash-decoding split off, automatic, and forced to several page ranges. A level
//! that scores q8_0 pages against q8_0-quantized queries (`quantizes_queries`: AVX-512) is
//! compared with the references computed for those quantized queries.

mod common;

use common::Rng;
use half::f16;
use pagoda_core::attention::naive::naive_attention;
use pagoda_core::attention::{paged_decode, paged_prefill, AttnConfig, AttnError};
use pagoda_core::kv::{KvConfig, KvError, KvFormat, KvPages};
use pagoda_core::pool::PageId;
use pagoda_core::quant::{BlockQ4_0, BlockQ8_0};
use pagoda_cpu::attention::{paged_attention, paged_attention_split, quantizes_queries, Split};
use pagoda_cpu::kernels::{Kernels, SimdLevel};
use proptest::prelude::*;

const REL_TOL: f32 = 1e-5;

#[derive(Clone, Debug)]
struct Case {
    n_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    n_ctx: usize,
    n_new: usize,
    q_gain: f32,
    split: Split,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1..=4usize,
        prop::sample::select(vec![1usize, 2, 3, 8]),
        prop_oneof![1..=80usize, prop::sample::select(vec![8usize, 16, 17, 31, 33, 64, 65])],
        prop::sample::select(vec![1usize, 2, 3, 5, 8, 16, 32]),
        1..=2000usize,
        1..=20usize,
        prop::sample::select(vec![0.1f32, 1.0, 4.0]),
        prop::sample::select(vec![
            Split::Auto,
            Split::Ranges(1),
            Split::Ranges(2),
            Split::Ranges(3),
            Split::Ranges(7),
        ]),
        any::<u64>(),
    )
        .prop_map(
            |(n_kv_heads, group, head_dim, block_size, n_ctx, n_new, q_gain, split, seed)| Case {
                n_kv_heads,
                group,
                head_dim,
                block_size,
                n_ctx,
                n_new: n_new.min(n_ctx),
                q_gain,
                split,
                seed: seed | 1,
            },
        )
}

/// The paged cache (layer 1 holds the data, layer 0 noise, unwritten slots NaN) through a
/// random page permutation, the same K/V contiguous (as stored, i.e. rounded to `T`), and q.
#[allow(clippy::type_complexity)]
fn build<T: KvFormat>(
    c: &Case,
) -> (KvPages<T, Vec<T>>, Vec<PageId>, Vec<f32>, Vec<f32>, Vec<f32>, AttnConfig) {
    let mut rng = Rng(c.seed);
    let needed = c.n_ctx.div_ceil(c.block_size);
    let n_pages = needed + 3;
    let kc = KvConfig {
        n_layers: 2,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: c.block_size,
        n_pages,
    };
    // Unwritten slots read as NaN (a block format: the unit NaNs encode to).
    let mut nan = [T::zero()];
    T::encode(&vec![f32::NAN; T::VALUES_PER_UNIT], &mut nan);
    let mut kv = KvPages::new(kc, vec![nan[0]; kc.slab_units::<T>().unwrap()]).unwrap();
    let stored = |row: &[f32]| {
        let mut units = vec![T::zero(); row.len() / T::VALUES_PER_UNIT];
        T::encode(row, &mut units);
        let mut back = vec![0.0f32; row.len()];
        T::decode(&units, &mut back);
        back
    };
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
        k.extend(stored(&k_row));
        v.extend(stored(&v_row));
    }
    let cfg = AttnConfig::new(c.n_kv_heads * c.group, c.n_kv_heads, c.head_dim).unwrap();
    let q: Vec<f32> = (0..c.n_new * cfg.q_len()).map(|_| c.q_gain * rng.unit()).collect();
    (kv, pages, k, v, q, cfg)
}

/// Error relative to the weighted mean of |v| (`scale`), as in core's attention tests: each
/// output is `Σ p_t v_t / Σ p_t`, which may cancel to ~0.
fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let rel = (g - w).abs() / s.max(w.abs()).max(f32::MIN_POSITIVE);
        prop_assert!(rel <= REL_TOL, "{}: element {}: {} vs {} (rel {:e})", what, i, g, w, rel);
    }
    Ok(())
}

/// The references for queries `q`: naive f64 attention, core's prefill and decode (the
/// last token), and the weighted mean of |v| that scales the errors.
struct Refs {
    naive: Vec<f32>,
    core_prefill: Vec<f32>,
    core_decode: Vec<f32>,
    scale: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn refs<T: KvFormat>(
    c: &Case,
    kv: &KvPages<T, Vec<T>>,
    pages: &[PageId],
    k: &[f32],
    v: &[f32],
    q: &[f32],
    cfg: &AttnConfig,
) -> Refs {
    let first = c.n_ctx - c.n_new;
    let mut scores = vec![0.0f64; c.n_ctx];
    let v_abs: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let mut scale = vec![0.0f32; q.len()];
    naive_attention(q, k, &v_abs, first, cfg, &mut scores, &mut scale).unwrap();
    let mut naive = vec![0.0f32; q.len()];
    naive_attention(q, k, v, first, cfg, &mut scores, &mut naive).unwrap();
    let mut core_prefill = vec![f32::NAN; q.len()];
    paged_prefill(kv, 1, pages, c.n_ctx, q, &mut core_prefill, cfg).unwrap();
    let q_last = &q[(c.n_new - 1) * cfg.q_len()..];
    let mut core_decode = vec![f32::NAN; cfg.q_len()];
    paged_decode(kv, 1, pages, c.n_ctx, q_last, &mut core_decode, cfg).unwrap();
    Refs { naive, core_prefill, core_decode, scale }
}

/// `q` as the activation quantizer's q8_0 blocks hold it (`Kernels::quantize_q8_0`, the same
/// bytes at every level, then `decode`).
fn q8_0_round_trip(q: &[f32]) -> Vec<f32> {
    let mut blocks = vec![BlockQ8_0::zero(); q.len() / 32];
    Kernels::new(SimdLevel::Scalar).unwrap().quantize_q8_0(q, &mut blocks).unwrap();
    let mut back = vec![0.0f32; q.len()];
    BlockQ8_0::decode(&blocks, &mut back);
    back
}

fn check<T: KvFormat>(c: &Case) -> Result<(), TestCaseError> {
    let (kv, pages, k, v, q, cfg) = build::<T>(c);
    let q_len = cfg.q_len();
    let plain = refs(c, &kv, &pages, &k, &v, &q, &cfg);
    let mut quantized = None;

    for level in SimdLevel::available() {
        // A level that scores these pages against q8_0 queries computes the attention of
        // the quantized queries: compare it with the references for those.
        let r = if quantizes_queries::<T>(level) {
            let qq = q8_0_round_trip(&q);
            &*quantized.get_or_insert_with(|| refs(c, &kv, &pages, &k, &v, &qq, &cfg))
        } else {
            &plain
        };
        let mut got = vec![f32::NAN; q.len()];
        paged_attention_split(level, &kv, 1, &pages, c.n_ctx, &q, &mut got, &cfg, c.split).unwrap();
        assert_close(&format!("{level} prefill vs naive"), &got, &r.naive, &r.scale)?;
        assert_close(&format!("{level} prefill vs core"), &got, &r.core_prefill, &r.scale)?;

        let q_last = &q[(c.n_new - 1) * q_len..];
        let mut got = vec![f32::NAN; q_len];
        paged_attention_split(level, &kv, 1, &pages, c.n_ctx, q_last, &mut got, &cfg, c.split)
            .unwrap();
        let last_scale = &r.scale[(c.n_new - 1) * q_len..];
        assert_close(&format!("{level} decode vs core"), &got, &r.core_decode, last_scale)?;
        assert_close(
            &format!("{level} decode vs naive"),
            &got,
            &r.naive[(c.n_new - 1) * q_len..],
            last_scale,
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn simd_f32_pages_match_core(c in case()) {
        check::<f32>(&c)?;
    }

    #[test]
    fn simd_f16_pages_match_core_on_the_same_pages(c in case()) {
        check::<f16>(&c)?;
    }

    #[test]
    fn simd_bf16_pages_match_core_on_the_same_pages(c in case()) {
        check::<half::bf16>(&c)?;
    }

    #[test]
    fn simd_q8_0_pages_match_core_on_the_same_pages(c in case()) {
        check::<BlockQ8_0>(&Case { head_dim: c.head_dim.div_ceil(32) * 32, ..c })?;
    }

    #[test]
    fn simd_q4_0_pages_match_core_on_the_same_pages(c in case()) {
        check::<BlockQ4_0>(&Case { head_dim: c.head_dim.div_ceil(32) * 32, ..c })?;
    }
}

fn long_case(split: Split) -> Case {
    Case {
        n_kv_heads: 1,
        group: 3,
        head_dim: 19,
        block_size: 16,
        n_ctx: 1500,
        n_new: 1,
        q_gain: 4.0,
        split,
        seed: 7,
    }
}

/// Splitting the context (flash-decoding) changes only float rounding, for every range count
/// up to one range per page.
#[test]
fn split_ranges_agree_with_unsplit() {
    let (kv, pages, _, _, q, cfg) = build::<f32>(&long_case(Split::Auto));
    for level in SimdLevel::available() {
        let mut whole = vec![0.0; q.len()];
        paged_attention_split(level, &kv, 1, &pages, 1500, &q, &mut whole, &cfg, Split::Ranges(1))
            .unwrap();
        for ranges in [2, 3, 4, 5, 16, 94, 1000] {
            let mut got = vec![0.0; q.len()];
            let split = Split::Ranges(ranges);
            paged_attention_split(level, &kv, 1, &pages, 1500, &q, &mut got, &cfg, split).unwrap();
            for (g, w) in got.iter().zip(&whole) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(0.05), "{level} {ranges}: {g} vs {w}");
            }
        }
    }
}

/// The causal mask: changing the last token's K/V leaves earlier queries of the chunk alone.
#[test]
fn prefill_is_causal_at_every_level() {
    let c = Case { n_ctx: 40, n_new: 12, block_size: 5, ..long_case(Split::Auto) };
    for level in SimdLevel::available() {
        let (mut kv, pages, _, _, q, cfg) = build::<f32>(&c);
        let mut before = vec![0.0; q.len()];
        paged_attention(level, &kv, 1, &pages, c.n_ctx, &q, &mut before, &cfg).unwrap();
        let row = vec![5.0; c.head_dim];
        kv.write(1, pages[(c.n_ctx - 1) / c.block_size], (c.n_ctx - 1) % c.block_size, &row, &row)
            .unwrap();
        let mut after = vec![0.0; q.len()];
        paged_attention(level, &kv, 1, &pages, c.n_ctx, &q, &mut after, &cfg).unwrap();
        let q_len = cfg.q_len();
        assert_eq!(before[..11 * q_len], after[..11 * q_len], "{level}");
        assert_ne!(before[11 * q_len..], after[11 * q_len..], "{level}");
    }
}

/// Bad arguments give core's error values, never a panic.
#[test]
fn bad_arguments_are_core_errors() {
    let kc = KvConfig { n_layers: 1, n_kv_heads: 1, head_dim: 2, block_size: 4, n_pages: 2 };
    let kv = KvPages::new(kc, vec![0.0f32; 32]).unwrap();
    let cfg = AttnConfig::new(2, 1, 2).unwrap();
    let q = [0.0; 4];
    let mut out = [0.0; 4];
    let p = [PageId(0), PageId(1)];
    for level in SimdLevel::ALL {
        let run = |pages: &[PageId], n_ctx, q: &[f32], out: &mut [f32], cfg: &AttnConfig| {
            paged_attention(level, &kv, 0, pages, n_ctx, q, out, cfg)
        };
        assert_eq!(run(&p, 0, &q, &mut out, &cfg), Err(AttnError::EmptyContext));
        assert_eq!(
            run(&p, 9, &q, &mut out, &cfg),
            Err(AttnError::TooFewPages { needed: 3, got: 2 })
        );
        assert!(matches!(
            paged_attention(level, &kv, 1, &p, 1, &q, &mut out, &cfg),
            Err(AttnError::Kv(KvError::LayerOutOfRange { .. }))
        ));
        assert!(matches!(
            run(&[PageId(2)], 1, &q, &mut out, &cfg),
            Err(AttnError::Kv(KvError::PageOutOfRange { .. }))
        ));
        assert!(matches!(
            run(&p, 1, &q[..3], &mut out, &cfg),
            Err(AttnError::Length { what: "q (whole tokens)", .. })
        ));
        assert_eq!(run(&p, 1, &[], &mut [], &cfg), Err(AttnError::EmptyContext));
        assert!(matches!(
            run(&p, 1, &q, &mut out[..2], &cfg),
            Err(AttnError::Length { what: "out", .. })
        ));
        assert_eq!(
            run(&p, 1, &[0.0; 8], &mut [0.0; 8], &cfg),
            Err(AttnError::ChunkLongerThanContext { n_new: 2, n_ctx: 1 })
        );
        let other = AttnConfig::new(2, 2, 2).unwrap();
        assert!(matches!(
            run(&p, 1, &q, &mut out, &other),
            Err(AttnError::ConfigMismatch { what: "n_kv_heads", .. })
        ));
        let zero = AttnConfig { head_dim: 0, ..cfg };
        assert_eq!(run(&p, 1, &q, &mut out, &zero), Err(AttnError::ZeroDimension));
        let ragged = AttnConfig { n_heads: 3, n_kv_heads: 2, ..cfg };
        assert_eq!(
            run(&p, 1, &q, &mut out, &ragged),
            Err(AttnError::HeadsNotDivisible { n_heads: 3, n_kv_heads: 2 })
        );
    }
}

/// Fast numerics' aligned split gives a decode row the same bits whether its kv heads run
/// as separate tasks or together in one job per page range (what the thread count decides),
/// and the same bits as the row gets inside a prompt chunk (rows in vector lanes on AVX-512).
#[test]
fn aligned_decode_is_the_same_bits_alone_together_and_in_a_chunk() {
    use pagoda_cpu::attention::paged_attention_aligned;
    let case = Case {
        n_kv_heads: 3,
        group: 3,
        head_dim: 64,
        n_ctx: 2000,
        n_new: 40,
        ..long_case(Split::Auto)
    };
    let (kv, pages, _, _, q, cfg) = build::<f16>(&case);
    let row = cfg.n_heads * cfg.head_dim;
    for level in SimdLevel::available() {
        let run = |threads: usize, n_new: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let q = &q[(case.n_new - n_new) * row..];
            let mut out = vec![0.0f32; q.len()];
            pool.install(|| {
                paged_attention_aligned(level, &kv, 1, &pages, 0, 2000, q, &mut out, &cfg).unwrap()
            });
            out[out.len() - row..].iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        // One thread: the heads walk their ranges together; 64: one task per head.
        let (together, apart, chunk) = (run(1, 1), run(64, 1), run(2, case.n_new));
        assert_eq!(together, apart, "{level}: heads together vs apart");
        assert_eq!(together, chunk, "{level}: decode vs the last row of a 40-token chunk");
    }
}
