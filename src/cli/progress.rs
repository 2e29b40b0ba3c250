//! Progress on stderr. `prune`, `lowrank` and `quantize` show the executor's stage (with counts
//! and the time left where it knows them: calibration batches); `eval`, `run` and `bench` show
//! what runs and the batches evaluated. A terminal gets a line redrawn in place (a spinner for
//! the passes, a bar for evaluations) that is cleared at the end. A pipe or CI log gets a line
//! when a stage begins or a count moves after the first second (at most one every 3 s), and one
//! every 5 s while nothing changes, so a command that finishes (or fails) at once prints nothing
//! but its result or its one-line error. `--quiet` silences both. Results stay on stdout.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A pipe is silent for this long.
const QUIET_START: Duration = Duration::from_secs(1);
/// A change is printed at once only this long after the last line; sooner, the ticker prints it.
const SPACING: Duration = Duration::from_secs(3);
/// Without a change, the state is printed again after this long without a line.
const TICK: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: Option<Lines>,
}

/// The pipe mode: the current state, shared with a thread that repeats it every `TICK`.
struct Lines {
    state: Arc<Mutex<LineState>>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

struct LineState {
    prefix: String,
    stage: Option<String>,
    count: Option<(usize, usize)>,
    start: Instant,
    last_line: Instant,
}

impl LineState {
    fn print(&mut self) {
        if self.stage.is_none() && self.count.is_none() {
            return;
        }
        let mut line = self.prefix.clone();
        line += ":";
        if let Some(stage) = &self.stage {
            line += " ";
            line += stage;
        }
        if let Some((done, total)) = self.count {
            line += &format!(" {done}/{total} batches");
        }
        eprintln!("{line} ({:.0} s)", self.start.elapsed().as_secs_f64());
        self.last_line = Instant::now();
    }

    fn changed(&mut self) {
        if self.start.elapsed() >= QUIET_START && self.last_line.elapsed() >= SPACING {
            self.print();
        }
    }
}

impl Progress {
    /// A spinner on a terminal: for the passes, whose stages have no overall count.
    pub fn spinner(prefix: &str, quiet: bool) -> Progress {
        Progress::new(prefix, quiet, "{spinner} {prefix}: {msg} ({elapsed})", true)
    }

    /// A bar on a terminal: for evaluations, counted in batches.
    pub fn bar(prefix: &str, quiet: bool) -> Progress {
        Progress::new(
            prefix,
            quiet,
            "{prefix} {msg} [{bar:30}] {pos}/{len} batches {elapsed}",
            false,
        )
    }

    fn new(prefix: &str, quiet: bool, template: &str, spinner: bool) -> Progress {
        if quiet {
            return Progress { bar: None, lines: None };
        }
        if std::io::stderr().is_terminal() {
            let style = indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| {
                if spinner {
                    indicatif::ProgressStyle::default_spinner()
                } else {
                    indicatif::ProgressStyle::default_bar()
                }
            });
            let bar = if spinner {
                indicatif::ProgressBar::new_spinner()
            } else {
                indicatif::ProgressBar::new(0)
            };
            bar.set_style(style);
            bar.set_prefix(prefix.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            return Progress {
                bar: Some(bar),
                lines: None,
            };
        }
        let now = Instant::now();
        let state = Arc::new(Mutex::new(LineState {
            prefix: prefix.to_string(),
            stage: None,
            count: None,
            start: now,
            last_line: now,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(mut s) = state.lock() {
                        if !stop.load(Ordering::Relaxed)
                            && s.start.elapsed() >= QUIET_START
                            && s.last_line.elapsed() >= TICK
                        {
                            s.print();
                        }
                    }
                }
            })
        };
        Progress {
            bar: None,
            lines: Some(Lines {
                state,
                stop,
                ticker: Some(ticker),
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut LineState)) {
        if let Some(lines) = &self.lines {
            if let Ok(mut s) = lines.state.lock() {
                f(&mut s);
                s.changed();
            }
        }
    }

    /// What runs now (bench: which recipe).
    pub fn prefix(&self, prefix: &str) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(prefix.to_string());
        }
        self.update(|s| s.prefix = prefix.to_string());
    }

    /// A new stage begins; its count starts afresh.
    pub fn stage(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
            bar.set_position(0);
        }
        self.update(|s| {
            s.stage = Some(what.to_string());
            s.count = None;
        });
    }

    /// A result that stays (above a terminal's spinner; a line of its own in a pipe).
    pub fn line(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.println(text);
        }
        if let Some(lines) = &self.lines {
            if let Ok(mut s) = lines.state.lock() {
                eprintln!("{}: {text}", s.prefix);
                s.last_line = Instant::now();
            }
        }
    }

    /// A line that is shown under --quiet too (a note, a failure): above a terminal's bar, else
    /// on its own.
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// `done` of `total` batches.
    pub fn count(&self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        self.update(|s| s.count = Some((done, total)));
    }

    /// Clears the terminal line or stops the ticker (the results follow on stdout).
    pub fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(lines) = &mut self.lines {
            lines.stop.store(true, Ordering::Relaxed);
            if let Some(ticker) = lines.ticker.take() {
                let _ = ticker.join();
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
