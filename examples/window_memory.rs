//! KV memory of a model with sliding-window layers (Gemma 3): the bytes a session holds
//! after N tokens, against a cache that keeps every layer's K/V (what the model would need
//! without windows), at N = 1k … 32k.
//!
//! ```sh
//! scripts/fetch-model.sh gemma3
//! cargo run --release --example window_memory -- [MODEL] [KV_TYPE] [MAX_TOKENS]
//! ```
//!
//! The tokens are pseudo-random ids (memory does not depend on them); the prompt goes
//! through in chunks of 512. KV_TYPE defaults to f16, pagoda's default page format.

use pagoda::cpu::model::{KvType, Llama, Session, SessionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map_or("models/gemma-3-270m-q4_k_m.gguf", String::as_str);
    let kv_type = match args.get(2) {
        Some(name) => KvType::from_name(name).ok_or(format!("unknown KV type '{name}'"))?,
        None => KvType::F16,
    };
    let max: usize = args.get(3).map_or(Ok(32_768), |s| s.parse())?;
    let model = Llama::load(path)?;
    let c = model.config().clone();
    let windowed = (0..c.n_layers).filter(|&l| c.window(l).is_some()).count();
    println!(
        "{path}: {} layers ({} windowed to {:?}, {} global), KV {}",
        c.n_layers,
        windowed,
        c.layer_windows.iter().flatten().next(),
        c.n_layers - windowed,
        kv_type.name()
    );
    let opts = SessionOptions { n_ctx: max, kv_type, ..Default::default() };
    let mut session = Session::new(&model, opts)?;
    let block = session.cache().block_size();
    // Bytes of one all-layer page: every layer's K and V for `block` tokens.
    let all_layer_page = session.cache().page_bytes() * c.n_layers;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % c.vocab_size as u64) as u32
    };
    println!("| tokens | windowed cache (bytes) | all-layer cache (bytes) | ratio |");
    println!("|---:|---:|---:|---:|");
    let mut mark = 1024;
    while session.len() < max {
        let n = 512.min(max - session.len());
        let chunk: Vec<u32> = (0..n).map(|_| next()).collect();
        session.eval(&chunk)?;
        if session.len() >= mark {
            let held = session.kv_bytes_in_use();
            let all = session.len().div_ceil(block) * all_layer_page;
            println!("| {} | {held} | {all} | {:.2}× |", session.len(), all as f64 / held as f64);
            mark *= 2;
        }
    }
    Ok(())
}
