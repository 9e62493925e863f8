//! Generate text with the default model: `cargo run --release --example generate -- "prompt"`.
fn main() -> Result<(), pagoda::Error> {
    let prompt = std::env::args().nth(1).unwrap_or("The capital of France is".into());
    let model = pagoda::Model::load(pagoda::cpu::model_file::default_model_path())?;
    let opts = pagoda::Options::greedy().max_tokens(32);
    for piece in model.stream(&prompt, &opts)? {
        print!("{}", piece?);
    }
    println!();
    Ok(())
}
