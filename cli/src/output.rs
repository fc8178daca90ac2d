//! How results and errors reach the user: text for people, JSON for programs.

use std::io::{IsTerminal, Write};

use miette::{GraphicalReportHandler, GraphicalTheme};
use serde::Serialize;

use crate::error::Error;

/// The `--output` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Writes results to stdout and diagnostics to stderr.
#[derive(Debug, Clone)]
pub struct Ui {
    pub format: Format,
    pub verbose: u8,
    /// Whether stderr takes colours (a terminal, and `NO_COLOR` unset).
    pub color: bool,
}

impl Ui {
    pub fn new(format: Format, verbose: u8) -> Ui {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Ui {
            format,
            verbose,
            color: !no_color && std::io::stderr().is_terminal(),
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints a result: its `Display` as text, or itself as one JSON document.
    pub fn result<T: Serialize + std::fmt::Display>(&self, value: &T) {
        let mut out = std::io::stdout().lock();
        let written = match self.format {
            Format::Text => write!(out, "{value}"),
            Format::Json => match serde_json::to_string_pretty(value) {
                Ok(json) => writeln!(out, "{json}"),
                Err(e) => writeln!(out, "{{\"error\": \"{e}\"}}"),
            },
        };
        // A closed pipe (`pipeline envs | head`) is not worth a panic.
        let _ = written.and_then(|()| out.flush());
    }

    /// An event of a long-running command: its `Display` as text, or one
    /// JSON object on one line.
    pub fn event<T: Serialize + std::fmt::Display>(&self, value: &T) {
        let mut out = std::io::stdout().lock();
        let written = match self.format {
            Format::Text => write!(out, "{value}"),
            Format::Json => match serde_json::to_string(value) {
                Ok(json) => writeln!(out, "{json}"),
                Err(e) => writeln!(out, "{{\"error\": \"{e}\"}}"),
            },
        };
        let _ = written.and_then(|()| out.flush());
    }

    /// A progress line on stderr, shown with `-v`.
    pub fn info(&self, message: impl std::fmt::Display) {
        if self.verbose > 0 && !self.json() {
            eprintln!("{message}");
        }
    }

    /// Text for stderr, already rendered (spec problems).
    pub fn diagnostics(&self, text: &str) {
        if !text.is_empty() {
            eprint!("{text}");
        }
    }

    /// Prints an error: a miette report as text, or a JSON object on stderr.
    pub fn error(&self, error: &Error) {
        if self.json() {
            let help = miette::Diagnostic::help(error).map(|h| h.to_string());
            let code = error.code();
            let mut message = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            let value =
                serde_json::json!({"error": {"code": code, "message": message, "help": help}});
            eprintln!("{value}");
            return;
        }
        let theme = if self.color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let mut text = String::new();
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        if handler.render_report(&mut text, error).is_err() {
            text = error.to_string();
        }
        eprintln!("{text}");
    }
}
