//! The one generation loop behind every form of the API: [`Decode`] turns
//! [`Generator`]'s tokens into text pieces (whole UTF-8 characters, end-of-turn tokens
//! left out), for the iterator, the callback and the plain `String` forms alike.

use pagoda_cpu::generate::{Generation, Generator, StopReason};
use pagoda_cpu::model::Session as CpuSession;
use pagoda_cpu::sampler::Sampler;
use pagoda_cpu::tokenizer::{Tokenizer, Utf8Buffer};

use crate::{Error, Options, Result};

/// What a finished generation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The generated text (end-of-turn tokens not rendered).
    pub text: String,
    /// The generated token ids, an end-of-turn token included if one ended it.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Prompt tokens per second.
    pub prompt_tps: f64,
    /// Generated tokens per second.
    pub gen_tps: f64,
}

impl Completion {
    fn new(text: String, g: &Generation) -> Self {
        Completion {
            text,
            tokens: g.tokens.clone(),
            stop: g.stop,
            prompt_tokens: g.prompt_tokens,
            prompt_tps: g.prompt_tps(),
            gen_tps: g.gen_tps(),
        }
    }
}

/// A generation in progress: the loop state that sits beside a session and a tokenizer.
pub(crate) struct Decode {
    generator: Generator,
    sampler: Sampler,
    utf8: Utf8Buffer,
    ignore_eos: bool,
    /// Everything returned so far.
    text: String,
    /// Set once the last piece (the UTF-8 tail) has been returned.
    flushed: bool,
}

impl Decode {
    /// Runs `prompt` through the session; errors before anything was generated.
    pub(crate) fn start(
        session: &mut CpuSession<'_>,
        prompt: &[u32],
        opts: &Options,
    ) -> Result<Decode> {
        let mut sampler = Sampler::new(opts.sampler().clone())?;
        let generator = Generator::start(session, &mut sampler, prompt, &opts.generate_options())
            .map_err(|e| Error::Model(e.error))?;
        Ok(Decode {
            generator,
            sampler,
            utf8: Utf8Buffer::default(),
            ignore_eos: opts.ignores_eos(),
            text: String::new(),
            flushed: false,
        })
    }

    /// The next non-empty piece of text, `None` at the end. An error ends the generation;
    /// it carries the text produced before it.
    pub(crate) fn next_piece(
        &mut self,
        session: &mut CpuSession<'_>,
        tokenizer: &Tokenizer,
    ) -> Option<Result<String>> {
        loop {
            match self.generator.step(session, &mut self.sampler, |t| tokenizer.is_eog(t)) {
                Ok(Some(tok)) => {
                    if tokenizer.is_eog(tok) && !self.ignore_eos {
                        continue;
                    }
                    let piece = self.utf8.push(tokenizer, tok);
                    if !piece.is_empty() {
                        self.text.push_str(&piece);
                        return Some(Ok(piece));
                    }
                }
                Ok(None) => {
                    if self.flushed {
                        return None;
                    }
                    self.flushed = true;
                    let tail = self.utf8.finish();
                    if tail.is_empty() {
                        return None;
                    }
                    self.text.push_str(&tail);
                    return Some(Ok(tail));
                }
                Err(source) => {
                    self.flushed = true;
                    self.text.push_str(&self.utf8.finish());
                    return Some(Err(Error::Generation {
                        source: Box::new(source),
                        text: self.text.clone(),
                    }));
                }
            }
        }
    }

    /// Whether the generation has stopped.
    pub(crate) fn is_done(&self) -> bool {
        self.generator.is_done() && self.flushed
    }

    /// What was generated so far.
    pub(crate) fn generation(&self) -> &Generation {
        self.generator.generation()
    }

    /// What was generated, as a [`Completion`] (the text so far if not yet done).
    pub(crate) fn completion(&self) -> Completion {
        Completion::new(self.text.clone(), self.generator.generation())
    }

    /// Runs to the end, handing each piece to `on_piece`.
    pub(crate) fn run(
        mut self,
        session: &mut CpuSession<'_>,
        tokenizer: &Tokenizer,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<Completion> {
        while let Some(piece) = self.next_piece(session, tokenizer) {
            on_piece(&piece?);
        }
        Ok(Completion::new(self.text, self.generator.generation()))
    }
}
