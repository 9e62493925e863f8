//! `pagoda chat`: multi-turn chat. Each turn appends to the same KV pages: the history is
//! never processed twice.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use pagoda_cpu::chat::ChatTemplate;
use pagoda_cpu::generate::{GenerateOptions, StopReason};
use pagoda_cpu::model::Session;
use pagoda_cpu::sampler::Sampler;

use crate::common::{
    generate_until_closed, load, stdout_error, CliResult, ContextArgs, ModelArgs, SamplingArgs,
};

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
    /// Parse special-token text in what you type (`<|im_end|>` becomes the control token,
    /// so a line can end the turn or switch roles). By default your text is plain text and
    /// special tokens come only from the chat template.
    #[arg(long = "parse-special")]
    parse_special: bool,
}

/// The tokens of one user turn: the template's text around the user's words parses special
/// tokens, the words themselves only if `parse_special` (so a typed `<|im_end|>` cannot end
/// the turn or forge a system message). `bos` on the first turn.
fn encode_turn(
    tok: &pagoda_cpu::tokenizer::Tokenizer,
    rendered_with: impl Fn(&str) -> String,
    user: &str,
    bos: bool,
    parse_special: bool,
) -> Vec<u32> {
    if parse_special {
        return tok.encode(&rendered_with(user), bos, true);
    }
    // A placeholder the template's own text (system prompt included) does not contain;
    // the turn is cut where the template put it.
    let empty = rendered_with("");
    let mut n = 0u32;
    let mark = loop {
        let m = format!("\u{0}user-text-{n}\u{0}");
        if !empty.contains(&m) {
            break m;
        }
        n += 1;
    };
    let mut ids = Vec::new();
    for (i, part) in rendered_with(&mark).split(mark.as_str()).enumerate() {
        if i > 0 {
            ids.extend(tok.encode(user, false, false));
        }
        ids.extend(tok.encode(part, bos && i == 0, true));
    }
    ids
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
    let template = ChatTemplate::from_jinja(template_src).map_err(|e| match e {
        // The template's text comes from the file: escaped, not sent raw to the terminal.
        pagoda_cpu::chat::ChatTemplateError::Unrecognised(start) => format!(
            "unrecognised chat template (only ChatML is supported): {}…",
            crate::common::escape(&start)
        )
        .into(),
        e => Box::<dyn std::error::Error>::from(e),
    })?;
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
        let mut prompt: Vec<u32> = pending.take().into_iter().collect();
        let close = if first { "" } else { template.end_of_reply(!prompt.is_empty()) };
        let render = |u: &str| {
            let mut t = close.to_string();
            t.push_str(&template.user_turn(a.system.as_deref(), u, first));
            t
        };
        prompt.extend(encode_turn(tok, render, user, first, a.parse_special));
        let cached = session.len();
        let mut decoder = tok.stream_decoder();
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
                stdout.write_all(decoder.push(t).as_bytes())?;
                stdout.flush()
            },
        );
        stdout
            .write_all(decoder.finish().as_bytes())
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
