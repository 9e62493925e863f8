//! [`Model`]: a loaded model with its tokenizer and chat template, owned and cheap to
//! clone, and everything a program does with one.

use std::path::Path;
use std::sync::Arc;

use pagoda_core::evict::KvPolicy;
use pagoda_cpu::chat::{ChatTemplate, ChatTemplateError, Message};
use pagoda_cpu::engine::{Engine, EngineConfig};
use pagoda_cpu::model::{Llama, Numerics, Session as CpuSession};
use pagoda_cpu::model_file::ModelFile;
use pagoda_cpu::tokenizer::Tokenizer;

use crate::decode::{Completion, Decode};
use crate::{Error, Options, Result, Session};

/// A loaded model: weights, tokenizer and chat template. Cloning is cheap (a reference
/// count); clones share the weights and may be used from several threads at once.
///
/// ```no_run
/// let model = pagoda::Model::load("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let text = model.generate("The capital of France is", &pagoda::Options::greedy().max_tokens(16))?;
/// println!("{text}");
/// # Ok::<(), pagoda::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Model {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    llama: Arc<Llama>,
    tokenizer: Tokenizer,
    /// The model's template, ChatML when it has none, or why it cannot be used.
    template: std::result::Result<ChatTemplate, ChatTemplateError>,
}

/// The bytes of a GGUF file held in memory: owned (`Vec<u8>`) or living for the whole
/// program (`&'static [u8]`, e.g. `include_bytes!`). See [`Model::from_bytes`].
#[derive(Debug)]
pub enum ModelBytes {
    /// Bytes the model takes over.
    Owned(Vec<u8>),
    /// Bytes that outlive the model; used in place when 32-byte aligned.
    Static(&'static [u8]),
}

impl From<Vec<u8>> for ModelBytes {
    fn from(v: Vec<u8>) -> Self {
        ModelBytes::Owned(v)
    }
}

impl From<&'static [u8]> for ModelBytes {
    fn from(s: &'static [u8]) -> Self {
        ModelBytes::Static(s)
    }
}

impl<const N: usize> From<&'static [u8; N]> for ModelBytes {
    fn from(s: &'static [u8; N]) -> Self {
        ModelBytes::Static(s)
    }
}

impl Model {
    /// Loads a GGUF model file (read into memory, huge pages where the OS grants them).
    /// Errors name the file and what is wrong with it.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::from_llama(Llama::load(path)?)
    }

    /// [`load`](Self::load), computing in `numerics`: [`Numerics::Fast`] (what `load`
    /// gives) is pagoda's own faster, batch-invariant order; [`Numerics::Exact`] is llama.cpp's
    /// float order, bit-identical logits (docs/numerics.md), as `--numerics exact` on the
    /// command line.
    pub fn load_with_numerics(path: impl AsRef<Path>, numerics: Numerics) -> Result<Model> {
        Self::from_llama(Llama::load_with(path, numerics)?)
    }

    /// Loads a GGUF model held in memory. A `Vec<u8>` is copied once into page-aligned
    /// memory (the kernels need aligned tensors); `&'static [u8]` is used in place when it
    /// starts on a 32-byte boundary.
    pub fn from_bytes(bytes: impl Into<ModelBytes>) -> Result<Model> {
        let file = match bytes.into() {
            ModelBytes::Owned(v) => ModelFile::from_vec(v),
            ModelBytes::Static(s) => ModelFile::from_static(s),
        };
        let file = file.map_err(pagoda_cpu::model::ModelError::from)?;
        Self::from_llama(Llama::from_file(file)?)
    }

    /// Wraps an already loaded [`Llama`] (e.g. one with forced kernels).
    pub fn from_llama(llama: Llama) -> Result<Model> {
        let tokenizer = Tokenizer::from_gguf(&llama.gguf())?;
        let template = ChatTemplate::from_model(&llama.gguf(), &tokenizer);
        Ok(Model { inner: Arc::new(Inner { llama: Arc::new(llama), tokenizer, template }) })
    }

    /// Generates a continuation of `prompt` (BOS added as the model asks, special tokens
    /// in the prompt parsed, as `pagoda run -p` does).
    pub fn generate(&self, prompt: &str, opts: &Options) -> Result<String> {
        Ok(self.generate_with(prompt, opts, |_| {})?.text)
    }

    /// [`generate`](Self::generate), handing each piece of text to `on_piece` as soon as
    /// it is whole; returns the whole [`Completion`] (tokens, stop reason, speed).
    pub fn generate_with(
        &self,
        prompt: &str,
        opts: &Options,
        mut on_piece: impl FnMut(&str),
    ) -> Result<Completion> {
        let ids = self.tokenize(prompt);
        let mut session = self.cpu_session(opts)?;
        Decode::start(&mut session, &ids, opts)?.run(
            &mut session,
            &self.inner.tokenizer,
            &mut on_piece,
        )
    }

    /// [`generate`](Self::generate) as an iterator of text pieces; dropping it stops
    /// generation.
    ///
    /// ```no_run
    /// # let model = pagoda::Model::load("model.gguf")?;
    /// for piece in model.stream("Once upon a time", &pagoda::Options::default().max_tokens(32))? {
    ///     print!("{}", piece?);
    /// }
    /// # Ok::<(), pagoda::Error>(())
    /// ```
    pub fn stream(&self, prompt: &str, opts: &Options) -> Result<Stream> {
        let ids = self.tokenize(prompt);
        let mut session = self.cpu_session(opts)?;
        let decode = Decode::start(&mut session, &ids, opts)?;
        Ok(Stream { model: self.clone(), session, decode })
    }

    /// Replies to a conversation, rendered with the model's chat template (ChatML if the
    /// model has none).
    pub fn chat(&self, messages: &[Message], opts: &Options) -> Result<String> {
        Ok(self.chat_with(messages, opts, |_| {})?.text)
    }

    /// [`chat`](Self::chat), streaming each piece of the reply to `on_piece`.
    pub fn chat_with(
        &self,
        messages: &[Message],
        opts: &Options,
        mut on_piece: impl FnMut(&str),
    ) -> Result<Completion> {
        let template = self.template()?;
        let prompt = template.render(messages, true)?;
        // BOS as the tokenizer asks, unless the template printed it already.
        let ids = self.inner.tokenizer.encode(&prompt, !template.starts_with_bos(&prompt), true);
        let mut session = self.cpu_session(opts)?;
        Decode::start(&mut session, &ids, opts)?.run(
            &mut session,
            &self.inner.tokenizer,
            &mut on_piece,
        )
    }

    /// A conversation that keeps its KV pages between turns: each turn processes only
    /// its new tokens. Context size and KV type come from `opts`.
    pub fn session(&self, opts: &Options) -> Result<Session> {
        Ok(Session::new(self.clone(), self.cpu_session(opts)?))
    }

    /// Token ids of `text`, BOS added as the model asks and special tokens written in the
    /// text (`<|im_start|>`) parsed — what [`generate`](Self::generate) feeds the model.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.inner.tokenizer.encode(text, true, true)
    }

    /// Token ids of `text` as plain text: no BOS, special tokens' names not recognised.
    /// Use this for untrusted text placed into a prompt.
    pub fn tokenize_text(&self, text: &str) -> Vec<u32> {
        self.inner.tokenizer.encode(text, false, false)
    }

    /// The text of token ids (invalid UTF-8 as U+FFFD); an id outside the vocabulary is
    /// an error.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        let vocab_size = self.inner.tokenizer.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::UnknownToken { id, vocab_size });
        }
        Ok(self.inner.tokenizer.decode(ids))
    }

    /// The batching engine over this model: many requests in one page pool, continuous
    /// batching, prefix caching, copy-on-write forks.
    pub fn engine(&self, config: EngineConfig) -> Result<Engine<'_>> {
        Ok(Engine::new(&self.inner.llama, config)?)
    }

    /// The chat template.
    pub fn template(&self) -> Result<&ChatTemplate> {
        self.inner.template.as_ref().map_err(|e| Error::ChatTemplate(e.clone()))
    }

    /// The Llama model underneath (configuration, weights, forward pass).
    pub fn llama(&self) -> &Arc<Llama> {
        &self.inner.llama
    }

    /// The float order of the forward pass (see [`load_with_numerics`](Self::load_with_numerics)).
    pub fn numerics(&self) -> Numerics {
        self.inner.llama.numerics()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    fn cpu_session(&self, opts: &Options) -> Result<CpuSession<'static>> {
        Ok(CpuSession::shared(
            Arc::clone(&self.inner.llama),
            opts.session_options(),
            KvPolicy::Full,
        )?)
    }
}

/// Text pieces of a generation as they are produced ([`Model::stream`]). Each item is
/// one or more whole characters; an error ends the stream.
pub struct Stream {
    model: Model,
    session: CpuSession<'static>,
    decode: Decode,
}

impl Stream {
    /// The tokens generated so far (end-of-turn token included).
    pub fn tokens(&self) -> &[u32] {
        &self.decode.generation().tokens
    }

    /// Prompt tokens run through the model.
    pub fn prompt_tokens(&self) -> usize {
        self.decode.generation().prompt_tokens
    }

    /// Why generation stopped, once it has (`None` while it runs).
    pub fn stop_reason(&self) -> Option<pagoda_cpu::generate::StopReason> {
        self.decode.is_done().then(|| self.decode.generation().stop)
    }

    /// What has been generated so far: text, tokens, speed.
    pub fn completion(&self) -> Completion {
        self.decode.completion()
    }
}

impl Iterator for Stream {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        self.decode.next_piece(&mut self.session, &self.model.inner.tokenizer)
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("tokens", &self.tokens().len()).finish()
    }
}
