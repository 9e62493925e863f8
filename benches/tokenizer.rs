//! Encoding and decoding speed on the default model (SmolLM2, byte-level BPE).
//!
//! Input: ~1 MB of English (Debian's GPL-3 text repeated), the yardstick.
//! Run briefly: `cargo bench --bench tokenizer -- --warm-up-time 1 --measurement-time 3`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pagoda::cpu::model_file::{workspace_model_path, ModelFile};
use pagoda::cpu::tokenizer::Tokenizer;

fn english_megabyte() -> String {
    let gpl = std::fs::read_to_string("/usr/share/common-licenses/GPL-3")
        .or_else(|_| std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")))
        .expect("an English text to tokenize");
    let mut text = String::with_capacity(1 << 20);
    while text.len() < 1 << 20 {
        text.push_str(&gpl);
    }
    let mut end = 1 << 20;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn bench(c: &mut Criterion) {
    let path = workspace_model_path(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        path.exists(),
        "model file {} is missing: run scripts/fetch-model.sh (or set PAGODA_MODEL)",
        path.display()
    );
    let model = ModelFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let tok = Tokenizer::from_gguf(&model.gguf()).unwrap_or_else(|e| panic!("{e}"));
    let text = english_megabyte();
    let ids = tok.encode(&text, false, false);

    let mut g = c.benchmark_group("tokenizer");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("encode_1MB_english", |b| {
        b.iter(|| tok.encode(std::hint::black_box(&text), false, true))
    });
    g.bench_function("decode_1MB_english", |b| b.iter(|| tok.decode(std::hint::black_box(&ids))));
    g.finish();

    c.bench_function("tokenizer/load_from_gguf", |b| {
        b.iter(|| Tokenizer::from_gguf(&model.gguf()).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
