//! `pagoda chat`: multi-turn chat. Each turn appends to the same KV pages: the history is
//! never processed twice.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use pagoda_cpu::chat::{ChatTemplate, ChatTemplateError, Conversation};
use pagoda_cpu::generate::{GenerateOptions, StopReason};
use pagoda_cpu::model::Session;
use pagoda_cpu::sampler::Sampler;

use crate::common::{
    escape_controls, generate_until_closed, load, stdout_error, CliResult, ContextArgs, ModelArgs,
    SamplingArgs,
};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System prompt (default: the chat template's own, if it has one).
    #[arg(long = "system")]
    system: Option<String>,
    /// Jinja chat template file to use instead of the model's `tokenizer.chat_template`
    /// (also lets a model without one chat).
    #[arg(long = "chat-template", value_name = "FILE")]
    chat_template: Option<std::path::PathBuf>,
    /// Most tokens per reply (-1: until end of turn).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    n_predict: i64,
    #[command(flatten)]
    ctx: ContextArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Parse special-token text in what you type (`<|im_end|>` becomes the control token,
    /// so a line can end the turn or switch roles). By default your text is plain text and
    /// special tokens come only from the chat template.
    #[arg(long = "parse-special")]
    parse_special: bool,
}

pub fn main(a: ChatArgs) -> CliResult {
    let mut sampler = Sampler::new(a.sampling.config())?;
    let loaded = load(&a.model)?;
    let tok = &loaded.tokenizer;
    let template = match &a.chat_template {
        Some(path) => {
            let source = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read chat template {}: {e}",
                    escape_controls(&path.display().to_string())
                )
            })?;
            ChatTemplate::for_tokenizer(&source, tok).map_err(|e| {
                format!(
                    "chat template {}: {}",
                    escape_controls(&path.display().to_string()),
                    escape_controls(&e.to_string())
                )
            })?
        }
        None => {
            let source = loaded
                .model
                .gguf()
                .get_str("tokenizer.chat_template")
                .map_err(|_| ChatTemplateError::Missing)?;
            ChatTemplate::for_tokenizer(source, tok).map_err(|e| {
                format!("the model's chat template: {}", escape_controls(&e.to_string()))
            })?
        }
    };
    let mut conversation = Conversation::new(template, a.system.as_deref());
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
        let mut prompt: Vec<u32> = pending.take().into_iter().collect();
        let turn_ids = conversation
            .user_turn(tok, user, a.parse_special)
            .map_err(|e| escape_controls(&e.to_string()))?;
        prompt.extend(turn_ids);
        let cached = session.len();
        let mut decoder = tok.stream_decoder();
        let mut reply = String::new();
        // A failed write (stdout closed) stops the reply at once.
        let result = generate_until_closed(
            &mut session,
            &mut sampler,
            &prompt,
            &opts,
            |t| tok.is_eog(t),
            |t| {
                if tok.is_eog(t) {
                    return Ok(());
                }
                let piece = decoder.push(t);
                reply.push_str(&piece);
                stdout.write_all(piece.as_bytes())?;
                stdout.flush()
            },
        );
        let tail = decoder.finish();
        reply.push_str(&tail);
        stdout
            .write_all(tail.as_bytes())
            .and_then(|()| writeln!(stdout))
            .and_then(|()| stdout.flush())
            .map_err(stdout_error)?;
        let gen = match result? {
            (_, Some(closed)) => return Err(stdout_error(closed)),
            (gen, None) => gen,
        };
        if gen.stop == StopReason::EndOfGeneration {
            pending = gen.tokens.last().copied();
        }
        // The reply as generated, and its end-of-turn token (run first next turn): the next
        // turn sends only what the template adds after them.
        conversation.reply(&reply, pending.and_then(|t| tok.token_text(t)));
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
