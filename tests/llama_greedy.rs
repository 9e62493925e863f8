//! Greedy generation against llama.cpp's reference ids (tests/data/llamacpp/greedy_dev.json).
//!
//! The reference README asks for agreement up to the first step where llama.cpp's own
//! top-1/top-2 margin is below 0.1 (past such a step llama.cpp's batched and single-token
//! paths can disagree). pagoda reproduces llama.cpp's single-threaded arithmetic bit for bit
//! (see tests/llama_logits.rs), so all 48 ids of every prompt must agree, at every SIMD
//! level (CI runs this test once per forced level); the margin rule's step is printed too.

mod common;

use common::golden::{greedy, GreedyCase};
use pagoda::cpu::model::{Llama, Numerics};

#[test]
fn greedy_matches_llamacpp_until_its_margin_drops() {
    let model =
        Llama::load(common::model_path()).expect("load model").with_numerics(Numerics::Exact);
    let data = common::data_json("llamacpp/greedy_dev.json");
    for case in GreedyCase::all(&data["cases"]) {
        let got = greedy(&model, &case.prompt_ids, case.want.len());
        let agree = case.agree(&got);
        eprintln!(
            "{:?}: {agree}/{} tokens agree with llama.cpp (first step with margin < 0.1: {})",
            case.prompt,
            case.want.len(),
            case.must_agree()
        );
        assert!(
            agree == case.want.len(),
            "prompt {:?}: diverged at step {agree} (llama.cpp margin there {:.3}); got {:?}, want {:?}",
            case.prompt,
            case.margins[agree],
            &got[..(agree + 1).min(got.len())],
            &case.want[..(agree + 1).min(case.want.len())]
        );
    }
}
