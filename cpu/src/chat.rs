//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! pagoda does not run Jinja. It recognises the template families in
//! `tokenizer.chat_template` and renders them natively:
//! - **ChatML** (`<|im_start|>role\ncontent<|im_end|>\n`, SmolLM2, Qwen, …), including a
//!   default system prompt the template inserts when the conversation has none.
//!
//! An unrecognised template is an error naming what was found, not a silent guess.

use std::fmt;

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

/// A recognised chat template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// ChatML, with the system prompt the template adds when none is given (if any).
    ChatMl {
        /// The template's built-in system prompt.
        default_system: Option<String>,
    },
}

/// The template could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatTemplateError {
    /// The model file has no `tokenizer.chat_template`.
    Missing,
    /// The template is of a family pagoda does not render.
    Unrecognised(String),
}

impl fmt::Display for ChatTemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatTemplateError::Missing => f.write_str(
                "the model has no chat template (tokenizer.chat_template): it is a base \
                     model, not tuned for chat; use `pagoda run -p TEXT` to continue a text",
            ),
            ChatTemplateError::Unrecognised(start) => {
                write!(f, "unrecognised chat template (only ChatML is supported): {start}…")
            }
        }
    }
}

impl std::error::Error for ChatTemplateError {}

impl ChatTemplate {
    /// Recognises the family of a Jinja chat template.
    pub fn from_jinja(template: &str) -> Result<Self, ChatTemplateError> {
        if template.contains("<|im_start|>") {
            let marker = "<|im_start|>system\n";
            // The default system prompt, if the template hard-codes one:
            // '<|im_start|>system\nYou are …<|im_end|>\n'
            let default_system = template.find(marker).and_then(|i| {
                let rest = &template[i + marker.len()..];
                let end = rest.find("<|im_end|>")?;
                let s = &rest[..end];
                (!s.contains("{{") && !s.contains('\'') && !s.is_empty()).then(|| s.to_string())
            });
            return Ok(ChatTemplate::ChatMl { default_system });
        }
        let start: String = template.chars().take(60).collect();
        Err(ChatTemplateError::Unrecognised(start))
    }

    /// Plain ChatML without a default system prompt: what a model without a chat template
    /// gets.
    pub fn chatml() -> Self {
        ChatTemplate::ChatMl { default_system: None }
    }

    /// Renders a whole conversation; with `add_generation_prompt` it ends where the
    /// assistant's reply begins. The template's default system prompt is added when the
    /// conversation does not start with a system message.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        match self {
            ChatTemplate::ChatMl { default_system } => {
                let mut s = String::new();
                if messages.first().is_none_or(|m| m.role != "system") {
                    if let Some(sys) = default_system {
                        s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                    }
                }
                for m in messages {
                    s.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
                }
                if add_generation_prompt {
                    s.push_str("<|im_start|>assistant\n");
                }
                s
            }
        }
    }

    /// Renders the opening of a conversation's next user turn, ending where the assistant's
    /// reply begins. `first` adds the system block (`system`, else the template's default).
    pub fn user_turn(&self, system: Option<&str>, user: &str, first: bool) -> String {
        match self {
            ChatTemplate::ChatMl { default_system } => {
                let mut s = String::new();
                if first {
                    if let Some(sys) = system.or(default_system.as_deref()) {
                        s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                    }
                }
                s.push_str(&format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"));
                s
            }
        }
    }

    /// Text that closes an assistant reply, given whether the model already emitted its
    /// end-of-turn token.
    pub fn end_of_reply(&self, model_ended_turn: bool) -> &'static str {
        match self {
            ChatTemplate::ChatMl { .. } => {
                if model_ended_turn {
                    "\n"
                } else {
                    "<|im_end|>\n"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_is_chatml_with_default_system() {
        let t = ChatTemplate::from_jinja(SMOLLM2).unwrap();
        assert_eq!(
            t,
            ChatTemplate::ChatMl {
                default_system: Some(
                    "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()
                )
            }
        );
        assert_eq!(
            t.user_turn(None, "Hi", true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.user_turn(Some("Be brief."), "Hi", false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn render_equals_the_turn_by_turn_rendering() {
        let t = ChatTemplate::from_jinja(SMOLLM2).unwrap();
        let conv = [Message::user("Hi")];
        assert_eq!(t.render(&conv, true), t.user_turn(None, "Hi", true));
        let conv = [Message::system("Be brief."), Message::user("Hi")];
        assert_eq!(t.render(&conv, true), t.user_turn(Some("Be brief."), "Hi", true));
        let conv = [Message::user("Hi"), Message::assistant("Hello!"), Message::user("Bye")];
        let turns = t.user_turn(None, "Hi", true)
            + "Hello!"
            + t.end_of_reply(false)
            + &t.user_turn(None, "Bye", false);
        assert_eq!(t.render(&conv, true), turns);
        assert_eq!(
            ChatTemplate::chatml().render(&[Message::user("x")], false),
            "<|im_start|>user\nx<|im_end|>\n"
        );
    }

    #[test]
    fn unknown_template_is_an_error() {
        assert!(matches!(
            ChatTemplate::from_jinja("[INST] {{ message }} [/INST]"),
            Err(ChatTemplateError::Unrecognised(_))
        ));
    }
}
