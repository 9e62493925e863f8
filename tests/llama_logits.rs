//! Teacher-forced logits against llama.cpp (tests/data/llamacpp/logits_dev.json): the whole
//! 62-token prompt in one batch, and token by token through the decode path.
//!
//! pagoda computes llama.cpp's float operations in llama.cpp's order (8-bit activations,
//! its block-dot lane order, ggml's `expf` approximation in SwiGLU, its RoPE and f16
//! flash-attention rounding), so the logits are llama.cpp's to the printed precision: top-1
//! agrees at every position and the top-10 logits differ by less than 1e-4. (Before that
//! work, float-order differences flipped a few int8 roundings and the 30 layers grew them
//! to ~0.1–0.7 logit: top-1 then missed once at margin 0.134.)
//! `logits_are_as_close_to_exact_as_llamacpp` measures how far both sit from an f64 forward
//! pass with unquantized activations.

mod common;

use pagoda::cpu::model::{Llama, Numerics, Session, SessionOptions};

struct Pos {
    top10_ids: Vec<u32>,
    top10_logits: Vec<f64>,
}

fn positions(v: &serde_json::Value) -> Vec<Pos> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| Pos {
            top10_ids: common::ids(&p["top10_ids"]),
            top10_logits: p["top10_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect(),
        })
        .collect()
}

/// Checks our logits rows against llama.cpp's top-10 at every position; returns
/// (max abs diff, mean abs diff) over the top-10 logits.
fn compare(ours: &[f32], vocab: usize, want: &[Pos], what: &str) -> (f64, f64) {
    let (mut max, mut sum, mut n) = (0.0f64, 0.0f64, 0usize);
    let (mut eligible, mut misses) = (0, Vec::new());
    for (i, (row, w)) in ours.chunks_exact(vocab).zip(want).enumerate() {
        let top1 = pagoda::cpu::sampler::argmax(row);
        let margin = w.top10_logits[0] - w.top10_logits[1];
        if margin >= 0.1 {
            eligible += 1;
            if top1 != w.top10_ids[0] {
                misses.push((i, margin));
            }
        }
        for (&id, &l) in w.top10_ids.iter().zip(&w.top10_logits) {
            let d = (row[id as usize] as f64 - l).abs();
            max = max.max(d);
            sum += d;
            n += 1;
        }
    }
    assert_eq!(ours.len() / vocab, want.len(), "{what}: number of positions");
    eprintln!(
        "{what}: top-1 agrees at {}/{eligible} positions with llama.cpp margin >= 0.1 (misses at (position, margin): {misses:?})",
        eligible - misses.len()
    );
    assert!(misses.is_empty(), "{what}: top-1 misses at margin >= 0.1: {misses:?}");
    (max, sum / n as f64)
}

#[test]
fn teacher_forced_logits_match_llamacpp() {
    let model =
        Llama::load(common::model_path()).expect("load model").with_numerics(Numerics::Exact);
    let vocab = model.config().vocab_size;
    let data = common::data_json("llamacpp/logits_dev.json");
    let prompt = common::ids(&data["prompt_ids"]);

    // One batch (prompt processing path).
    let mut s = Session::new(&model, SessionOptions::default()).unwrap();
    let batch = s.eval_all(&prompt, 0).unwrap();
    let (max_b, mean_b) = compare(&batch, vocab, &positions(&data["positions"]), "batch");

    // Token by token (decode path).
    let mut s = Session::new(&model, SessionOptions::default()).unwrap();
    let mut inc = Vec::with_capacity(batch.len());
    for &t in &prompt {
        inc.extend(s.eval(&[t]).unwrap());
    }
    let (max_i, mean_i) =
        compare(&inc, vocab, &positions(&data["positions_incremental"]), "incremental");
    eprintln!("top-10 logits vs llama.cpp: batch max {max_b:.2e} mean {mean_b:.2e}; incremental max {max_i:.2e} mean {mean_i:.2e}");
    // llama.cpp's logits are printed with ~8 significant digits (|logit| < 40).
    assert!(max_b < 1e-4 && max_i < 1e-4, "logits differ from llama.cpp's");
}

fn dequantize(model: &Llama, w: &pagoda::cpu::model::Weight) -> Vec<f32> {
    let mut out = vec![0f32; w.rows * w.cols];
    pagoda::core::quant::dequantize_row(w.ty, &model.file().bytes()[w.range.clone()], &mut out)
        .unwrap();
    out
}

fn matvec(w: &[f32], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    w.chunks_exact(cols)
        .take(rows)
        .map(|r| r.iter().zip(x).map(|(&a, b)| a as f64 * b).sum())
        .collect()
}

fn rmsnorm(x: &[f64], gain: &[f32], eps: f64) -> Vec<f64> {
    let s = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
    x.iter().zip(gain).map(|(v, &g)| v * s * g as f64).collect()
}

/// The first position needs no attention math (softmax over one token is 1, the output is
/// that token's V), so an f64 forward pass over dequantized weights with unquantized
/// activations is short: the exact logits both programs approximate.
#[test]
fn logits_are_as_close_to_exact_as_llamacpp() {
    let model =
        Llama::load(common::model_path()).expect("load model").with_numerics(Numerics::Exact);
    let (c, w) = (model.config().clone(), model.weights());
    let data = common::data_json("llamacpp/logits_dev.json");
    let tok = common::ids(&data["prompt_ids"])[0] as usize;
    let emb = dequantize(&model, &w.token_embd);
    let mut x: Vec<f64> = emb[tok * c.dim..(tok + 1) * c.dim].iter().map(|&v| v as f64).collect();
    let eps = c.rms_eps as f64;
    let group = c.n_heads / c.n_kv_heads;
    for l in &w.layers {
        let h = rmsnorm(&x, &l.attn_norm, eps);
        let v = matvec(&dequantize(&model, &l.wv), l.wv.rows, l.wv.cols, &h);
        let att: Vec<f64> = (0..c.n_heads * c.head_dim)
            .map(|i| v[(i / c.head_dim / group) * c.head_dim + i % c.head_dim])
            .collect();
        let o = matvec(&dequantize(&model, &l.wo), l.wo.rows, l.wo.cols, &att);
        x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
        let h = rmsnorm(&x, &l.ffn_norm, eps);
        let g = matvec(&dequantize(&model, &l.w_gate), l.w_gate.rows, l.w_gate.cols, &h);
        let u = matvec(&dequantize(&model, &l.w_up), l.w_up.rows, l.w_up.cols, &h);
        let a: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
        let d = matvec(&dequantize(&model, &l.w_down), l.w_down.rows, l.w_down.cols, &a);
        x.iter_mut().zip(&d).for_each(|(x, d)| *x += d);
    }
    let exact = matvec(&emb, c.vocab_size, c.dim, &rmsnorm(&x, &w.output_norm, eps));

    let mut s = Session::new(&model, SessionOptions::default()).unwrap();
    let ours = s.eval(&[tok as u32]).unwrap();
    let p0 = &positions(&data["positions"])[0];
    let (mut d_ours, mut d_llama) = (0.0, 0.0);
    for (&id, &l) in p0.top10_ids.iter().zip(&p0.top10_logits) {
        d_ours += (ours[id as usize] as f64 - exact[id as usize]).abs() / 10.0;
        d_llama += (l - exact[id as usize]).abs() / 10.0;
    }
    eprintln!("position 0, mean |logit - exact| over llama.cpp's top 10: pagoda {d_ours:.4}, llama.cpp {d_llama:.4}");
    // The same computation: the same distance.
    assert!((d_ours - d_llama).abs() < 1e-4, "pagoda {d_ours:.4} vs llama.cpp {d_llama:.4}");
}
