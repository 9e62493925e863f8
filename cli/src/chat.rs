//! `pagoda chat`: multi-turn chat. Each turn appends to the same KV pages: the history is
//! never processed twice.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use pagoda_cpu::chat::ChatTemplate;
use pagoda_cpu::generate::{generate, GenerateOptions, StopReason};
use pagoda_cpu::model::Session;
use pagoda_cpu::sampler::Sampler;

use crate::common::{load, CliResult, ContextArgs, ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System prompt (default: the chat template's own, if it has one).
    #[arg(long = "system")]
    system: Option<String>,
    /// Most tokens per reply (-1: until end of turn).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    n_predict: i64,
    #[command(flatten)]
    ctx: ContextArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn main(a: ChatArgs) -> CliResult {
    let mut sampler = Sampler::new(a.sampling.config())?;
    let loaded = load(&a.model)?;
    let tok = &loaded.tokenizer;
    let template_src = loaded
        .model
        .gguf()
        .get_str("tokenizer.chat_template")
        .map_err(|_| pagoda_cpu::chat::ChatTemplateError::Missing)?;
    let template = ChatTemplate::from_jinja(template_src)?;
    let mut session = Session::new(&loaded.model, a.ctx.session(2048))?;
    let opts = GenerateOptions {
        n_predict: (a.n_predict >= 0).then_some(a.n_predict as usize),
        ignore_eos: false,
        no_kv_cache: false,
    };
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut stdout = std::io::stdout().lock();
    // The last reply's end-of-turn token: sampled but not yet in the cache.
    let mut pending: Option<u32> = None;
    let mut turn = 0usize;
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let user = line.trim_end_matches('\r');
        if user.trim().is_empty() {
            continue;
        }
        turn += 1;
        let first = turn == 1;
        let mut text = String::new();
        if !first {
            text.push_str(template.end_of_reply(pending.is_some()));
        }
        text.push_str(&template.user_turn(a.system.as_deref(), user, first));
        let mut prompt: Vec<u32> = pending.take().into_iter().collect();
        prompt.extend(tok.encode(&text, first, true));
        let cached = session.len();
        let mut decoder = tok.stream_decoder();
        let result = generate(
            &mut session,
            &mut sampler,
            &prompt,
            &opts,
            |t| tok.is_eog(t),
            |t| {
                if tok.is_eog(t) {
                    return;
                }
                let _ = stdout.write_all(decoder.push(t).as_bytes());
                let _ = stdout.flush();
            },
        );
        stdout.write_all(decoder.finish().as_bytes())?;
        writeln!(stdout)?;
        stdout.flush()?;
        let gen = result?;
        if gen.stop == StopReason::EndOfGeneration {
            pending = gen.tokens.last().copied();
        }
        eprintln!(
            "[turn {turn}: {cached} tokens cached, prompt {} new tokens ({:.1} t/s), reply {} tokens ({:.1} t/s), KV {} pages]",
            gen.prompt_tokens,
            gen.prompt_tps(),
            gen.tokens.len(),
            gen.gen_tps(),
            session.kv_pages_in_use()
        );
        if gen.stop == StopReason::ContextFull {
            return Err(format!(
                "the conversation filled the context ({} tokens); start a new chat or raise -c",
                session.options().n_ctx
            )
            .into());
        }
    }
    Ok(())
}
