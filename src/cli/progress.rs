//! Progress on stderr for commands that write a model: the stage the executor is in and the time
//! so far (with counts and the time left where the executor knows them: calibration batches). A
//! terminal gets a spinner line that is replaced as stages go. A pipe or CI log gets a line when
//! a stage begins after the first second (at most one every 3 s), and one every 5 s while a stage
//! runs on, so a command that finishes (or fails) at once prints nothing but its result or its
//! one-line error. `--quiet` silences both. Results stay on stdout.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A pipe is silent for this long, then reports each new stage.
const QUIET_START: Duration = Duration::from_secs(1);
/// A new stage (or a count within one) is printed at once only this long after the last line;
/// sooner, the ticker prints it.
const SPACING: Duration = Duration::from_secs(3);
/// A stage that runs on is reported again after this long without a line.
const TICK: Duration = Duration::from_secs(5);

pub struct Stages {
    bar: Option<indicatif::ProgressBar>,
    lines: Option<Lines>,
}

/// The pipe mode: the current stage, shared with a thread that repeats it every `TICK`.
struct Lines {
    state: Arc<Mutex<LineState>>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

struct LineState {
    command: String,
    stage: Option<String>,
    start: Instant,
    last_line: Instant,
}

impl LineState {
    fn print(&mut self) {
        if let Some(stage) = &self.stage {
            eprintln!(
                "{}: {stage} ({:.0} s)",
                self.command,
                self.start.elapsed().as_secs_f64()
            );
            self.last_line = Instant::now();
        }
    }
}

impl Stages {
    pub fn new(command: &str, quiet: bool) -> Stages {
        if quiet {
            return Stages { bar: None, lines: None };
        }
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_prefix(command.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            return Stages {
                bar: Some(bar),
                lines: None,
            };
        }
        let now = Instant::now();
        let state = Arc::new(Mutex::new(LineState {
            command: command.to_string(),
            stage: None,
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
        Stages {
            bar: None,
            lines: Some(Lines {
                state,
                stop,
                ticker: Some(ticker),
            }),
        }
    }

    /// A new stage begins.
    pub fn stage(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
        } else if let Some(lines) = &self.lines {
            if let Ok(mut s) = lines.state.lock() {
                s.stage = Some(what.to_string());
                if s.start.elapsed() >= QUIET_START && s.last_line.elapsed() >= SPACING {
                    s.print();
                }
            }
        }
    }

    /// Clears the spinner or stops the ticker (the results follow on stdout).
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

impl Drop for Stages {
    fn drop(&mut self) {
        self.finish();
    }
}
