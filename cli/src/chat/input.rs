//! Where `pagoda chat` reads what the user says: a line editor with history at a terminal
//! (rustyline), else stdin one line at a time. Both join lines ending in `\` into one
//! message.

use std::io::{BufRead, Lines, StdinLock};
use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use crate::common::{escape_controls, CliResult};

/// The prompt of a new message.
pub const PROMPT: &str = "> ";
/// The prompt of a message's next line (after a line ending in `\`).
pub const CONTINUATION_PROMPT: &str = ". ";

/// What the user did at the prompt.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A whole message: its lines joined by `\n`, each continuation's `\` removed.
    Message(String),
    /// Ctrl-C at the prompt: the message being typed is dropped.
    Cancelled,
    /// Ctrl-D at an empty prompt, or the end of stdin: the chat ends.
    End,
}

/// A source of messages: [`Editor`](Source::Editor) at a terminal, [`Stdin`](Source::Stdin)
/// otherwise.
pub enum Source {
    /// rustyline, with its history saved to `history` after every line (if any).
    Editor { editor: Box<DefaultEditor>, history: Option<PathBuf> },
    /// Plain lines from stdin; `prompt` writes `> ` to stderr first (stdin is a terminal
    /// but stdout is not).
    Stdin { lines: Lines<StdinLock<'static>>, prompt: bool },
}

/// One physical line, or what ended the reading.
enum Line {
    Text(String),
    Cancelled,
    End,
}

impl Source {
    /// A line editor whose history lives in `history` (loaded now if it exists; `None`: no
    /// history file). A history that cannot be read is a warning, not an error.
    pub fn editor(history: Option<PathBuf>) -> CliResult<Source> {
        let mut editor =
            DefaultEditor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
        let mut history = history;
        if let Some(path) = &history {
            if let Some(dir) = path.parent() {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    log::warn!(
                        "chat history: cannot create '{}': {e}; history is not saved",
                        escape_controls(&dir.display().to_string())
                    );
                    history = None;
                }
            }
        }
        if let Some(path) = &history {
            if path.exists() {
                if let Err(e) = editor.load_history(path) {
                    log::warn!(
                        "chat history: cannot read '{}': {e}",
                        escape_controls(&path.display().to_string())
                    );
                }
            }
        }
        Ok(Source::Editor { editor: Box::new(editor), history })
    }

    /// Lines from stdin.
    pub fn stdin(prompt: bool) -> Source {
        Source::Stdin { lines: std::io::stdin().lock().lines(), prompt }
    }

    /// The next message: lines are read while they end in `\` (each continuation gets the
    /// `. ` prompt). A Ctrl-C drops the lines read so far. At the end of input, lines read
    /// so far are the last message.
    pub fn read_message(&mut self) -> CliResult<Input> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let prompt = if lines.is_empty() { PROMPT } else { CONTINUATION_PROMPT };
            match self.read_line(prompt)? {
                Line::Cancelled => return Ok(Input::Cancelled),
                Line::End if lines.is_empty() => return Ok(Input::End),
                Line::End => return Ok(Input::Message(lines.join("\n"))),
                Line::Text(line) => {
                    let line = line.trim_end_matches(['\r', '\n']);
                    match line.strip_suffix('\\') {
                        Some(head) => lines.push(head.to_owned()),
                        None => {
                            lines.push(line.to_owned());
                            return Ok(Input::Message(lines.join("\n")));
                        }
                    }
                }
            }
        }
    }

    fn read_line(&mut self, prompt: &str) -> CliResult<Line> {
        match self {
            Source::Editor { editor, history } => match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        remember(editor, history, &line);
                    }
                    Ok(Line::Text(line))
                }
                Err(ReadlineError::Interrupted) => Ok(Line::Cancelled),
                Err(ReadlineError::Eof) => Ok(Line::End),
                Err(e) => Err(format!("reading the terminal: {e}").into()),
            },
            Source::Stdin { lines, prompt: show } => {
                if *show {
                    eprint!("{prompt}");
                }
                match lines.next() {
                    None => Ok(Line::End),
                    Some(Ok(line)) => Ok(Line::Text(line)),
                    Some(Err(e)) => Err(format!("reading stdin: {e}").into()),
                }
            }
        }
    }
}

/// Adds `line` to the editor's history and appends it to the history file; a file that
/// cannot be written is a warning, and the file is then left alone for the rest of the chat.
fn remember(editor: &mut DefaultEditor, history: &mut Option<PathBuf>, line: &str) {
    let _ = editor.add_history_entry(line);
    if let Some(path) = history.as_ref() {
        if let Err(e) = editor.append_history(path) {
            log::warn!(
                "chat history: cannot write '{}': {e}; history is not saved",
                escape_controls(&path.display().to_string())
            );
            *history = None;
        }
    }
}

/// The history file: `$XDG_DATA_HOME/pagoda/chat_history`, else
/// `$HOME/.local/share/pagoda/chat_history`; `None` when neither variable is set (to an
/// absolute path, as the XDG specification asks).
pub fn history_path() -> Option<PathBuf> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let data = absolute("XDG_DATA_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".local").join("share")))?;
    Some(data.join("pagoda").join("chat_history"))
}
