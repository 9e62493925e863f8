//! [`Chat`]: a conversation, the KV session holding it, and how one turn runs: the user's
//! words in, a reply streamed out, cut by an end-of-turn token, `-n`, a stop string or
//! Ctrl-C, and recorded so that the next turn's template text is right.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagoda_core::evict::KvPolicy;
use pagoda_cpu::chat::{Conversation, Message};
use pagoda_cpu::grammar::Grammar;
use pagoda_cpu::model::{ModelError, Session};
use pagoda_cpu::sampler::Sampler;
use pagoda_cpu::stop::StopMatcher;
use pagoda_cpu::tokenizer::Tokenizer;

use super::fallback;
use crate::common::{escape_controls, stdout_error, CliResult};

/// How a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyEnd {
    /// The model ended its turn with this token (not yet in the cache).
    EndOfTurn(u32),
    /// `-n` tokens were generated.
    Length,
    /// A stop string was found; the reply ends just before it.
    Stop,
    /// Ctrl-C.
    Interrupted,
    /// The grammar is complete: nothing may follow.
    Complete,
    /// The context is full and the chat may not evict (`--kv-policy full`, or a model with
    /// sliding-window layers).
    ContextFull,
}

/// How a chat replies: `pagoda chat`'s flags.
#[derive(Clone, Debug, Default)]
pub struct ReplyOptions {
    /// Most tokens per reply (`-n`; `None`: until the end of the turn).
    pub n_predict: Option<usize>,
    /// `--stop` strings: a reply ends before the first one it prints.
    pub stops: Vec<String>,
    /// `--parse-special`: special-token text in what the user says becomes control tokens.
    pub parse_special: bool,
    /// `--kv-policy`; `None`: full, and StreamingLLM once the context is full.
    pub policy: Option<KvPolicy>,
    /// `--grammar`, `--json-schema` or `--json-object`: every reply follows it (from its
    /// start: each reply gets a fresh matcher).
    pub grammar: Option<Arc<Grammar>>,
}

/// One chat: its conversation and the session whose cache holds it.
pub struct Chat<'m, 't> {
    session: Session<'m>,
    sampler: Sampler,
    conversation: Conversation,
    tokenizer: &'t Tokenizer,
    options: ReplyOptions,
    /// Set by Ctrl-C (SIGINT) while a reply is generated.
    interrupt: Arc<AtomicBool>,
    /// The last reply's end-of-turn token: sampled but not yet in the cache.
    pending: Option<u32>,
    /// Whether the chat has fallen back to StreamingLLM (said once on stderr).
    fell_back: bool,
    /// Why it could not, when it tried and failed.
    no_fallback: Option<String>,
    turn: usize,
}

impl<'m, 't> Chat<'m, 't> {
    /// A chat that has not started: `session` is empty and under `options.policy` (full if
    /// none); `interrupt` is the flag Ctrl-C sets.
    pub fn new(
        session: Session<'m>,
        sampler: Sampler,
        conversation: Conversation,
        tokenizer: &'t Tokenizer,
        options: ReplyOptions,
        interrupt: Arc<AtomicBool>,
    ) -> Self {
        Chat {
            session,
            sampler,
            conversation,
            tokenizer,
            options,
            interrupt,
            pending: None,
            fell_back: false,
            no_fallback: None,
            turn: 0,
        }
    }

    /// Tokens in the conversation so far (the cache holds them, or under eviction the
    /// part of them it keeps).
    pub fn tokens_so_far(&self) -> usize {
        self.session.len()
    }

    /// Room for `n` more tokens: true if they fit, falling back to StreamingLLM first when
    /// the context is full and no policy was given (said once on stderr); false if they do
    /// not fit and the chat may not (or cannot) evict.
    fn make_room(&mut self, n: usize) -> CliResult<bool> {
        if self.session.remaining() >= n {
            return Ok(true);
        }
        if self.options.policy.is_some() || self.fell_back || self.no_fallback.is_some() {
            return Ok(false);
        }
        let opts = self.session.options().clone();
        let preamble = self.conversation.preamble().unwrap_or_default();
        let bos =
            self.tokenizer.add_bos() && !self.conversation.template().starts_with_bos(&preamble);
        let sinks = self.tokenizer.encode(&preamble, bos, true).len();
        let switched = match fallback::streaming_policy(opts.n_ctx, opts.block_size, sinks) {
            None => Err("the context is too small to keep a window".to_owned()),
            Some(policy) => {
                self.session.switch_policy(policy).map(|()| policy).map_err(|e| match e {
                    ModelError::Unsupported(m) => m,
                    e => e.to_string(),
                })
            }
        };
        match switched {
            Ok(policy) => {
                self.fell_back = true;
                eprintln!("{}", fallback::notice(opts.n_ctx, policy));
                Ok(self.session.remaining() >= n)
            }
            Err(why) => {
                self.no_fallback = Some(escape_controls(&why));
                Ok(false)
            }
        }
    }

    /// An error for a conversation that no longer fits.
    fn full_error(&self) -> Box<dyn std::error::Error> {
        let n_ctx = self.session.options().n_ctx;
        match &self.no_fallback {
            Some(why) => format!(
                "the conversation filled the context ({n_ctx} tokens) and cannot continue with \
                 StreamingLLM ({why}); start a new chat or raise -c"
            ),
            None => format!(
                "the conversation filled the context ({n_ctx} tokens); start a new chat, raise \
                 -c, or leave out --kv-policy to continue with StreamingLLM"
            ),
        }
        .into()
    }

    /// Runs `prompt` into the cache (it must fit, see [`make_room`](Self::make_room)).
    fn prefill(&mut self, prompt: &[u32]) -> CliResult<Vec<f32>> {
        if !self.make_room(prompt.len() + 1)? {
            return Err(self.full_error());
        }
        for &t in prompt {
            self.sampler.accept(t);
        }
        Ok(self.session.eval(prompt)?)
    }

    /// Whether a full context is handled by forgetting the oldest turns and processing the
    /// rest again: no policy was given and StreamingLLM was not possible.
    fn forgets_turns(&self) -> bool {
        self.options.policy.is_none() && self.no_fallback.is_some()
    }

    /// Forgets the oldest turns so that the rest (ending with the new user message, the
    /// last of the conversation) takes at most half the context, empties the cache and
    /// returns the tokens of what is kept, for the empty cache. Says so on stderr.
    fn forget_oldest_turns(&mut self) -> CliResult<Vec<u32>> {
        let n_ctx = self.session.options().n_ctx;
        let messages = self.conversation.messages().to_vec();
        let n_system = usize::from(messages.first().is_some_and(|m| m.role == "system"));
        let (system, turns) = messages.split_at(n_system);
        let template = self.conversation.template().clone();
        let tok = self.tokenizer;
        let size = |i: usize| -> Result<usize, String> {
            let kept: Vec<Message> = system.iter().chain(&turns[i..]).cloned().collect();
            let text = template.render(&kept, true).map_err(|e| e.to_string())?;
            let bos = tok.add_bos() && !template.starts_with_bos(&text);
            Ok(tok.encode(&text, bos, true).len())
        };
        let first = fallback::first_kept_turn(turns, n_ctx / 2, n_ctx.saturating_sub(1), size)
            .map_err(|e| escape_controls(&e))?
            .ok_or_else(|| self.full_error())?;
        let kept: Vec<Message> = system.iter().chain(&turns[first..]).cloned().collect();
        let (history, last) = kept.split_at(kept.len() - 1);
        let mut conversation = self.conversation.clone();
        let parse_special = self.options.parse_special;
        let mut ids = conversation
            .restore(tok, history.to_vec(), parse_special)
            .map_err(|e| escape_controls(&e.to_string()))?;
        ids.extend(
            conversation
                .user_turn(tok, &last[0].content, parse_special)
                .map_err(|e| escape_controls(&e.to_string()))?,
        );
        self.conversation = conversation;
        self.session.clear();
        self.pending = None;
        let why = self.no_fallback.clone().unwrap_or_default();
        eprintln!("{}", fallback::forget_notice(n_ctx, &why, first, ids.len()));
        Ok(ids)
    }

    /// One turn: `user`'s words, then the reply streamed to `out`. The reply and how it
    /// ended go into the conversation (a reply cut by a stop string, `-n` or Ctrl-C as
    /// shown, the cache cut to match), so the next turn continues it.
    pub fn turn(&mut self, user: &str, out: &mut impl Write) -> CliResult {
        self.turn += 1;
        self.interrupt.store(false, Ordering::SeqCst);
        let mut prompt: Vec<u32> = self.pending.take().into_iter().collect();
        let turn_ids = self
            .conversation
            .user_turn(self.tokenizer, user, self.options.parse_special)
            .map_err(|e| escape_controls(&e.to_string()))?;
        prompt.extend(turn_ids);
        if !self.make_room(prompt.len() + 1)? && self.forgets_turns() {
            prompt = self.forget_oldest_turns()?;
        }
        let cached = self.session.cached_len();
        let base = self.session.len();
        let t0 = Instant::now();
        let mut logits = self.prefill(&prompt)?;
        let prompt_time = t0.elapsed();
        let t1 = Instant::now();
        let tok = self.tokenizer;
        let mut decoder = tok.stream_decoder();
        let mut stop = StopMatcher::new(self.options.stops.iter().cloned());
        // Everything decoded, what was shown, and the decoded length after each token.
        let (mut decoded, mut shown) = (String::new(), String::new());
        let mut ends: Vec<usize> = Vec::new();
        let mut tokens: Vec<u32> = Vec::new();
        let mut matcher = self.options.grammar.as_ref().map(|g| g.matcher());
        let end = loop {
            if self.interrupt.load(Ordering::SeqCst) {
                break ReplyEnd::Interrupted;
            }
            if self.options.n_predict == Some(0) {
                break ReplyEnd::Length;
            }
            if let Some(m) = &mut matcher {
                let mask = m.compute_mask().map_err(|e| format!("constraint: {e}"))?;
                if mask.is_empty() {
                    return Err("constraint: the grammar allows no token here".into());
                }
                mask.apply(&mut logits);
            }
            let t = self.sampler.sample(&mut logits);
            self.sampler.accept(t);
            tokens.push(t);
            let complete = match &mut matcher {
                Some(m) => {
                    m.commit(t).map_err(|e| format!("constraint: {e}"))?;
                    m.is_finished()
                }
                None => false,
            };
            if tok.is_eog(t) {
                break ReplyEnd::EndOfTurn(t);
            }
            let piece = decoder.push(t);
            decoded.push_str(&piece);
            ends.push(decoded.len());
            let (text, stopped) = stop.push(&piece);
            shown.push_str(&text);
            out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stdout_error)?;
            if stopped {
                break ReplyEnd::Stop;
            }
            if complete {
                break ReplyEnd::Complete;
            }
            if self.options.n_predict.is_some_and(|n| tokens.len() >= n) {
                break ReplyEnd::Length;
            }
            if !self.make_room(1)? {
                break ReplyEnd::ContextFull;
            }
            logits = self.session.eval(&[t])?;
        };
        let gen_time = t1.elapsed();
        self.interrupt.store(false, Ordering::SeqCst);
        if end != ReplyEnd::Stop {
            let tail = decoder.finish();
            decoded.push_str(&tail);
            let (text, _) = stop.push(&tail);
            let text = text + &stop.finish();
            shown.push_str(&text);
            out.write_all(text.as_bytes()).map_err(stdout_error)?;
        }
        out.write_all(b"\n").and_then(|()| out.flush()).map_err(stdout_error)?;
        self.record(base + prompt.len(), end, &decoded, &ends, &shown);
        let n = tokens.len();
        eprintln!(
            "[turn {}: {cached} tokens cached, prompt {} new tokens ({:.1} t/s), reply {n} tokens ({:.1} t/s), KV {} pages{}]",
            self.turn,
            prompt.len(),
            rate(prompt.len(), prompt_time),
            rate(n, gen_time),
            self.session.kv_pages_in_use(),
            match end {
                ReplyEnd::Interrupted => ", interrupted",
                ReplyEnd::Stop => ", stop string",
                ReplyEnd::ContextFull => ", context full",
                _ => "",
            }
        );
        // A chat that forgets turns makes room at the next one.
        if end == ReplyEnd::ContextFull && !self.forgets_turns() {
            return Err(self.full_error());
        }
        Ok(())
    }

    /// Puts the reply into the conversation and cuts the cache to what was shown.
    ///
    /// `reply_start` is the session's length when the reply began, `decoded` the reply's
    /// text and `ends[i]` its length after token `i` (an end-of-turn token has none). An
    /// end-of-turn token is run first next turn; otherwise the cache keeps the reply's
    /// tokens whose text lies within what was shown, and the next turn's template text
    /// supplies the rest of the shown reply and its end of turn.
    fn record(
        &mut self,
        reply_start: usize,
        end: ReplyEnd,
        decoded: &str,
        ends: &[usize],
        shown: &str,
    ) {
        if let ReplyEnd::EndOfTurn(t) = end {
            self.pending = Some(t);
            self.conversation.reply(shown, self.tokenizer.token_text(t));
            return;
        }
        // Reply tokens in the cache: all but the last one sampled, which runs only when the
        // next one is sampled (after Ctrl-C, every sampled token has run).
        let in_cache = self.session.len() - reply_start;
        let mut keep = in_cache.min(ends.len());
        while keep > 0 && ends[keep - 1] > shown.len() {
            keep -= 1;
        }
        self.session.truncate(reply_start + keep);
        let cached_text = &decoded[..if keep == 0 { 0 } else { ends[keep - 1] }];
        self.conversation.push_reply(shown);
        self.conversation.push_cached(cached_text);
    }

    /// Forgets the conversation and empties the cache (the system prompt stays); a chat
    /// that fell back to StreamingLLM starts again under its first policy.
    pub fn clear(&mut self) -> CliResult {
        self.conversation.reset();
        self.reset_cache()
    }

    fn reset_cache(&mut self) -> CliResult {
        self.session.clear();
        self.pending = None;
        self.no_fallback = None;
        if self.fell_back {
            self.session.switch_policy(self.options.policy.unwrap_or(KvPolicy::Full))?;
            self.fell_back = false;
        }
        Ok(())
    }

    /// The conversation so far (system message first, if any).
    pub fn messages(&self) -> &[Message] {
        self.conversation.messages()
    }

    /// Replaces the conversation by `messages` and runs them into an emptied cache. On a
    /// template error the chat is unchanged; on a failure of the model the chat is empty.
    pub fn load(&mut self, messages: Vec<Message>) -> CliResult {
        let mut conversation = self.conversation.clone();
        let ids = conversation
            .restore(self.tokenizer, messages, self.options.parse_special)
            .map_err(|e| escape_controls(&e.to_string()))?;
        self.reset_cache()?;
        self.conversation = conversation;
        if ids.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.prefill(&ids) {
            self.clear()?;
            return Err(e);
        }
        // Prefill leaves the last token's logits unused: the next turn starts after it.
        Ok(())
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}
