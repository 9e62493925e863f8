//! llama.cpp's greedy reference cases (the `cases` of tests/data/llamacpp/greedy_dev.json and
//! the per-preset `greedy` lists of presets.json share one layout) and pagoda's greedy run.
#![allow(dead_code)]

use pagoda::cpu::generate::{generate, GenerateOptions};
use pagoda::cpu::model::{Llama, Session, SessionOptions};
use pagoda::cpu::sampler::{Sampler, SamplerConfig};

/// One prompt and llama.cpp's greedy ids for it.
#[derive(Clone, Debug)]
pub struct GreedyCase {
    /// The prompt text.
    pub prompt: String,
    /// Its token ids.
    pub prompt_ids: Vec<u32>,
    /// llama.cpp's argmax ids, one per step.
    pub want: Vec<u32>,
    /// llama.cpp's top-1 minus top-2 logit at each step.
    pub margins: Vec<f64>,
}

impl GreedyCase {
    /// Reads a case object (`prompt`, `prompt_ids`, `generated_ids`, `top1_top2_margin`).
    pub fn from_json(case: &serde_json::Value) -> GreedyCase {
        GreedyCase {
            prompt: case["prompt"].as_str().expect("prompt").to_string(),
            prompt_ids: super::ids(&case["prompt_ids"]),
            want: super::ids(&case["generated_ids"]),
            margins: case["top1_top2_margin"]
                .as_array()
                .expect("top1_top2_margin")
                .iter()
                .map(|m| m.as_f64().expect("margin"))
                .collect(),
        }
    }

    /// Every case of a JSON array of them.
    pub fn all(cases: &serde_json::Value) -> Vec<GreedyCase> {
        cases.as_array().expect("cases").iter().map(GreedyCase::from_json).collect()
    }

    /// The steps that must agree: up to (not including) the first step whose llama.cpp
    /// margin is below 0.1, where llama.cpp's own choice depends on the order of its sums.
    pub fn must_agree(&self) -> usize {
        self.must_agree_above(0.1)
    }

    /// The steps up to (not including) the first whose llama.cpp margin is below `margin`.
    pub fn must_agree_above(&self, margin: f64) -> usize {
        self.margins.iter().position(|&m| m < margin).unwrap_or(self.want.len())
    }

    /// How many leading ids of `got` are llama.cpp's.
    pub fn agree(&self, got: &[u32]) -> usize {
        got.iter().zip(&self.want).take_while(|(a, b)| a == b).count()
    }
}

/// `n` greedy ids after `prompt` (the whole prompt in one pass, then one token at a time,
/// not stopping at end-of-generation), pagoda's default session: what llama.cpp's reference
/// procedure does.
pub fn greedy(model: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut session = Session::new(model, SessionOptions::default()).expect("session");
    let mut sampler = Sampler::new(SamplerConfig::greedy()).expect("greedy sampler");
    let opts = GenerateOptions { n_predict: Some(n), ignore_eos: true, no_kv_cache: false };
    generate(&mut session, &mut sampler, prompt, &opts, |_| false, |_| {})
        .expect("greedy generation")
        .tokens
}

/// A perplexity run as llama-perplexity prints it: the running PPL after each chunk (4
/// decimals) and the final ± (5 decimals). Equal printed figures are the bar pagoda's exact
/// numerics meet.
#[derive(Debug, PartialEq, Eq)]
pub struct PrintedPerplexity {
    /// `[1]16.7645,[2]17.9615,…`
    pub running: Vec<String>,
    /// `0.91376`
    pub pm: String,
}

impl PrintedPerplexity {
    /// A recorded llama.cpp run (`running_ppl_per_chunk`, `ppl_pm`).
    pub fn of_llamacpp(run: &serde_json::Value) -> Self {
        let running = run["running_ppl_per_chunk"].as_array().expect("running_ppl_per_chunk");
        PrintedPerplexity {
            running: running.iter().map(|v| format!("{:.4}", v.as_f64().unwrap())).collect(),
            pm: format!("{:.5}", run["ppl_pm"].as_f64().expect("ppl_pm")),
        }
    }

    /// pagoda's result in the same digits.
    pub fn of(got: &pagoda::cpu::perplexity::Perplexity) -> Self {
        PrintedPerplexity {
            running: got.running.iter().map(|p| format!("{p:.4}")).collect(),
            pm: format!("{:.5}", got.ppl_stderr),
        }
    }
}
