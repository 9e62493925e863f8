//! `pagoda chat`: multi-turn chat. Each turn appends to the same KV pages: the history is
//! never processed twice. When the history fills the context and no `--kv-policy` was given,
//! the chat goes on under StreamingLLM (`fallback`), still without processing it again.
//!
//! At a terminal (stdin and stdout both), lines are read with a line editor whose history
//! is kept in the user's data directory, and Ctrl-C stops a reply without leaving the chat
//! (`input`). Elsewhere each line of stdin is a message. Either way a line ending in `\`
//! continues on the next, and `/clear`, `/save FILE`, `/load FILE`, `/help` are commands
//! (`commands`).

mod commands;
mod fallback;
mod input;
mod turn;

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use pagoda_core::evict::KvPolicy;
use pagoda_cpu::chat::{ChatTemplate, ChatTemplateError, Conversation};
use pagoda_cpu::grammar::TokenEnv;
use pagoda_cpu::model::Session;

use crate::common::{
    escape_controls, load, parse_kv_policy, CliResult, ContextArgs, ModelArgs, PolicyArgs,
    SamplingArgs,
};
use crate::constraint::ConstraintArgs;
use commands::{Command, Parsed};
use input::{Input, Source};
use turn::{Chat, ReplyOptions};

/// `pagoda chat`'s flags.
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
    /// KV eviction policy (as `pagoda run`'s). Default: full until the conversation fills
    /// the context, then StreamingLLM (the system prompt's pages and the most recent ones);
    /// `full` given explicitly ends the chat with an error instead.
    #[arg(long = "kv-policy", value_parser = parse_kv_policy)]
    kv_policy: Option<KvPolicy>,
    /// End a reply before this text (repeatable); the reply is kept as shown.
    #[arg(long = "stop", value_name = "STR", value_parser = non_empty)]
    stop: Vec<String>,
    #[command(flatten)]
    constraint: ConstraintArgs,
    /// Do not read or write the line editor's history file
    /// ($XDG_DATA_HOME/pagoda/chat_history, else ~/.local/share/pagoda/chat_history).
    #[arg(long = "no-history")]
    no_history: bool,
}

/// `--stop` values: any text but the empty string.
fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("a stop string cannot be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

/// Runs the chat until Ctrl-D or the end of stdin (exit 0), or a failure of the model, the
/// template or stdout.
pub fn main(a: ChatArgs) -> CliResult {
    // Settings checked before the model loads; DRY's breakers and --logit-bias ids are
    // checked against its vocabulary once it has loaded.
    a.sampling.config().validate()?;
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
    // The token trie costs time to build: only for a constraint.
    let c = &a.constraint;
    let constrained = c.grammar.is_some() || c.json_schema.is_some() || c.json_object;
    let grammar = if constrained { c.compile(&TokenEnv::new(tok)?)? } else { None };
    let sampler = a.sampling.sampler(tok)?;
    let conversation = Conversation::new(template, a.system.as_deref());
    let opts = a.ctx.session(2048);
    let n_layers = loaded.model.config().n_layers;
    let policy = a.kv_policy.map(|kv_policy| PolicyArgs { kv_policy }.checked(&opts, n_layers));
    let session = Session::with_policy(&loaded.model, opts, policy.unwrap_or(KvPolicy::Full))?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut source = if interactive {
        // Ctrl-C outside the line editor (during a reply) only sets the flag the reply
        // checks, and a second one before the reply has stopped ends pagoda (exit 130);
        // inside the editor, Ctrl-C is a key.
        let sigint = signal_hook::consts::SIGINT;
        signal_hook::flag::register_conditional_shutdown(sigint, 130, interrupt.clone())
            .and_then(|_| signal_hook::flag::register(sigint, interrupt.clone()))
            .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
        Source::editor(if a.no_history { None } else { input::history_path() })?
    } else {
        Source::stdin(std::io::stdin().is_terminal())
    };
    let options = ReplyOptions {
        n_predict: (a.n_predict >= 0).then_some(a.n_predict as usize),
        stops: a.stop.clone(),
        parse_special: a.parse_special,
        policy,
        grammar,
    };
    let mut chat = Chat::new(session, sampler, conversation, tok, options, interrupt);
    let mut stdout = std::io::stdout().lock();
    loop {
        let message = match source.read_message()? {
            Input::End => break,
            Input::Cancelled => continue,
            Input::Message(m) => m,
        };
        match commands::parse(&message) {
            Parsed::Say(words) if words.trim().is_empty() => {}
            Parsed::Say(words) => chat.turn(&words, &mut stdout)?,
            Parsed::Hint(hint) => eprintln!("{hint}"),
            Parsed::Command(c) => run_command(&mut chat, c),
        }
    }
    Ok(())
}

/// Runs a chat command; a failure is reported on stderr and the chat goes on.
fn run_command(chat: &mut Chat<'_, '_>, command: Command) {
    let result: CliResult<String> = match command {
        Command::Help => Ok(commands::HELP.to_owned()),
        Command::Clear => chat.clear().map(|()| "[conversation cleared]".to_owned()),
        Command::Save(path) => commands::save(&path, chat.messages())
            .map(|()| {
                format!(
                    "[conversation saved to '{}': {} messages]",
                    escape_controls(&path.display().to_string()),
                    chat.messages().len()
                )
            })
            .map_err(Into::into),
        Command::Load(path) => commands::load(&path).map_err(Into::into).and_then(|messages| {
            chat.load(messages).map_err(|e| -> Box<dyn std::error::Error> {
                format!("cannot load '{}': {e}", escape_controls(&path.display().to_string()))
                    .into()
            })?;
            Ok(format!(
                "[conversation loaded from '{}': {} messages, {} tokens]",
                escape_controls(&path.display().to_string()),
                chat.messages().len(),
                chat.tokens_so_far()
            ))
        }),
    };
    match result {
        Ok(note) => eprintln!("{note}"),
        Err(e) => eprintln!("error: {e}"),
    }
}
