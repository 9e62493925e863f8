//! Sliding-window attention (`AttnConfig::window`, llama.cpp's `LLAMA_SWA_TYPE_STANDARD`:
//! the query at index `p` sees `max(0, p + 1 - W) ..= p`) in every implementation:
//!
//! - `paged_attention_split` at every SIMD level this CPU has, over f32, f16 and bf16
//!   pages, with the flash-decoding split automatic and forced (`Split::Ranges`), equals
//!   core's `paged_prefill` / `paged_decode` and core's naive f64 attention (both with the
//!   window) within 1e-5 relative error, as `attention_simd.rs` demands without a window;
//! - `paged_attention_f16` (llama.cpp's rounding) gives the scalar level's bits at every
//!   level and thread count, the same bits one token at a time, and stays within f16
//!   rounding of the naive attention, as `attention_f16_pages.rs` demands;
//! - in all of them a table whose first pages were dropped (none visible to the call, `n_ctx`
//!   counted from the table's first slot) gives the full table's bits, keys no query of the
//!   call sees are never read into a result (they hold NaN here), and a window covering the
//!   whole context is no window, bit for bit.
//!
//! Windows are drawn around the page size (1, `bs - 1`, `bs`, `bs + 1`, `2·bs + 3`), at
//! random, at and beyond the context; chunks are often longer than the window.

mod common;

use common::Rng;
use half::f16;
use pagoda_core::attention::naive::naive_attention;
use pagoda_core::attention::{paged_decode, paged_prefill, AttnConfig, AttnError};
use pagoda_core::kv::{KvConfig, KvElement, KvPages};
use pagoda_core::pool::PageId;
use pagoda_cpu::attention::{paged_attention_f16, paged_attention_split, Split};
use pagoda_cpu::kernels::SimdLevel;
use proptest::prelude::*;

const REL_TOL: f32 = 1e-5;

#[derive(Clone, Debug)]
struct Case {
    n_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    /// Tokens of the whole sequence (the full table's context).
    n_ctx: usize,
    n_new: usize,
    window: usize,
    /// Pages dropped from the front for the dropped-table run (none visible to the call).
    dropped: usize,
    q_gain: f32,
    split: Split,
    seed: u64,
}

impl Case {
    fn cfg(&self) -> AttnConfig {
        AttnConfig::new(self.n_kv_heads * self.group, self.n_kv_heads, self.head_dim)
            .unwrap()
            .with_window(Some(self.window))
    }

    /// The first index any query of the call sees: the keys before it are NaN.
    fn first_seen(&self) -> usize {
        self.cfg().first_visible(self.n_ctx - self.n_new)
    }
}

/// A window for `kind`: around the page size, random, at or beyond the context.
fn window(kind: u8, r: usize, bs: usize, n_ctx: usize) -> usize {
    match kind {
        0 => 1,
        1 => bs.saturating_sub(1).max(1),
        2 => bs,
        3 => bs + 1,
        4 => 2 * bs + 3,
        5 => 1 + r % n_ctx,
        6 => 1 + r % n_ctx.min(40),
        7 => n_ctx,
        _ => n_ctx + 1 + r % 100,
    }
}

#[allow(clippy::too_many_arguments)]
fn make_case(
    (n_kv_heads, group, head_dim, block_size): (usize, usize, usize, usize),
    n_ctx: usize,
    n_new: usize,
    (kind, r): (u8, usize),
    drop_pct: usize,
    q_gain: f32,
    split: Split,
    seed: u64,
) -> Case {
    let mut c = Case {
        n_kv_heads,
        group,
        head_dim,
        block_size,
        n_ctx,
        n_new: n_new.min(n_ctx),
        window: window(kind, r, block_size, n_ctx),
        dropped: 0,
        q_gain,
        split,
        seed: seed | 1,
    };
    c.dropped = c.first_seen() / block_size * drop_pct / 100;
    c
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            1..=3usize,
            prop::sample::select(vec![1usize, 2, 3, 8]),
            prop_oneof![1..=80usize, prop::sample::select(vec![8usize, 16, 17, 31, 33, 64, 65])],
            prop::sample::select(vec![1usize, 2, 3, 5, 8, 16, 32]),
        ),
        1..=1200usize,
        prop_oneof![1..=3usize, 1..=40usize],
        (0..=8u8, any::<usize>()),
        prop::sample::select(vec![0usize, 50, 100]),
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
        .prop_map(|(shape, n_ctx, n_new, w, drop, gain, split, seed)| {
            make_case(shape, n_ctx, n_new, w, drop, gain, split, seed)
        })
}

/// The shapes `paged_attention_f16` is tested on (multiples of 16 take the AVX-512 kernel:
/// 64 and 128 in one block of registers, 256 in column blocks, 80 and 96 with the dot's
/// f64 tail; 8 and 40 the portable one), with
/// contexts past `SPLIT_MIN_KEYS` so that windows of 512 and more split over threads.
fn f16_case() -> impl Strategy<Value = Case> {
    (
        (
            1..=3usize,
            prop::sample::select(vec![1usize, 3, 4]),
            prop::sample::select(vec![64usize, 128, 8, 40, 96, 256, 80]),
            prop::sample::select(vec![1usize, 4, 16, 32]),
        ),
        1..=1400usize,
        prop_oneof![1..=2usize, 1..=24usize],
        (0..=8u8, any::<usize>()),
        prop::sample::select(vec![0usize, 50, 100]),
        any::<u64>(),
    )
        .prop_map(|(shape, n_ctx, n_new, w, drop, seed)| {
            make_case(shape, n_ctx, n_new, w, drop, 1.0, Split::Auto, seed)
        })
}

/// The sequence's pages (layer 1 holds the data, layer 0 noise, unwritten slots and keys
/// before [`Case::first_seen`] NaN) through a random page permutation; the same K/V
/// contiguous (as stored, i.e. rounded to `T`, NaN where the pages are), and q.
#[allow(clippy::type_complexity)]
fn build<T: KvElement>(
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
    let mut kv = KvPages::new(kc, vec![T::from_f32(f32::NAN); kc.slab_len().unwrap()]).unwrap();
    let mut perm: Vec<u32> = (0..n_pages as u32).collect();
    for i in (1..n_pages).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    let pages: Vec<PageId> = perm[..needed].iter().map(|&p| PageId(p)).collect();
    let row = kc.row_len();
    let masked = c.first_seen();
    let (mut k, mut v) = (Vec::with_capacity(c.n_ctx * row), Vec::with_capacity(c.n_ctx * row));
    for pos in 0..c.n_ctx {
        let page = pages[pos / c.block_size];
        let slot = pos % c.block_size;
        let mut k_row: Vec<f32> = (0..row).map(|_| rng.unit()).collect();
        let mut v_row: Vec<f32> = (0..row).map(|_| rng.unit()).collect();
        if pos < masked {
            k_row.fill(f32::NAN);
            v_row.fill(f32::NAN);
        }
        let noise: Vec<f32> = (0..row).map(|_| 100.0 + rng.unit()).collect();
        kv.write(1, page, slot, &k_row, &v_row).unwrap();
        kv.write(0, page, slot, &noise, &noise).unwrap();
        k.extend(k_row.iter().map(|&x| T::from_f32(x).to_f32()));
        v.extend(v_row.iter().map(|&x| T::from_f32(x).to_f32()));
    }
    let cfg = c.cfg();
    let q: Vec<f32> = (0..c.n_new * cfg.q_len()).map(|_| c.q_gain * rng.unit()).collect();
    (kv, pages, k, v, q, cfg)
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Error relative to the weighted mean of |v| (`scale`), as in `attention_simd.rs`.
fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let rel = (g - w).abs() / s.max(w.abs()).max(f32::MIN_POSITIVE);
        prop_assert!(rel <= REL_TOL, "{}: element {}: {} vs {} (rel {:e})", what, i, g, w, rel);
    }
    Ok(())
}

/// `paged_attention_split` on the case's full table and on its table without the first
/// `c.dropped` pages (`n_ctx` counted from there): the two must be the same bits.
#[allow(clippy::too_many_arguments)]
fn cpu_run<T: KvElement>(
    level: SimdLevel,
    kv: &KvPages<T, Vec<T>>,
    pages: &[PageId],
    c: &Case,
    n_ctx: usize,
    q: &[f32],
    cfg: &AttnConfig,
    split: Split,
) -> Result<Vec<f32>, TestCaseError> {
    let mut out = vec![f32::NAN; q.len()];
    paged_attention_split(level, kv, 1, pages, n_ctx, q, &mut out, cfg, split).unwrap();
    let d = c.dropped;
    let mut dropped = vec![f32::NAN; q.len()];
    let short = n_ctx - d * c.block_size;
    paged_attention_split(level, kv, 1, &pages[d..], short, q, &mut dropped, cfg, split).unwrap();
    prop_assert_eq!(bits(&dropped), bits(&out), "{}: {} front pages dropped", level, d);
    Ok(out)
}

fn check<T: KvElement>(c: &Case) -> Result<(), TestCaseError> {
    let (kv, pages, k, v, q, cfg) = build::<T>(c);
    let q_len = cfg.q_len();
    let first = c.n_ctx - c.n_new;
    let mut scores = vec![0.0f64; c.n_ctx];
    let v_abs: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let mut scale = vec![0.0f32; q.len()];
    naive_attention(&q, &k, &v_abs, first, &cfg, &mut scores, &mut scale).unwrap();

    let mut naive = vec![0.0f32; q.len()];
    naive_attention(&q, &k, &v, first, &cfg, &mut scores, &mut naive).unwrap();
    prop_assert!(naive.iter().all(|x| x.is_finite()), "naive read a masked key");
    let mut core_prefill = vec![f32::NAN; q.len()];
    paged_prefill(&kv, 1, &pages, c.n_ctx, &q, &mut core_prefill, &cfg).unwrap();
    let d = c.dropped;
    let mut core_dropped = vec![f32::NAN; q.len()];
    let short = c.n_ctx - d * c.block_size;
    paged_prefill(&kv, 1, &pages[d..], short, &q, &mut core_dropped, &cfg).unwrap();
    prop_assert_eq!(bits(&core_dropped), bits(&core_prefill), "core, {} pages dropped", d);
    let q_last = &q[(c.n_new - 1) * q_len..];
    let mut core_decode = vec![f32::NAN; q_len];
    paged_decode(&kv, 1, &pages, c.n_ctx, q_last, &mut core_decode, &cfg).unwrap();
    assert_close("core prefill vs naive", &core_prefill, &naive, &scale)?;

    let no_window = AttnConfig { window: None, ..cfg };
    for level in SimdLevel::available() {
        let got = cpu_run(level, &kv, &pages, c, c.n_ctx, &q, &cfg, c.split)?;
        assert_close(&format!("{level} prefill vs naive"), &got, &naive, &scale)?;
        assert_close(&format!("{level} prefill vs core"), &got, &core_prefill, &scale)?;
        if c.window >= c.n_ctx {
            let mut full = vec![f32::NAN; q.len()];
            paged_attention_split(
                level, &kv, 1, &pages, c.n_ctx, &q, &mut full, &no_window, c.split,
            )
            .unwrap();
            prop_assert_eq!(bits(&got), bits(&full), "{}: window ≥ n_ctx vs none", level);
        }

        let got = cpu_run(level, &kv, &pages, c, c.n_ctx, q_last, &cfg, c.split)?;
        let last_scale = &scale[(c.n_new - 1) * q_len..];
        assert_close(&format!("{level} decode vs core"), &got, &core_decode, last_scale)?;
        assert_close(
            &format!("{level} decode vs naive"),
            &got,
            &naive[(c.n_new - 1) * q_len..],
            last_scale,
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn windowed_f32_pages_match_core_and_naive(c in case()) {
        check::<f32>(&c)?;
    }

    #[test]
    fn windowed_f16_pages_match_core_and_naive(c in case()) {
        check::<f16>(&c)?;
    }

    #[test]
    fn windowed_bf16_pages_match_core_and_naive(c in case()) {
        check::<half::bf16>(&c)?;
    }
}

/// A case's f16 cache, block table and queries.
struct F16Data {
    kv: KvPages<f16, Vec<f16>>,
    pages: Vec<PageId>,
    q: Vec<f32>,
}

fn f16_data(c: &Case) -> F16Data {
    let (kv, pages, _, _, q, _) = build::<f16>(c);
    F16Data { kv, pages, q }
}

/// `paged_attention_f16` of the case (full table, or without its first `c.dropped` pages).
fn run_f16(level: SimdLevel, x: &F16Data, c: &Case, dropped: bool, cfg: &AttnConfig) -> Vec<f32> {
    let d = if dropped { c.dropped } else { 0 };
    let mut out = vec![f32::NAN; x.q.len()];
    let n_ctx = c.n_ctx - d * c.block_size;
    paged_attention_f16(level, &x.kv, 1, &x.pages[d..], n_ctx, &x.q, &mut out, cfg).unwrap();
    out
}

/// The case's rows computed one new token per call (the decode path), concatenated.
fn f16_token_by_token(level: SimdLevel, x: &F16Data, c: &Case, cfg: &AttnConfig) -> Vec<f32> {
    f16_chunked(level, x, c, cfg, 1)
}

/// The case's rows computed `chunk` new tokens per call (the last call fewer), concatenated.
fn f16_chunked(
    level: SimdLevel,
    x: &F16Data,
    c: &Case,
    cfg: &AttnConfig,
    chunk: usize,
) -> Vec<f32> {
    let q_len = cfg.q_len();
    let first = c.n_ctx - c.n_new;
    let mut out = vec![f32::NAN; x.q.len()];
    let calls = x.q.chunks(chunk * q_len).zip(out.chunks_mut(chunk * q_len));
    for (i, (qc, o)) in calls.enumerate() {
        let n_ctx = first + i * chunk + qc.len() / q_len;
        paged_attention_f16(level, &x.kv, 1, &x.pages, n_ctx, qc, o, cfg).unwrap();
    }
    out
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    /// The f16 kernel's bit-exactness properties hold under a window: every level equals the
    /// scalar level at every thread count (windows of ≥ SPLIT_MIN_KEYS keys split over the
    /// threads), one token at a time equals the chunk, dropping invisible front pages
    /// changes nothing, and a window covering the context is no window.
    #[test]
    fn windowed_f16_kernel_levels_threads_and_tables_give_the_same_bits(c in f16_case()) {
        let cfg = c.cfg();
        let x = f16_data(&c);
        let want = run_f16(SimdLevel::Scalar, &x, &c, false, &cfg);
        for level in SimdLevel::available() {
            let got = run_f16(level, &x, &c, false, &cfg);
            prop_assert_eq!(bits(&got), bits(&want), "{} vs scalar", level);
        }
        let level = SimdLevel::best_available();
        for threads in [1usize, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool.install(|| run_f16(level, &x, &c, false, &cfg));
            let scalar = pool.install(|| run_f16(SimdLevel::Scalar, &x, &c, false, &cfg));
            prop_assert_eq!(bits(&got), bits(&scalar), "{} threads vs scalar", threads);
            let dropped = pool.install(|| run_f16(level, &x, &c, true, &cfg));
            let d = c.dropped;
            prop_assert_eq!(bits(&dropped), bits(&got), "{} threads, {} pages dropped", threads, d);
            let tokens = pool.install(|| f16_token_by_token(level, &x, &c, &cfg));
            prop_assert_eq!(bits(&tokens), bits(&got), "{} threads, token by token", threads);
            if c.window >= c.n_ctx {
                let none = AttnConfig { window: None, ..cfg };
                let full = pool.install(|| run_f16(level, &x, &c, false, &none));
                prop_assert_eq!(bits(&got), bits(&full), "{} threads, window ≥ n_ctx", threads);
            }
        }
    }

    #[test]
    fn windowed_f16_kernel_is_close_to_exact_attention(c in f16_case()) {
        let (kv, pages, k, v, q, cfg) = build::<f16>(&c);
        let got = run_f16(SimdLevel::best_available(), &F16Data { kv, pages, q: q.clone() }, &c, false, &cfg);
        let mut scores = vec![0.0f64; c.n_ctx];
        let mut exact = vec![0.0f32; q.len()];
        naive_attention(&q, &k, &v, c.n_ctx - c.n_new, &cfg, &mut scores, &mut exact).unwrap();
        // As attention_f16_pages.rs, over the keys a row sees.
        let seen = c.window.min(c.n_ctx) as f32;
        let tol = 4e-3 * (1.0 + seen.sqrt() / 8.0);
        for (i, (g, e)) in got.iter().zip(&exact).enumerate() {
            prop_assert!((g - e).abs() <= tol, "element {}: {} vs exact {} (tol {})", i, g, e, tol);
        }
    }

    /// With `W ≥ n_ctx` every implementation returns exactly what it returns without a
    /// window (no NaN keys here: every key is visible).
    #[test]
    fn a_window_covering_the_context_is_no_window(c in case(), extra in 0..3usize) {
        let c = Case { window: c.n_ctx + extra, dropped: 0, ..c };
        let (kv, pages, k, v, q, cfg) = build::<f32>(&c);
        let none = AttnConfig { window: None, ..cfg };
        let first = c.n_ctx - c.n_new;
        let mut scores = vec![0.0f64; c.n_ctx];
        let (mut a, mut b) = (vec![0.0; q.len()], vec![0.0; q.len()]);
        naive_attention(&q, &k, &v, first, &cfg, &mut scores, &mut a).unwrap();
        naive_attention(&q, &k, &v, first, &none, &mut scores, &mut b).unwrap();
        prop_assert_eq!(bits(&a), bits(&b), "naive");
        paged_prefill(&kv, 1, &pages, c.n_ctx, &q, &mut a, &cfg).unwrap();
        paged_prefill(&kv, 1, &pages, c.n_ctx, &q, &mut b, &none).unwrap();
        prop_assert_eq!(bits(&a), bits(&b), "core prefill");
        let q_last = &q[(c.n_new - 1) * cfg.q_len()..];
        let (mut a1, mut b1) = (vec![0.0; q_last.len()], vec![0.0; q_last.len()]);
        paged_decode(&kv, 1, &pages, c.n_ctx, q_last, &mut a1, &cfg).unwrap();
        paged_decode(&kv, 1, &pages, c.n_ctx, q_last, &mut b1, &none).unwrap();
        prop_assert_eq!(bits(&a1), bits(&b1), "core decode");
        for level in SimdLevel::available() {
            for split in [c.split, Split::Auto, Split::Ranges(3)] {
                paged_attention_split(level, &kv, 1, &pages, c.n_ctx, &q, &mut a, &cfg, split).unwrap();
                paged_attention_split(level, &kv, 1, &pages, c.n_ctx, &q, &mut b, &none, split).unwrap();
                prop_assert_eq!(bits(&a), bits(&b), "{} {:?}", level, split);
            }
        }
        let (kv16, pages16, _, _, _, _) = build::<f16>(&c);
        for level in SimdLevel::available() {
            paged_attention_f16(level, &kv16, 1, &pages16, c.n_ctx, &q, &mut a, &cfg).unwrap();
            paged_attention_f16(level, &kv16, 1, &pages16, c.n_ctx, &q, &mut b, &none).unwrap();
            prop_assert_eq!(bits(&a), bits(&b), "f16 kernel {}", level);
        }
    }
}

fn fixed(window: usize, n_ctx: usize, n_new: usize, block_size: usize, head_dim: usize) -> Case {
    let mut c = Case {
        n_kv_heads: 1,
        group: 3,
        head_dim,
        block_size,
        n_ctx,
        n_new,
        window,
        dropped: 0,
        q_gain: 4.0,
        split: Split::Auto,
        seed: 7,
    };
    c.dropped = c.first_seen() / block_size;
    c
}

/// Windows below, at and above the page size, chunks of several tasks longer than the
/// window, every forced split: the generic kernel against core and naive on f32 pages.
#[test]
fn windows_around_the_page_size_with_forced_splits() {
    for (window, bs) in [(1, 4), (3, 4), (4, 4), (5, 4), (16, 16), (15, 16), (17, 16), (40, 8)] {
        for (n_ctx, n_new) in [(1, 1), (9, 9), (70, 1), (70, 30), (300, 25)] {
            for split in [Split::Auto, Split::Ranges(1), Split::Ranges(2), Split::Ranges(5)] {
                let c = Case { split, ..fixed(window, n_ctx, n_new, bs, 19) };
                check::<f32>(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            }
        }
    }
}

/// A decode with a window of 512 at a context of 8192 splits (flash-decoding, the f16
/// kernel's parts) only the window's pages: on a table that starts at the window's first
/// page, and on a table that starts at page 0 (its first 7680 keys NaN), the results are
/// the same bits at every thread count, at every level, and close to the exact attention.
#[test]
fn long_context_decode_splits_only_the_window() {
    for (window, bs) in [(512, 16), (512, 32), (700, 16), (2048, 16)] {
        let c = fixed(window, 8192, 1, bs, 64);
        let cfg = c.cfg();
        assert!(c.dropped > 0);
        let (kv, pages, k, v, q, _) = build::<f16>(&c);
        let mut scores = vec![0.0f64; c.n_ctx];
        let mut exact = vec![0.0f32; q.len()];
        naive_attention(&q, &k, &v, c.n_ctx - 1, &cfg, &mut scores, &mut exact).unwrap();
        let tol = 4e-3 * (1.0 + (window as f32).sqrt() / 8.0);
        let x = F16Data { kv, pages, q };
        for threads in [1usize, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let want = pool.install(|| run_f16(SimdLevel::Scalar, &x, &c, true, &cfg));
            for level in SimdLevel::available() {
                for dropped in [false, true] {
                    let got = pool.install(|| run_f16(level, &x, &c, dropped, &cfg));
                    let what = format!("W {window} bs {bs} {threads} threads {level} {dropped}");
                    assert_eq!(bits(&got), bits(&want), "{what}");
                }
            }
            for (g, e) in want.iter().zip(&exact) {
                assert!((g - e).abs() <= tol, "W {window}: {g} vs {e}");
            }
        }
        // The generic kernel: its automatic split depends on the window's keys only.
        let (kv, pages, _, _, q, _) = build::<f32>(&c);
        for threads in [1usize, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for level in SimdLevel::available() {
                pool.install(|| cpu_run(level, &kv, &pages, &c, c.n_ctx, &q, &cfg, Split::Auto))
                    .unwrap_or_else(|e| panic!("W {window} {threads} threads {level}: {e}"));
            }
        }
    }
}

/// Gemma 3's sliding-window layers (4 query heads on one kv head of 256, W = 512) and
/// other windows, and the same at head dim 80 (the AVX-512 dot's f64 tail): every level
/// equals the scalar level at every thread count, a table without the invisible front
/// pages gives the same bits, and prefill chunks of 1 to 40 tokens give the whole call's.
#[test]
fn mqa_wide_heads_under_windows() {
    for head_dim in [256, 80] {
        for (window, n_ctx, n_new, bs) in [
            (512, 1100, 40, 16),
            (512, 700, 1, 32),
            (512, 300, 33, 16),
            (17, 300, 40, 16),
            (1, 60, 9, 4),
            (100, 530, 25, 32),
        ] {
            let c = Case { group: 4, q_gain: 1.0, ..fixed(window, n_ctx, n_new, bs, head_dim) };
            let cfg = c.cfg();
            let x = f16_data(&c);
            for threads in [1usize, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let want = pool.install(|| run_f16(SimdLevel::Scalar, &x, &c, false, &cfg));
                for level in SimdLevel::available() {
                    let what =
                        format!("hd {head_dim} W {window} n_ctx {n_ctx} {threads} threads {level}");
                    for dropped in [false, true] {
                        let got = pool.install(|| run_f16(level, &x, &c, dropped, &cfg));
                        assert_eq!(bits(&got), bits(&want), "{what}, dropped {dropped}");
                    }
                    for chunk in [1usize, 6, 40] {
                        let got = pool.install(|| f16_chunked(level, &x, &c, &cfg, chunk));
                        assert_eq!(bits(&got), bits(&want), "{what}, chunks of {chunk}");
                    }
                }
            }
        }
    }
}

/// W = 0 is refused by every implementation with core's error, never a panic.
#[test]
fn a_zero_window_is_an_error_everywhere() {
    let c = fixed(4, 20, 3, 4, 64);
    let cfg = c.cfg().with_window(Some(0));
    let (kv, pages, k, v, q, _) = build::<f32>(&c);
    let mut out = vec![0.0; q.len()];
    let err = Err(AttnError::ZeroWindow);
    assert_eq!(paged_prefill(&kv, 1, &pages, 20, &q, &mut out, &cfg), err);
    assert_eq!(
        paged_decode(&kv, 1, &pages, 20, &q[..cfg.q_len()], &mut out[..cfg.q_len()], &cfg),
        err
    );
    let mut scores = vec![0.0f64; 20];
    assert_eq!(naive_attention(&q, &k, &v, 17, &cfg, &mut scores, &mut out), err);
    for level in SimdLevel::ALL {
        let split = Split::Ranges(2);
        assert_eq!(
            paged_attention_split(level, &kv, 1, &pages, 20, &q, &mut out, &cfg, split),
            err
        );
    }
    let (kv16, pages16, _, _, _, _) = build::<f16>(&c);
    for level in SimdLevel::ALL {
        assert_eq!(paged_attention_f16(level, &kv16, 1, &pages16, 20, &q, &mut out, &cfg), err);
    }
}
