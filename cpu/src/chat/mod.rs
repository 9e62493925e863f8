//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! A GGUF's `tokenizer.chat_template` is a Jinja template, rendered here with
//! [`minijinja`] the way Hugging Face transformers renders it:
//! - `trim_blocks` and `lstrip_blocks` on (a block tag eats the newline after it and the
//!   spaces before it), a single trailing newline dropped;
//! - undefined values are lenient and chainable (`foo.bar` of an undefined `foo` is
//!   undefined, printed as nothing), a superset of what Python's Jinja accepts;
//! - Python string and dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`,
//!   …) through `minijinja-contrib`'s `pycompat`;
//! - the variables `messages` (a list of `{role, content}`), `add_generation_prompt`,
//!   `bos_token`, `eos_token`, `tools` and `documents` (both `none`, as transformers passes
//!   them without tools); `date_string` is left undefined so templates use their default;
//! - the functions `raise_exception(msg)` (a [`ChatTemplateError::Raised`] carrying `msg`)
//!   and `strftime_now(fmt)` (the current UTC time, see [`strftime`]).
//!
//! Hostile templates give errors, not hangs or crashes: recursion is limited
//! ([`RECURSION_LIMIT`]), the output is capped ([`MAX_OUTPUT_BYTES`]) and minijinja itself
//! caps `range()` and string repetition. (A template that loops without output over nested
//! `range()`s still runs for its full count: bounding that needs minijinja's `fuel` feature.)
//!
//! [`Conversation`] renders a conversation turn by turn for a KV cache that keeps every
//! earlier turn: each turn sends only the text the template adds.

mod conversation;
mod strftime;

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

pub use conversation::Conversation;
pub use strftime::strftime;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant` (templates print other roles verbatim).
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into() }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Deepest nesting of macro calls, includes and recursive loops a template may reach.
pub const RECURSION_LIMIT: usize = 200;

/// Instructions one render may run (minijinja's fuel): real templates take a few thousand
/// per message; a template that loops without printing fails with a render error.
pub const FUEL: u64 = 50_000_000;

/// Largest rendered prompt, in bytes: a template that prints more fails with
/// [`ChatTemplateError::OutputTooLarge`].
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// The template's name in minijinja's error messages.
const NAME: &str = "chat_template";

/// ChatML, as llama.cpp renders it for models without a template.
pub const CHATML_SOURCE: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// A compiled chat template, with the BOS and EOS token strings it is rendered with.
/// Cloning is cheap (the compiled template is shared).
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    bos_token: Arc<str>,
    eos_token: Arc<str>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start: String = self.source.chars().take(60).collect();
        f.debug_struct("ChatTemplate")
            .field("source", &format_args!("{start:?}… ({} bytes)", self.source.len()))
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// The template could not be compiled or rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatTemplateError {
    /// The model file has no `tokenizer.chat_template` (used by `pagoda chat`, which does
    /// not guess a template for base models).
    Missing,
    /// The template is not valid Jinja.
    Syntax {
        /// 1-based line of the error in the template (0 if unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Rendering failed (an unknown filter, a type error, a recursion limit, …); the
    /// message names the template line.
    Render(String),
    /// The template called `raise_exception(message)`: it refuses the conversation (e.g.
    /// roles that do not alternate).
    Raised(String),
    /// The rendered text would exceed `limit` bytes.
    OutputTooLarge {
        /// [`MAX_OUTPUT_BYTES`].
        limit: usize,
    },
}

impl fmt::Display for ChatTemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatTemplateError::Missing => f.write_str(
                "the model has no chat template (tokenizer.chat_template): it is a base \
                     model, not tuned for chat; use `pagoda run -p TEXT` to continue a text",
            ),
            ChatTemplateError::Syntax { line, message } => {
                write!(f, "chat template syntax error at line {line}: {message}")
            }
            ChatTemplateError::Render(message) => {
                write!(f, "chat template failed to render: {message}")
            }
            ChatTemplateError::Raised(message) => {
                write!(f, "the chat template refused the conversation: {message}")
            }
            ChatTemplateError::OutputTooLarge { limit } => {
                write!(f, "the chat template's output exceeds {limit} bytes")
            }
        }
    }
}

impl std::error::Error for ChatTemplateError {}

/// The error `raise_exception` returns, found again in the render error's sources.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: Option<Value>) -> Result<Value, minijinja::Error> {
    let message = match message {
        Some(v) => v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        None => String::new(),
    };
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {message}"))
        .with_source(Raised(message)))
}

fn strftime_now(format: String) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, now)
}

/// A writer that fails once more than [`MAX_OUTPUT_BYTES`] are written.
struct Capped {
    buf: Vec<u8>,
    exceeded: bool,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT_BYTES {
            self.exceeded = true;
            return Err(io::Error::other("chat template output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `source` (Jinja). `bos_token` and `eos_token` are the texts of the model's
    /// BOS and EOS tokens (`""` if it has none), the template's `bos_token`/`eos_token`.
    /// A syntax error is [`ChatTemplateError::Syntax`] with its line.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_recursion_limit(RECURSION_LIMIT);
        // A bound on the instructions one render may run: a template that loops without
        // printing (nested `range(100000)`) ends with an error instead of hanging the caller.
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, source.to_owned()).map_err(|e| ChatTemplateError::Syntax {
            line: e.line().unwrap_or(0),
            message: e.detail().map_or_else(|| e.kind().to_string(), str::to_owned),
        })?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`, [`CHATML_SOURCE`]) without a
    /// default system prompt, for models without a template.
    pub fn chatml() -> Self {
        static CHATML: OnceLock<ChatTemplate> = OnceLock::new();
        CHATML
            .get_or_init(|| ChatTemplate::new(CHATML_SOURCE, "", "").expect("ChatML compiles"))
            .clone()
    }

    /// `source` compiled with `tokenizer`'s BOS and EOS token texts.
    pub fn for_tokenizer(
        source: &str,
        tokenizer: &crate::tokenizer::Tokenizer,
    ) -> Result<Self, ChatTemplateError> {
        let text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or("");
        Self::new(source, text(tokenizer.bos()), text(tokenizer.eos()))
    }

    /// The model's template: `tokenizer.chat_template` if the file has one (compiled with the
    /// tokenizer's BOS and EOS texts), else [`chatml`](Self::chatml).
    pub fn from_model(
        gguf: &pagoda_core::gguf::Gguf<'_>,
        tokenizer: &crate::tokenizer::Tokenizer,
    ) -> Result<Self, ChatTemplateError> {
        match gguf.get_str("tokenizer.chat_template") {
            Ok(source) => Self::for_tokenizer(source, tokenizer),
            Err(_) => Ok(Self::chatml()),
        }
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The BOS token text the template is rendered with (`""` if none).
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS token text the template is rendered with (`""` if none).
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders a whole conversation; with `add_generation_prompt` it ends where the
    /// assistant's reply begins (as in transformers' `apply_chat_template`).
    ///
    /// The text may begin with the BOS token's text (Gemma's templates print `{{ bos_token
    /// }}`): a caller that tokenizes it with special tokens parsed must not add another BOS
    /// then ([`starts_with_bos`](Self::starts_with_bos); llama.cpp does the same).
    ///
    /// Errors: [`ChatTemplateError::Raised`] if the template calls `raise_exception`,
    /// [`ChatTemplateError::OutputTooLarge`], else [`ChatTemplateError::Render`].
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let messages: Value = messages
            .iter()
            .map(|m| {
                Value::from_iter([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let ctx = Value::from_iter([
            ("messages", messages),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(&*self.bos_token)),
            ("eos_token", Value::from(&*self.eos_token)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ]);
        let template = self.env.get_template(NAME).map_err(|e| render_error(&e))?;
        let mut out = Capped { buf: Vec::new(), exceeded: false };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|_| ChatTemplateError::Render("output is not UTF-8".into())),
            Err(_) if out.exceeded => {
                Err(ChatTemplateError::OutputTooLarge { limit: MAX_OUTPUT_BYTES })
            }
            Err(e) => Err(render_error(&e)),
        }
    }

    /// Whether `rendered` begins with the BOS token's text: then tokenizing it with special
    /// tokens parsed already yields BOS, and the caller must not add one.
    pub fn starts_with_bos(&self, rendered: &str) -> bool {
        !self.bos_token.is_empty() && rendered.starts_with(&*self.bos_token)
    }
}

fn render_error(e: &minijinja::Error) -> ChatTemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(Raised(message)) = err.downcast_ref::<Raised>() {
            return ChatTemplateError::Raised(message.clone());
        }
        source = err.source();
    }
    ChatTemplateError::Render(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_adds_its_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(
            t.render(&[Message::user("Hi")], true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[Message::system("Be brief."), Message::user("Hi")], false).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn chatml_is_plain() {
        let t = ChatTemplate::chatml();
        assert_eq!(
            t.render(&[Message::user("x")], false).unwrap(),
            "<|im_start|>user\nx<|im_end|>\n"
        );
        assert_eq!(t.render(&[], true).unwrap(), "<|im_start|>assistant\n");
        assert!(!t.starts_with_bos("<|im_start|>"));
    }

    #[test]
    fn helpers_and_variables() {
        let t = ChatTemplate::new(
            "{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ date_string is defined }}|{{ messages[0].content.strip().split(',')[1] }}|{{ messages[0].content.startswith(' a') }}|{{ strftime_now('%Y')|length }}|{{ nothing.at.all }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::user(" a,b ")], false).unwrap(),
            "<s>|</s>|True|False|b|True|4|"
        );
        assert!(t.starts_with_bos("<s>x"));
    }

    #[test]
    fn blocks_are_trimmed_as_in_transformers() {
        let t = ChatTemplate::new("{% for m in messages %}\n  {% if true %}\n[{{ m.role }}]\n  {% endif %}\n{% endfor %}\n", "", "")
            .unwrap();
        assert_eq!(
            t.render(&[Message::user("x"), Message::user("y")], false).unwrap(),
            "[user]\n[user]\n"
        );
    }

    #[test]
    fn raise_exception_is_typed() {
        let t = ChatTemplate::new(
            "{% if messages|length == 0 %}{{ raise_exception('no messages') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&[], false), Err(ChatTemplateError::Raised("no messages".into())));
        assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "ok");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = ChatTemplate::new("ok\n{% if %}\n", "", "").unwrap_err();
        assert!(matches!(e, ChatTemplateError::Syntax { line: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
