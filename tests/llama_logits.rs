//! Teacher-forced logits against llama.cpp (tests/data/llamacpp/logits_dev.json): the whole
//! 62-token prompt in one batch, and token by token through the decode path.

mod common;

use pagoda::cpu::model::{Llama, Session, SessionOptions};

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
    for (i, (row, w)) in ours.chunks_exact(vocab).zip(want).enumerate() {
        let top1 = pagoda::cpu::sampler::argmax(row);
        let margin = w.top10_logits[0] - w.top10_logits[1];
        if std::env::var("DBG").is_ok() {
            let d: f64 = w
                .top10_ids
                .iter()
                .zip(&w.top10_logits)
                .map(|(&id, &l)| (row[id as usize] as f64 - l).abs())
                .fold(0.0, f64::max);
            eprintln!(
                "{what} pos {i}: top1 {top1} want {} margin {margin:.3} maxdiff {d:.4}",
                w.top10_ids[0]
            );
        }
        if margin >= 0.1 && std::env::var("DBG").is_err() {
            assert_eq!(
                top1, w.top10_ids[0],
                "{what}: position {i}: top-1 differs (margin {margin:.3})"
            );
        }
        for (&id, &l) in w.top10_ids.iter().zip(&w.top10_logits) {
            let d = (row[id as usize] as f64 - l).abs();
            max = max.max(d);
            sum += d;
            n += 1;
        }
    }
    assert_eq!(ours.len() / vocab, want.len(), "{what}: number of positions");
    (max, sum / n as f64)
}

#[test]
fn teacher_forced_logits_match_llamacpp() {
    let model = Llama::load(common::model_path()).expect("load model");
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
    eprintln!("top-10 logits vs llama.cpp: batch max {max_b:.4} mean {mean_b:.4}; incremental max {max_i:.4} mean {mean_i:.4}");
    // A loose ceiling that still catches a broken kernel (a wrong layer gives diffs of several units).
    assert!(max_b < 0.5 && max_i < 0.5, "logits drift too far from llama.cpp");
}
