//! How deploy events reach the user: a spinner above plain lines on a
//! terminal, plain lines otherwise, one JSON object per line with
//! `--output json`; and the yes/no prompt of a terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use super::engine::{Event, Prompt, Reporter};
use crate::output::Ui;

/// Prints engine events as the `Ui` says.
pub struct CliReporter {
    ui: Ui,
    spinner: Option<indicatif::ProgressBar>,
}

impl CliReporter {
    pub fn new(ui: &Ui) -> CliReporter {
        let spinner = (!ui.json() && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        CliReporter {
            ui: ui.clone(),
            spinner,
        }
    }

    /// Prints a line (or a JSON event) without tearing the spinner.
    pub fn line<T: serde::Serialize + std::fmt::Display>(&self, value: &T) {
        match &self.spinner {
            Some(bar) => bar.suspend(|| self.ui.event(value)),
            None => self.ui.event(value),
        }
    }

    /// What the spinner says is going on.
    pub fn status(&self, message: String) {
        if let Some(bar) = &self.spinner {
            bar.set_message(message);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

impl Drop for CliReporter {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Reporter for CliReporter {
    fn report(&self, event: &Event) {
        if let Event::Resource { stack, resource: e } = event {
            self.status(format!("{stack}: {} {}", e.logical_id, e.status));
        }
        self.line(event);
    }
}

impl crate::rollout::Reporter for CliReporter {
    fn report(&self, event: &crate::rollout::Event) {
        self.line(event);
    }
}

/// Asks on the terminal; anything but `y` or `yes` is a no.
impl Prompt for CliReporter {
    fn confirm(&self, question: &str) -> bool {
        let ask = || {
            eprint!("{question} [y/N] ");
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            if std::io::stdin().lock().read_line(&mut answer).is_err() {
                return false;
            }
            matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
        };
        match &self.spinner {
            Some(bar) => bar.suspend(ask),
            None => ask(),
        }
    }
}

/// Whether a person can answer a prompt: stdin and stderr are terminals.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}
