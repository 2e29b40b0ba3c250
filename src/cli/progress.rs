//! Progress on stderr for commands that write a model: the stage the executor is in and the time
//! so far. A terminal gets a spinner line that is replaced as stages go; a pipe or CI log gets one
//! line per stage; `--quiet` silences both. Results stay on stdout.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Stages {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    start: Instant,
    command: String,
}

impl Stages {
    pub fn new(command: &str, quiet: bool) -> Stages {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_prefix(command.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Stages {
            bar,
            lines: !quiet && !terminal,
            start: Instant::now(),
            command: command.to_string(),
        }
    }

    /// A new stage begins.
    pub fn stage(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
        } else if self.lines {
            eprintln!("{}: {what} ({:.1} s)", self.command, self.start.elapsed().as_secs_f64());
        }
    }

    /// Clears the spinner (the results follow on stdout).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
