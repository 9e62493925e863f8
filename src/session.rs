//! [`Session`]: a conversation that keeps its KV pages between turns.

use pagoda_cpu::chat::Conversation;
use pagoda_cpu::generate::StopReason;
use pagoda_cpu::model::Session as CpuSession;

use crate::decode::{Completion, Decode};
use crate::{Model, Options, Result};

/// A reply being generated in a [`Session`]: an iterator of text pieces (whole
/// characters), made by [`Session::chat_stream`] or [`Session::generate_stream`].
pub struct Reply<'s> {
    session: &'s mut Session,
    decode: Decode,
}

impl Reply<'_> {
    /// The tokens generated so far (an end-of-turn token included once it ends the reply).
    pub fn tokens(&self) -> &[u32] {
        &self.decode.generation().tokens
    }

    /// Prompt tokens this turn ran through the model (not the cached history).
    pub fn prompt_tokens(&self) -> usize {
        self.decode.generation().prompt_tokens
    }

    /// Why the reply stopped, once it has (`None` while it runs).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.decode.is_done().then(|| self.decode.generation().stop)
    }

    /// Runs to the end, handing each piece to `on_piece`.
    pub fn run(mut self, mut on_piece: impl FnMut(&str)) -> Result<Completion> {
        for piece in self.by_ref() {
            on_piece(&piece?);
        }
        Ok(self.decode.completion())
    }
}

impl Iterator for Reply<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        let s = &mut *self.session;
        let piece = self.decode.next_piece(&mut s.session, s.model.tokenizer());
        if let (Some(Ok(text)), Some(conv)) = (&piece, &mut s.conversation) {
            conv.push_cached(text);
            if let Some(reply) = &mut s.open_reply {
                reply.push_str(text);
            }
        }
        if piece.is_none() && self.decode.generation().stop == StopReason::EndOfGeneration {
            // The end-of-turn token was sampled but not run: the next turn runs it first.
            s.pending_eog = self.decode.generation().tokens.last().copied();
        }
        piece
    }
}

impl std::fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").field("tokens", &self.tokens().len()).finish()
    }
}

/// A multi-turn conversation over one sequence of KV pages: every turn appends to the
/// same cache, so the history is never processed twice. Made by [`Model::session`].
///
/// ```no_run
/// # let model = pagoda::Model::load("model.gguf")?;
/// let opts = pagoda::Options::greedy().max_tokens(64);
/// let mut chat = model.session(&opts)?;
/// println!("{}", chat.chat("My name is Ada.", &opts)?);
/// println!("{}", chat.chat("What is my name?", &opts)?); // only this turn's tokens run
/// # Ok::<(), pagoda::Error>(())
/// ```
#[derive(Debug)]
pub struct Session {
    model: Model,
    session: CpuSession<'static>,
    /// The last reply's end-of-turn token: sampled, not yet in the cache.
    pending_eog: Option<u32>,
    /// The chat so far, from the first chat turn on (the system prompt is set then).
    conversation: Option<Conversation>,
    /// The chat reply being generated, recorded in `conversation` at the next turn.
    open_reply: Option<String>,
    system: Option<String>,
}

impl Session {
    pub(crate) fn new(model: Model, session: CpuSession<'static>) -> Self {
        Session {
            model,
            session,
            pending_eog: None,
            conversation: None,
            open_reply: None,
            system: None,
        }
    }

    /// Sets the system prompt of the conversation (before its first turn; the template's
    /// default otherwise).
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sets the system prompt (it takes effect at the first turn, or after [`reset`](Self::reset)).
    pub fn set_system(&mut self, system: impl Into<String>) {
        self.system = Some(system.into());
    }

    /// One chat turn: renders `user` with the model's chat template, generates the reply.
    /// `user` is tokenized as plain text: special tokens written in it (`<|im_end|>`) stay
    /// text and cannot forge a role switch.
    pub fn chat(&mut self, user: &str, opts: &Options) -> Result<String> {
        Ok(self.chat_with(user, opts, |_| {})?.text)
    }

    /// [`chat`](Self::chat), streaming each piece of the reply to `on_piece`.
    pub fn chat_with(
        &mut self,
        user: &str,
        opts: &Options,
        on_piece: impl FnMut(&str),
    ) -> Result<Completion> {
        self.chat_stream(user, opts)?.run(on_piece)
    }

    /// [`chat`](Self::chat) as an iterator of text pieces. Dropping it before the end stops
    /// the reply there: the session keeps the turn as generated so far, and the next turn
    /// closes it.
    pub fn chat_stream(&mut self, user: &str, opts: &Options) -> Result<Reply<'_>> {
        if self.conversation.is_none() {
            let template = self.model.template()?.clone();
            let mut conv = Conversation::new(template, self.system.as_deref());
            if !self.session.is_empty() {
                // Text generated before the first chat turn: the template renders after it.
                conv.push_cached("\u{0}");
            }
            self.conversation = Some(conv);
        }
        let mut prompt = self.settle();
        let tok = self.model.tokenizer();
        let conv = self.conversation.as_mut().expect("set above");
        // The template's text parses special tokens; the user's words do not.
        prompt.extend(conv.user_turn(tok, user, false)?);
        self.open_reply = Some(String::new());
        self.reply(&prompt, opts)
    }

    /// Appends `text` to the sequence as it is (no template) and generates a continuation.
    pub fn generate(&mut self, text: &str, opts: &Options) -> Result<String> {
        Ok(self.generate_with(text, opts, |_| {})?.text)
    }

    /// [`generate`](Self::generate), streaming each piece to `on_piece`.
    pub fn generate_with(
        &mut self,
        text: &str,
        opts: &Options,
        on_piece: impl FnMut(&str),
    ) -> Result<Completion> {
        self.generate_stream(text, opts)?.run(on_piece)
    }

    /// [`generate`](Self::generate) as an iterator of text pieces; dropping it stops there.
    pub fn generate_stream(&mut self, text: &str, opts: &Options) -> Result<Reply<'_>> {
        let mut prompt = self.settle();
        let tok = self.model.tokenizer();
        prompt.extend(tok.encode(text, self.session.is_empty() && prompt.is_empty(), true));
        if let Some(conv) = &mut self.conversation {
            conv.push_cached(text);
        }
        self.reply(&prompt, opts)
    }

    /// Closes the last reply: records a chat reply in the conversation, and returns the
    /// pending end-of-turn token (to run first), its text recorded as cached.
    fn settle(&mut self) -> Vec<u32> {
        let eog = self.pending_eog.take();
        if let Some(conv) = &mut self.conversation {
            if let Some(reply) = self.open_reply.take() {
                conv.push_reply(&reply);
            }
            let tok = self.model.tokenizer();
            conv.push_cached(eog.and_then(|t| tok.token_text(t)).unwrap_or(""));
        }
        eog.into_iter().collect()
    }

    fn reply(&mut self, prompt: &[u32], opts: &Options) -> Result<Reply<'_>> {
        let decode = Decode::start(&mut self.session, prompt, opts)?;
        Ok(Reply { session: self, decode })
    }

    /// Tokens in the cache (every turn so far).
    pub fn len(&self) -> usize {
        self.session.len()
    }

    /// Whether nothing has been said yet.
    pub fn is_empty(&self) -> bool {
        self.session.is_empty()
    }

    /// Room left in the context, in tokens.
    pub fn remaining(&self) -> usize {
        self.session.remaining()
    }

    /// Forgets the conversation (its pages go back to the pool).
    pub fn reset(&mut self) {
        self.session.clear();
        self.pending_eog = None;
        self.conversation = None;
        self.open_reply = None;
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }
}
