//! `Numerics::Fast` is batch-invariant: a sequence's logits are bit-identical alone or in a
//! batch, with its prompt in chunks of any size, at any page placement and on any number of
//! threads (the property llama.cpp does not have). Also: it is a different order from
//! `Exact` (the flag does something), and its perplexity stays close to `Exact`'s.
//!
//! The prompts are long enough (up to 1,300 tokens) that attention cuts each row's keys into
//! several aligned ranges (`attention::ALIGNED_RANGE_TOKENS` = 256) and, at 2 threads, spreads them over
//! both threads.

#[path = "common/mod.rs"]
mod common;
#[path = "engine_common/mod.rs"]
mod engine_common;

use std::ops::ControlFlow;
use std::sync::OnceLock;

use common::tempdir::TempDir;
use pagoda::cpu::engine::{Engine, EngineConfig, Request};
use pagoda::cpu::model::{
    ForwardScratch, KvCache, KvType, Llama, Logits, Numerics, SeqItem, SeqTable, Session,
    SessionOptions,
};
use pagoda::cpu::model_file::ModelFile;
use pagoda::cpu::quantize::{quantize, Preset, QuantizeOptions};
use proptest::prelude::*;

fn fast() -> &'static Llama {
    static M: OnceLock<Llama> = OnceLock::new();
    M.get_or_init(|| {
        Llama::load(common::model_path()).expect("load model").with_numerics(Numerics::Fast)
    })
}

/// The GPL-3 text as tokens (no BOS), `n` of them.
fn text(n: usize) -> Vec<u32> {
    static T: OnceLock<Vec<u32>> = OnceLock::new();
    let all = T.get_or_init(|| {
        let (_, tok) = common::model_and_tokenizer();
        let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
        tok.encode(&text, false, false)
    });
    all[..n].to_vec()
}

/// Runs `f` on a pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// The logits of the last `tail` tokens of `tokens`: the prompt in chunks of `n_batch`,
/// except the last `one_by_one` tokens, which are decoded one at a time.
fn tail_logits(
    model: &Llama,
    tokens: &[u32],
    tail: usize,
    n_batch: usize,
    one_by_one: usize,
) -> Vec<f32> {
    tail_logits_with(model, KvType::default(), tokens, tail, n_batch, one_by_one)
}

/// [`tail_logits`] with `kv_type` pages.
fn tail_logits_with(
    model: &Llama,
    kv_type: KvType,
    tokens: &[u32],
    tail: usize,
    n_batch: usize,
    one_by_one: usize,
) -> Vec<f32> {
    let opts = SessionOptions { n_ctx: 2048, n_batch, kv_type, ..SessionOptions::default() };
    let mut s = Session::new(model, opts).unwrap();
    let split = tokens.len() - one_by_one;
    let from = tokens.len() - tail;
    assert!(from <= split);
    let mut out = s.eval_all(&tokens[..split], from).unwrap();
    for &t in &tokens[split..] {
        out.extend(s.eval(&[t]).unwrap());
    }
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn logits_do_not_depend_on_threads_or_prompt_chunking() {
    let model = fast();
    let tokens = text(1300);
    let want = on_threads(2, || tail_logits(model, &tokens, 24, 512, 0));
    let cases = [
        ("1 thread", 1, 512, 0),
        ("chunks of 100", 2, 100, 0),
        ("chunks of 37, 1 thread", 1, 37, 0),
        ("last 24 one at a time", 2, 512, 24),
        ("chunks of 7, last 5 one at a time", 2, 7, 5),
    ];
    for (what, threads, n_batch, one_by_one) in cases {
        let got = on_threads(threads, || tail_logits(model, &tokens, 24, n_batch, one_by_one));
        assert!(same_bits(&got, &want), "{what}: logits differ from one 512-token chunk");
    }
}

/// The same for the compressed page formats: q8_0 pages (scored in integers against
/// q8_0-quantized queries at AVX-512) and q4_0 pages.
#[test]
fn q8_0_and_q4_0_pages_do_not_depend_on_threads_or_prompt_chunking() {
    let model = fast();
    let tokens = text(700);
    for kv_type in [KvType::Q8_0, KvType::Q4_0] {
        let want = on_threads(2, || tail_logits_with(model, kv_type, &tokens, 12, 512, 0));
        let cases =
            [("1 thread, chunks of 37", 1, 37, 0), ("chunks of 7, last 5 one at a time", 2, 7, 5)];
        for (what, threads, n_batch, one_by_one) in cases {
            let got = on_threads(threads, || {
                tail_logits_with(model, kv_type, &tokens, 12, n_batch, one_by_one)
            });
            assert!(same_bits(&got, &want), "{kv_type:?}, {what}: logits differ from one chunk");
        }
    }
}

#[test]
fn fast_is_not_exact_and_exact_is_unchanged_by_it() {
    let tokens = text(700);
    assert_eq!(fast().numerics(), Numerics::Fast);
    let exact = Llama::load(common::model_path()).unwrap();
    assert_eq!(exact.numerics(), Numerics::Fast, "the default");
    let exact = exact.with_numerics(Numerics::Exact);
    let e = on_threads(2, || tail_logits(&exact, &tokens, 4, 512, 0));
    let f = on_threads(2, || tail_logits(fast(), &tokens, 4, 512, 0));
    assert!(!same_bits(&e, &f), "fast computed exact's bits: the flag changes nothing");
    // Exact's f16 attention sums in f16 (llama.cpp's order): the two orders part by up to
    // 0.65 and on average by 0.15 at 700 tokens (as llama.cpp's own repacked and plain runs
    // do on Gemma 3: docs/numerics.md); the greedy choice is the same
    // wherever exact's top-1/top-2 margin is 0.5 or more (issue 18's greedy guard).
    let vocab = exact.config().vocab_size;
    let diff: Vec<f32> = e.iter().zip(&f).map(|(a, b)| (a - b).abs()).collect();
    let (max, mean) =
        (diff.iter().copied().fold(0.0, f32::max), diff.iter().sum::<f32>() / diff.len() as f32);
    eprintln!("fast vs exact logits at 697..700: max |Δ| {max}, mean {mean}");
    assert!(mean < 0.3 && max < 2.0, "fast logits: max |Δ| {max}, mean {mean}");
    for (pos, (e, f)) in e.chunks(vocab).zip(f.chunks(vocab)).enumerate() {
        let mut sorted = e.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let top = |l: &[f32]| pagoda::cpu::sampler::argmax(l);
        if sorted[0] - sorted[1] >= 0.5 {
            assert_eq!(top(e), top(f), "position {pos}: greedy choices differ");
        }
    }
}

/// F16 and BF16 weights (the default model requantized by pagoda's quantizer, as
/// `pagoda quantize --allow-requantize … F16` does) run on fast numerics' own kernel at
/// AVX-512 (`kernels::repacked_float`): batch-invariant like every other format, not exact's
/// bits, and close to exact's logits (F16: f32 activations, where exact rounds them to f16;
/// BF16: activations rounded to bf16 in both).
#[test]
fn f16_and_bf16_weights_are_batch_invariant_and_close_to_exact() {
    let input = ModelFile::open(common::model_path()).expect("the default model opens");
    let dir = TempDir::new("numerics-fast-float");
    let options = QuantizeOptions { allow_requantize: true, ..Default::default() };
    let tokens = text(300);
    for name in ["F16", "BF16"] {
        let path = dir.path(&format!("{name}.gguf"));
        let preset = Preset::parse(name).unwrap();
        quantize(&input, &path, preset, &options, |_| ControlFlow::Continue(())).unwrap();
        let fast = Llama::load(&path).unwrap().with_numerics(Numerics::Fast);
        let want = on_threads(2, || tail_logits(&fast, &tokens, 8, 512, 0));
        let cases =
            [("1 thread, chunks of 37", 1, 37, 0), ("chunks of 13, last 8 one by one", 2, 13, 8)];
        for (what, threads, n_batch, one_by_one) in cases {
            let got = on_threads(threads, || tail_logits(&fast, &tokens, 8, n_batch, one_by_one));
            assert!(same_bits(&got, &want), "{name}, {what}: logits differ from one chunk");
        }
        drop(fast);
        let exact = Llama::load(&path).unwrap().with_numerics(Numerics::Exact);
        let e = on_threads(2, || tail_logits(&exact, &tokens, 8, 512, 0));
        assert!(!same_bits(&e, &want), "{name}: fast computed exact's bits");
        let diff: Vec<f32> = e.iter().zip(&want).map(|(a, b)| (a - b).abs()).collect();
        let max = diff.iter().copied().fold(0.0, f32::max);
        let mean = diff.iter().sum::<f32>() / diff.len() as f32;
        eprintln!("{name}: fast vs exact logits at 292..300: max |Δ| {max}, mean {mean}");
        assert!(mean < 0.3 && max < 2.0, "{name}: fast logits: max |Δ| {max}, mean {mean}");
        let vocab = exact.config().vocab_size;
        for (pos, (e, f)) in e.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
            let mut sorted = e.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let top = |l: &[f32]| pagoda::cpu::sampler::argmax(l);
            if sorted[0] - sorted[1] >= 0.5 {
                assert_eq!(top(e), top(f), "{name}, position {pos}: greedy choices differ");
            }
        }
    }
}

/// Requests of different lengths through the engine with a small batch budget (prompts cut
/// into chunks that share steps with other requests' chunks and decodes, pages wherever the
/// pool has them) give each request the tokens it gets alone.
#[test]
fn engine_batches_give_each_request_its_solo_tokens() {
    let model = fast();
    let text = text(1300);
    let prompts: Vec<Vec<u32>> =
        [(0, 1300), (90, 700), (400, 301), (1000, 40)].map(|(a, n)| text[a..a + n].to_vec()).into();
    let steps = 6;
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| on_threads(1, || engine_common::reference(model, p, steps, 16)))
        .collect();
    for budget in [64, 200] {
        let config = EngineConfig { max_batch_tokens: budget, ..EngineConfig::default() };
        on_threads(2, || {
            let mut engine = Engine::new(model, config).unwrap();
            for (i, p) in prompts.iter().enumerate() {
                engine.submit(Request::greedy(i as u64, p.clone(), steps)).unwrap();
            }
            let (outs, _) = engine_common::run_checked(&mut engine);
            assert_eq!(outs.len(), prompts.len());
            for o in &outs {
                let i = o.id.0 as usize;
                assert_eq!(o.samples[0].tokens, solo[i], "budget {budget}: request {i}");
            }
        });
    }
}

/// The quality guard: perplexity on GPL-3 at -c 512 close to exact's.
#[test]
fn fast_perplexity_stays_close_to_exact() {
    let (exact, tok) = common::model_and_tokenizer();
    let exact = exact.with_numerics(Numerics::Exact);
    let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
    let tokens = tok.encode(&text, true, false);
    let opts = SessionOptions { n_ctx: 512, ..SessionOptions::default() };
    let ppl =
        |m: &Llama| pagoda::cpu::perplexity::perplexity(m, &tokens, &opts, |_, _| {}).unwrap().ppl;
    let (e, f) = (ppl(&exact), ppl(fast()));
    let d = (f - e) / e;
    eprintln!("GPL-3 -c 512: exact {e:.4}, fast {f:.4} ({:+.3}%)", d * 100.0);
    // Issue 18's guard: no loss beyond 0.1%. Measured at AVX-512 -0.014% (18.3590 vs
    // 18.3615) and at AVX2 -0.108% (18.3418: the same repacked matmul, AVX2's own attention
    // sums): fast is lower, i.e. better, and any float-order change moves this 14-chunk figure
    // by ~0.1% either way (docs/numerics.md has -c 2048, ~0.2%). A gain is bounded too, at
    // 0.3%, so that a broken kernel cannot pass by luck.
    assert!(
        (-0.003..0.001).contains(&d),
        "fast perplexity {f:.4} is {:+.3}% from exact's {e:.4}",
        d * 100.0
    );
}

/// Several sequences through one batched forward pass per step, each step taking a chunk of
/// random size from every unfinished sequence (their pages interleave in the pool), on 1 or 2
/// threads: each sequence's last logits equal, bit for bit, its prompt run alone in one
/// session.
fn batch_mix_case(lens: &[(usize, usize)], chunk_sizes: &[usize], threads: usize) {
    let model = fast();
    let all = text(1300);
    let prompts: Vec<&[u32]> = lens.iter().map(|&(at, n)| &all[at..at + n]).collect();
    let alone: Vec<Vec<f32>> =
        prompts.iter().map(|p| on_threads(2, || tail_logits(model, p, 1, 512, 0))).collect();
    on_threads(threads, || {
        let c = model.config();
        let mut cache = KvCache::new(c, KvType::F16, 128, 16).unwrap();
        let mut tables: Vec<SeqTable> = prompts.iter().map(|_| cache.new_table()).collect();
        let mut at = vec![0usize; prompts.len()];
        let mut last: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
        let mut scratch = ForwardScratch::default();
        for step in 0.. {
            let mut items = Vec::new();
            let mut who = Vec::new();
            for (i, table) in tables.iter_mut().enumerate() {
                let rest = prompts[i].len() - at[i];
                if rest == 0 {
                    continue;
                }
                let n = chunk_sizes[(step + i) % chunk_sizes.len()].min(rest);
                items.push(SeqItem::new(table, &prompts[i][at[i]..at[i] + n], Logits::Last));
                who.push((i, n));
            }
            if items.is_empty() {
                break;
            }
            let batch = cache.prepare(&mut items).unwrap();
            let outs = model.forward(&mut cache, &batch, &mut scratch).unwrap();
            for ((i, n), logits) in who.into_iter().zip(outs) {
                at[i] += n;
                last[i] = logits;
            }
        }
        for (i, (got, want)) in last.iter().zip(&alone).enumerate() {
            assert!(
                same_bits(got, want),
                "sequence {i} ({:?}), chunks {chunk_sizes:?}, {threads} threads: logits differ \
                 from its run alone",
                lens[i]
            );
        }
    });
}

proptest! {
    #![proptest_config(common::proptest_config(6))]

    /// Batch invariance over random batch mixes (`batch_mix_case`).
    #[test]
    fn random_batch_mixes_give_each_sequence_its_solo_logits(
        lens in prop::collection::vec((0usize..900, 1usize..=400), 2..=3),
        chunk_sizes in prop::collection::vec(1usize..=200, 1..=4),
        threads in 1usize..=2,
    ) {
        batch_mix_case(&lens, &chunk_sizes, threads);
    }
}
